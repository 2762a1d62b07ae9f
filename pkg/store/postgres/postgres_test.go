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
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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

// openTwo opens two stores on the emptied database, as two control planes.
func openTwo(t *testing.T) (a, b *Store) {
	t.Helper()
	a = openEmpty(t)
	b, err := Open(t.Context(), dsn(t), nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return a, b
}

func TestConformance(t *testing.T) {
	dsn(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openEmpty(t) })
}

// Two control planes on one database see each other's commits.
func TestCrossProcessEvents(t *testing.T) {
	a, b := openTwo(t)
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

// The store's sessions plan for keyed work whatever the statistics say: a
// keyed read is an index scan even on a table analyzed while nearly empty
// (the plan is kept per connection, a prepared statement's generic plan,
// while the table grows, and a sequential scan there reads every record
// for each read of one); and a commit's statements are not JIT-compiled
// (an unavoidable sequential scan is costed so high with them off that
// PostgreSQL would compile each commit's last statement, 100 ms).
func TestSessionsPlanForKeyedWork(t *testing.T) {
	s := openEmpty(t)
	for i := range 3 {
		if err := store.Create(t.Context(), s, store.Record{Key: store.Key{Type: "T", Name: fmt.Sprintf("r%d", i)}, Spec: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.pool.Exec(t.Context(), `ANALYZE resources`); err != nil {
		t.Fatal(err)
	}
	explain := func(query string, args ...any) string {
		t.Helper()
		rows, err := s.pool.Query(t.Context(), `EXPLAIN `+query, args...)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(plan, "\n")
	}
	if plan := explain(`SELECT type, mesh, name, version, spec, labels, created_at, modified_at
		FROM resources WHERE type = 'T' AND mesh = '' AND name = 'r1' FOR UPDATE`); !strings.Contains(plan, "Index Scan using resources_pkey") {
		t.Errorf("a keyed read of the store is planned as:\n%s\nwant an index scan of the primary key", plan)
	}
	args, err := publishArgs(time.Now(), []store.Event{{Kind: store.EventCreated, Record: store.Record{Key: store.Key{Type: "T", Name: "r9"}, Spec: []byte(`{}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	if plan := explain(publishQuery, args...); strings.Contains(plan, "JIT") {
		t.Errorf("a commit's last statement is planned with JIT compilation:\n%s", plan)
	}
}
