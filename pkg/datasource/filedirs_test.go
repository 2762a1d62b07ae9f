package datasource_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"meshca/pkg/api"
	"meshca/pkg/datasource"
	"meshca/pkg/store/memory"
)

func TestFileDirs(t *testing.T) {
	allowed, outside := t.TempDir(), t.TempDir()
	const content = "AKIA-not-to-be-echoed"
	for _, p := range []string{filepath.Join(allowed, "key.txt"), filepath.Join(outside, "key.txt")} {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	escape := filepath.Join(allowed, "escape.txt")
	if err := os.Symlink(filepath.Join(outside, "key.txt"), escape); err != nil {
		t.Fatal(err)
	}
	st := memory.New()
	defer st.Close()
	ctx := context.Background()
	const field = "mtls.backends[0].conf.auth.awsCredentials.accessKey"

	// Default: any path, as in Kuma.
	if got, err := datasource.New(st).Resolve(ctx, "m", &api.DataSource{File: filepath.Join(outside, "key.txt")}, field); err != nil || string(got) != content {
		t.Fatalf("unconfined: %q %v", got, err)
	}
	r := datasource.New(st).WithFileDirs([]string{allowed})
	if got, err := r.Resolve(ctx, "m", &api.DataSource{File: filepath.Join(allowed, "key.txt")}, field); err != nil || string(got) != content {
		t.Fatalf("inside: %q %v", got, err)
	}
	for _, p := range []string{filepath.Join(outside, "key.txt"), escape, filepath.Join(allowed, "..", filepath.Base(outside), "key.txt"), "/etc/passwd"} {
		_, err := r.Resolve(ctx, "m", &api.DataSource{File: p}, field)
		if !slices.Equal(api.Fields(err), []string{field + ".file"}) || !strings.Contains(err.Error(), "--datasource-file-dirs") {
			t.Errorf("%s: err %v (fields %q)", p, err, api.Fields(err))
		}
		if err != nil && strings.Contains(err.Error(), content) {
			t.Errorf("%s: the error echoes the file", p)
		}
	}
	// A missing file inside is reported as missing.
	if _, err := r.Resolve(ctx, "m", &api.DataSource{File: filepath.Join(allowed, "nope")}, field); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing file: %v", err)
	}
}
