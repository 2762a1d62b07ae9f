// Package pgtest gives tests that need PostgreSQL a database of their own
// on the server MESHCA_TEST_POSTGRES_DSN points at, so packages tested in
// parallel (go test ./...) do not empty each other's tables.
package pgtest

import (
	"context"
	"errors"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DSN returns the DSN of database name (created when missing) on the test
// server, or skips the test when MESHCA_TEST_POSTGRES_DSN is unset.
func DSN(t testing.TB, name string) string {
	t.Helper()
	base := os.Getenv("MESHCA_TEST_POSTGRES_DSN")
	if base == "" {
		t.Skip("MESHCA_TEST_POSTGRES_DSN not set: this test needs a PostgreSQL server (.ci/run starts one)")
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("MESHCA_TEST_POSTGRES_DSN: %v", err)
	}
	conn, err := pgx.Connect(context.Background(), base)
	if err != nil {
		t.Fatalf("MESHCA_TEST_POSTGRES_DSN: %v", err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), `CREATE DATABASE `+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505")) { // duplicate_database, or a concurrent create
		t.Fatalf("create test database %s: %v", name, err)
	}
	u.Path = "/" + name
	return u.String()
}
