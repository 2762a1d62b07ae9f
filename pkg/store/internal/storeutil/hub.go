package storeutil

import (
	"context"
	"slices"
	"sync"

	"meshca/pkg/store"
)

// Hub fans events out to watchers. Each watcher has an unbounded queue drained
// by its own goroutine, so Publish never blocks on a slow consumer.
type Hub struct {
	mu       sync.Mutex
	watchers map[*watcher]struct{}
	closed   bool
}

type watcher struct {
	mu     sync.Mutex
	queue  []store.Event
	wake   chan struct{} // capacity 1: "queue is non-empty"
	closed chan struct{} // closed by Hub.Close
	active bool          // guarded by Hub.mu; inactive watchers get no events
	types  []string      // the record types it wants; all if empty
}

// wants reports whether w wants events of records of type typ.
func (w *watcher) wants(typ string) bool {
	return len(w.types) == 0 || slices.Contains(w.types, typ)
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{watchers: make(map[*watcher]struct{})}
}

// Watch registers a watcher before returning, so it sees every event
// published after the call. The channel is closed when ctx ends or the hub is
// closed.
func (h *Hub) Watch(ctx context.Context, types ...string) <-chan store.Event {
	ch, _ := h.watch(ctx, true, types)
	return ch
}

// WatchInactive registers a watcher that receives no events until activate is
// called. Backends whose events arrive asynchronously use it to start a
// watcher at a well-defined point of the event stream. activate is idempotent.
func (h *Hub) WatchInactive(ctx context.Context, types ...string) (ch <-chan store.Event, activate func()) {
	return h.watch(ctx, false, types)
}

func (h *Hub) watch(ctx context.Context, active bool, types []string) (<-chan store.Event, func()) {
	out := make(chan store.Event)
	w := &watcher{wake: make(chan struct{}, 1), closed: make(chan struct{}), active: active, types: slices.Clone(types)}
	activate := func() {
		h.mu.Lock()
		w.active = true
		h.mu.Unlock()
	}

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		close(out)
		return out, activate
	}
	h.watchers[w] = struct{}{}
	h.mu.Unlock()

	go func() {
		defer close(out)
		defer h.remove(w)
		for {
			w.mu.Lock()
			batch := w.queue
			w.queue = nil
			w.mu.Unlock()

			for _, ev := range batch {
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				case <-w.closed:
					return
				}
			}
			if len(batch) > 0 {
				continue
			}
			select {
			case <-w.wake:
			case <-ctx.Done():
				return
			case <-w.closed:
				return
			}
		}
	}()
	return out, activate
}

func (h *Hub) remove(w *watcher) {
	h.mu.Lock()
	delete(h.watchers, w)
	h.mu.Unlock()
}

// Publish queues events, in order, for every current watcher. Each watcher
// gets its own deep copies. Callers that need a global order across commits
// must serialize their Publish calls in commit order.
func (h *Hub) Publish(events []store.Event) {
	if len(events) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers {
		if !w.active {
			continue
		}
		queued := false
		w.mu.Lock()
		for _, ev := range events {
			if !w.wants(ev.Record.Type) {
				continue
			}
			ev.Record = Clone(ev.Record)
			w.queue = append(w.queue, ev)
			queued = true
		}
		w.mu.Unlock()
		if !queued {
			continue
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// Close closes every watcher's channel and makes later Watch calls return a
// closed channel. Queued events are dropped.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for w := range h.watchers {
		close(w.closed)
	}
}
