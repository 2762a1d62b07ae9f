// Package storetest is a conformance suite every store.Store backend runs
// from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { ... })
//	}
//
// newStore must return an empty store and may register t.Cleanup to close it;
// the suite may also call Close itself, so Close must be idempotent.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"meshca/pkg/store"
)

// eventTimeout bounds how long the suite waits for an expected event. Backends
// that deliver events asynchronously (postgres LISTEN/NOTIFY) need some slack.
const eventTimeout = 10 * time.Second

// Options adapt the suite to a backend.
type Options struct {
	// VersionsOnlyGrow is for backends whose versions grow on every change
	// but not one by one from 1 (the Kubernetes store's resourceVersions).
	// Where the suite expects version n, it then expects a version greater
	// than the record's previous one and equal to what Get returns; an
	// update that follows a create of the same key in one commit gives
	// version 0, since the created version is not known before the commit.
	// Every other check is the same.
	VersionsOnlyGrow bool
}

// vlabel is how the suite writes version n in event descriptions: "vN",
// or "v?" when versions only grow (checked apart).
func (o Options) vlabel(n int) string {
	if o.VersionsOnlyGrow {
		return "v?"
	}
	return "v" + strconv.Itoa(n)
}

// first reports whether v is a record's first version.
func (o Options) first(v int64) bool { return v == 1 || (o.VersionsOnlyGrow && v > 0) }

// nth reports whether v is the n-th version of a record whose first was
// v1 (exactly n when versions count, greater than v1 when they only grow).
func (o Options) nth(v, v1 int64, n int) bool {
	if o.VersionsOnlyGrow {
		return v > v1
	}
	return v == int64(n)
}

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	RunWithOptions(t, Options{}, newStore)
}

// RunWithOptions runs the conformance suite adapted by o.
func RunWithOptions(t *testing.T, o Options, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store, o Options)
	}{
		{"CreateGetList", testCreateGetList},
		{"AlreadyExists", testAlreadyExists},
		{"NotFound", testNotFound},
		{"InvalidOp", testInvalidOp},
		{"StaleVersionConflict", testStaleVersion},
		{"Version0Unchecked", testVersion0},
		{"Upsert", testUpsert},
		{"Require", testRequire},
		{"WatchTypes", testWatchTypes},
		{"RequireNone", testRequireNone},
		{"OpsSeeEarlierOpsInCommit", testSameKeyInCommit},
		{"AtomicCommit", testAtomicCommit},
		{"EventsInCommitOrder", testEventsOrder},
		{"WatchClosedOnCancel", testWatchCancel},
		{"WatchClosedOnClose", testWatchClose},
		{"SlowWatcherDoesNotBlockWriters", testSlowWatcher},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"ConcurrentCommits", testConcurrentCommits},
		{"DeepCopy", testDeepCopy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t), o)
		})
	}
}

func rec(typ, mesh, name, spec string) store.Record {
	return store.Record{
		Key:    store.Key{Type: typ, Mesh: mesh, Name: name},
		Spec:   []byte(spec),
		Labels: map[string]string{"name": name},
	}
}

func mustCommit(t *testing.T, s store.Store, ops ...store.Op) {
	t.Helper()
	if err := s.Commit(t.Context(), ops...); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func mustGet(t *testing.T, s store.Store, key store.Key) store.Record {
	t.Helper()
	r, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	return r
}

func keys(rs []store.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Mesh + "/" + r.Name
	}
	return out
}

