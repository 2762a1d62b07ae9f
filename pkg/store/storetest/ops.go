package storetest

// Single operations: create, get, list, version checks, upsert, copies.

import (
	"errors"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"meshca/pkg/store"
)

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
