package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// lockDB holds the database's write lock from another connection (standing in
// for another process) until the returned function is called, so the Store's
// writer blocks in BEGIN IMMEDIATE (busy_timeout) on its next batch.
func lockDB(t *testing.T, path string) (unlock func()) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			if _, err := conn.ExecContext(context.Background(), `COMMIT`); err != nil {
				t.Error(err)
			}
			_ = conn.Close()
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// commitAsync starts a Commit and returns the channel its result arrives on.
func commitAsync(ctx context.Context, s store.Store, ops ...store.Op) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- s.Commit(ctx, ops...) }()
	return ch
}

func createOp(name string) store.Op {
	return store.Op{Kind: store.OpCreate, Record: store.Record{Key: store.Key{Type: "T", Name: name}}}
}

func result(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Commit did not return")
		return nil
	}
}

// waitQueue waits until enqueued calls have been queued in all and waiting
// of them still wait (the others were taken by the writer, which may be
// blocked in BEGIN).
func waitQueue(t *testing.T, s *sqlite.Store, enqueued, waiting int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, w, _ := sqlite.QueueState(s)
		if e == enqueued && w == waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue: %d queued, %d waiting; want %d and %d", e, w, enqueued, waiting)
		}
		time.Sleep(time.Millisecond)
	}
}

// A caller whose ctx ends while its commit is queued gets ctx.Err() at once,
// and its ops are never applied, even though the batch around it commits.
func TestCommitCanceledWhileQueued(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	s := open(t, path)
	ch := s.Watch(t.Context())
	unlock := lockDB(t, path)

	a := commitAsync(t.Context(), s, createOp("a"))
	waitQueue(t, s, 1, 0) // taken by the writer, blocked in BEGIN
	ctx, cancel := context.WithCancel(t.Context())
	b := commitAsync(ctx, s, createOp("b"))
	waitQueue(t, s, 2, 1)
	c := commitAsync(t.Context(), s, createOp("c"))
	waitQueue(t, s, 3, 2)
	cancel()
	if err := result(t, b); err != context.Canceled {
		t.Fatalf("canceled Commit = %v, want context.Canceled", err)
	}
	unlock()
	for name, ch := range map[string]<-chan error{"a": a, "c": c} {
		if err := result(t, ch); err != nil {
			t.Errorf("Commit %s = %v", name, err)
		}
	}
	if _, err := s.Get(t.Context(), store.Key{Type: "T", Name: "b"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("canceled commit was applied: Get = %v", err)
	}
	for _, name := range []string{"a", "c"} {
		if ev := <-ch; ev.Record.Name != name {
			t.Fatalf("event %s, want %s", ev.Record.Name, name)
		}
	}
	if err := store.Create(t.Context(), s, store.Record{Key: store.Key{Type: "T", Name: "marker"}}); err != nil {
		t.Fatal(err)
	}
	if ev := <-ch; ev.Record.Name != "marker" {
		t.Fatalf("event %s, want marker", ev.Record.Name)
	}
}

// Close lets the batch in progress finish and fails the commits still queued.
func TestCloseFailsQueuedCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	s := open(t, path)
	unlock := lockDB(t, path)

	a := commitAsync(t.Context(), s, createOp("a")) // taken by the writer, blocked in BEGIN
	waitQueue(t, s, 1, 0)
	b := commitAsync(t.Context(), s, createOp("b")) // queued behind it
	waitQueue(t, s, 2, 1)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, _, c := sqlite.QueueState(s); c {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Close did not begin")
		}
	}
	unlock()
	if err := result(t, a); err != nil {
		t.Errorf("in-flight Commit = %v, want nil", err)
	}
	if err := result(t, b); !errors.Is(err, sqlite.ErrClosed) {
		t.Errorf("queued Commit = %v, want ErrClosed", err)
	}
	if err := result(t, closed); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := store.Create(t.Context(), s, store.Record{Key: store.Key{Type: "T", Name: "late"}}); !errors.Is(err, sqlite.ErrClosed) {
		t.Errorf("Commit after Close = %v, want ErrClosed", err)
	}

	s2 := open(t, path)
	if _, err := s2.Get(t.Context(), store.Key{Type: "T", Name: "a"}); err != nil {
		t.Errorf("in-flight commit lost: %v", err)
	}
	if _, err := s2.Get(t.Context(), store.Key{Type: "T", Name: "b"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("failed commit applied: Get = %v", err)
	}
}

// Calls queued together share one transaction, yet each sees the calls before
// it as committed and fails or succeeds on its own.
func TestBatchedCallsAreIndependent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	s := open(t, path)
	ch := s.Watch(t.Context())
	unlock := lockDB(t, path)

	first := commitAsync(t.Context(), s, createOp("first"))
	waitQueue(t, s, 1, 0)
	k := store.Key{Type: "T", Name: "k"}
	upd := func(version int64, spec string) store.Op {
		return store.Op{Kind: store.OpUpdate, Record: store.Record{Key: k, Version: version, Spec: []byte(spec)}}
	}
	steps := []struct {
		ops  []store.Op
		want error
	}{
		{[]store.Op{createOp("k")}, nil},
		{[]store.Op{createOp("k")}, store.ErrAlreadyExists},
		{[]store.Op{upd(1, "v2")}, nil},
		{[]store.Op{createOp("partial"), upd(1, "stale")}, store.ErrConflict}, // nothing of it applied
		{[]store.Op{upd(2, "v3"), createOp("j")}, nil},
		{[]store.Op{{Kind: store.OpDelete, Record: store.Record{Key: store.Key{Type: "T", Name: "partial"}}}}, store.ErrNotFound},
		{[]store.Op{{Kind: store.OpDelete, Record: store.Record{Key: store.Key{Type: "T", Name: "j"}, Version: 1}}}, nil},
	}
	results := make([]<-chan error, len(steps))
	for i, st := range steps {
		results[i] = commitAsync(t.Context(), s, st.ops...)
		waitQueue(t, s, i+2, i+1) // keep the queue order
	}
	unlock()
	if err := result(t, first); err != nil {
		t.Fatal(err)
	}
	for i, st := range steps {
		if err := result(t, results[i]); !errors.Is(err, st.want) || (err == nil) != (st.want == nil) {
			t.Errorf("step %d = %v, want %v", i, err, st.want)
		}
	}
	got, err := s.Get(t.Context(), k)
	if err != nil || got.Version != 3 || string(got.Spec) != "v3" {
		t.Errorf("k = %+v, %v; want version 3 spec v3", got, err)
	}
	all, err := s.List(t.Context(), "T", "")
	if err != nil || len(all) != 2 {
		t.Errorf("List = %v, %v; want first and k", all, err)
	}
	wants := []string{"1 first v1", "1 k v1", "2 k v2", "2 k v3", "1 j v1", "3 j v1"}
	for _, w := range wants {
		select {
		case ev := <-ch:
			if g := fmt.Sprintf("%d %s v%d", ev.Kind, ev.Record.Name, ev.Record.Version); g != w {
				t.Fatalf("event %q, want %q", g, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event, want %q", w)
		}
	}
}
