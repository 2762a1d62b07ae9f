// Package postgres is the shared-database store.Store backend (pgx/v5), for
// several control planes on one database.
//
// Concurrent Commit calls of a process share a transaction (group commit,
// groupcommit.go and bulk.go) that locks the touched rows with SELECT ...
// FOR UPDATE (FOR SHARE for records only required) and checks versions. A
// transaction that changes anything then takes the next number of a
// per-database commit sequence (one row, updated by its last statement, so
// its lock orders commits and numbers follow commit order), writes each
// event under (sequence, index) to the changes table and sends the commit's
// number with pg_notify('meshca_resources', '<N>'); the notification is
// delivered only if the commit succeeds, in commit order. Every Store
// LISTENs on the channel and, for each notification (or all those that
// arrived while it read), reads the events of every commit up to it from
// the changes table and feeds its watchers, so watchers see the commits of
// every process, including their own, whatever the size of their records.
//
// No event is lost to a broken listener connection: the listener remembers
// the number of the last commit it delivered and, once reconnected,
// delivers every commit after it, in order, before any new one. The
// changes table keeps events for changeRetention (pruned by every
// instance); a listener away longer than that logs how many commits it
// lost and counts them in a metric.
//
// Watch starts a watcher inactive and sends a barrier notification; the
// listener activates the watcher when the barrier arrives, so it sees exactly
// the commits ordered after its Watch call. Times are stored as UTC unix
// nanoseconds (BIGINT) to keep nanosecond precision like the other backends.
package postgres

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

	// catchingUp is set (under barrierMu) while the listener delivers
	// events from the changes table: a watcher started then is activated at
	// once, since its barrier could arrive after events it must see.
	catchingUp bool
	// listenerPID is the backend process id of the listener's connection.
	listenerPID atomic.Uint32

	m *metrics
	// beforeReconnect, when set (tests), runs before each listener reconnect.
	beforeReconnect func()

	// The group-commit queue (groupcommit.go).
	q *storeutil.GroupQueue

	stopListen context.CancelFunc
	listenDone chan struct{}
	pruneDone  chan struct{}
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
		// The commit sequence: one row, incremented by every commit that
		// changes something.
		`CREATE TABLE commit_seq (seq BIGINT NOT NULL)`,
		`INSERT INTO commit_seq (seq) VALUES (0)`,
		// Events by position, for listeners catching up after a reconnect
		// (replaced by steps 8-10).
		`CREATE TABLE changes (
			seq          BIGINT NOT NULL,
			idx          INTEGER NOT NULL,
			committed_at BIGINT NOT NULL, -- unix nanoseconds, UTC
			payload      TEXT NOT NULL,
			PRIMARY KEY (seq, idx)
		)`,
		`CREATE INDEX changes_committed_at ON changes (committed_at)`,
		// pkg/leader's lease (times by the database's clock) and its list
		// of instances.
		`CREATE TABLE leader_lease (
			name        TEXT PRIMARY KEY,
			holder      TEXT NOT NULL,
			acquired_at TIMESTAMPTZ NOT NULL,
			renewed_at  TIMESTAMPTZ NOT NULL,
			expires_at  TIMESTAMPTZ NOT NULL
		)`,
		`CREATE TABLE control_planes (
			id           TEXT PRIMARY KEY,
			address      TEXT NOT NULL,
			version      TEXT NOT NULL,
			started_at   TIMESTAMPTZ NOT NULL,
			heartbeat_at TIMESTAMPTZ NOT NULL
		)`,
		// Events in typed columns, read by every listener: notifications
		// carry only the commit's number (changes.go). The events of the
		// old layout are a few minutes' worth, kept for listeners away: an
		// upgrade stops every instance of the old layout first (a
		// running one fails its next commit, whose log row no longer fits;
		// one started after refuses the newer schema).
		`DROP TABLE changes`,
		`CREATE TABLE changes (
			seq          BIGINT NOT NULL,
			idx          INTEGER NOT NULL,
			committed_at BIGINT NOT NULL, -- unix nanoseconds, UTC
			kind         SMALLINT NOT NULL,
			type         TEXT NOT NULL,
			mesh         TEXT NOT NULL,
			name         TEXT NOT NULL,
			version      BIGINT NOT NULL,
			spec         BYTEA,
			labels       TEXT NOT NULL,
			created_at   BIGINT NOT NULL, -- unix nanoseconds, UTC
			modified_at  BIGINT NOT NULL, -- unix nanoseconds, UTC
			PRIMARY KEY (seq, idx)
		)`,
		`CREATE INDEX changes_committed_at ON changes (committed_at)`,
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
	// A process paused inside a transaction (SIGSTOP, a VM freeze) must not
	// hold its row locks forever: the leader's term record is locked by
	// every fenced commit, and a new leader waits for them.
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; !ok {
		cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "10s"
	}
	// Every read of the store is by key (or key prefix), and must stay an
	// index scan however the statistics looked when it was planned. pgx
	// prepares each statement once per connection and PostgreSQL keeps its
	// generic plan after five executions: planned while a fresh database's
	// tables were analyzed nearly empty (autovacuum does that early), that
	// plan was a sequential scan, kept as the table grew to 20,000 rows:
	// each group's reads then scanned it all (350 million rows read while
	// 10,000 data planes registered, 25 s of PostgreSQL CPU instead of
	// 1.7 s; BENCHMARKS.md §12). With sequential scans off, the planner
	// takes the primary key whenever it can; tables without a usable index
	// (the one-row commit sequence, control_planes' expiry) are still
	// scanned, at a cost the planner counts as huge: so JIT compilation,
	// which PostgreSQL starts above a cost threshold, is off too (it took
	// 100 ms to compile each commit's last statement; no statement of the
	// store touches more than a few hundred rows, where JIT never pays).
	for param, value := range map[string]string{"enable_seqscan": "off", "jit": "off"} {
		if _, ok := cfg.ConnConfig.RuntimeParams[param]; !ok {
			cfg.ConnConfig.RuntimeParams[param] = value
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	s := &Store{
		pool:       pool,
		logger:     logger.With("store", "postgres"),
		hub:        storeutil.NewHub(),
		listenDone: make(chan struct{}),
		pruneDone:  make(chan struct{}),
		barriers:   make(map[string]func()),
		m:          newMetrics(),
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
	// Start after every commit made so far: they are in the state the
	// caller reads next.
	var start int64
	if err := listener.QueryRow(ctx, `SELECT seq FROM commit_seq`).Scan(&start); err != nil {
		_ = listener.Close(context.Background())
		s.pool.Close()
		return nil, fmt.Errorf("postgres store: read commit sequence: %w", err)
	}
	listenCtx, cancel := context.WithCancel(context.Background())
	s.stopListen = cancel
	go s.listen(listenCtx, listener, start)
	go s.prune(listenCtx)
	s.q = storeutil.NewGroupQueue(maxGroup, ErrClosed, s.commitGroup)
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
	var r *store.Record
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		var err error
		r, err = get(ctx, conn, getQuery, key)
		return err
	})
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
	var out []store.Record
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT `+columns+` FROM resources
			WHERE type = $1 AND ($2 = '' OR mesh = $2) ORDER BY mesh, name`, typ, mesh)
		if err != nil {
			return err
		}
		defer rows.Close()
		out, err = storeutil.CollectRecords(rows)
		return err
	})
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
// (SQLSTATE 53100 disk_full) with store.ErrStorageFull, and those that say
// it cannot be reached with store.ErrUnavailable.
func classify(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pgErr) && pgErr.Code == "53100":
		return fmt.Errorf("%w: %w", store.ErrStorageFull, err)
	case unreachable(err):
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// unreachable reports whether err says the server could not be reached or
// dropped the connection: a failed connect, a connection closed under the
// call, SQLSTATE class 08 (connection exception) or 57P01..57P03 (the
// server shutting down or starting up).
func unreachable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03":
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	return errors.As(err, &connectErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

// withConn runs fn on a pooled connection. A connection the server closed
// while it sat in the pool (a restart ends every session) fails its first
// use: fn, a read, is then run again on another, up to the pool's size.
func (s *Store) withConn(ctx context.Context, fn func(*pgxpool.Conn) error) error {
	for attempt := 0; ; attempt++ {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return classify(err)
		}
		err = fn(conn)
		dead := err != nil && conn.Conn().IsClosed()
		conn.Release()
		if !dead || attempt >= poolSize || ctx.Err() != nil {
			return classify(err)
		}
	}
}

// applyOps applies one call's ops in tx and returns their events. An error
// from the database may leave tx in the aborted state (the caller rolls
// back to its savepoint).
func applyOps(ctx context.Context, tx pgx.Tx, now time.Time, ops []store.Op) ([]store.Event, error) {
	var events []store.Event
	for _, op := range ops {
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
				return nil, fmt.Errorf("commit: read %s records of mesh %q: %w", op.Record.Type, op.Record.Mesh, err)
			}
			return nil, fmt.Errorf("commit: %w", storeutil.NotNone(op, name))
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
			return nil, fmt.Errorf("commit: read %s: %w", key, err)
		}
		next, ev, err := storeutil.Apply(cur, op, now)
		if err != nil {
			return nil, fmt.Errorf("commit: %w", err)
		}
		if op.Kind == store.OpRequire {
			continue
		}
		if err := write(ctx, tx, key, cur != nil, next); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation: concurrent create
				if op.Kind == store.OpCreate {
					return nil, fmt.Errorf("commit: create %s: %w", key, store.ErrAlreadyExists)
				}
				return nil, fmt.Errorf("commit: upsert %s: created concurrently: %w", key, store.ErrConflict)
			}
			return nil, fmt.Errorf("commit: write %s: %w", key, err)
		}
		events = append(events, ev)
	}
	return events, nil
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

// Watch implements store.Store. Watchers see commits of every process using
// the database.
func (s *Store) Watch(ctx context.Context, types ...string) <-chan store.Event {
	ch, activate := s.hub.WatchInactive(ctx, types...)
	token := rand.Text()
	s.barrierMu.Lock()
	if s.catchingUp {
		// Events after this call may be delivered from the changes table
		// before the barrier's notification arrives: start now (the
		// watcher may see a few events of commits just before this call).
		s.barrierMu.Unlock()
		activate()
		return ch
	}
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
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	_, err = conn.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, barrierPrefix+token)
	return err
}

// Close implements store.Store. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.q.Close()
		s.stopListen()
		<-s.listenDone
		<-s.pruneDone
		s.hub.Close()
		s.pool.Close()
	})
	return nil
}
