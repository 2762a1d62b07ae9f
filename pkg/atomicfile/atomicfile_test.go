package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteSetReplacesAllWithModes(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := WriteSet(dir,
		File{Name: "key.pem", Data: []byte("key"), Perm: 0o600},
		File{Name: "cert.pem", Data: []byte("cert"), Perm: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]struct {
		data string
		perm os.FileMode
	}{"key.pem": {"key", 0o600}, "cert.pem": {"cert", 0o644}} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != want.data {
			t.Errorf("%s = %q, %v", name, b, err)
		}
		if fi, _ := os.Stat(filepath.Join(dir, name)); fi.Mode().Perm() != want.perm {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want.perm)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestWriteSetFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	err := WriteSet(dir, File{Name: "a", Data: []byte("a"), Perm: 0o600}, File{Name: "missing-dir/b", Data: []byte("b"), Perm: 0o600})
	if err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}
