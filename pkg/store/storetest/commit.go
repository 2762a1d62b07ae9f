package storetest

// Multi-op commits: atomicity, the same key twice, OpRequire, OpRequireNone.

import (
	"errors"
	"slices"
	"testing"
	"time"

	"meshca/pkg/store"
)

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
