package identity

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestRotateAtIsEightyPercentOfLifetime(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		life   time.Duration
		jitter float64
		want   time.Duration
	}{
		{24 * time.Hour, 0, 19*time.Hour + 12*time.Minute},
		{10 * time.Second, 0, 8 * time.Second},
		{100 * time.Hour, 1, 85 * time.Hour},
		{100 * time.Hour, -1, 75 * time.Hour},
	} {
		got := RotateAt(issued, issued.Add(tc.life), tc.jitter).Sub(issued)
		if got != tc.want {
			t.Errorf("life %v jitter %v: rotate after %v, want %v", tc.life, tc.jitter, got, tc.want)
		}
	}
	if got := RotateAt(issued, issued.Add(-time.Hour), 0); !got.Equal(issued) {
		t.Errorf("expired certificate rotates at %v, want at once", got)
	}
}

// TestJitterSpreadsAMesh checks that 10,000 certificates issued in the same
// second do not rotate in the same second: the spread covers ±5% of the
// lifetime and no second holds more than a small share of them.
func TestJitterSpreadsAMesh(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	life := 24 * time.Hour
	r := rand.New(rand.NewPCG(1, 2))
	perSecond := map[int64]int{}
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for i := 0; i < 10000; i++ {
		at := RotateAt(issued, issued.Add(life), r.Float64()*2-1).Sub(issued)
		perSecond[int64(at/time.Second)]++
		lo, hi = min(lo, at), max(hi, at)
	}
	if lo < 75*life/100 || hi > 85*life/100 {
		t.Errorf("rotations span %v..%v, outside 75%%..85%% of %v", lo, hi, life)
	}
	if spread := hi - lo; spread < 9*life/100 {
		t.Errorf("rotations spread over only %v", spread)
	}
	for s, n := range perSecond {
		if n > 10 {
			t.Errorf("%d rotations in second %d", n, s)
		}
	}
}

func TestBackoffDoublesAndCaps(t *testing.T) {
	base, max := time.Second, time.Minute
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i, w := range want {
		if got := Backoff(i+1, base, max, 0); got != w*time.Second {
			t.Errorf("attempt %d: %v, want %v", i+1, got, w*time.Second)
		}
	}
	if got := Backoff(3, base, max, 1); got != 4800*time.Millisecond {
		t.Errorf("jitter +1: %v", got)
	}
	if got := Backoff(3, base, max, -1); got != 3200*time.Millisecond {
		t.Errorf("jitter -1: %v", got)
	}
}

// With a failover budget, a short-lived certificate is renewed early enough
// for a failover to fit before it expires, but not before half its life.
func TestRotateAtLeavesRoomForFailover(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		life, budget, want time.Duration
	}{
		{10 * time.Second, 0, 8 * time.Second},
		{10 * time.Second, 3 * time.Second, 7 * time.Second},
		{10 * time.Second, 10 * time.Second, 5 * time.Second},
		{24 * time.Hour, 10 * time.Second, 24 * time.Hour * 8 / 10},
	} {
		m := &Manager{opts: Options{Jitter: func() float64 { return 0 }, FailoverBudget: tc.budget}}
		if got := m.rotateAt(issued, issued.Add(tc.life), "").Sub(issued); got != tc.want {
			t.Errorf("life %v budget %v: rotate after %v, want %v", tc.life, tc.budget, got, tc.want)
		}
	}
}
