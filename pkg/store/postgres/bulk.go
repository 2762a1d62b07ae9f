package postgres

// The bulk path of a group commit: two round trips per group instead of
// four per call. One pipelined batch begins the transaction and reads (and
// locks) every record the group touches, each call's ops are checked
// against that state in Go (a call that fails leaves no trace, so it needs
// no savepoint), and one batch writes the net changes, logs the events and
// commits. Round trips, not PostgreSQL's work or the WAL flush, bound a
// group's time on a busy machine: the savepoint path takes 4 per call
// (savepoint, read, write, release) and 3 more per group (begin, log,
// commit). And with COMMIT in the same batch as the statement that takes
// the commit sequence's row (publishQuery), that row, which orders every
// instance's commits one after the other, is held for no client round
// trip: from that statement through the WAL flush only.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"meshca/pkg/store"
	"meshca/pkg/store/internal/storeutil"
)

// errBulkRetry says the bulk path met a database error (a concurrent create
// of the same key by another process, a lock wait too long, a deadlock) it
// cannot pin on one call: its transaction is dropped and the group is done
// again call by call, in savepoints.
type errBulkRetry struct{ err error }

func (e errBulkRetry) Error() string { return "bulk commit: " + e.err.Error() }
func (e errBulkRetry) Unwrap() error { return e.err }

// bulkable reports whether the group can take the bulk path: no call has an
// OpRequireNone (a check over a whole type in a mesh, done in SQL).
func bulkable(group []*storeutil.Request) bool {
	for _, r := range group {
		for _, op := range r.Ops {
			if op.Kind == store.OpRequireNone {
				return false
			}
		}
	}
	return true
}

// slot is one record the group touches: as read, and as the calls applied
// so far left it.
type slot struct {
	stored  *store.Record // nil: absent when read
	cur     *store.Record // nil: absent now
	written bool
}

// batcher runs a batch of statements in one round trip (a connection).
type batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// applyBulk commits the group's calls in a transaction of its own on conn.
// It sets each call's Err (its own refusal) and Events and returns the
// events of the calls that succeeded, in order. An errBulkRetry means
// nothing of the group was committed; the caller rolls back whatever
// transaction conn is left in, and may call it again.
func applyBulk(ctx context.Context, conn batcher, now time.Time, group []*storeutil.Request) (events []store.Event, err error) {
	// Lock what is written FOR UPDATE, what is only required FOR SHARE
	// (commits requiring the same Mesh or leader term do not wait for each
	// other), each in key order so that groups lock alike.
	written := map[store.Key]bool{}
	required := map[store.Key]bool{}
	for _, r := range group {
		for _, op := range r.Ops {
			if op.Kind == store.OpRequire {
				required[op.Record.Key] = true
			} else {
				written[op.Record.Key] = true
			}
		}
	}
	for k := range written {
		delete(required, k)
	}
	state := make(map[store.Key]*slot, len(written)+len(required))
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`SET LOCAL lock_timeout = '` + lockTimeout + `'`)
	// One statement per record, pipelined: each is a primary-key lookup
	// whatever the table's statistics say (one query over an array of keys
	// is planned as a scan of the whole table while they are stale). All in
	// key order, whatever the lock, so that groups lock alike.
	all := maps.Clone(written)
	maps.Copy(all, required)
	for _, k := range sortedKeys(all) {
		lock := " FOR UPDATE"
		if required[k] {
			lock = " FOR SHARE"
		}
		b.Queue(getQuery+lock, k.Type, k.Mesh, k.Name).Query(func(rows pgx.Rows) error {
			recs, err := storeutil.CollectRecords(rows)
			for i := range recs {
				r := recs[i]
				state[r.Key] = &slot{stored: &r, cur: &r}
			}
			return err
		})
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, errBulkRetry{fmt.Errorf("read: %w", err)}
	}
	get := func(k store.Key) *slot {
		s := state[k]
		if s == nil {
			s = &slot{}
			state[k] = s
		}
		return s
	}

	for _, r := range group {
		r.Err, r.Events = nil, nil // an earlier attempt's
		// The call's changes, kept apart until all its ops passed.
		mine := map[store.Key]*store.Record{}
		current := func(k store.Key) *store.Record {
			if rec, ok := mine[k]; ok {
				return rec
			}
			return get(k).cur
		}
		var evs []store.Event
		for _, op := range r.Ops {
			next, ev, err := storeutil.Apply(current(op.Record.Key), op, now)
			if err != nil {
				r.Err = fmt.Errorf("commit: %w", err)
				break
			}
			if op.Kind == store.OpRequire {
				continue
			}
			mine[op.Record.Key] = next
			evs = append(evs, ev)
		}
		if r.Err != nil {
			continue
		}
		for k, rec := range mine {
			s := get(k)
			s.cur, s.written = rec, true
		}
		r.Events = evs
		events = append(events, evs...)
	}
	if err = writeBulk(ctx, conn, state, now, events); err != nil {
		return nil, err
	}
	return events, nil
}

