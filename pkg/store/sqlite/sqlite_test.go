package sqlite_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"meshca/pkg/store"
	"meshca/pkg/store/sqlite"
	"meshca/pkg/store/storetest"
)

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "meshca.db"))
	})
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	s := open(t, path)
	r := store.Record{
		Key:    store.Key{Type: "Mesh", Name: "default"},
		Spec:   []byte(`{"mtls":true}`),
		Labels: map[string]string{"env": "prod"},
	}
	if err := store.Create(t.Context(), s, r); err != nil {
		t.Fatal(err)
	}
	r.Version = 1
	if err := store.Update(t.Context(), s, r); err != nil {
		t.Fatal(err)
	}
	before, err := s.Get(t.Context(), r.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := open(t, path) // runs the migrations again: must be a no-op
	after, err := s2.Get(t.Context(), r.Key)
	if err != nil {
		t.Fatalf("Get after reopen: %v", err)
	}
	if after.Version != 2 || string(after.Spec) != `{"mtls":true}` || after.Labels["env"] != "prod" ||
		!after.CreationTime.Equal(before.CreationTime) || !after.ModificationTime.Equal(before.ModificationTime) ||
		after.ModificationTime.Location().String() != "UTC" {
		t.Errorf("after reopen = %+v, want %+v", after, before)
	}
	if before.ModificationTime.Nanosecond()%1000 == 0 && before.ModificationTime.Nanosecond() != 0 {
		t.Logf("note: clock has microsecond resolution here")
	}
}

func TestFilePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "nested")
	path := filepath.Join(dir, "meshca.db")
	s := open(t, path)
	if err := store.Create(t.Context(), s, store.Record{Key: store.Key{Type: "T", Name: "n"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want os.FileMode
	}{{dir, 0o700}, {path, 0o600}, {path + "-wal", 0o600}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != c.want {
			t.Errorf("%s: mode %v, want %v", c.path, got, c.want)
		}
	}
}

func TestTightensExistingFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	open(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode %v, want 0600", got)
	}
}

// Two Store values on one file stand in for two processes: their commits
// must wait for each other (BEGIN IMMEDIATE + busy_timeout), not fail.
func TestTwoHandlesNoBusyErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	stores := []*sqlite.Store{open(t, path), open(t, path)}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			s := stores[w%2]
			for i := range 10 {
				r := store.Record{Key: store.Key{Type: "T", Mesh: strconv.Itoa(w), Name: strconv.Itoa(i)}}
				if err := store.Upsert(t.Context(), s, r); err != nil {
					errs <- err
					return
				}
				if _, err := s.List(t.Context(), "T", ""); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	all, err := stores[0].List(t.Context(), "T", "")
	if err != nil || len(all) != 80 {
		t.Fatalf("List = %d records, %v; want 80", len(all), err)
	}
}

func TestOpenFailsOnNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	if err := open(t, path).Close(); err != nil {
		t.Fatal(err)
	}
	// Simulate a database written by a newer binary.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(t.Context(), `UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.Open(t.Context(), path, nil)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open succeeded on a newer schema, want error")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Errorf("error = %v, want a schema version error", err)
	}
}

func BenchmarkCommitUpsert(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "bench.db"))
	r := store.Record{
		Key:    store.Key{Type: "Dataplane", Mesh: "default", Name: "dp-1"},
		Spec:   make([]byte, 512),
		Labels: map[string]string{"app": "web", "zone": "a"},
	}
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if err := store.Upsert(ctx, s, r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

func BenchmarkGet(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "bench.db"))
	ctx := b.Context()
	for i := range 1000 {
		r := store.Record{
			Key:    store.Key{Type: "Dataplane", Mesh: "default", Name: "dp-" + strconv.Itoa(i)},
			Spec:   make([]byte, 512),
			Labels: map[string]string{"app": "web", "zone": "a"},
		}
		if err := store.Create(ctx, s, r); err != nil {
			b.Fatal(err)
		}
	}
	key := store.Key{Type: "Dataplane", Mesh: "default", Name: "dp-500"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetParallel(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "bench.db"))
	ctx := b.Context()
	key := store.Key{Type: "Dataplane", Mesh: "default", Name: "dp"}
	if err := store.Create(ctx, s, store.Record{Key: key, Spec: make([]byte, 512)}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Get(ctx, key); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkCommitParallel models many API clients registering resources at
// once: every iteration is one single-op Commit creating a new record.
func BenchmarkCommitParallel(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "bench.db"))
	ctx := b.Context()
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := store.Record{
				Key:    store.Key{Type: "Dataplane", Mesh: "default", Name: "dp-" + strconv.FormatInt(next.Add(1), 10)},
				Spec:   make([]byte, 512),
				Labels: map[string]string{"app": "web", "zone": "a"},
			}
			if err := store.Create(ctx, s, r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}
