package postgres

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"meshca/pkg/store"
)

// A listener whose connection is terminated while commits continue delivers
// every event, in order, once it is back: those committed while it was away
// from the changes table (large ones included), then the live ones.
func TestListenerCatchUp(t *testing.T) {
	a, b := openTwo(t)
	away := make(chan struct{})
	back := make(chan struct{})
	b.beforeReconnect = func() {
		select {
		case <-away:
		default:
			close(away)
			<-back // commits go on while the listener is down
		}
	}
	ch := b.Watch(t.Context(), "T")
	other := b.Watch(t.Context(), "Other") // filters still apply to caught-up events

	const total = 90
	name := func(i int) string { return fmt.Sprintf("r%03d", i) }
	spec := func(i int) []byte {
		if i%10 == 0 {
			return []byte(strings.Repeat("y", 9000)) // too large for NOTIFY
		}
		return []byte(fmt.Sprintf(`{"i":%d}`, i))
	}
	commit := func(i int) {
		t.Helper()
		if err := store.Create(t.Context(), a, store.Record{Key: store.Key{Type: "T", Mesh: "m", Name: name(i)}, Spec: spec(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 30 {
		commit(i)
	}
	// Terminate the listener's backend, as an operator or a failover would.
	if _, err := a.pool.Exec(t.Context(), `SELECT pg_terminate_backend($1)`, int32(b.listenerPID.Load())); err != nil {
		t.Fatal(err)
	}
	select {
	case <-away:
	case <-time.After(10 * time.Second):
		t.Fatal("listener did not notice its connection was terminated")
	}
	for i := 30; i < 60; i++ {
		commit(i)
	}
	close(back)
	for i := 60; i < total; i++ {
		commit(i)
	}
	for i := range total {
		ev := next(t, ch)
		if ev.Record.Name != name(i) || ev.Kind != store.EventCreated || string(ev.Record.Spec) != string(spec(i)) {
			t.Fatalf("event %d = %v %s (%d bytes of spec), want created %s with its spec", i, ev.Kind, ev.Record.Name, len(ev.Record.Spec), name(i))
		}
	}
	select {
	case ev := <-ch:
		t.Fatalf("unexpected extra event %v %s", ev.Kind, ev.Record.Key)
	case ev := <-other:
		t.Fatalf("filtered watcher got %s", ev.Record.Key)
	case <-time.After(200 * time.Millisecond):
	}
	if got := testutil.ToFloat64(b.m.reconnects); got != 1 {
		t.Errorf("reconnects metric = %v, want 1", got)
	}
	if got := testutil.ToFloat64(b.m.caughtUp); got < 30 {
		t.Errorf("catch-up events metric = %v, want at least the 30 committed while away", got)
	}
	if got := testutil.ToFloat64(b.m.lost); got != 0 {
		t.Errorf("lost commits metric = %v, want 0", got)
	}
}

// A watcher started while the listener is away still sees every commit made
// after its Watch call.
func TestWatchWhileListenerAway(t *testing.T) {
	a, b := openTwo(t)
	away := make(chan struct{})
	back := make(chan struct{})
	b.beforeReconnect = func() {
		select {
		case <-away:
		default:
			close(away)
			<-back
		}
	}
	if _, err := a.pool.Exec(t.Context(), `SELECT pg_terminate_backend($1)`, int32(b.listenerPID.Load())); err != nil {
		t.Fatal(err)
	}
	<-away
	ch := b.Watch(t.Context())
	if err := store.Create(t.Context(), a, store.Record{Key: store.Key{Type: "T", Name: "during"}}); err != nil {
		t.Fatal(err)
	}
	close(back)
	if err := store.Create(t.Context(), a, store.Record{Key: store.Key{Type: "T", Name: "after"}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"during", "after"} {
		if ev := next(t, ch); ev.Record.Name != want {
			t.Fatalf("event for %s, want %s", ev.Record.Name, want)
		}
	}
}
