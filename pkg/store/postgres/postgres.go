// Package postgres is the shared-database store.Store backend (pgx/v5), for
// several control planes on one database.
//
// Commits run in one transaction that locks the touched rows with SELECT ...
// FOR UPDATE and checks versions. Each op also sends
// pg_notify('meshca_resources', <json>) inside that transaction, so the
// notification is delivered only if the commit succeeds, and PostgreSQL
// delivers notifications in commit order. Every Store LISTENs on the channel
// and feeds its watchers from it, so watchers see the commits of every
// process, including their own. The payload carries the full record; when it
// would exceed PostgreSQL's 8000-byte limit the spec (and labels) are left out
// and the listener reloads the record. If the record changed again meanwhile
// (or was deleted), the event is delivered without Spec/Labels and a later
// event carries the newer state.
//
// Watch starts a watcher inactive and sends a barrier notification; the
// listener activates the watcher when the barrier arrives, so it sees exactly
// the commits ordered after its Watch call.
//
// Limitation: events committed while the listener is reconnecting are lost
// (logged). Times are stored as UTC unix nanoseconds (BIGINT) to keep
// nanosecond precision like the other backends.
package postgres

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"meshca/pkg/store"
	"meshca/pkg/store/internal/storeutil"
)

const (
	// Channel is the NOTIFY channel used for change events.
	Channel = "meshca_resources"

	poolSize = 8
	// maxPayload stays under PostgreSQL's 8000-byte NOTIFY payload limit.
	maxPayload = 7900
	// migrationLockID is the advisory lock key that serializes migrations
	// across control planes.
	migrationLockID = 0x6d65736863610001
)

// Store is a store.Store backed by PostgreSQL.
type Store struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	hub    *storeutil.Hub

	barrierMu sync.Mutex
	barriers  map[string]func() // Watch barrier token -> activate

	stopListen context.CancelFunc
	listenDone chan struct{}
	closeOnce  sync.Once
}

var _ store.Store = (*Store)(nil)

func migrations() []string {
	return []string{
		`CREATE TABLE resources (
			type        TEXT COLLATE "C" NOT NULL,
			mesh        TEXT COLLATE "C" NOT NULL,
			name        TEXT COLLATE "C" NOT NULL,
			version     BIGINT NOT NULL,
			spec        BYTEA,
			labels      TEXT NOT NULL DEFAULT '{}',
			created_at  BIGINT NOT NULL, -- unix nanoseconds, UTC
			modified_at BIGINT NOT NULL, -- unix nanoseconds, UTC
			PRIMARY KEY (type, mesh, name)
		)`,
	}
}

// Open connects to dsn, migrates the schema and starts listening for change
// events. A nil logger discards logs.
func Open(ctx context.Context, dsn string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres store: parse dsn: %w", err)
	}
	cfg.MaxConns = poolSize
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	s := &Store{
		pool:       pool,
		logger:     logger.With("store", "postgres"),
		hub:        storeutil.NewHub(),
		listenDone: make(chan struct{}),
		barriers:   make(map[string]func()),
	}
	if err := s.migrate(ctx); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	listener, err := s.connectListener(ctx)
	if err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	listenCtx, cancel := context.WithCancel(context.Background())
	s.stopListen = cancel
	go s.listen(listenCtx, listener)
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLockID)); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	from, to, err := storeutil.Migrate(ctx, pgMigration{tx}, migrations(), `UPDATE schema_version SET version = $1`)
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if from < to {
		s.logger.Info("migrated schema", "from", from, "to", to)
	}
	return nil
}

// pgMigration adapts a pgx transaction to storeutil.MigrationTx.
type pgMigration struct{ tx pgx.Tx }

func (m pgMigration) Exec(ctx context.Context, query string, args ...any) error {
	_, err := m.tx.Exec(ctx, query, args...)
	return err
}

func (m pgMigration) Version(ctx context.Context) (int, bool, error) {
	var v int
	err := m.tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return v, err == nil, err
}

const (
	columns  = storeutil.Columns
	getQuery = `SELECT ` + columns + ` FROM resources WHERE type = $1 AND mesh = $2 AND name = $3`
)

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func get(ctx context.Context, q querier, query string, key store.Key) (*store.Record, error) {
	r, err := storeutil.ScanRecord(q.QueryRow(ctx, query, key.Type, key.Mesh, key.Name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key store.Key) (store.Record, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return store.Record{}, fmt.Errorf("get %s: %w", key, err)
	}
	defer conn.Release()
	r, err := get(ctx, conn, getQuery, key)
	if err != nil {
		return store.Record{}, fmt.Errorf("get %s: %w", key, err)
	}
	if r == nil {
		return store.Record{}, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return *r, nil
}

// List implements store.Store. Columns use the "C" collation, so ORDER BY
// matches Go string comparison.
func (s *Store) List(ctx context.Context, typ, mesh string) ([]store.Record, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", typ, err)
	}
	defer conn.Release()
	rows, err := conn.Query(ctx, `SELECT `+columns+` FROM resources
		WHERE type = $1 AND ($2 = '' OR mesh = $2) ORDER BY mesh, name`, typ, mesh)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", typ, err)
	}
	defer rows.Close()
	out, err := storeutil.CollectRecords(rows)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", typ, err)
	}
	return out, nil
}