func testCreateGetList(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	before := time.Now().Add(-time.Second)
	for _, r := range []store.Record{
		rec("Dataplane", "m2", "b", `{"n":1}`),
		rec("Dataplane", "m1", "z", `{"n":2}`),
		rec("Dataplane", "m1", "a", `{"n":3}`),
		rec("Dataplane", "m2", "a", `{"n":4}`),
		rec("Mesh", "", "m1", `{}`),
	} {
		if err := store.Create(ctx, s, r); err != nil {
			t.Fatalf("Create(%s): %v", r.Key, err)
		}
	}

	got := mustGet(t, s, store.Key{Type: "Dataplane", Mesh: "m1", Name: "z"})
	if !o.first(got.Version) || string(got.Spec) != `{"n":2}` || got.Labels["name"] != "z" || len(got.Labels) != 1 {
		t.Errorf("Get = %+v, want version 1, spec {\"n\":2}, labels {name:z}", got)
	}
	if got.CreationTime.Before(before) || !got.CreationTime.Equal(got.ModificationTime) {
		t.Errorf("times: created %v modified %v, want equal and after %v", got.CreationTime, got.ModificationTime, before)
	}
	if g := mustGet(t, s, store.Key{Type: "Mesh", Name: "m1"}); g.Mesh != "" || g.Name != "m1" {
		t.Errorf("global Get = %+v", g)
	}

	all, err := s.List(ctx, "Dataplane", "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if want := []string{"m1/a", "m1/z", "m2/a", "m2/b"}; !slices.Equal(keys(all), want) {
		t.Errorf("List all = %v, want %v", keys(all), want)
	}
	m2, err := s.List(ctx, "Dataplane", "m2")
	if err != nil {
		t.Fatalf("List m2: %v", err)
	}
	if want := []string{"m2/a", "m2/b"}; !slices.Equal(keys(m2), want) {
		t.Errorf("List m2 = %v, want %v", keys(m2), want)
	}
	if !o.first(m2[1].Version) || string(m2[1].Spec) != `{"n":1}` {
		t.Errorf("List record = %+v", m2[1])
	}
	none, err := s.List(ctx, "Nothing", "")
	if err != nil || len(none) != 0 {
		t.Errorf("List unknown type = %v, %v; want empty", none, err)
	}
}

func testAlreadyExists(t *testing.T, s store.Store, o Options) {
	r := rec("T", "m", "a", "1")
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: r})
	created := mustGet(t, s, r.Key)
	if !o.first(created.Version) {
		t.Errorf("created version %d, want a first version", created.Version)
	}
	r.Spec = []byte("2")
	err := store.Create(t.Context(), s, r)
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("second Create = %v, want ErrAlreadyExists", err)
	}
	if got := mustGet(t, s, r.Key); string(got.Spec) != "1" || got.Version != created.Version {
		t.Errorf("after failed create: %+v", got)
	}
}

func testNotFound(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	key := store.Key{Type: "T", Mesh: "m", Name: "missing"}
	if _, err := s.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get = %v, want ErrNotFound", err)
	}
	if err := store.Update(ctx, s, store.Record{Key: key}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Update = %v, want ErrNotFound", err)
	}
	if err := store.Delete(ctx, s, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delete = %v, want ErrNotFound", err)
	}
	// Same name, other mesh or type, is a different key.
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: rec("T", "other", "missing", "")})
	if _, err := s.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get other mesh = %v, want ErrNotFound", err)
	}
}

func testInvalidOp(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	for _, op := range []store.Op{
		{Kind: store.OpCreate, Record: store.Record{Key: store.Key{Type: "T"}}},
		{Kind: store.OpCreate, Record: store.Record{Key: store.Key{Name: "n"}}},
		{Kind: 0, Record: rec("T", "", "n", "")},
	} {
		if err := s.Commit(ctx, op); err == nil {
			t.Errorf("Commit(%+v) succeeded, want error", op)
		}
	}
	if err := s.Commit(ctx); err != nil {
		t.Errorf("empty Commit = %v, want nil", err)
	}
}

func testStaleVersion(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	r := rec("T", "m", "a", "v1")
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: r})
	v1 := mustGet(t, s, r.Key).Version
	r.Version, r.Spec = v1, []byte("v2")
	mustCommit(t, s, store.Op{Kind: store.OpUpdate, Record: r})
	v2 := mustGet(t, s, r.Key).Version
	if !o.first(v1) || !o.nth(v2, v1, 2) {
		t.Fatalf("versions after create and update: %d, %d", v1, v2)
	}

	stale := r
	stale.Spec = []byte("stale")
	if err := store.Update(ctx, s, stale); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale Update = %v, want ErrConflict", err)
	}
	err := s.Commit(ctx, store.Op{Kind: store.OpDelete, Record: stale})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale Delete = %v, want ErrConflict", err)
	}
	got := mustGet(t, s, r.Key)
	if got.Version != v2 || string(got.Spec) != "v2" {
		t.Errorf("after conflicts: version %d spec %q, want %d v2", got.Version, got.Spec, v2)
	}
	got.Spec = nil // current version: delete succeeds
	mustCommit(t, s, store.Op{Kind: store.OpDelete, Record: got})
	if _, err := s.Get(ctx, r.Key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after delete = %v, want ErrNotFound", err)
	}
}

