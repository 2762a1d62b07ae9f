package controlplane

import (
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// MinHeadroom is the least garbage the adaptive memory limit allows above
// what is live (see adaptiveLimit).
const MinHeadroom = 24 << 20

// adaptiveLimit keeps the Go runtime's soft memory limit at what the
// process holds for live data plus a headroom for garbage of
// max(MinHeadroom, live heap / 4), recomputed after every collection.
//
// Go's default pacing lets the heap grow by as much again as is live,
// goroutine stacks included, before it collects. In a control plane with
// thousands of SDS streams most of what is live is long-lived connection
// state (stacks, gRPC stream state) that makes no garbage, so that doubling
// is memory spent on nothing; with the limit, the process stays near its
// live size. The price is more collection work while much garbage is made:
// re-issuing every certificate of a large mesh at once, or thousands of
// proxies reconnecting after a restart. When little is live (a heap under
// about 24 MiB: a thousand data planes or so) GOGC's goal is the lower one
// and the limit changes nothing.
//
// Chosen by measurement (BENCHMARKS.md §2), 10,000 data planes with live
// streams: a 16 MiB minimum kept the peak at 243 MiB but made re-issuing
// all of them take 70 % more CPU than Go's default pacing; 32 MiB peaked at
// 270-290 MiB, too near 300 MB; 24 MiB peaks at 255-265 MiB for about 35 %
// more CPU on that mass re-issue. The quarter of the live heap keeps the
// collection work bounded when much more is live (10,000 proxies on their
// own connections: an eighth made their reconnection take 2.6 times the
// CPU of Go's default pacing, a quarter 1.8 times).
type adaptiveLimit struct {
	minHeadroom int64
	set         func(limit int64) int64 // debug.SetMemoryLimit (counted in tests)
	stopped     atomic.Bool
	last        atomic.Int64
}

// memState is what the limit is computed from.
type memState struct {
	live    uint64 // heap bytes marked live by the last collection (before the first: all heap objects)
	held    uint64 // mapped by the runtime and not released to the OS
	garbage uint64 // heap object bytes not live (dead, unswept) plus free heap
}

func newAdaptiveLimit(minHeadroom int64) *adaptiveLimit {
	return &adaptiveLimit{minHeadroom: minHeadroom, set: debug.SetMemoryLimit}
}

// limit returns the soft limit for st; 0 if st is inconsistent.
func (a *adaptiveLimit) limit(st memState) int64 {
	if st.held < st.garbage {
		return 0
	}
	inUse := st.held - st.garbage // live heap, stacks, runtime metadata, fragmentation
	headroom := max(uint64(a.minHeadroom), st.live/4)
	if inUse > math.MaxInt64-headroom {
		return math.MaxInt64
	}
	return int64(inUse + headroom)
}

// update sets the limit from the runtime's current state.
func (a *adaptiveLimit) update() {
	if l := a.limit(readMemState()); l > 0 {
		a.set(l)
		a.last.Store(l)
	}
}

// start sets the limit now and after every collection until stop.
func (a *adaptiveLimit) start() {
	a.update()
	a.arm()
}

// arm attaches the next update to a collection: a cleanup runs once the
// object it watches has been found unreachable, that is after a cycle.
// (64 bytes: tiny objects are batched, which would delay the cleanup.)
func (a *adaptiveLimit) arm() {
	runtime.AddCleanup(new([64]byte), func(a *adaptiveLimit) {
		if a.stopped.Load() {
			return
		}
		a.update()
		a.arm()
	}, a)
}

// stop ends the updates and lifts the limit.
func (a *adaptiveLimit) stop() {
	a.stopped.Store(true)
	a.set(math.MaxInt64)
}

var memSamples = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/objects:bytes",
	"/gc/cycles/total:gc-cycles",
}

func readMemState() memState {
	s := make([]metrics.Sample, len(memSamples))
	for i, n := range memSamples {
		s[i].Name = n
	}
	metrics.Read(s)
	u := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	live, total, released, free, objects, cycles := u(0), u(1), u(2), u(3), u(4), u(5)
	if cycles == 0 {
		live = objects // nothing marked yet: count every object as live
	}
	st := memState{live: live}
	if total >= released {
		st.held = total - released
	}
	st.garbage = free
	if objects > live { // objects may be fewer: freed since the mark
		st.garbage += objects - live
	}
	return st
}

// startAdaptive starts an adaptive limit and logs it.
func startAdaptive(logger *slog.Logger) *adaptiveLimit {
	a := newAdaptiveLimit(MinHeadroom)
	a.start()
	logger.Info("adaptive memory limit: what is live plus max(24MiB, 1/4 of the live heap); --memory-limit sets a fixed one, off none")
	return a
}
