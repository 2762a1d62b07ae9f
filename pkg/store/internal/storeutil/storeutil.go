// Package storeutil holds the logic shared by the store backends: applying an
// Op to the current state of a record, deep copies, and the watcher hub.
package storeutil

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"time"

	"meshca/pkg/store"
)

// Clone returns a deep copy of r: Spec and Labels share no memory with r.
// Empty Spec and Labels are normalized to nil so that every backend returns
// the same shape.
func Clone(r store.Record) store.Record {
	if len(r.Spec) == 0 {
		r.Spec = nil
	} else {
		r.Spec = bytes.Clone(r.Spec)
	}
	if len(r.Labels) == 0 {
		r.Labels = nil
	} else {
		r.Labels = maps.Clone(r.Labels)
	}
	return r
}

// Now returns the current time in UTC without a monotonic clock reading, so
// values round-trip exactly through every backend.
func Now() time.Time {
	return time.Now().UTC().Round(0)
}

// ValidateOps rejects ops that no backend could apply: empty commits are
// allowed (they do nothing), but every op needs a known kind, a type and a
// name.
func ValidateOps(ops []store.Op) error {
	var errs []error
	for i, op := range ops {
		if op.Kind < store.OpCreate || op.Kind > store.OpRequireNone {
			errs = append(errs, fmt.Errorf("op %d: unknown kind %d", i, op.Kind))
		}
		switch {
		case op.Kind == store.OpRequireNone:
			if op.Record.Type == "" || op.Record.Name != "" {
				errs = append(errs, fmt.Errorf("op %d: require-none takes a type and no name (got %s)", i, op.Record.Key))
			}
		case op.Record.Type == "" || op.Record.Name == "":
			errs = append(errs, fmt.Errorf("op %d: type and name are required (got %s)", i, op.Record.Key))
		}
		if op.Record.Version < 0 {
			errs = append(errs, fmt.Errorf("op %d: negative version %d", i, op.Record.Version))
		}
	}
	return errors.Join(errs...)
}

// Apply computes the effect of op on cur, the stored record (nil when
// absent). It returns the record to store (nil for a delete) and the event to
// publish once the commit succeeds. now becomes the modification time (and
// the creation time of new records). Errors wrap the store sentinels.
// For OpRequire, it returns cur and no event (Kind 0): callers write and
// publish nothing for it.
func Apply(cur *store.Record, op store.Op, now time.Time) (*store.Record, store.Event, error) {
	in := op.Record
	key := in.Key
	switch op.Kind {
	case store.OpCreate:
		if cur != nil {
			return nil, store.Event{}, fmt.Errorf("create %s: %w", key, store.ErrAlreadyExists)
		}
		return create(in, now)
	case store.OpUpsert:
		if cur == nil {
			return create(in, now)
		}
		return update(cur, in, now)
	case store.OpUpdate:
		if err := checkStored("update", cur, in); err != nil {
			return nil, store.Event{}, err
		}
		return update(cur, in, now)
	case store.OpDelete:
		if err := checkStored("delete", cur, in); err != nil {
			return nil, store.Event{}, err
		}
		return nil, store.Event{Kind: store.EventDeleted, Record: Clone(*cur)}, nil
	case store.OpRequire:
		if err := checkStored("require", cur, in); err != nil {
			return nil, store.Event{}, err
		}
		return cur, store.Event{}, nil
	default:
		return nil, store.Event{}, fmt.Errorf("%s: unknown op kind %d", key, op.Kind)
	}
}

// NotNone is the error of an OpRequireNone that found the record named name.
func NotNone(op store.Op, name string) error {
	return fmt.Errorf("require no %s in mesh %q: %q exists: %w", op.Record.Type, op.Record.Mesh, name, store.ErrConflict)
}

// checkStored is the precondition of ops on an existing record: it exists,
// at in.Version unless that is 0.
func checkStored(verb string, cur *store.Record, in store.Record) error {
	if cur == nil {
		return fmt.Errorf("%s %s: %w", verb, in.Key, store.ErrNotFound)
	}
	if in.Version != 0 && in.Version != cur.Version {
		return fmt.Errorf("%s %s: have version %d, stored %d: %w", verb, in.Key, in.Version, cur.Version, store.ErrConflict)
	}
	return nil
}

func create(in store.Record, now time.Time) (*store.Record, store.Event, error) {
	next := Clone(in)
	next.Version = 1
	next.CreationTime = now
	next.ModificationTime = now
	return &next, store.Event{Kind: store.EventCreated, Record: Clone(next)}, nil
}

func update(cur *store.Record, in store.Record, now time.Time) (*store.Record, store.Event, error) {
	next := Clone(in)
	next.Version = cur.Version + 1
	next.CreationTime = cur.CreationTime
	next.ModificationTime = now
	return &next, store.Event{Kind: store.EventUpdated, Record: Clone(next)}, nil
}