func testVersion0(t *testing.T, s store.Store, o Options) {
	r := rec("T", "m", "a", "v1")
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: r})
	created := mustGet(t, s, r.Key)
	time.Sleep(2 * time.Millisecond)
	prev := created.Version
	for i := range 3 {
		r.Version = 0
		r.Spec = []byte("u" + strconv.Itoa(i))
		mustCommit(t, s, store.Op{Kind: store.OpUpdate, Record: r})
		if v := mustGet(t, s, r.Key).Version; v <= prev {
			t.Fatalf("update %d: version %d, not after %d", i, v, prev)
		} else {
			prev = v
		}
	}
	got := mustGet(t, s, r.Key)
	if !o.nth(got.Version, created.Version, 4) || string(got.Spec) != "u2" {
		t.Errorf("got version %d spec %q, want 4 u2", got.Version, got.Spec)
	}
	if !got.CreationTime.Equal(created.CreationTime) {
		t.Errorf("CreationTime changed: %v -> %v", created.CreationTime, got.CreationTime)
	}
	if !got.ModificationTime.After(created.ModificationTime) {
		t.Errorf("ModificationTime %v not after %v", got.ModificationTime, created.ModificationTime)
	}
}

func testUpsert(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	ch := s.Watch(ctx)
	r := rec("T", "", "a", "1")
	r.Version = 42 // ignored by upsert
	if err := store.Upsert(ctx, s, r); err != nil {
		t.Fatal(err)
	}
	v1 := mustGet(t, s, r.Key).Version
	r.Spec = []byte("2")
	if err := store.Upsert(ctx, s, r); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, r.Key); !o.first(v1) || !o.nth(got.Version, v1, 2) || string(got.Spec) != "2" {
		t.Errorf("after two upserts: %+v", got)
	}
	expectEvents(t, o, ch, []want{{store.EventCreated, "a", 1}, {store.EventUpdated, "a", 2}})
}

func testSameKeyInCommit(t *testing.T, s store.Store, o Options) {
	r := rec("T", "m", "a", "1")
	r2 := r
	r2.Spec, r2.Version = []byte("2"), 1
	if o.VersionsOnlyGrow {
		r2.Version = 0
	}
	mustCommit(t, s,
		store.Op{Kind: store.OpCreate, Record: r},
		store.Op{Kind: store.OpUpdate, Record: r2},
		store.Op{Kind: store.OpCreate, Record: rec("T", "m", "b", "")},
		store.Op{Kind: store.OpDelete, Record: rec("T", "m", "b", "")},
	)
	if got := mustGet(t, s, r.Key); (got.Version != 2 && !o.VersionsOnlyGrow) || string(got.Spec) != "2" {
		t.Errorf("got %+v, want version 2 spec 2", got)
	}
	if _, err := s.Get(t.Context(), store.Key{Type: "T", Mesh: "m", Name: "b"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("created-then-deleted record: %v, want ErrNotFound", err)
	}
}

func testAtomicCommit(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	a := rec("T", "m", "a", "orig")
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: a})
	va := mustGet(t, s, a.Key).Version
	ch := s.Watch(ctx)

	upd := a
	upd.Spec = []byte("changed")
	err := s.Commit(ctx,
		store.Op{Kind: store.OpCreate, Record: rec("T", "m", "b", "new")},
		store.Op{Kind: store.OpUpdate, Record: upd},
		store.Op{Kind: store.OpCreate, Record: a}, // fails: exists
		store.Op{Kind: store.OpCreate, Record: rec("T", "m", "c", "new")},
	)
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("Commit = %v, want ErrAlreadyExists", err)
	}
	if got := mustGet(t, s, a.Key); got.Version != va || string(got.Spec) != "orig" {
		t.Errorf("a changed by failed commit: %+v", got)
	}
	all, err := s.List(ctx, "T", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"m/a"}; !slices.Equal(keys(all), want) {
		t.Errorf("List = %v, want %v", keys(all), want)
	}
	// The next event must be from the next successful commit, not the failed one.
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: rec("T", "m", "marker", "")})
	expectEvents(t, o, ch, []want{{store.EventCreated, "marker", 1}})
}

