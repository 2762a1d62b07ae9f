package postgres

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"meshca/pkg/store"
)

// Concurrent commits share transactions; one that fails (its required
// record is missing) changes nothing and fails alone; every other one is
// committed and its event delivered.
func TestGroupCommitFailsAlone(t *testing.T) {
	s := openEmpty(t)
	ch := s.Watch(t.Context(), "T")
	const n = 120
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ops := []store.Op{{Kind: store.OpCreate, Record: store.Record{Key: store.Key{Type: "T", Name: fmt.Sprintf("r%03d", i)}}}}
			if i%5 == 0 {
				ops = append(ops, store.Op{Kind: store.OpRequire, Record: store.Record{Key: store.Key{Type: "Missing", Name: "x"}}})
			}
			errs[i] = s.Commit(t.Context(), ops...)
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		name := fmt.Sprintf("r%03d", i)
		_, err := s.Get(t.Context(), store.Key{Type: "T", Name: name})
		if i%5 == 0 {
			if !errors.Is(errs[i], store.ErrNotFound) {
				t.Errorf("commit %d = %v, want ErrNotFound", i, errs[i])
			}
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s stored by a failed commit", name)
			}
			continue
		}
		if errs[i] != nil || err != nil {
			t.Errorf("commit %d = %v, get = %v", i, errs[i], err)
		}
	}
	for range n - n/5 {
		ev := next(t, ch)
		if seen[ev.Record.Name] {
			t.Fatalf("event for %s twice", ev.Record.Name)
		}
		seen[ev.Record.Name] = true
	}
}
