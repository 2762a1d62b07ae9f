package storetest

// Concurrent writers: optimistic updates and many commits at once.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"meshca/pkg/store"
)

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