type want struct {
	kind    store.EventKind
	name    string
	version int64
}

// expectEvents reads len(wants) events and checks them against wants. With
// o.VersionsOnlyGrow, a want's version n is the n-th version of the record
// named: a version not seen yet must be greater than the record's previous
// one, a version seen before (a deletion's last state) equal to it.
func expectEvents(t *testing.T, o Options, ch <-chan store.Event, wants []want) []store.Event {
	t.Helper()
	var got []store.Event
	seen := map[string]map[int64]int64{} // name -> n -> version
	matches := func(name string, n, v int64) bool {
		if !o.VersionsOnlyGrow {
			return v == n
		}
		if seen[name] == nil {
			seen[name] = map[int64]int64{}
		}
		if prev, ok := seen[name][n]; ok {
			return v == prev
		}
		if prev, ok := seen[name][n-1]; (ok && v <= prev) || v <= 0 {
			return false
		}
		seen[name][n] = v
		return true
	}
	timeout := time.After(eventTimeout)
	for i, w := range wants {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("event %d: channel closed", i)
			}
			got = append(got, ev)
			if ev.Kind != w.kind || ev.Record.Name != w.name || !matches(w.name, w.version, ev.Record.Version) {
				t.Fatalf("event %d = {%v %s v%d}, want {%v %s v%d}",
					i, ev.Kind, ev.Record.Name, ev.Record.Version, w.kind, w.name, w.version)
			}
		case <-timeout:
			t.Fatalf("timed out waiting for event %d %+v", i, w)
		}
	}
	return got
}

func testEventsOrder(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: rec("T", "m", "before", "")})
	ch := s.Watch(ctx)
	ch2 := s.Watch(ctx)

	x := rec("T", "m", "x", "x1")
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: x})
	x.Spec = []byte("x2")
	mustCommit(t, s,
		store.Op{Kind: store.OpUpdate, Record: x},
		store.Op{Kind: store.OpCreate, Record: rec("T", "m", "y", "y1")},
	)
	mustCommit(t, s, store.Op{Kind: store.OpDelete, Record: x})

	wants := []want{
		{store.EventCreated, "x", 1},
		{store.EventUpdated, "x", 2},
		{store.EventCreated, "y", 1},
		{store.EventDeleted, "x", 2},
	}
	evs := expectEvents(t, o, ch, wants)
	expectEvents(t, o, ch2, wants)
	del := evs[3].Record
	if string(del.Spec) != "x2" || del.Labels["name"] != "x" || del.Mesh != "m" || del.Type != "T" {
		t.Errorf("delete event record = %+v, want last stored state", del)
	}
	if evs[1].Record.CreationTime.IsZero() || evs[1].Record.ModificationTime.Before(evs[1].Record.CreationTime) {
		t.Errorf("update event times = %v, %v", evs[1].Record.CreationTime, evs[1].Record.ModificationTime)
	}
}

func testWatchCancel(t *testing.T, s store.Store, o Options) {
	ctx, cancel := context.WithCancel(t.Context())
	ch := s.Watch(ctx)
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: rec("T", "", "a", "")})
	cancel()
	deadline := time.After(eventTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed after cancel")
		}
	}
}

func testWatchClose(t *testing.T, s store.Store, o Options) {
	ch := s.Watch(t.Context())
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("unexpected event after Close")
		}
	case <-time.After(eventTimeout):
		t.Fatal("watch channel not closed after Close")
	}
}

func testSlowWatcher(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	ch := s.Watch(ctx) // never read until all commits are done
	const n = 200
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if err := store.Create(ctx, s, rec("T", "", "r"+strconv.Itoa(i), "")); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("writers blocked by a watcher that does not read")
	}
	wants := make([]want, n)
	for i := range wants {
		wants[i] = want{store.EventCreated, "r" + strconv.Itoa(i), 1}
	}
	expectEvents(t, o, ch, wants)
}

