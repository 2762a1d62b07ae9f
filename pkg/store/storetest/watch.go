package storetest

// Events: order, cancellation, slow watchers, watching by type.

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"meshca/pkg/store"
)

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
