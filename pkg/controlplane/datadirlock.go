package controlplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFileName is the file under --data-dir whose OS lock a running
// control plane holds.
const lockFileName = "meshca-cp.lock"

// ErrDataDirInUse says another process holds a data directory's lock.
var ErrDataDirInUse = errors.New("data directory in use")

// lockDataDir takes an exclusive, non-blocking flock(2) on
// <dir>/meshca-cp.lock and writes this process's id into it. Two control
// planes on one data directory would split its state (one issues what the
// other never sees, a token revoked through one stays valid on the other), so
// the second refuses to start, naming the directory and the holder. The lock
// belongs to the open file: it dies with the process, so a crash leaves
// nothing stale to clean up. The returned func releases it.
func lockDataDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--data-dir %q: lock: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := "another process"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = fmt.Sprintf("another meshca-cp (pid %d)", pid)
			}
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("--data-dir %q is in use by %s: %w; stop it, or give this one its own --data-dir (several control planes share state only through --store postgres)",
				dir, holder, ErrDataDirInUse)
		}
		return nil, fmt.Errorf("--data-dir %q: lock %s: %w", dir, path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
