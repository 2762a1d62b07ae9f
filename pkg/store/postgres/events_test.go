package postgres

import (
	"bytes"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"meshca/pkg/store"
)

// Another process's watcher receives each event exactly as committed:
// binary specs, no spec, labels, a record far beyond NOTIFY's 8000 bytes,
// updates and deletes, each commit's events in order.
func TestEventsAsCommitted(t *testing.T) {
	a, b := openTwo(t)
	ch := b.Watch(t.Context(), "T")

	key := func(name string) store.Key { return store.Key{Type: "T", Mesh: "m", Name: name} }
	records := []store.Record{
		{Key: key("binary"), Spec: []byte("\x00\x01sealed\xff\"}")},
		{Key: key("none")},
		{Key: key("labelled"), Spec: []byte(`{"a":1}`), Labels: map[string]string{"spec": "QUJD", "k": `v","spec":"QUJD`}},
		{Key: key("large"), Spec: bytes.Repeat([]byte("y"), 100_000)},
	}
	// One commit with several events, then one each.
	ops := make([]store.Op, 0, len(records))
	for _, r := range records[:2] {
		ops = append(ops, store.Op{Kind: store.OpCreate, Record: r})
	}
	if err := a.Commit(t.Context(), ops...); err != nil {
		t.Fatal(err)
	}
	for _, r := range records[2:] {
		if err := store.Create(t.Context(), a, r); err != nil {
			t.Fatal(err)
		}
	}
	updated := records[0]
	updated.Spec = []byte("second")
	updated.Version = 1
	if err := a.Commit(t.Context(), store.Op{Kind: store.OpUpdate, Record: updated}); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(t.Context(), store.Op{Kind: store.OpDelete, Record: store.Record{Key: key("large"), Version: 1}}); err != nil {
		t.Fatal(err)
	}

	type want struct {
		kind    store.EventKind
		rec     store.Record
		version int64
	}
	wants := []want{
		{store.EventCreated, records[0], 1}, {store.EventCreated, records[1], 1},
		{store.EventCreated, records[2], 1}, {store.EventCreated, records[3], 1},
		{store.EventUpdated, updated, 2}, {store.EventDeleted, records[3], 1},
	}
	var created time.Time
	for i, w := range wants {
		ev := next(t, ch)
		r := ev.Record
		switch {
		case ev.Kind != w.kind || r.Key != w.rec.Key:
			t.Fatalf("event %d: %v %s, want %v %s", i, ev.Kind, r.Key, w.kind, w.rec.Key)
		case !bytes.Equal(r.Spec, w.rec.Spec) || (w.rec.Spec == nil) != (r.Spec == nil):
			t.Errorf("event %d (%s): spec %q, want %q", i, w.rec.Key, trim(r.Spec), trim(w.rec.Spec))
		case !maps.Equal(r.Labels, w.rec.Labels):
			t.Errorf("event %d (%s): labels %v, want %v", i, w.rec.Key, r.Labels, w.rec.Labels)
		case r.Version != w.version:
			t.Errorf("event %d (%s): version %d, want %d", i, w.rec.Key, r.Version, w.version)
		case r.CreationTime.Location() != time.UTC || r.ModificationTime.Location() != time.UTC:
			t.Errorf("event %d (%s): times not in UTC", i, w.rec.Key)
		}
		if i == 0 {
			created = r.CreationTime
		}
	}
	// The update's event carries the record as stored, times to the
	// nanosecond.
	stored, err := a.Get(t.Context(), key("binary"))
	if err != nil {
		t.Fatal(err)
	}
	if !stored.CreationTime.Equal(created) || !stored.ModificationTime.After(created) {
		t.Errorf("stored times %v / %v, creation event's %v", stored.CreationTime, stored.ModificationTime, created)
	}
}

func trim(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// A notification on the store's channel that is not a commit's number (an
// instance of another version, an operator's psql) is ignored; the
// listener goes on, on the same connection.
func TestForeignNotificationIgnored(t *testing.T) {
	a := openEmpty(t)
	ch := a.Watch(t.Context(), "T")
	for _, payload := range []string{`{"commit":1,"seq":0}`, "", "12x", strings.Repeat("9", 30)} {
		if _, err := a.pool.Exec(t.Context(), `SELECT pg_notify($1, $2)`, Channel, payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Create(t.Context(), a, store.Record{Key: store.Key{Type: "T", Name: "after"}}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch); ev.Record.Name != "after" {
		t.Fatalf("event for %s, want after", ev.Record.Name)
	}
	// A listener that gave up its connection over them would still deliver
	// "after" (it catches up once back): it must not have had to.
	if got := testutil.ToFloat64(a.m.reconnects); got != 0 {
		t.Errorf("listener reconnected %v times over foreign notifications, want 0", got)
	}
}
