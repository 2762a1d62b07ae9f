// Package sqlite is the embedded store.Store backend, built on the pure-Go
// modernc.org/sqlite driver.
//
// The database holds CA keys: its directory is created 0700 and the file is
// kept at 0600 (SQLite gives the -wal and -shm files the mode of the
// database file). WAL mode lets readers run alongside the writer. Times are
// stored as UTC unix nanoseconds.
//
// # Group commit
//
// Every transaction ends with an fsync (synchronous=FULL: the file holds CA
// keys), so one transaction per Commit caps throughput at one commit per
// fsync. Instead, Commit calls are queued to a single writer goroutine. The
// writer takes everything queued (up to maxBatch calls), runs ONE transaction
// and applies each call's ops inside its own SAVEPOINT: a call whose ops fail
// is rolled back to its savepoint and gets its error alone, the others are
// released. One COMMIT (one fsync) then makes the whole batch durable, the
// events of the successful calls are published in commit order, and every
// caller gets its result. Calls of a batch are applied one after another, so
// a call sees the changes of the calls before it exactly as if each had been
// committed on its own; per-call atomicity and error semantics are unchanged.
// The writer never waits to fill a batch: a lone Commit runs at once, and
// batches form naturally from the calls that queue up while the previous
// batch is being fsynced.
//
// Across processes, writes are serialized by BEGIN IMMEDIATE plus
// busy_timeout, so concurrent writers wait instead of failing with
// SQLITE_BUSY.
//
// Watchers see only commits made through this Store value.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"meshca/pkg/store"
	"meshca/pkg/store/internal/storeutil"
)

const (
	busyTimeout = 10 * time.Second
	// maxConns bounds the pool: the writer goroutine plus concurrent readers.
	maxConns = 4
	// maxBatch bounds how many Commit calls share one transaction, which
	// bounds the latency a batch adds to its last call.
	maxBatch = 256
)

// ErrClosed is returned by Commit once the Store is closed, including to
// calls that were still queued (not yet applied) when Close was called.
var ErrClosed = errors.New("sqlite store: closed")

// Store is a store.Store backed by one SQLite file.
type Store struct {
	db     *sql.DB
	logger *slog.Logger
	hub    *storeutil.Hub

	// Prepared once on the pool; transactions reuse them per connection.
	getStmt, upsertStmt, deleteStmt      *sql.Stmt
	anyStmt                              *sql.Stmt
	savepointStmt, releaseStmt, undoStmt *sql.Stmt

	// The Commit queue, drained by the writer goroutine. Only the writer
	// writes to the database and publishes events, so watchers see events in
	// commit order and in-process writers never contend inside SQLite.
	q *storeutil.GroupQueue

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// migrations are applied in order; schema_version records how many ran.
// Append only: never edit a released step.
func migrations() []string {
	return []string{
		`CREATE TABLE resources (
			type        TEXT    NOT NULL,
			mesh        TEXT    NOT NULL,
			name        TEXT    NOT NULL,
			version     INTEGER NOT NULL,
			spec        BLOB,
			labels      TEXT    NOT NULL DEFAULT '{}',
			created_at  INTEGER NOT NULL, -- unix nanoseconds, UTC
			modified_at INTEGER NOT NULL, -- unix nanoseconds, UTC
			PRIMARY KEY (type, mesh, name)
		) WITHOUT ROWID`,
	}
}

// Open opens (creating if needed) the database at path and migrates its
// schema. A nil logger discards logs.
func Open(ctx context.Context, path string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: %w", err)
	}
	if err := prepareFile(abs, logger); err != nil {
		return nil, fmt.Errorf("sqlite store: %w", err)
	}

	q := url.Values{}
	q.Set("_txlock", "immediate")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)") // CA keys: durable over fast
	q.Add("_pragma", "foreign_keys(ON)")
	dsn := (&url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}).String()

	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: open %s: %w", abs, err)
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxIdleTime(0)

	s := &Store{
		db:     db,
		logger: logger.With("store", "sqlite", "path", abs),
		hub:    storeutil.NewHub(),
	}
	if err := s.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlite store: %s: %w", abs, err)
	}
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&s.getStmt, getQuery},
		{&s.anyStmt, anyQuery},
		{&s.upsertStmt, upsertQuery},
		{&s.deleteStmt, deleteQuery},
		{&s.savepointStmt, `SAVEPOINT commit_call`},
		{&s.releaseStmt, `RELEASE commit_call`},
		{&s.undoStmt, `ROLLBACK TO commit_call`},
	} {
		if *p.stmt, err = db.PrepareContext(ctx, p.query); err != nil {
			_ = db.Close() // also closes the statements prepared so far
			return nil, fmt.Errorf("sqlite store: %s: prepare: %w", abs, err)
		}
	}
	s.q = storeutil.NewGroupQueue(maxBatch, ErrClosed, s.commitBatch)
	return s, nil
}