func testConcurrentUpdates(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	const workers, perWorker = 8, 10
	key := store.Key{Type: "Counter", Mesh: "m", Name: "c"}
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: store.Record{Key: key, Spec: []byte("0")}})

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				if err := increment(ctx, s, key); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := mustGet(t, s, key)
	if want := int64(1 + workers*perWorker); got.Version != want && !o.VersionsOnlyGrow {
		t.Errorf("version = %d, want %d", got.Version, want)
	}
	if want := strconv.Itoa(workers * perWorker); string(got.Spec) != want {
		t.Errorf("counter = %s, want %s (lost update)", got.Spec, want)
	}
}

// testConcurrentCommits has 64 goroutines make 50 commits each at once, as
// many API clients do. Backends that batch concurrent commits into one
// transaction (sqlite group commit) must still give every call exactly its own
// result, apply nothing of a failed call, let a call see the changes of calls
// committed before it, and publish exactly the events of the successful
// calls, in commit order.
func testConcurrentCommits(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	const workers, perWorker = 64, 50
	counter := store.Key{Type: "Counter", Name: "c"}
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: store.Record{Key: counter, Spec: []byte("0")}})
	ch := s.Watch(ctx)

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var sharedCreated sync.Map // mesh -> struct{}: who created the shared record
	for w := range workers {
		mesh := "m" + strconv.Itoa(w)
		wg.Go(func() {
			fail := func(format string, args ...any) {
				errs <- fmt.Errorf("worker %s: "+format, append([]any{mesh}, args...)...)
			}
			for i := range perWorker {
				name := "r" + strconv.Itoa(i)
				switch i % 10 {
				case 4: // two ops: create r_i, update r_{i-1} from version 1 to 2
					prev := rec("Load", mesh, "r"+strconv.Itoa(i-1), "updated")
					prev.Version = 1
					if o.VersionsOnlyGrow { // what the previous iteration created
						cur, err := s.Get(ctx, prev.Key)
						if err != nil {
							fail("get %s: %v", prev.Key, err)
							return
						}
						prev.Version = cur.Version
					}
					if err := s.Commit(ctx,
						store.Op{Kind: store.OpCreate, Record: rec("Load", mesh, name, name)},
						store.Op{Kind: store.OpUpdate, Record: prev},
					); err != nil {
						fail("commit %d: %v", i, err)
						return
					}
					continue
				case 7: // contended read-modify-write of one record, once per worker
					if i != 17 {
						break
					}
					if err := increment(ctx, s, counter); err != nil {
						fail("increment %d: %v", i, err)
						return
					}
				case 9: // deliberate conflict: the whole call must fail
					stale := rec("Load", mesh, "r"+strconv.Itoa(i-1), "stale")
					stale.Version = 7
					err := s.Commit(ctx,
						store.Op{Kind: store.OpCreate, Record: rec("Load", mesh, "x"+strconv.Itoa(i), "")},
						store.Op{Kind: store.OpUpdate, Record: stale},
					)
					if !errors.Is(err, store.ErrConflict) {
						fail("conflicting commit %d = %v, want ErrConflict", i, err)
						return
					}
				}
				if i == perWorker/2 { // everyone races to create one record
					err := store.Create(ctx, s, rec("Load", "", "shared", mesh))
					switch {
					case err == nil:
						sharedCreated.Store(mesh, struct{}{})
					case !errors.Is(err, store.ErrAlreadyExists):
						fail("create shared = %v, want nil or ErrAlreadyExists", err)
						return
					}
				}
				if err := store.Create(ctx, s, rec("Load", mesh, name, name)); err != nil {
					fail("create %d: %v", i, err)
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
	if t.Failed() {
		t.FailNow()
	}

	// Final state.
	var creators []string
	sharedCreated.Range(func(k, _ any) bool { creators = append(creators, k.(string)); return true })
	if len(creators) != 1 {
		t.Fatalf("shared record created by %v, want exactly one creator", creators)
	}
	if got := mustGet(t, s, store.Key{Type: "Load", Name: "shared"}); !o.first(got.Version) || string(got.Spec) != creators[0] {
		t.Errorf("shared = version %d spec %q, want 1 %q", got.Version, got.Spec, creators[0])
	}
	increments := workers
	finalCounter := mustGet(t, s, counter)
	if got := finalCounter; (got.Version != int64(1+increments) && !o.VersionsOnlyGrow) || string(got.Spec) != strconv.Itoa(increments) {
		t.Errorf("counter = version %d spec %s, want %d %d (lost update)", got.Version, got.Spec, 1+increments, increments)
	}
	wantEvents := make(map[string][]string, workers) // mesh -> "kind name vN" in order
	listed := map[string]int64{}                     // mesh/name -> version (VersionsOnlyGrow)
	for w := range workers {
		mesh := "m" + strconv.Itoa(w)
		list, err := s.List(ctx, "Load", mesh)
		if err != nil {
			t.Fatal(err)
		}
		byName := make(map[string]store.Record, len(list))
		for _, r := range list {
			byName[r.Name] = r
		}
		if len(list) != perWorker {
			t.Errorf("mesh %s: %d records, want %d: %v", mesh, len(list), perWorker, keys(list))
		}
		for i := range perWorker {
			name := "r" + strconv.Itoa(i)
			wantVersion, wantSpec := int64(1), name
			if i%10 == 3 {
				wantVersion, wantSpec = 2, "updated"
			}
			r, ok := byName[name]
			listed[mesh+"/"+name] = r.Version
			if o.VersionsOnlyGrow {
				wantVersion = r.Version
			}
			if !ok || r.Version != wantVersion || string(r.Spec) != wantSpec {
				t.Errorf("mesh %s: %s = %+v (present %v), want version %d spec %q", mesh, name, r, ok, wantVersion, wantSpec)
			}
			wantEvents[mesh] = append(wantEvents[mesh], fmt.Sprintf("%v %s %s", store.EventCreated, name, o.vlabel(1)))
			if i%10 == 4 {
				wantEvents[mesh] = append(wantEvents[mesh], fmt.Sprintf("%v r%d %s", store.EventUpdated, i-1, o.vlabel(2)))
			}
		}
	}

	// Events: exactly those of the successful calls; each worker's in the
	// order it committed them, the counter's versions in commit order.
	total := workers*(perWorker+perWorker/10) + 1 + increments
	gotEvents := make(map[string][]string, workers)
	var counterVersions []int64
	var shared []store.Event
	lastEvent := map[string]int64{} // mesh/name -> version of its last event
	timeout := time.After(eventTimeout)
	for range total {
		var ev store.Event
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatal("watch channel closed")
			}
			ev = e
		case <-timeout:
			t.Fatalf("timed out after %d of %d events", len(counterVersions)+len(shared)+countAll(gotEvents), total)
		}
		switch {
		case ev.Record.Key == counter:
			if ev.Kind != store.EventUpdated {
				t.Errorf("counter event %v, want updated", ev.Kind)
			}
			counterVersions = append(counterVersions, ev.Record.Version)
		case ev.Record.Mesh == "":
			shared = append(shared, ev)
		default:
			k := ev.Record.Mesh + "/" + ev.Record.Name
			if prev, ok := lastEvent[k]; ok && ev.Record.Version <= prev {
				t.Errorf("%s: event version %d after %d", k, ev.Record.Version, prev)
			}
			lastEvent[k] = ev.Record.Version
			v := "v" + strconv.FormatInt(ev.Record.Version, 10)
			if o.VersionsOnlyGrow {
				v = "v?"
			}
			gotEvents[ev.Record.Mesh] = append(gotEvents[ev.Record.Mesh], fmt.Sprintf("%v %s %s", ev.Kind, ev.Record.Name, v))
		}
	}
	for i, v := range counterVersions {
		if (!o.VersionsOnlyGrow && v != int64(i+2)) || (i > 0 && v <= counterVersions[i-1]) {
			t.Errorf("counter events out of commit order: versions %v", counterVersions)
			break
		}
	}
	if n := len(counterVersions); n > 0 && counterVersions[n-1] != finalCounter.Version {
		t.Errorf("counter's last event has version %d, stored %d", counterVersions[n-1], finalCounter.Version)
	}
	for k, v := range listed {
		if lastEvent[k] != v {
			t.Errorf("%s: last event version %d, stored %d", k, lastEvent[k], v)
		}
	}
	if len(shared) != 1 || shared[0].Kind != store.EventCreated || shared[0].Record.Name != "shared" ||
		string(shared[0].Record.Spec) != creators[0] {
		t.Errorf("shared record events = %+v, want one creation by %s", shared, creators[0])
	}
	for mesh, want := range wantEvents {
		if got := gotEvents[mesh]; !slices.Equal(got, want) {
			t.Errorf("mesh %s events:\n got %v\nwant %v", mesh, got, want)
		}
	}
	// No event of a failed call may follow.
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: rec("T", "m", "marker", "")})
	expectEvents(t, o, ch, []want{{store.EventCreated, "marker", 1}})
}

