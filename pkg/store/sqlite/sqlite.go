// Package sqlite is the embedded store.Store backend, built on the pure-Go
// modernc.org/sqlite driver.
//
// The database holds CA keys: its directory is created 0700 and the file is
// kept at 0600 (SQLite gives the -wal and -shm files the mode of the
// database file). Writes are serialized in-process by a mutex and across
// processes by BEGIN IMMEDIATE plus busy_timeout, so concurrent commits wait
// instead of failing with SQLITE_BUSY. WAL mode lets readers run alongside the
// writer. Times are stored as UTC unix nanoseconds.
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
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"meshca/pkg/store"
	"meshca/pkg/store/internal/storeutil"
)

const (
	busyTimeout = 10 * time.Second
	// maxConns bounds the pool: one writer at a time plus concurrent readers.
	maxConns = 4
)

// Store is a store.Store backed by one SQLite file.
type Store struct {
	db      *sql.DB
	getStmt *sql.Stmt // prepared once: Get is the hot path
	logger  *slog.Logger
	hub     *storeutil.Hub

	// wmu serializes commits and their Publish calls, so watchers see events
	// in commit order and in-process writers never contend inside SQLite.
	wmu       sync.Mutex
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

	s := &Store{db: db, logger: logger.With("store", "sqlite", "path", abs), hub: storeutil.NewHub()}
	if err := s.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlite store: %s: %w", abs, err)
	}
	if s.getStmt, err = db.PrepareContext(ctx, getQuery); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlite store: %s: prepare: %w", abs, err)
	}
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

func (s *Store) migrate(ctx context.Context) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var current int
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&current)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	case err != nil:
		return fmt.Errorf("migrate: read schema version: %w", err)
	}
	steps := migrations()
	if current > len(steps) {
		return fmt.Errorf("migrate: database schema version %d is newer than this binary supports (%d)", current, len(steps))
	}
	for i := current; i < len(steps); i++ {
		if _, err := tx.ExecContext(ctx, steps[i]); err != nil {
			return fmt.Errorf("migrate: step %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(steps)); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if current < len(steps) {
		s.logger.Info("migrated schema", "from", current, "to", len(steps))
	}
	return nil
}

const (
	columns  = `type, mesh, name, version, spec, labels, created_at, modified_at`
	getQuery = `SELECT ` + columns + ` FROM resources WHERE type = ? AND mesh = ? AND name = ?`
)

type scanner interface{ Scan(dest ...any) error }

func scanRecord(sc scanner) (store.Record, error) {
	var (
		r                 store.Record
		labels            string
		created, modified int64
	)
	if err := sc.Scan(&r.Type, &r.Mesh, &r.Name, &r.Version, &r.Spec, &labels, &created, &modified); err != nil {
		return store.Record{}, err
	}
	if labels != "" && labels != "{}" {
		if err := json.Unmarshal([]byte(labels), &r.Labels); err != nil {
			return store.Record{}, fmt.Errorf("decode labels of %s: %w", r.Key, err)
		}
	}
	r.CreationTime = time.Unix(0, created).UTC()
	r.ModificationTime = time.Unix(0, modified).UTC()
	return storeutil.Clone(r), nil
}

func get(ctx context.Context, stmt *sql.Stmt, key store.Key) (*store.Record, error) {
	r, err := scanRecord(stmt.QueryRowContext(ctx, key.Type, key.Mesh, key.Name))
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
	var out []store.Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", typ, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", typ, err)
	}
	return out, nil
}

// Commit implements store.Store: all ops run in one IMMEDIATE transaction.
func (s *Store) Commit(ctx context.Context, ops ...store.Op) error {
	if err := storeutil.ValidateOps(ops); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if len(ops) == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("commit: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()

	getStmt := tx.StmtContext(ctx, s.getStmt)
	now := storeutil.Now()
	events := make([]store.Event, 0, len(ops))
	for _, op := range ops {
		key := op.Record.Key
		cur, err := get(ctx, getStmt, key)
		if err != nil {
			return fmt.Errorf("commit: read %s: %w", key, err)
		}
		next, ev, err := storeutil.Apply(cur, op, now)
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		if err := write(ctx, tx, key, next); err != nil {
			return fmt.Errorf("commit: write %s: %w", key, err)
		}
		events = append(events, ev)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.hub.Publish(events)
	return nil
}

func write(ctx context.Context, tx *sql.Tx, key store.Key, next *store.Record) error {
	if next == nil {
		_, err := tx.ExecContext(ctx, `DELETE FROM resources WHERE type = ? AND mesh = ? AND name = ?`,
			key.Type, key.Mesh, key.Name)
		return err
	}
	labels := []byte("{}")
	if len(next.Labels) > 0 {
		var err error
		if labels, err = json.Marshal(next.Labels); err != nil {
			return err
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO resources (`+columns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (type, mesh, name) DO UPDATE SET
			version = excluded.version, spec = excluded.spec, labels = excluded.labels,
			created_at = excluded.created_at, modified_at = excluded.modified_at`,
		key.Type, key.Mesh, key.Name, next.Version, next.Spec, string(labels),
		next.CreationTime.UnixNano(), next.ModificationTime.UnixNano())
	return err
}

// Watch implements store.Store. Only commits made through s are seen.
func (s *Store) Watch(ctx context.Context) <-chan store.Event {
	return s.hub.Watch(ctx)
}

// Close implements store.Store: it closes watch channels and the database.
// It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.hub.Close()
		s.wmu.Lock()
		defer s.wmu.Unlock()
		s.closeErr = errors.Join(s.getStmt.Close(), s.db.Close())
	})
	return s.closeErr
}
