package e2e

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMemoryLimit: meshca-cp run --memory-limit (here through
// MESHCA_MEMORY_LIMIT) reaches the Go runtime, as its own /metrics report
// (go_gc_gomemlimit_bytes); a bad value is refused, naming the flag, before
// anything is created.
func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value string
		check func(limit float64) bool
		want  string
	}{
		{"200MiB", func(l float64) bool { return l == 200<<20 }, "exactly 200 MiB"},
		{"off", func(l float64) bool { return l >= math.MaxInt64 }, "none"},
		// auto: a container's limit less its reserve, or the adaptive limit
		// (what is live plus at least 24 MiB): finite either way.
		{"auto", func(l float64) bool { return l > 24<<20 && l < math.MaxInt64 }, "a finite limit above 24 MiB"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			cp := startCP(t, t.TempDir(), "MESHCA_MEMORY_LIMIT="+tc.value, "GOMEMLIMIT=")
			if l := cp.metric(t, "go_gc_gomemlimit_bytes"); !tc.check(l) {
				t.Fatalf("go_gc_gomemlimit_bytes = %v, want %s", l, tc.want)
			}
		})
	}

	t.Run("bad value", func(t *testing.T) {
		dataDir := filepath.Join(t.TempDir(), "data")
		p := start(t, "meshca-cp", nil, "run", "--data-dir", dataDir, "--api-address", freePort(t),
			"--dp-server-address", freePort(t), "--api-tls-address", freePort(t), "--memory-limit", "lots")
		done, err := p.exited(10 * time.Second)
		if !done || err == nil {
			t.Fatalf("meshca-cp with --memory-limit lots: exited=%v err=%v, want a failure", done, err)
		}
		if out := p.out.String(); !strings.Contains(out, `--memory-limit "lots"`) || !strings.Contains(out, "256MiB") {
			t.Fatalf("output does not explain the bad value:\n%s", out)
		}
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			t.Fatalf("data dir created despite the refusal (stat err = %v)", err)
		}
	})
}
