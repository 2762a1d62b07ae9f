// The postgres tests run only when MESHCA_TEST_POSTGRES_DSN is set; they own
// the database they point at (tables are truncated). CI on Debian/Ubuntu:
//
//	apt-get update && apt-get install -y postgresql
//	pg_ctlcluster 15 main start   # version per `pg_lsclusters`
//	su postgres -c "psql -c \"CREATE ROLE meshca LOGIN PASSWORD 'meshca'\" -c 'CREATE DATABASE meshca_test OWNER meshca'"
//	MESHCA_TEST_POSTGRES_DSN='postgres://meshca:meshca@localhost:5432/meshca_test?sslmode=disable' \
//		go test -race ./pkg/store/postgres/
//
// Or with a container: docker run -d -p 5432:5432 -e POSTGRES_USER=meshca
// -e POSTGRES_PASSWORD=meshca -e POSTGRES_DB=meshca_test postgres:16.
package postgres

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"meshca/pkg/store"
	"meshca/pkg/store/storetest"
)

func dsn(t *testing.T) string {
	t.Helper()
	d := os.Getenv("MESHCA_TEST_POSTGRES_DSN")
	if d == "" {
		t.Skip("MESHCA_TEST_POSTGRES_DSN not set")
	}
	return d
}

// openEmpty opens a store and empties the resources table. Tests in this
// package must not run in parallel: they share the database.
func openEmpty(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn(t), nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.pool.Exec(t.Context(), `TRUNCATE resources, changes`); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	dsn(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openEmpty(t) })
}

// Two control planes on one database see each other's commits.
func TestCrossProcessEvents(t *testing.T) {
	a := openEmpty(t)
	b, err := Open(t.Context(), dsn(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ch := b.Watch(t.Context())

	big := []byte(strings.Repeat("x", 20000)) // too large for a NOTIFY payload
	r := store.Record{Key: store.Key{Type: "T", Mesh: "m", Name: "big"}, Spec: big, Labels: map[string]string{"k": "v"}}
	if err := store.Create(t.Context(), a, r); err != nil {
		t.Fatal(err)
	}
	ev := next(t, ch)
	if ev.Kind != store.EventCreated || ev.Record.Key != r.Key || ev.Record.Version != 1 {
		t.Fatalf("event = %v %s v%d, want created v1", ev.Kind, ev.Record.Key, ev.Record.Version)
	}
	if len(ev.Record.Spec) != len(big) || ev.Record.Labels["k"] != "v" {
		t.Errorf("large create event: spec %d bytes, labels %v; want reloaded record", len(ev.Record.Spec), ev.Record.Labels)
	}
	if err := store.Delete(t.Context(), a, r.Key); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch); ev.Kind != store.EventDeleted || ev.Record.Key != r.Key || ev.Record.Version != 1 {
		t.Fatalf("event = %v %s v%d, want deleted v1", ev.Kind, ev.Record.Key, ev.Record.Version)
	}
}

func next(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for event")
		return store.Event{}
	}
}

func TestConcurrentCreateSameKey(t *testing.T) {
	a := openEmpty(t)
	key := store.Key{Type: "T", Name: "race"}
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- store.Create(t.Context(), a, store.Record{Key: key}) }()
	}
	var ok int
	for range 8 {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrAlreadyExists):
			t.Errorf("Create = %v, want nil or ErrAlreadyExists", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d creates succeeded, want 1", ok)
	}
}
