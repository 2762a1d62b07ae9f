package postgres

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"testing"
	"time"

	"meshca/pkg/store"
	"meshca/pkg/store/internal/storeutil"
)

// BenchmarkListenerEvent is what the listener spends on one notification
// of another instance's commit, as a follower receives each identity the
// leader writes: decoding the payload and publishing the event to a
// watcher. The spec is the size of a sealed DataplaneIdentity record.
func BenchmarkListenerEvent(b *testing.B) {
	spec := make([]byte, 1500)
	_, _ = rand.Read(spec)
	now := time.Now()
	_, payload, err := encode(0, store.Event{Kind: store.EventUpdated, Record: store.Record{
		Key:     store.Key{Type: "DataplaneIdentity", Mesh: "default", Name: "dp-00001"},
		Version: 7, Spec: spec, CreationTime: now, ModificationTime: now,
	}})
	if err != nil {
		b.Fatal(err)
	}
	payload = `{"commit":12345,` + payload[1:]
	s := &Store{logger: slog.New(slog.NewTextHandler(io.Discard, nil)), hub: storeutil.NewHub()}
	ctx := context.Background()
	events := s.hub.Watch(ctx, "DataplaneIdentity")
	go func() {
		for range events {
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		note, err := decodeNotification(payload)
		if err != nil {
			b.Fatal(err)
		}
		ev, err := s.event(ctx, nil, note)
		if err != nil {
			b.Fatal(err)
		}
		s.hub.Publish([]store.Event{ev})
	}
}
