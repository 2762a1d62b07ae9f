// Package memory is an in-process store.Store for tests and single-process
// tools. Records are deep-copied on the way in and out.
package memory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"meshca/pkg/store"
	"meshca/pkg/store/internal/storeutil"
)

// ErrClosed is returned by operations on a closed Store.
var ErrClosed = errors.New("memory store: closed")

// Store keeps records in maps guarded by a mutex.
type Store struct {
	hub *storeutil.Hub

	mu     sync.RWMutex
	data   map[store.Key]store.Record
	closed bool
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{hub: storeutil.NewHub(), data: make(map[store.Key]store.Record)}
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key store.Key) (store.Record, error) {
	if err := ctx.Err(); err != nil {
		return store.Record{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.Record{}, ErrClosed
	}
	r, ok := s.data[key]
	if !ok {
		return store.Record{}, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return storeutil.Clone(r), nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, typ, mesh string) ([]store.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	var out []store.Record
	for k, r := range s.data {
		if k.Type == typ && (mesh == "" || k.Mesh == mesh) {
			out = append(out, storeutil.Clone(r))
		}
	}
	slices.SortFunc(out, func(a, b store.Record) int {
		return cmp.Or(cmp.Compare(a.Mesh, b.Mesh), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

// Commit implements store.Store. Ops are applied in order to a staging view,
// so later ops see the effect of earlier ones; nothing is stored unless all
// succeed.
func (s *Store) Commit(ctx context.Context, ops ...store.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := storeutil.ValidateOps(ops); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}

	now := storeutil.Now()
	staged := make(map[store.Key]*store.Record, len(ops))
	events := make([]store.Event, 0, len(ops))
	for _, op := range ops {
		if op.Kind == store.OpRequireNone {
			if name, found := s.anyLocked(staged, op.Record.Type, op.Record.Mesh); found {
				return fmt.Errorf("commit: %w", storeutil.NotNone(op, name))
			}
			continue
		}
		key := op.Record.Key
		cur, ok := staged[key]
		if !ok {
			if r, found := s.data[key]; found {
				cur = &r
			}
		}
		next, ev, err := storeutil.Apply(cur, op, now)
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		if op.Kind == store.OpRequire {
			continue
		}
		staged[key] = next
		events = append(events, ev)
	}
	for key, r := range staged {
		if r == nil {
			delete(s.data, key)
		} else {
			s.data[key] = *r
		}
	}
	// Publishing under s.mu keeps events in commit order; it never blocks.
	s.hub.Publish(events)
	return nil
}

// anyLocked returns the name of a record of typ in mesh as the commit being
// applied sees it (staged over stored), if there is one.
func (s *Store) anyLocked(staged map[store.Key]*store.Record, typ, mesh string) (string, bool) {
	for k, r := range staged {
		if r != nil && k.Type == typ && k.Mesh == mesh {
			return k.Name, true
		}
	}
	for k := range s.data {
		if k.Type != typ || k.Mesh != mesh {
			continue
		}
		if r, ok := staged[k]; ok && r == nil {
			continue // deleted earlier in this commit
		}
		return k.Name, true
	}
	return "", false
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context, types ...string) <-chan store.Event {
	return s.hub.Watch(ctx, types...)
}

// Close implements store.Store. It closes all watch channels.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.hub.Close()
	return nil
}
