package meshctl_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
	"meshca/pkg/authn"
	"meshca/pkg/meshctl"
)

// TestControlPlanesConfig: control planes added with a CA and a token are
// kept in a 0600 file and used by later commands; switch and remove work.
func TestControlPlanesConfig(t *testing.T) {
	verify := func(_ context.Context, tok string) (authn.Identity, error) {
		if tok != "admin-token" {
			return authn.Identity{}, fmt.Errorf("%w: unknown token", authn.ErrUnauthenticated)
		}
		return authn.User("root", []string{authn.GroupAdmin}), nil
	}
	env := apiservertest.Start(t, apiserver.Options{Version: "1.2.3", Authenticator: &authn.Authenticator{VerifyUserToken: verify}})
	tlsSrv := httptest.NewUnstartedServer(env.API.HandlerFor(authn.HTTPS))
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "home", ".meshctl", "config")
	run := func(args ...string) result {
		t.Helper()
		var out, errb bytes.Buffer
		code := meshctl.Main(t.Context(), meshctl.Config{
			Getenv: func(k string) string {
				if k == meshctl.EnvConfigFile {
					return cfgFile
				}
				return ""
			},
			Stdout: &out, Stderr: &errb,
		}, args)
		return result{stdout: out.String(), stderr: errb.String(), code: code}
	}

	// A wrong token or a missing CA is reported and nothing is saved.
	r := run("config", "control-planes", "add", "--name", "prod", "--address", tlsSrv.URL, "--ca-cert-file", caFile,
		"--auth-type", "tokens", "--auth-conf", "token=wrong").fails(t)
	if !strings.Contains(r.stderr, "nothing was saved") || strings.Contains(r.stderr, "wrong") {
		t.Errorf("bad token: %q", r.stderr)
	}
	run("config", "control-planes", "add", "--name", "prod", "--address", tlsSrv.URL, "--auth-type", "tokens", "--auth-conf", "token=admin-token").fails(t)
	if _, err := os.Stat(cfgFile); !os.IsNotExist(err) {
		t.Fatalf("config written after failed adds: %v", err)
	}

	run("config", "control-planes", "add", "--name", "prod", "--address", tlsSrv.URL, "--ca-cert-file", caFile,
		"--auth-type", "tokens", "--auth-conf", "token=admin-token").ok(t)
	fi, err := os.Stat(cfgFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	run("apply", "-f", writeFile(t, "m.yaml", "type: Mesh\nname: over-tls\n")).ok(t)
	if r := run("get", "meshes").ok(t); !strings.Contains(r.stdout, "over-tls") {
		t.Fatalf("get meshes over the configured control plane: %s", r.stdout)
	}

	// A second control plane without credentials: anonymous over HTTPS is refused.
	run("config", "control-planes", "add", "--name", "anon", "--address", tlsSrv.URL, "--ca-cert-file", caFile).ok(t)
	if r := run("get", "meshes").fails(t); !strings.Contains(r.stderr, "authentication required") {
		t.Errorf("anonymous get: %q", r.stderr)
	}
	if r := run("config", "control-planes", "list").ok(t); !strings.Contains(r.stdout, "*        anon") && !strings.Contains(r.stdout, "anon") {
		t.Errorf("list: %s", r.stdout)
	}
	run("config", "control-planes", "switch", "--name", "prod").ok(t)
	lines := strings.Split(run("config", "control-planes", "list").ok(t).stdout, "\n")
	for _, l := range lines {
		if strings.Contains(l, "prod") && !strings.HasPrefix(l, "*") {
			t.Errorf("prod not marked current: %q", l)
		}
	}
	run("get", "meshes").ok(t)
	run("config", "control-planes", "switch", "--name", "nope").fails(t)
	run("config", "control-planes", "remove", "--name", "prod").ok(t)
	if r := run("config", "control-planes", "list").ok(t); strings.Contains(r.stdout, "prod") {
		t.Errorf("prod still listed: %s", r.stdout)
	}
	data, _ := os.ReadFile(cfgFile)
	if strings.Contains(string(data), "admin-token") {
		t.Error("removed control plane's token still in the file")
	}
}
