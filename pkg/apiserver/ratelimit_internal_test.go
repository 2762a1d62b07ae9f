package apiserver

import (
	"testing"
	"time"
)

// TestClientLimiter: each client has its own bucket: a burst, then refusals
// that say how long to wait, then tokens again as time passes; idle buckets
// are forgotten.
func TestClientLimiter(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newClientLimiter(1, 3, func() time.Time { return now })
	for i := range 3 {
		if ok, _ := l.allow("10.0.0.1"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.allow("10.0.0.1")
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("4th request: ok=%v wait=%v, want a refusal with a wait of at most 1s", ok, wait)
	}
	if ok, _ := l.allow("10.0.0.2"); !ok {
		t.Fatal("another client was held to the first one's rate")
	}
	now = now.Add(time.Second)
	if ok, _ := l.allow("10.0.0.1"); !ok {
		t.Fatal("no token after a second at 1/s")
	}
	now = now.Add(2 * idleAfter)
	l.allow("10.0.0.3")
	if n := len(l.clients); n != 1 {
		t.Fatalf("%d buckets kept after the others went idle, want 1", n)
	}
}
