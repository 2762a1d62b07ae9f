package zonesync_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/leader"
	"meshca/pkg/store"
	"meshca/pkg/zonesync"
)

// The zone's sync client writes under its leader term's fence: once another
// term started (a new leader elected while this one was paused), what global
// sends is refused with store.ErrConflict, nothing of it is committed, and
// the client stops (the new leader's client syncs).
func TestZoneSyncWritesFenced(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := store.Create(ctx, h.zone, store.Record{Key: leader.TermKey, Spec: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	// What leader.Term.Fence returns for term 1.
	fence := []store.Op{{Kind: store.OpRequire, Record: store.Record{Key: leader.TermKey, Version: 1}}}

	h.startGlobal()
	zctx, cancel := context.WithCancel(ctx)
	defer cancel()
	z := zonesync.NewZone(h.zone, zonesync.ZoneConfig{Zone: "zone-1", GlobalAddress: h.addr, TLS: h.clientTLS,
		Token:       func() (string, error) { return "token-zone-1", nil },
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Resync: 100 * time.Millisecond})
	ran := make(chan error, 1)
	go func() { ran <- z.Run(zctx, fence...) }()

	mesh := func(name, spec string) store.Record {
		return store.Record{Key: store.Key{Type: api.TypeMesh, Name: name}, Spec: []byte(spec)}
	}
	if err := store.Upsert(ctx, h.global, mesh("m1", `{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "m1 synced under term 1", func() bool {
		_, err := h.zone.Get(ctx, mesh("m1", "").Key)
		return err == nil
	})
	before, err := h.zone.Get(ctx, mesh("m1", "").Key)
	if err != nil {
		t.Fatal(err)
	}

	// Another instance is elected: term 2.
	term, err := h.zone.Get(ctx, leader.TermKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Update(ctx, h.zone, store.Record{Key: leader.TermKey, Version: term.Version, Spec: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := store.Upsert(ctx, h.global, mesh("m1", `{"a":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := store.Upsert(ctx, h.global, mesh("m2", `{}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ran:
		if !errors.Is(err, zonesync.ErrFenced) || !errors.Is(err, store.ErrConflict) {
			t.Fatalf("the fenced sync stopped with %v, want ErrFenced and store.ErrConflict", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sync of an ended term went on")
	}
	if _, err := h.zone.Get(ctx, mesh("m2", "").Key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("m2, sent after the term ended, is in the zone's store (%v)", err)
	}
	after, err := h.zone.Get(ctx, mesh("m1", "").Key)
	if err != nil || after.Version != before.Version || string(after.Spec) != string(before.Spec) {
		t.Errorf("m1 changed after the term ended: %s v%d, was %s v%d (%v)", after.Spec, after.Version, before.Spec, before.Version, err)
	}
	if st := z.Status(); st.Connected || st.LastError == "" {
		t.Errorf("zone status after the fenced stop: %+v", st)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
