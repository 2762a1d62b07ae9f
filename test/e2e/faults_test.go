package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// TestDiskFull: with the control plane's data directory on a file system
// that fills up, a write through meshctl fails with a message that says so
// (507 from the API), reads keep working and the data plane keeps its
// certificate; once space is freed, writes work again with no restart.
func TestDiskFull(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("disk-full test needs to mount a small tmpfs (root, CAP_SYS_ADMIN): %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })

	cp := startCP(t, filepath.Join(dir, "data"))
	cp.apply(t, builtinMeshWith("1h"))
	cp.apply(t, dataplanes("default"))
	a := startAgent(t, cp, "default", "backend-1", "backend-1")
	cert := a.waitCert(t)

	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := filler.Write(chunk); err != nil {
			break
		}
	}
	filler.Close()

	secret := func(name string) string {
		return fmt.Sprintf("type: Secret\nmesh: default\nname: %s\ndata: %s\n", name, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("s"), 512<<10)))
	}
	var applyErr error
	for i := range 16 {
		if _, applyErr = cp.meshctlIn(secret(fmt.Sprint("s-", i)), "apply", "-f", "-"); applyErr != nil {
			break
		}
	}
	if applyErr == nil || !strings.Contains(applyErr.Error(), "disk is full") {
		t.Fatalf("apply on a full disk: err = %v, want one saying the disk is full", applyErr)
	}
	resp, err := http.Get("http://" + cp.api + "/meshes/default/secrets/s-x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("read on a full disk: status %d", resp.StatusCode)
	}
	cp.mustMeshctl(t, "get", "dataplanes", "-m", "default")
	if !sameSerial(a.leaf(), cert) {
		t.Errorf("the data plane's certificate changed while the disk was full")
	}

	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	cp.apply(t, secret("after"))
}