// Commit implements store.Store.
func (s *Store) Commit(ctx context.Context, ops ...store.Op) error {
	return classify(s.commit(ctx, ops...))
}

// classify marks errors that say the database server's disk is full
// (SQLSTATE 53100 disk_full) with store.ErrStorageFull.
func classify(err error) error {
	var pgErr *pgconn.PgError
	if err != nil && errors.As(err, &pgErr) && pgErr.Code == "53100" {
		return fmt.Errorf("%w: %w", store.ErrStorageFull, err)
	}
	return err
}

func (s *Store) commit(ctx context.Context, ops ...store.Op) error {
	if err := storeutil.ValidateOps(ops); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if len(ops) == 0 {
		return nil
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("commit: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()

	now := storeutil.Now()
	for i, op := range ops {
		if op.Kind == store.OpRequireNone {
			// After the commit's earlier ops; an OpDelete of the Mesh
			// before it holds the Mesh row, so commits that require the
			// Mesh (FOR SHARE) have finished or wait for this one.
			var name string
			err := tx.QueryRow(ctx, `SELECT name FROM resources WHERE type = $1 AND mesh = $2 LIMIT 1`, op.Record.Type, op.Record.Mesh).Scan(&name)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				continue
			case err != nil:
				return fmt.Errorf("commit: read %s records of mesh %q: %w", op.Record.Type, op.Record.Mesh, err)
			}
			return fmt.Errorf("commit: %w", storeutil.NotNone(op, name))
		}
		key := op.Record.Key
		// A required record is only locked against change (FOR SHARE):
		// commits requiring the same Mesh do not wait for each other.
		lock := ` FOR UPDATE`
		if op.Kind == store.OpRequire {
			lock = ` FOR SHARE`
		}
		cur, err := get(ctx, tx, getQuery+lock, key)
		if err != nil {
			return fmt.Errorf("commit: read %s: %w", key, err)
		}
		next, ev, err := storeutil.Apply(cur, op, now)
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		if op.Kind == store.OpRequire {
			continue
		}
		if err := write(ctx, tx, key, cur != nil, next); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation: concurrent create
				if op.Kind == store.OpCreate {
					return fmt.Errorf("commit: create %s: %w", key, store.ErrAlreadyExists)
				}
				return fmt.Errorf("commit: upsert %s: created concurrently: %w", key, store.ErrConflict)
			}
			return fmt.Errorf("commit: write %s: %w", key, err)
		}
		payload, err := encodeNotification(i, ev)
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, payload); err != nil {
			return fmt.Errorf("commit: notify: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func write(ctx context.Context, tx pgx.Tx, key store.Key, exists bool, next *store.Record) error {
	if next == nil {
		_, err := tx.Exec(ctx, `DELETE FROM resources WHERE type = $1 AND mesh = $2 AND name = $3`,
			key.Type, key.Mesh, key.Name)
		return err
	}
	labels := "{}"
	if len(next.Labels) > 0 {
		b, err := json.Marshal(next.Labels)
		if err != nil {
			return err
		}
		labels = string(b)
	}
	args := []any{key.Type, key.Mesh, key.Name, next.Version, next.Spec, labels,
		next.CreationTime.UnixNano(), next.ModificationTime.UnixNano()}
	if !exists {
		// A plain INSERT: a concurrent create of the same key fails with a
		// unique violation instead of being silently overwritten.
		_, err := tx.Exec(ctx, `INSERT INTO resources (`+columns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, args...)
		return err
	}
	_, err := tx.Exec(ctx, `UPDATE resources SET version = $4, spec = $5, labels = $6, created_at = $7, modified_at = $8
		WHERE type = $1 AND mesh = $2 AND name = $3`, args...)
	return err
}

// notification is the NOTIFY payload.
type notification struct {
	Seq      int               `json:"seq"` // op index: keeps payloads of one commit distinct
	Kind     store.EventKind   `json:"kind"`
	Type     string            `json:"type"`
	Mesh     string            `json:"mesh"`
	Name     string            `json:"name"`
	Version  int64             `json:"version"`
	Created  int64             `json:"created"`
	Modified int64             `json:"modified"`
	Labels   map[string]string `json:"labels,omitempty"`
	Spec     []byte            `json:"spec,omitempty"`
	// Omitted is set when Spec and Labels did not fit in the payload.
	Omitted bool `json:"omitted,omitempty"`
	// Barrier, when set, marks a Watch start point; no other field is set.
	Barrier string `json:"barrier,omitempty"`
}

func encodeNotification(seq int, ev store.Event) (string, error) {
	r := ev.Record
	n := notification{
		Seq: seq, Kind: ev.Kind, Type: r.Type, Mesh: r.Mesh, Name: r.Name, Version: r.Version,
		Created: r.CreationTime.UnixNano(), Modified: r.ModificationTime.UnixNano(),
		Labels: r.Labels, Spec: r.Spec,
	}
	b, err := json.Marshal(n)
	if err != nil {
		return "", fmt.Errorf("encode notification: %w", err)
	}
	if len(b) > maxPayload {
		n.Labels, n.Spec, n.Omitted = nil, nil, true
		if b, err = json.Marshal(n); err != nil {
			return "", fmt.Errorf("encode notification: %w", err)
		}
		if len(b) > maxPayload {
			return "", fmt.Errorf("encode notification: key of %s too long for NOTIFY", r.Key)
		}
	}
	return string(b), nil
}

func (s *Store) connectListener(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("listener: connect: %w", err)
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{Channel}.Sanitize()); err != nil {
		_ = conn.Close(context.Background())
		return nil, fmt.Errorf("listener: listen: %w", err)
	}
	return conn, nil
}

