package controlplane

import (
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroup files holding the container's memory limit (v2, then v1).
var cgroupLimitFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// SetMemoryLimitFromCgroup gives the Go runtime a soft memory limit of 90 %
// of the container's limit when the operator has not set GOMEMLIMIT, so the
// garbage collector works harder before the container is killed instead of
// after. Thousands of SDS streams make garbage faster than the default
// GOGC pacing frees it. It returns the limit set (0: none).
func SetMemoryLimitFromCgroup(logger *slog.Logger) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	for _, f := range cgroupLimitFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || limit <= 0 || limit >= 1<<60 { // "max" or the v1 "unlimited" sentinel
			return 0
		}
		soft := limit / 10 * 9
		debug.SetMemoryLimit(soft)
		logger.Info("memory limit set from the container's", "cgroupLimitBytes", limit, "goMemLimitBytes", soft)
		return soft
	}
	return 0
}