func countAll(m map[string][]string) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

func increment(ctx context.Context, s store.Store, key store.Key) error {
	for attempt := 0; attempt < 1000; attempt++ {
		r, err := s.Get(ctx, key)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(string(r.Spec))
		if err != nil {
			return err
		}
		r.Spec = []byte(strconv.Itoa(n + 1))
		err = store.Update(ctx, s, r)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return err
	}
	return fmt.Errorf("increment %s: too many conflicts", key)
}

func testDeepCopy(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	ch := s.Watch(ctx)
	r := rec("T", "m", "a", "original")
	r.Labels = map[string]string{"k": "v"}
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: r})
	// Mutating the caller's input after the commit must not reach the store.
	r.Spec[0] = 'X'
	r.Labels["k"] = "mutated"

	got := mustGet(t, s, r.Key)
	check := func(what string) {
		t.Helper()
		g := mustGet(t, s, r.Key)
		if string(g.Spec) != "original" || !maps.Equal(g.Labels, map[string]string{"k": "v"}) {
			t.Fatalf("%s: stored record changed: spec %q labels %v", what, g.Spec, g.Labels)
		}
	}
	check("mutating input")
	got.Spec[0] = 'Y'
	got.Labels["k"] = "mutated"
	got.Labels["new"] = "x"
	check("mutating Get result")

	list, err := s.List(ctx, "T", "m")
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %v, %v", list, err)
	}
	list[0].Spec[0] = 'Z'
	list[0].Labels["k"] = "mutated"
	check("mutating List result")

	evs := expectEvents(t, o, ch, []want{{store.EventCreated, "a", 1}})
	evs[0].Record.Spec[0] = 'W'
	evs[0].Record.Labels["k"] = "mutated"
	check("mutating event")
}