// prepareFile creates the parent directory (0700) and the database file
// (0600) before SQLite does, and tightens an existing file's mode.
func prepareFile(path string, logger *slog.Logger) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		logger.Warn("tightening database file permissions", "path", path, "mode", mode.String())
		if err := f.Chmod(0o600); err != nil {
			return fmt.Errorf("chmod database file: %w", err)
		}
	}
	return nil
}

// migrate runs from Open, before the writer goroutine starts.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	from, to, err := storeutil.Migrate(ctx, sqlMigration{tx}, migrations(), `UPDATE schema_version SET version = ?`)
	if err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if from < to {
		s.logger.Info("migrated schema", "from", from, "to", to)
	}
	return nil
}

// sqlMigration adapts a database/sql transaction to storeutil.MigrationTx.
type sqlMigration struct{ tx *sql.Tx }

func (m sqlMigration) Exec(ctx context.Context, query string, args ...any) error {
	_, err := m.tx.ExecContext(ctx, query, args...)
	return err
}

func (m sqlMigration) Version(ctx context.Context) (int, bool, error) {
	var v int
	err := m.tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return v, err == nil, err
}

const (
	columns     = storeutil.Columns
	getQuery    = `SELECT ` + columns + ` FROM resources WHERE type = ? AND mesh = ? AND name = ?`
	anyQuery    = `SELECT name FROM resources WHERE type = ? AND mesh = ? LIMIT 1`
	deleteQuery = `DELETE FROM resources WHERE type = ? AND mesh = ? AND name = ?`
	upsertQuery = `INSERT INTO resources (` + columns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (type, mesh, name) DO UPDATE SET
			version = excluded.version, spec = excluded.spec, labels = excluded.labels,
			created_at = excluded.created_at, modified_at = excluded.modified_at`
)

func get(ctx context.Context, stmt *sql.Stmt, key store.Key) (*store.Record, error) {
	r, err := storeutil.ScanRecord(stmt.QueryRowContext(ctx, key.Type, key.Mesh, key.Name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key store.Key) (store.Record, error) {
	r, err := get(ctx, s.getStmt, key)
	if err != nil {
		return store.Record{}, fmt.Errorf("get %s: %w", key, err)
	}
	if r == nil {
		return store.Record{}, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return *r, nil
}

// List implements store.Store. SQLite's default BINARY collation orders like
// Go string comparison.
func (s *Store) List(ctx context.Context, typ, mesh string) ([]store.Record, error) {
	query := `SELECT ` + columns + ` FROM resources WHERE type = ? ORDER BY mesh, name`
	args := []any{typ}
	if mesh != "" {
		query = `SELECT ` + columns + ` FROM resources WHERE type = ? AND mesh = ? ORDER BY name`
		args = append(args, mesh)
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
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

// queueState tells how many calls were ever queued, how many wait now and
// whether Close has begun (tests use it to order calls without sleeping).
func (s *Store) queueState() (enqueued, waiting int, closed bool) {
	return s.q.State()
}

// Commit implements store.Store. The call is queued to the writer goroutine,
// which applies it atomically inside its own savepoint of a group
// transaction (see the package documentation). If ctx ends while the call is
// still queued, Commit returns ctx.Err() and the ops are never applied; once
// the writer has started applying them, Commit reports what happened.
func (s *Store) Commit(ctx context.Context, ops ...store.Op) error {
	if err := storeutil.ValidateOps(ops); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if len(ops) == 0 {
		return nil
	}
	return s.q.Submit(ctx, ops)
}

// classify marks errors that say the disk is full (SQLITE_FULL, or ENOSPC
// from the file system) with store.ErrStorageFull.
func classify(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL || errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", store.ErrStorageFull, err)
	}
	return err
}

// txStmts are the Store's prepared statements bound to one transaction.
type txStmts struct {
	get, any, upsert, delete, savepoint, release, undo *sql.Stmt
}

// commitBatch applies the calls of batch, in order, each in its own
// savepoint of one transaction, commits it, publishes the events of the
// calls that succeeded and hands every claimed call its result.
func (s *Store) commitBatch(batch []*storeutil.Request) {
	// Callers' contexts must not reach SQLite: an interrupted statement can
	// roll back the whole shared transaction. A call's ctx is checked before
	// its ops are applied; after that, the call runs to completion.
	ctx := context.Background()
	fail := func(reqs []*storeutil.Request, err error) {
		for _, r := range reqs {
			if r.Claim() {
				r.Finish(err)
			}
		}
	}
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock in the DSN)
	if err != nil {
		fail(batch, fmt.Errorf("commit: begin: %w", classify(err)))
		return
	}
	st := &txStmts{
		get:       tx.StmtContext(ctx, s.getStmt),
		any:       tx.StmtContext(ctx, s.anyStmt),
		upsert:    tx.StmtContext(ctx, s.upsertStmt),
		delete:    tx.StmtContext(ctx, s.deleteStmt),
		savepoint: tx.StmtContext(ctx, s.savepointStmt),
		release:   tx.StmtContext(ctx, s.releaseStmt),
		undo:      tx.StmtContext(ctx, s.undoStmt),
	}

	claimed := make([]*storeutil.Request, 0, len(batch))
	for i, r := range batch {
		if !r.Claim() {
			continue // its caller gave up while it was queued
		}
		claimed = append(claimed, r)
		if err := r.Ctx.Err(); err != nil {
			r.Err = err
			continue
		}
		if err := applyCall(ctx, st, r); err != nil {
			// The transaction is no longer usable (e.g. SQLite rolled it
			// back after an I/O error or a full disk): nothing of this batch
			// is committed. Calls that already had their own outcome keep
			// it; the others get the error.
			_ = tx.Rollback()
			err = fmt.Errorf("commit: batch aborted: %w", classify(err))
			s.logger.Error("group commit aborted", "calls", len(batch), "error", err)
			for _, c := range claimed {
				if c.Err != nil {
					c.Finish(c.Err)
				} else {
					c.Finish(err)
				}
			}
			fail(batch[i+1:], err)
			return
		}
	}

	if err := tx.Commit(); err != nil {
		err = fmt.Errorf("commit: %w", classify(err))
		for _, r := range claimed {
			r.Finish(err)
		}
		return
	}
	var events []store.Event
	for _, r := range claimed {
		events = append(events, r.Events...)
	}
	s.hub.Publish(events) // before any caller returns, as with a lone commit
	for _, r := range claimed {
		r.Finish(r.Err)
	}
}

// applyCall applies r's ops atomically inside a savepoint. If they fail, the
// failure is recorded in r.Err and the savepoint is rolled back; otherwise
// r.Events holds their events. A returned error means the transaction itself
// is no longer usable.
func applyCall(ctx context.Context, st *txStmts, r *storeutil.Request) error {
	if _, err := st.savepoint.ExecContext(ctx); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	events, err := applyOps(ctx, st, r.Ops)
	if err != nil {
		r.Err = fmt.Errorf("commit: %w", err)
		if _, err := st.undo.ExecContext(ctx); err != nil {
			return fmt.Errorf("rollback to savepoint after %w: %w", r.Err, err)
		}
	}
	if _, err := st.release.ExecContext(ctx); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	r.Events = events
	return nil
}

func applyOps(ctx context.Context, st *txStmts, ops []store.Op) ([]store.Event, error) {
	now := storeutil.Now()
	events := make([]store.Event, 0, len(ops))
	for _, op := range ops {
		if op.Kind == store.OpRequireNone {
			var name string
			switch err := st.any.QueryRowContext(ctx, op.Record.Type, op.Record.Mesh).Scan(&name); {
			case errors.Is(err, sql.ErrNoRows):
				continue
			case err != nil:
				return nil, fmt.Errorf("read %s records of mesh %q: %w", op.Record.Type, op.Record.Mesh, err)
			}
			return nil, storeutil.NotNone(op, name)
		}
		key := op.Record.Key
		cur, err := get(ctx, st.get, key)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		next, ev, err := storeutil.Apply(cur, op, now)
		if err != nil {
			return nil, err
		}
		if op.Kind == store.OpRequire {
			continue
		}
		if err := write(ctx, st, key, next); err != nil {
			return nil, fmt.Errorf("write %s: %w", key, err)
		}
		events = append(events, ev)
	}
	return events, nil
}

func write(ctx context.Context, st *txStmts, key store.Key, next *store.Record) error {
	if next == nil {
		_, err := st.delete.ExecContext(ctx, key.Type, key.Mesh, key.Name)
		return err
	}
	labels := []byte("{}")
	if len(next.Labels) > 0 {
		var err error
		if labels, err = json.Marshal(next.Labels); err != nil {
			return err
		}
	}
	_, err := st.upsert.ExecContext(ctx, key.Type, key.Mesh, key.Name, next.Version, next.Spec, string(labels),
		next.CreationTime.UnixNano(), next.ModificationTime.UnixNano())
	return err
}

// Watch implements store.Store. Only commits made through s are seen.
func (s *Store) Watch(ctx context.Context, types ...string) <-chan store.Event {
	return s.hub.Watch(ctx, types...)
}

// Close implements store.Store: it closes watch channels and the database.
// It is safe to call more than once.
// A batch already being applied completes (its callers get its outcome);
// Commit calls still queued, or made later, fail with ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.q.Close()
		s.hub.Close()
		var errs []error
		for _, st := range []*sql.Stmt{s.getStmt, s.anyStmt, s.upsertStmt, s.deleteStmt, s.savepointStmt, s.releaseStmt, s.undoStmt} {
			errs = append(errs, st.Close())
		}
		s.closeErr = errors.Join(append(errs, s.db.Close())...)
	})
	return s.closeErr
}
