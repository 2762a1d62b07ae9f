package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"meshca/internal/promtext"
)

// samples are the series of one /metrics scrape.
type samples = promtext.Samples

// cpuSeconds is the user+system CPU time of a process (Linux /proc; 0
// elsewhere). Clock ticks are taken as 100 per second (USER_HZ on Linux).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// loadAvg is the 1-minute load average (Linux; "" elsewhere).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
