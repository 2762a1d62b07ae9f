package controlplane

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroup files holding the container's memory limit (v2, then v1).
var cgroupLimitFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// The values of meshca-cp run --memory-limit other than a size.
const (
	MemoryLimitAuto     = "auto"
	MemoryLimitAdaptive = "adaptive"
	MemoryLimitOff      = "off"
)

// ParseMemoryLimit parses a --memory-limit value: one of the modes
// MemoryLimitAuto ("" too), MemoryLimitAdaptive and MemoryLimitOff, or a
// size in bytes with an optional unit (B, KiB, MiB, GiB, TiB as in
// GOMEMLIMIT, or KB, MB, GB, TB in powers of ten), returned with mode "".
func ParseMemoryLimit(s string) (mode string, size int64, err error) {
	v := strings.TrimSpace(s)
	switch m := strings.ToLower(v); m {
	case "":
		return MemoryLimitAuto, 0, nil
	case MemoryLimitAuto, MemoryLimitAdaptive, MemoryLimitOff:
		return m, 0, nil
	}
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	}
	num, mult := v, 1.0
	for _, u := range units {
		if strings.HasSuffix(v, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) || f*mult >= math.MaxInt64 {
		return "", 0, fmt.Errorf("--memory-limit %q: want %s, %s, %s, or a positive size such as 256MiB or 1GiB", s, MemoryLimitAuto, MemoryLimitAdaptive, MemoryLimitOff)
	}
	if b := int64(f * mult); b >= 16<<20 {
		return "", b, nil
	}
	return "", 0, fmt.Errorf("--memory-limit %q: too small; the control plane needs at least 16MiB", s)
}

// ApplyMemoryLimit sets the Go runtime's soft memory limit (the garbage
// collector works harder as the process nears it) from a --memory-limit
// value and returns the limit in bytes (0: none or adaptive).
//
//   - A size: that limit, overriding GOMEMLIMIT.
//   - "off": no limit, overriding GOMEMLIMIT.
//   - "auto": GOMEMLIMIT if set; else, in a container with a memory limit
//     (cgroup v2 or v1), that limit less what the Go runtime does not
//     manage (softLimitFor), so the collector works harder before the
//     container is killed instead of after; else an adaptive limit: what is
//     live plus max(24 MiB, 1/4 of the live heap) (see adaptiveLimit).
//   - "adaptive": the adaptive limit, even in a container.
//
// Most of a control plane's live memory with thousands of SDS streams is
// long-lived connection state (goroutine stacks, gRPC stream state), which
// Go's default pacing doubles; a limit keeps the process near its live
// size at the price of collecting more often during mass re-issuance.
func ApplyMemoryLimit(value string, logger *slog.Logger) (int64, error) {
	mode, size, err := ParseMemoryLimit(value)
	if err != nil {
		return 0, err
	}
	switch mode {
	case "":
		debug.SetMemoryLimit(size)
		logger.Info("memory limit set", "goMemLimitBytes", size)
		return size, nil
	case MemoryLimitOff:
		debug.SetMemoryLimit(math.MaxInt64)
		return 0, nil
	case MemoryLimitAdaptive:
		startAdaptive(logger)
		return 0, nil
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
			return l, nil
		}
		return 0, nil
	}
	for _, f := range cgroupLimitFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		cg, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || cg <= 0 || cg >= 1<<60 { // "max" or the v1 "unlimited" sentinel
			break
		}
		soft := softLimitFor(cg)
		debug.SetMemoryLimit(soft)
		logger.Info("memory limit set from the container's", "cgroupLimitBytes", cg, "goMemLimitBytes", soft)
		return soft, nil
	}
	startAdaptive(logger)
	return 0, nil
}

// nonGoReserve is what meshca-cp's resident memory holds besides the Go
// runtime's: the pages of its binary (about 35 MiB) and SQLite's page cache.
const nonGoReserve = 64 << 20

// softLimitFor returns the Go memory limit for a container limit: the limit
// less the larger of 10 % and nonGoReserve, and never less than half of it.
func softLimitFor(containerLimit int64) int64 {
	reserve := max(containerLimit/10, nonGoReserve)
	return max(containerLimit-reserve, containerLimit/2)
}
