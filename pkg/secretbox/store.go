package secretbox

import (
	"context"
	"errors"
	"fmt"

	"meshca/pkg/store"
)

// Store is a store.Store that seals the Spec of records of some types
// before the inner store keeps them and opens them when they are read.
type Store struct {
	inner store.Store
	box   *Box
	types map[string]bool
}

var _ store.Store = (*Store)(nil)

// WrapStore returns inner with the records of types sealed by box.
func WrapStore(inner store.Store, box *Box, types ...string) *Store {
	s := &Store{inner: inner, box: box, types: map[string]bool{}}
	for _, t := range types {
		s.types[t] = true
	}
	return s
}

// Inner is the wrapped store (for its optional capabilities).
func (s *Store) Inner() store.Store { return s.inner }

func aad(k store.Key) []byte { return []byte(k.Type + "\x00" + k.Mesh + "\x00" + k.Name) }

func (s *Store) open(r store.Record) (store.Record, error) {
	if !s.types[r.Type] || r.Spec == nil {
		return r, nil
	}
	spec, err := s.box.Open(r.Spec, aad(r.Key))
	if err != nil {
		return r, fmt.Errorf("%s: %w", r.Key, err)
	}
	r.Spec = spec
	return r, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key store.Key) (store.Record, error) {
	r, err := s.inner.Get(ctx, key)
	if err != nil {
		return r, err
	}
	return s.open(r)
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, typ, mesh string) ([]store.Record, error) {
	recs, err := s.inner.List(ctx, typ, mesh)
	if err != nil || !s.types[typ] {
		return recs, err
	}
	for i := range recs {
		if recs[i], err = s.open(recs[i]); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// Commit implements store.Store: specs of sealed types are sealed first.
func (s *Store) Commit(ctx context.Context, ops ...store.Op) error {
	sealed := ops
	for i, op := range ops {
		if !s.types[op.Record.Type] || op.Record.Spec == nil {
			continue
		}
		if &sealed[0] == &ops[0] {
			sealed = append([]store.Op(nil), ops...)
		}
		spec, err := s.box.Seal(op.Record.Spec, aad(op.Record.Key))
		if err != nil {
			return err
		}
		sealed[i].Record.Spec = spec
	}
	return s.inner.Commit(ctx, sealed...)
}

// Watch implements store.Store: events carry opened specs. A record that
// does not open (tampered) is delivered as stored, which its consumer
// then fails to decode and reports.
func (s *Store) Watch(ctx context.Context, types ...string) <-chan store.Event {
	in := s.inner.Watch(ctx, types...)
	out := make(chan store.Event)
	go func() {
		defer close(out)
		for ev := range in {
			if r, err := s.open(ev.Record); err == nil {
				ev.Record = r
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				// Drain so the inner watcher can finish.
				for range in {
				}
				return
			}
		}
	}()
	return out
}

// Close implements store.Store.
func (s *Store) Close() error { return s.inner.Close() }

// Check opens every sealed record and returns the first failure: with the
// wrong key, nothing can be read, and nothing should be written either.
func (s *Store) Check(ctx context.Context) error {
	for typ := range s.types {
		recs, err := s.inner.List(ctx, typ, "")
		if err != nil {
			return err
		}
		for _, r := range recs {
			if _, err := s.open(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// Reseal seals with the current key every record of the sealed types that
// is not already: records written before encryption was enabled and
// records sealed with a previous key. It returns how many it rewrote. A
// record changed concurrently is left to be sealed by that change.
func (s *Store) Reseal(ctx context.Context) (int, error) {
	n := 0
	for typ := range s.types {
		recs, err := s.inner.List(ctx, typ, "")
		if err != nil {
			return n, err
		}
		for _, r := range recs {
			if SealedWith(r.Spec) == s.box.CurrentID() || r.Spec == nil {
				continue
			}
			plain, err := s.open(r)
			if err != nil {
				return n, err
			}
			err = s.Commit(ctx, store.Op{Kind: store.OpUpdate, Record: plain})
			switch {
			case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
				continue
			case err != nil:
				return n, fmt.Errorf("reseal %s: %w", r.Key, err)
			}
			n++
		}
	}
	return n, nil
}