// testRequire: OpRequire makes a commit conditional on another record,
// writes nothing and publishes nothing.
func testRequire(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	mesh := rec("Mesh", "", "m1", `{}`)
	dp := rec("Dataplane", "m1", "dp-1", `{}`)
	require := store.Op{Kind: store.OpRequire, Record: store.Record{Key: mesh.Key}}

	// Absent: the whole commit fails and nothing is written.
	err := s.Commit(ctx, store.Op{Kind: store.OpCreate, Record: dp}, require)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("commit requiring an absent record: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, dp.Key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed conditional commit wrote its record (Get err = %v)", err)
	}

	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: mesh})
	vm := mustGet(t, s, mesh.Key).Version
	events := s.Watch(ctx)
	mustCommit(t, s, require, store.Op{Kind: store.OpCreate, Record: dp})
	if got := mustGet(t, s, mesh.Key); !o.first(vm) || got.Version != vm {
		t.Fatalf("required record changed: version %d", got.Version)
	}
	select {
	case ev := <-events:
		if ev.Kind != store.EventCreated || ev.Record.Key != dp.Key {
			t.Fatalf("first event %v %s, want the dataplane's creation (none for the requirement)", ev.Kind, ev.Record.Key)
		}
	case <-time.After(eventTimeout):
		t.Fatal("no event for the conditional commit")
	}

	// A stale version fails; the record required may also be created
	// earlier in the same commit.
	stale := require
	stale.Record.Version = 7
	if err := s.Commit(ctx, stale); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("require with a stale version: err = %v, want ErrConflict", err)
	}
	m2 := rec("Mesh", "", "m2", `{}`)
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: m2}, store.Op{Kind: store.OpRequire, Record: store.Record{Key: m2.Key}})

	// After the record is deleted, the requirement fails again.
	mustCommit(t, s, store.Op{Kind: store.OpDelete, Record: store.Record{Key: mesh.Key}})
	dp2 := rec("Dataplane", "m1", "dp-2", `{}`)
	if err := s.Commit(ctx, require, store.Op{Kind: store.OpCreate, Record: dp2}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("commit requiring a deleted record: err = %v, want ErrNotFound", err)
	}
}