// writeBulk writes the net change of every slot the calls wrote (an insert,
// an update or a delete), publishes the events (publishQuery) and commits,
// by one batch. A statement the database refuses (COMMIT included) leaves
// nothing committed: errBulkRetry. Any other failure (the connection lost)
// leaves the outcome unknown, and is returned as is.
func writeBulk(ctx context.Context, conn batcher, state map[store.Key]*slot, now time.Time, events []store.Event) error {
	var ins, upd rowArrays
	var del []store.Key
	keys := make([]store.Key, 0, len(state))
	for k, s := range state {
		if s.written {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareKeys)
	for _, k := range keys {
		s := state[k]
		switch {
		case s.cur == nil && s.stored != nil:
			del = append(del, k)
		case s.cur != nil && s.stored == nil:
			if err := ins.add(s.cur); err != nil {
				return err
			}
		case s.cur != nil:
			if err := upd.add(s.cur); err != nil {
				return err
			}
		}
	}
	b := &pgx.Batch{}
	if len(del) > 0 {
		m := make(map[store.Key]bool, len(del))
		for _, k := range del {
			m[k] = true
		}
		types, meshes, names := keyArrays(m)
		b.Queue(`DELETE FROM resources r USING unnest($1::text[], $2::text[], $3::text[]) AS d(type, mesh, name)
			WHERE r.type = d.type AND r.mesh = d.mesh AND r.name = d.name`, types, meshes, names)
	}
	if len(upd.types) > 0 {
		b.Queue(`UPDATE resources r SET version = u.version, spec = u.spec, labels = u.labels, created_at = u.created_at, modified_at = u.modified_at
			FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::text[], $7::bigint[], $8::bigint[])
				AS u(type, mesh, name, version, spec, labels, created_at, modified_at)
			WHERE r.type = u.type AND r.mesh = u.mesh AND r.name = u.name`, upd.args()...)
	}
	if len(ins.types) > 0 {
		// A plain INSERT: a concurrent create of the same key by another
		// process fails with a unique violation (and the group is done
		// again call by call) instead of being overwritten.
		b.Queue(`INSERT INTO resources (`+columns+`)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::text[], $7::bigint[], $8::bigint[])`, ins.args()...)
	}
	if len(events) > 0 {
		args, err := publishArgs(now, events)
		if err != nil {
			return err
		}
		b.Queue(publishQuery, args...)
	}
	b.Queue(`COMMIT`)
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return errBulkRetry{fmt.Errorf("write: %w", err)}
		}
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// rowArrays holds records column by column, for unnest.
type rowArrays struct {
	types, meshes, names []string
	versions             []int64
	specs                [][]byte
	labels               []string
	created, modified    []int64
}

func (a *rowArrays) add(r *store.Record) error {
	labels := "{}"
	if len(r.Labels) > 0 {
		b, err := json.Marshal(r.Labels)
		if err != nil {
			return fmt.Errorf("commit: labels of %s: %w", r.Key, err)
		}
		labels = string(b)
	}
	a.types, a.meshes, a.names = append(a.types, r.Type), append(a.meshes, r.Mesh), append(a.names, r.Name)
	a.versions, a.specs, a.labels = append(a.versions, r.Version), append(a.specs, r.Spec), append(a.labels, labels)
	a.created, a.modified = append(a.created, r.CreationTime.UnixNano()), append(a.modified, r.ModificationTime.UnixNano())
	return nil
}

func (a *rowArrays) args() []any {
	return []any{a.types, a.meshes, a.names, a.versions, a.specs, a.labels, a.created, a.modified}
}

func sortedKeys(keys map[store.Key]bool) []store.Key {
	sorted := make([]store.Key, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	slices.SortFunc(sorted, compareKeys)
	return sorted
}

func keyArrays(keys map[store.Key]bool) (types, meshes, names []string) {
	for _, k := range sortedKeys(keys) {
		types, meshes, names = append(types, k.Type), append(meshes, k.Mesh), append(names, k.Name)
	}
	return types, meshes, names
}

func compareKeys(a, b store.Key) int {
	return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Mesh, b.Mesh), cmp.Compare(a.Name, b.Name))
}
