//go:build unix

package builtin_test

import (
	"syscall"
	"time"
)

// processCPUTime is the user+system CPU time of this process so far. The
// benchmarks report it per operation: on a shared machine it is far steadier
// than wall-clock time.
func processCPUTime() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