// testWatchTypes: a watcher that names types sees only events of records of
// those types, in commit order; one that names none sees all.
func testWatchTypes(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	secrets := s.Watch(ctx, "Secret", "Mesh")
	all := s.Watch(ctx)
	mustCommit(t, s,
		store.Op{Kind: store.OpCreate, Record: rec("Mesh", "", "m1", `{}`)},
		store.Op{Kind: store.OpCreate, Record: rec("DataplaneIdentity", "m1", "dp-1", `{}`)},
		store.Op{Kind: store.OpCreate, Record: rec("Secret", "m1", "s-1", `{}`)})
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: rec("DataplaneIdentity", "m1", "dp-2", `{}`)})
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: rec("Secret", "m1", "s-2", `{}`)})
	next := func(ch <-chan store.Event) string {
		t.Helper()
		select {
		case ev := <-ch:
			return ev.Record.Type + "/" + ev.Record.Name
		case <-time.After(eventTimeout):
			t.Fatal("no event")
			return ""
		}
	}
	var got []string
	for range 3 {
		got = append(got, next(secrets))
	}
	if want := []string{"Mesh/m1", "Secret/s-1", "Secret/s-2"}; !slices.Equal(got, want) {
		t.Fatalf("filtered watcher saw %v, want %v", got, want)
	}
	got = got[:0]
	for range 5 {
		got = append(got, next(all))
	}
	if want := []string{"Mesh/m1", "DataplaneIdentity/dp-1", "Secret/s-1", "DataplaneIdentity/dp-2", "Secret/s-2"}; !slices.Equal(got, want) {
		t.Fatalf("unfiltered watcher saw %v, want %v", got, want)
	}
}

// testRequireNone: OpRequireNone fails the whole commit while a record of
// the type exists in the mesh, seeing the commit's earlier ops.
func testRequireNone(t *testing.T, s store.Store, o Options) {
	ctx := t.Context()
	mesh := rec("Mesh", "", "m1", `{}`)
	noDataplanes := store.Op{Kind: store.OpRequireNone, Record: store.Record{Key: store.Key{Type: "Dataplane", Mesh: "m1"}}}
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: mesh},
		store.Op{Kind: store.OpCreate, Record: rec("Dataplane", "m2", "other-mesh", `{}`)})

	// Empty set: passes (a Dataplane of another mesh does not count).
	mustCommit(t, s, noDataplanes)

	dp := rec("Dataplane", "m1", "dp-1", `{}`)
	mustCommit(t, s, store.Op{Kind: store.OpCreate, Record: dp})
	err := s.Commit(ctx, store.Op{Kind: store.OpDelete, Record: store.Record{Key: mesh.Key}}, noDataplanes)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("deleting a mesh that has a dataplane: err = %v, want ErrConflict", err)
	}
	mustGet(t, s, mesh.Key) // the failed commit deleted nothing

	// A record deleted earlier in the same commit no longer counts; one
	// created earlier does.
	mustCommit(t, s, store.Op{Kind: store.OpDelete, Record: store.Record{Key: dp.Key}}, noDataplanes)
	err = s.Commit(ctx, store.Op{Kind: store.OpCreate, Record: dp}, noDataplanes)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("creating a dataplane then requiring none: err = %v, want ErrConflict", err)
	}
	if _, err := s.Get(ctx, dp.Key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the failed commit created its dataplane (Get err = %v)", err)
	}

	// A name is refused.
	bad := noDataplanes
	bad.Record.Name = "dp-1"
	if err := s.Commit(ctx, bad); err == nil || errors.Is(err, store.ErrConflict) {
		t.Fatalf("require-none with a name: err = %v, want a validation error", err)
	}
}
