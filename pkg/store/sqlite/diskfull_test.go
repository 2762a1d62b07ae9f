package sqlite_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"meshca/pkg/store"
	"meshca/pkg/store/sqlite"
)

// TestDiskFull: on a real file system that fills up (a 4 MiB tmpfs), a
// write fails with store.ErrStorageFull, reads keep working, and once space
// is freed writes work again without reopening the store.
func TestDiskFull(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("disk-full test needs to mount a small tmpfs (root, CAP_SYS_ADMIN): %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })

	s, err := sqlite.Open(t.Context(), filepath.Join(dir, "meshca.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	kept := store.Record{Key: store.Key{Type: "T", Mesh: "m", Name: "kept"}, Spec: []byte(`{"a":1}`)}
	if err := store.Create(ctx, s, kept); err != nil {
		t.Fatal(err)
	}
	// Fill what is left of the file system.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()

	big := []byte(`"` + strings.Repeat("x", 256<<10) + `"`)
	var full error
	for i := range 64 {
		err := store.Create(ctx, s, store.Record{Key: store.Key{Type: "T", Mesh: "m", Name: fmt.Sprint("big-", i)}, Spec: big})
		if err != nil {
			full = err
			break
		}
	}
	if !errors.Is(full, store.ErrStorageFull) {
		t.Fatalf("write on a full disk: err = %v, want store.ErrStorageFull", full)
	}
	if _, err := s.Get(ctx, kept.Key); err != nil {
		t.Fatalf("read on a full disk: %v", err)
	}
	if _, err := s.List(ctx, "T", "m"); err != nil {
		t.Fatalf("list on a full disk: %v", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	after := store.Record{Key: store.Key{Type: "T", Mesh: "m", Name: "after"}, Spec: big}
	if err := store.Create(ctx, s, after); err != nil {
		t.Fatalf("write after space returned: %v", err)
	}
	if _, err := s.Get(ctx, after.Key); err != nil {
		t.Fatal(err)
	}
}
