// Package storetest is a conformance suite every store.Store backend runs
// from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { ... })
//	}
//
// newStore must return an empty store and may register t.Cleanup to close it;
// the suite may also call Close itself, so Close must be idempotent.
package storetest

import (
	"strconv"
	"testing"
	"time"

	"meshca/pkg/store"
)

// eventTimeout bounds how long the suite waits for an expected event. Backends
// that deliver events asynchronously (postgres LISTEN/NOTIFY) need some slack.
const eventTimeout = 10 * time.Second

// Options adapt the suite to a backend.
type Options struct {
	// VersionsOnlyGrow is for backends whose versions grow on every change
	// but not one by one from 1 (the Kubernetes store's resourceVersions).
	// Where the suite expects version n, it then expects a version greater
	// than the record's previous one and equal to what Get returns; an
	// update that follows a create of the same key in one commit gives
	// version 0, since the created version is not known before the commit.
	// Every other check is the same.
	VersionsOnlyGrow bool
}

// vlabel is how the suite writes version n in event descriptions: "vN",
// or "v?" when versions only grow (checked apart).
func (o Options) vlabel(n int) string {
	if o.VersionsOnlyGrow {
		return "v?"
	}
	return "v" + strconv.Itoa(n)
}

// first reports whether v is a record's first version.
func (o Options) first(v int64) bool { return v == 1 || (o.VersionsOnlyGrow && v > 0) }

// nth reports whether v is the n-th version of a record whose first was
// v1 (exactly n when versions count, greater than v1 when they only grow).
func (o Options) nth(v, v1 int64, n int) bool {
	if o.VersionsOnlyGrow {
		return v > v1
	}
	return v == int64(n)
}

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	RunWithOptions(t, Options{}, newStore)
}

// RunWithOptions runs the conformance suite adapted by o.
func RunWithOptions(t *testing.T, o Options, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store, o Options)
	}{
		{"CreateGetList", testCreateGetList},
		{"AlreadyExists", testAlreadyExists},
		{"NotFound", testNotFound},
		{"InvalidOp", testInvalidOp},
		{"StaleVersionConflict", testStaleVersion},
		{"Version0Unchecked", testVersion0},
		{"Upsert", testUpsert},
		{"Require", testRequire},
		{"WatchTypes", testWatchTypes},
		{"RequireNone", testRequireNone},
		{"OpsSeeEarlierOpsInCommit", testSameKeyInCommit},
		{"AtomicCommit", testAtomicCommit},
		{"EventsInCommitOrder", testEventsOrder},
		{"WatchClosedOnCancel", testWatchCancel},
		{"WatchClosedOnClose", testWatchClose},
		{"SlowWatcherDoesNotBlockWriters", testSlowWatcher},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"ConcurrentCommits", testConcurrentCommits},
		{"DeepCopy", testDeepCopy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t), o)
		})
	}
}

func rec(typ, mesh, name, spec string) store.Record {
	return store.Record{
		Key:    store.Key{Type: typ, Mesh: mesh, Name: name},
		Spec:   []byte(spec),
		Labels: map[string]string{"name": name},
	}
}

func mustCommit(t *testing.T, s store.Store, ops ...store.Op) {
	t.Helper()
	if err := s.Commit(t.Context(), ops...); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func mustGet(t *testing.T, s store.Store, key store.Key) store.Record {
	t.Helper()
	r, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	return r
}

func keys(rs []store.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Mesh + "/" + r.Name
	}
	return out
}
