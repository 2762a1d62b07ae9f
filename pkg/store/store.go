// Package store persists meshca resources. It offers one small interface with
// optimistic concurrency (every record carries a version; a write with a stale
// version is refused with ErrConflict), atomic multi-record commits, and change
// events. Implementations: memory (tests), sqlite (embedded default),
// postgres (several control planes on one database), and kube (the
// Kubernetes API, for a control plane in a cluster).
//
// The store never interprets a record's Spec: validation belongs to callers.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors; implementations wrap them so callers use errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrConflict      = errors.New("conflict: resource was modified concurrently (stale version)")
	// ErrStorageFull wraps a write refused because the store's disk (or
	// database quota) is full. Reads keep working; writes work again once
	// space is freed, with nothing to restart.
	ErrStorageFull = errors.New("the store's disk is full")
	// ErrUnavailable wraps a call that failed because the store's database
	// server could not be reached (down, restarting, the connection lost).
	// The call may be retried; a write whose connection broke while it
	// committed may have been applied, which its version check tells.
	ErrUnavailable = errors.New("the store's database is unavailable")
)

// Key names one record. Mesh is empty for global records (Mesh, GlobalSecret).
type Key struct {
	Type string
	Mesh string
	Name string
}

func (k Key) String() string {
	if k.Mesh == "" {
		return fmt.Sprintf("%s %q", k.Type, k.Name)
	}
	return fmt.Sprintf("%s %q in mesh %q", k.Type, k.Name, k.Mesh)
}

// Record is one stored resource. Spec is opaque bytes (JSON by convention).
type Record struct {
	Key
	// Version starts at 1 on create and grows by one on every update (in
	// the kube store it is the object's resourceVersion: it only grows).
	// Callers compare it for equality, never compute the next one.
	Version          int64
	Spec             []byte
	Labels           map[string]string
	CreationTime     time.Time
	ModificationTime time.Time
}

// OpKind says what an Op does.
type OpKind int

const (
	// OpCreate fails with ErrAlreadyExists if the key exists.
	OpCreate OpKind = iota + 1
	// OpUpdate fails with ErrNotFound if absent, ErrConflict if Record.Version
	// is not the stored version. Version 0 means "whatever is stored" (no check).
	OpUpdate
	// OpUpsert creates or updates without a version check.
	OpUpsert
	// OpDelete fails with ErrNotFound if absent. A non-zero Version is checked.
	OpDelete
	// OpRequire changes nothing and publishes nothing; it fails with
	// ErrNotFound if the key is absent (a non-zero Version is checked). It
	// makes a commit conditional on another record, such as a Dataplane's on
	// its Mesh, atomically: the record cannot be deleted in between. With a
	// version it is also the leader's fence (pkg/leader): every write of the
	// issuer requires the LeaderTerm record at its term's version, which a
	// new leader updates (and so waits for, then refuses) before its term.
	OpRequire
	// OpRequireNone changes nothing and publishes nothing; it fails with
	// ErrConflict if any record of Record.Type exists in Record.Mesh (after
	// the commit's earlier ops; Record.Name must be empty). It makes a
	// commit conditional on a set being empty, such as a Mesh's deletion on
	// its having no Dataplanes.
	OpRequireNone
)

// Op is one step of an atomic Commit.
type Op struct {
	Kind   OpKind
	Record Record
}

// EventKind tells what happened to a record.
type EventKind int

const (
	EventCreated EventKind = iota + 1
	EventUpdated
	EventDeleted
)

// Event reports one committed change. For EventDeleted, Record holds the last
// stored state.
type Event struct {
	Kind   EventKind
	Record Record
}

// Store is implemented by every backend. All methods are safe for concurrent use.
type Store interface {
	// Get returns the record or an error wrapping ErrNotFound.
	Get(ctx context.Context, key Key) (Record, error)
	// List returns records of a type sorted by (Mesh, Name). mesh "" lists all meshes.
	List(ctx context.Context, typ, mesh string) ([]Record, error)
	// Commit applies all ops atomically: either every op succeeds or nothing
	// changes. On success, versions and times are set by the store, and one
	// Event per op is delivered to watchers after the commit.
	Commit(ctx context.Context, ops ...Op) error
	// Watch delivers events of commits made after the call until ctx is done:
	// of records of the given types only, if any are given (others are
	// neither copied nor queued for this watcher). The channel is closed when
	// ctx ends. Slow consumers must not block writers: events are buffered
	// without bound per watcher.
	Watch(ctx context.Context, types ...string) <-chan Event
	// Close releases resources.
	Close() error
}

// Create is a convenience for a single OpCreate.
func Create(ctx context.Context, s Store, r Record) error {
	return s.Commit(ctx, Op{Kind: OpCreate, Record: r})
}

// Update is a convenience for a single OpUpdate.
func Update(ctx context.Context, s Store, r Record) error {
	return s.Commit(ctx, Op{Kind: OpUpdate, Record: r})
}

// Upsert is a convenience for a single OpUpsert.
func Upsert(ctx context.Context, s Store, r Record) error {
	return s.Commit(ctx, Op{Kind: OpUpsert, Record: r})
}

// Delete is a convenience for a single OpDelete without a version check.
func Delete(ctx context.Context, s Store, key Key) error {
	return s.Commit(ctx, Op{Kind: OpDelete, Record: Record{Key: key}})
}
