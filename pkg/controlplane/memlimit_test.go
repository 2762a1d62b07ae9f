package controlplane

import (
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseMemoryLimit(t *testing.T) {
	type want struct {
		mode string
		size int64
	}
	for in, w := range map[string]want{
		"auto":     {mode: MemoryLimitAuto},
		"":         {mode: MemoryLimitAuto},
		"off":      {mode: MemoryLimitOff},
		"adaptive": {mode: MemoryLimitAdaptive},
		"OFF":      {mode: MemoryLimitOff},
		"256MiB":   {size: 256 << 20},
		"1GiB":     {size: 1 << 30},
		"1.5GiB":   {size: 3 << 29},
		"300MB":    {size: 300e6},
		"16777216": {size: 16 << 20},
		"64 MiB":   {size: 64 << 20},
	} {
		mode, size, err := ParseMemoryLimit(in)
		if err != nil || mode != w.mode || size != w.size {
			t.Errorf("ParseMemoryLimit(%q) = %q, %d, %v; want %q, %d", in, mode, size, err, w.mode, w.size)
		}
	}
	for _, in := range []string{"lots", "-1GiB", "0", "1MiB", "12 parsecs", "1e30GiB"} {
		if _, _, err := ParseMemoryLimit(in); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
			t.Errorf("ParseMemoryLimit(%q): err = %v, want an error naming --memory-limit", in, err)
		}
	}
}

func TestSoftLimitFor(t *testing.T) {
	for _, c := range []struct{ container, want int64 }{
		{300e6, 300e6 - 64<<20},     // small: the binary's pages dominate the reserve
		{1 << 30, 1<<30 - 1<<30/10}, // large: 10 %
		{100 << 20, 50 << 20},       // tiny: at least half
	} {
		if got := softLimitFor(c.container); got != c.want {
			t.Errorf("softLimitFor(%d) = %d, want %d", c.container, got, c.want)
		}
	}
}

func TestAdaptiveLimitArithmetic(t *testing.T) {
	a := newAdaptiveLimit(32 << 20)
	for _, c := range []struct {
		name string
		st   memState
		want int64
	}{
		{"small heap: the minimum headroom", memState{live: 20 << 20, held: 60 << 20, garbage: 15 << 20}, (45 << 20) + (32 << 20)},
		{"large heap: a quarter of it", memState{live: 800 << 20, held: 1200 << 20, garbage: 200 << 20}, (1000 << 20) + (200 << 20)},
		{"inconsistent sample", memState{live: 1, held: 10, garbage: 20}, 0},
	} {
		if got := a.limit(c.st); got != c.want {
			t.Errorf("%s: limit = %d, want %d", c.name, got, c.want)
		}
	}
}

// TestAdaptiveLimitFollowsCollections: the limit is set at start and again
// after a collection, from the runtime's own numbers, and lifted by stop.
func TestAdaptiveLimitFollowsCollections(t *testing.T) {
	runtime.GC()
	a := newAdaptiveLimit(32 << 20)
	var sets atomic.Int64
	a.set = func(l int64) int64 { sets.Add(1); return debug.SetMemoryLimit(l) }
	a.start()
	defer a.stop()
	first := a.last.Load()
	st := readMemState()
	if first <= 0 || uint64(first) < st.live+32<<20 {
		t.Fatalf("limit %d at start, want at least the live heap (%d) plus 32 MiB", first, st.live)
	}
	if got := debug.SetMemoryLimit(-1); got != first {
		t.Fatalf("runtime limit %d, want %d", got, first)
	}
	// Keep 64 MiB live, then collect: the limit follows.
	keep := make([][]byte, 64)
	for i := range keep {
		keep[i] = make([]byte, 1<<20)
	}
	// (An update may still come from a collection made while keep was
	// being filled: wait for one that saw all of it.)
	deadline := time.Now().Add(10 * time.Second)
	for a.last.Load() < first+60<<20 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if after := a.last.Load(); after < first+60<<20 {
		t.Fatalf("limit %d after 64 MiB more became live (%d updates), want at least %d", after, sets.Load(), first+60<<20)
	}
	runtime.KeepAlive(keep)
	a.stop()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("limit %d after stop, want none", got)
	}
}
