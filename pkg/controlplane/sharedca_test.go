package controlplane

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"meshca/pkg/sds"
	"meshca/pkg/store/memory"
)

// Instances on one store serve with one data-plane server CA: the first
// stores its own; one started with an empty data directory, or with a CA of
// its own, takes the stored one and writes it to <data-dir>/dp-server-ca.pem.
func TestServerCAShared(t *testing.T) {
	st := memory.New()
	files := sds.DPServerFiles()
	logger := slog.New(slog.DiscardHandler)
	first, empty, other := t.TempDir(), t.TempDir(), t.TempDir()
	if err := shareServerCA(t.Context(), st, files, first, logger); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sds.LoadOrCreateTLS(files, other, "", "", nil, time.Now); err != nil { // a CA of its own
		t.Fatal(err)
	}
	for _, dir := range []string{empty, other} {
		if err := shareServerCA(t.Context(), st, files, dir, logger); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(filepath.Join(first, sds.ServerCAFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{empty, other} {
		_, caPEM, err := sds.LoadOrCreateServerTLS(dir, "", "", []string{"127.0.0.1"}, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(caPEM, want) {
			t.Errorf("%s serves with another CA than the first instance's", dir)
		}
		fi, err := os.Stat(filepath.Join(dir, sds.ServerCAKeyFile))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("CA key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
		}
	}
}
