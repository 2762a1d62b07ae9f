package postgres

// The change log: every commit's events, in typed columns, under the
// commit's sequence number. It is how every listener learns what any
// process committed: a notification carries only the commit's number, and
// the listener reads the events from here (listener.go).

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"meshca/pkg/store"
)

// changeRetention is how long the changes table keeps an event. A listener
// reconnects within seconds (its backoff is capped at 1 s); the table must
// not grow with every certificate ever issued.
const changeRetention = 5 * time.Minute

// pruneInterval is how often each instance deletes expired changes.
const pruneInterval = time.Minute

// publishQuery numbers a commit (the next value of the one-row commit
// sequence), writes its events to the changes table and notifies the
// commit's number, in one statement: $2 are the events' kinds, $3..$10 their
// records column by column (rowArrays). Run last in the transaction, it
// holds the sequence row's lock only from here to COMMIT; a concurrent
// commit waits for it, so numbers follow commit order: once a listener
// hears of commit N, every commit up to N is in the table.
//
// The events are not in the notification. Every instance reads each
// commit's events once, binary, from the table (as a listener catching up
// always had to), instead of PostgreSQL queueing every event's record,
// JSON- and base64-encoded, for every listener, and each instance encoding
// it twice and decoding it again: one notification per commit, of a few
// bytes, which PostgreSQL folds into one if a commit sent it twice.
const publishQuery = `WITH s AS (UPDATE commit_seq SET seq = seq + 1 RETURNING seq),
	logged AS (INSERT INTO changes (seq, idx, committed_at, kind, ` + columns + `)
		SELECT s.seq, (t.i - 1)::int, $1, t.kind, t.type, t.mesh, t.name, t.version, t.spec, t.labels, t.created_at, t.modified_at
		FROM s, unnest($2::smallint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bytea[], $8::text[], $9::bigint[], $10::bigint[])
			WITH ORDINALITY AS t(kind, type, mesh, name, version, spec, labels, created_at, modified_at, i))
	SELECT pg_notify($11, s.seq::text) FROM s`

// publishArgs are publishQuery's arguments for a commit's events.
func publishArgs(now time.Time, events []store.Event) ([]any, error) {
	kinds := make([]int16, len(events))
	var rows rowArrays
	for i, ev := range events {
		kinds[i] = int16(ev.Kind)
		if err := rows.add(&ev.Record); err != nil {
			return nil, err
		}
	}
	args := append([]any{now.UnixNano(), kinds}, rows.args()...)
	return append(args, Channel), nil
}

// publish numbers, logs and notifies a commit's events inside its
// transaction (publishQuery).
func publish(ctx context.Context, tx pgx.Tx, now time.Time, events []store.Event) error {
	if len(events) == 0 {
		return nil
	}
	args, err := publishArgs(now, events)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, publishQuery, args...); err != nil {
		return fmt.Errorf("log and notify events: %w", err)
	}
	return nil
}

// prune deletes expired changes every pruneInterval until ctx ends.
func (s *Store) prune(ctx context.Context) {
	defer close(s.pruneDone)
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-changeRetention).UnixNano()
		if _, err := s.pool.Exec(ctx, `DELETE FROM changes WHERE committed_at < $1`, cutoff); err != nil && ctx.Err() == nil {
			s.logger.Warn("pruning the changes table failed", "err", err)
		}
	}
}

// changesQuery reads the events of the commits numbered after $1 up to $2,
// in order.
const changesQuery = `SELECT seq, kind, ` + columns + ` FROM changes
	WHERE seq > $1 AND seq <= $2 ORDER BY seq, idx`

// scanChange reads one row of changesQuery.
func scanChange(rows pgx.Rows) (seq int64, ev store.Event, err error) {
	var (
		kind              int16
		labels            string
		created, modified int64
		r                 = &ev.Record
	)
	if err := rows.Scan(&seq, &kind, &r.Type, &r.Mesh, &r.Name, &r.Version, &r.Spec, &labels, &created, &modified); err != nil {
		return 0, store.Event{}, err
	}
	ev.Kind = store.EventKind(kind)
	if ev.Kind < store.EventCreated || ev.Kind > store.EventDeleted {
		return seq, store.Event{}, fmt.Errorf("event of %s: unknown kind %d", r.Key, kind)
	}
	if labels != "" && labels != "{}" {
		if err := json.Unmarshal([]byte(labels), &r.Labels); err != nil {
			return seq, store.Event{}, fmt.Errorf("event of %s: decode labels: %w", r.Key, err)
		}
	}
	// Empty specs are nil, as every store delivers them. The spec was
	// scanned into memory of its own (pgx copies into a []byte): the hub
	// gives each watcher its own copy.
	if len(r.Spec) == 0 {
		r.Spec = nil
	}
	r.CreationTime = time.Unix(0, created).UTC()
	r.ModificationTime = time.Unix(0, modified).UTC()
	return seq, ev, nil
}
