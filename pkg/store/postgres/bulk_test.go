package postgres

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"meshca/pkg/store"
)

// Two processes create the same records at once, many calls per group: each
// record is created once, every other create is refused with
// ErrAlreadyExists, and the refused ones change nothing (a group the
// database refuses for another process's create is done again call by call).
func TestBulkConcurrentCreatesAcrossProcesses(t *testing.T) {
	a, b := openTwo(t)
	const n = 200
	var wg sync.WaitGroup
	errs := make([][2]error, n)
	for i := range n {
		for j, s := range []*Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i][j] = store.Create(t.Context(), s, store.Record{Key: store.Key{Type: "T", Name: fmt.Sprintf("r%03d", i)}, Spec: []byte(fmt.Sprintf(`{"by":%d}`, j))})
			}()
		}
	}
	wg.Wait()
	for i, e := range errs {
		ok := 0
		for _, err := range e {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, store.ErrAlreadyExists):
				t.Errorf("create r%03d: %v, want nil or ErrAlreadyExists", i, err)
			}
		}
		if ok != 1 {
			t.Errorf("r%03d created %d times", i, ok)
		}
		r, err := a.Get(t.Context(), store.Key{Type: "T", Name: fmt.Sprintf("r%03d", i)})
		if err != nil || r.Version != 1 {
			t.Errorf("r%03d: %+v, %v", i, r, err)
		}
	}
	t.Logf("groups done again call by call: %v + %v", testutil.ToFloat64(a.m.bulkRetries), testutil.ToFloat64(b.m.bulkRetries))
}

// Calls of one group see each other's writes: of many updates of one record
// at the version it was read at, exactly one succeeds; chained updates
// (each at the version the previous one made) all succeed, in order.
func TestBulkCallsSeeEarlierCalls(t *testing.T) {
	s := openEmpty(t)
	key := store.Key{Type: "T", Name: "x"}
	if err := store.Create(t.Context(), s, store.Record{Key: key, Spec: []byte(`0`)}); err != nil {
		t.Fatal(err)
	}
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = store.Update(t.Context(), s, store.Record{Key: key, Version: 1, Spec: []byte(fmt.Sprint(i))})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("update: %v, want nil or ErrConflict", err)
		}
	}
	r, err := s.Get(t.Context(), key)
	if ok != 1 || err != nil || r.Version != 2 {
		t.Fatalf("%d updates at version 1 succeeded, record at version %d (%v); want 1 and 2", ok, r.Version, err)
	}
	// One call that updates twice and deletes another, atomically.
	other := store.Key{Type: "T", Name: "y"}
	if err := store.Create(t.Context(), s, store.Record{Key: other}); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(t.Context(),
		store.Op{Kind: store.OpUpdate, Record: store.Record{Key: key, Version: 2, Spec: []byte(`a`)}},
		store.Op{Kind: store.OpUpdate, Record: store.Record{Key: key, Version: 3, Spec: []byte(`b`)}},
		store.Op{Kind: store.OpDelete, Record: store.Record{Key: other, Version: 1}},
	); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Get(t.Context(), key); err != nil || r.Version != 4 || string(r.Spec) != "b" {
		t.Errorf("after two updates in one call: %+v, %v", r, err)
	}
	if _, err := s.Get(t.Context(), other); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted in the same call: %v", err)
	}
}
