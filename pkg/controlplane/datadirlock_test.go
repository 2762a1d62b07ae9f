package controlplane

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestLockDataDir: a second holder of a data directory is refused with an
// error naming the directory and the holder's pid; once the first releases
// (as its process ending does), the directory can be taken again.
func TestLockDataDir(t *testing.T) {
	dir := t.TempDir()
	release, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockDataDir(dir)
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second lock: err = %v, want ErrDataDirInUse naming %q and pid %d", err, dir, os.Getpid())
	}
	release()
	again, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again()
}
