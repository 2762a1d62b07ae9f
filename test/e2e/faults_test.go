package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestDataDirInUse: a second meshca-cp on a data directory in use refuses
// to start, naming the directory and the running process, and the first
// keeps serving.
func TestDataDirInUse(t *testing.T) {
	dataDir := t.TempDir()
	cp := startCP(t, dataDir)
	second := start(t, "meshca-cp", nil, "run", "--data-dir", dataDir, "--api-address", freePort(t), "--dp-server-address", freePort(t))
	done, err := second.exited(15 * time.Second)
	if !done || err == nil {
		t.Fatalf("second meshca-cp on %s: exited=%v err=%v, want a refusal", dataDir, done, err)
	}
	out := second.out.String()
	if !strings.Contains(out, dataDir) || !strings.Contains(out, "is in use by another meshca-cp (pid ") {
		t.Fatalf("the refusal does not name the directory and the holder:\n%s", out)
	}
	cp.mustMeshctl(t, "get", "meshes")
}