// listen turns notifications into events until ctx is cancelled, reconnecting
// with backoff when the connection breaks.
func (s *Store) listen(ctx context.Context, conn *pgx.Conn) {
	defer close(s.listenDone)
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	backoff := 100 * time.Millisecond
	for {
		if conn == nil {
			var err error
			if conn, err = s.connectListener(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.logger.Warn("listener reconnect failed", "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return
				}
				backoff = min(2*backoff, 10*time.Second)
				continue
			}
			s.logger.Warn("listener reconnected; change events may have been missed")
			backoff = 100 * time.Millisecond
		}
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.logger.Warn("listener connection lost", "err", err)
			_ = conn.Close(context.Background())
			conn = nil
			continue
		}
		ev, barrier, err := s.decode(ctx, n.Payload)
		if barrier != "" {
			s.barrierMu.Lock()
			activate := s.barriers[barrier]
			delete(s.barriers, barrier)
			s.barrierMu.Unlock()
			if activate != nil { // else another process's barrier
				activate()
			}
			continue
		}
		if err != nil {
			s.logger.Error("dropping undecodable change event", "err", err, "payload", n.Payload)
			continue
		}
		s.hub.Publish([]store.Event{ev})
	}
}

// decode turns a payload into an event, or returns the token of a barrier.
func (s *Store) decode(ctx context.Context, payload string) (store.Event, string, error) {
	var n notification
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return store.Event{}, "", err
	}
	if n.Barrier != "" {
		return store.Event{}, n.Barrier, nil
	}
	if n.Kind < store.EventCreated || n.Kind > store.EventDeleted {
		return store.Event{}, "", fmt.Errorf("unknown event kind %d", n.Kind)
	}
	r := store.Record{
		Key:     store.Key{Type: n.Type, Mesh: n.Mesh, Name: n.Name},
		Version: n.Version, Spec: n.Spec, Labels: n.Labels,
		CreationTime:     time.Unix(0, n.Created).UTC(),
		ModificationTime: time.Unix(0, n.Modified).UTC(),
	}
	if n.Omitted && n.Kind != store.EventDeleted {
		cur, err := s.Get(ctx, r.Key)
		switch {
		case err == nil && cur.Version == r.Version:
			r = cur
		case err == nil || errors.Is(err, store.ErrNotFound):
			s.logger.Debug("record changed before its large event was reloaded; delivering without spec",
				"key", r.Key.String(), "version", r.Version)
		default:
			s.logger.Warn("reloading record for change event failed; delivering without spec",
				"key", r.Key.String(), "err", err)
		}
	}
	return store.Event{Kind: n.Kind, Record: storeutil.Clone(r)}, "", nil
}

// Watch implements store.Store. Watchers see commits of every process using
// the database.
func (s *Store) Watch(ctx context.Context, types ...string) <-chan store.Event {
	ch, activate := s.hub.WatchInactive(ctx, types...)
	token := rand.Text()
	s.barrierMu.Lock()
	s.barriers[token] = activate
	s.barrierMu.Unlock()
	if err := s.sendBarrier(ctx, token); err != nil {
		// Without a barrier, start now: the watcher may see a few events of
		// commits that finished just before this call.
		s.logger.Warn("watch barrier failed; starting watcher without it", "err", err)
		s.barrierMu.Lock()
		delete(s.barriers, token)
		s.barrierMu.Unlock()
		activate()
	}
	return ch
}

func (s *Store) sendBarrier(ctx context.Context, token string) error {
	payload, err := json.Marshal(notification{Barrier: token})
	if err != nil {
		return err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	_, err = conn.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, string(payload))
	return err
}

// Close implements store.Store. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stopListen()
		<-s.listenDone
		s.hub.Close()
		s.pool.Close()
	})
	return nil
}
