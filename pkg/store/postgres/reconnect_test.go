package postgres

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"meshca/pkg/store"
)

// Every session of the store ended by the server (as a restart does) while
// its connections sat in the pool: the next reads and commits succeed on
// new connections instead of failing on the dead ones.
func TestPooledConnectionsEndedByServer(t *testing.T) {
	s := openEmpty(t)
	key := store.Key{Type: "T", Mesh: "m", Name: "a"}
	if err := store.Create(t.Context(), s, store.Record{Key: key, Spec: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	// Fill the pool with idle connections, and end their sessions.
	var pids []int32
	var conns []*pgxpool.Conn
	for range poolSize {
		c, err := s.pool.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		pids = append(pids, int32(c.Conn().PgConn().PID()))
	}
	for _, c := range conns {
		c.Release()
	}
	admin, err := pgx.Connect(t.Context(), dsn(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var n int
	if err := admin.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		FROM unnest($1::int[]) AS pid`, pids).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != poolSize {
		t.Fatalf("terminated %d sessions, want the pool's %d", n, poolSize)
	}
	if _, err := s.Get(t.Context(), key); err != nil {
		t.Fatalf("get after the server ended the pool's sessions: %v", err)
	}
	if err := store.Create(t.Context(), s, store.Record{Key: store.Key{Type: "T", Mesh: "m", Name: "b"}, Spec: []byte(`{}`)}); err != nil {
		t.Fatalf("commit after the server ended the pool's sessions: %v", err)
	}
	if _, err := s.List(t.Context(), "T", "m"); err != nil {
		t.Fatalf("list after the server ended the pool's sessions: %v", err)
	}
}

// A database nobody listens on: the failure says store.ErrUnavailable (the
// API answers 503 with Retry-After).
func TestUnreachableIsUnavailable(t *testing.T) {
	_, err := Open(t.Context(), "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2", nil)
	if err == nil || !unreachable(err) {
		t.Fatalf("open of a database nobody listens on: %v, want an unreachable error", err)
	}
	if err := classify(err); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("classify(%v) is not store.ErrUnavailable", err)
	}
}
