package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAccessBadInput: the new flags and resources refuse bad input with a
// message naming the flag or field, and change nothing.
func TestAccessBadInput(t *testing.T) {
	t.Parallel()
	notBase64 := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(notBase64, []byte("this is not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"encryption key not base64", []string{"MESHCA_ENCRYPTION_KEY_FILE=" + notBase64}, nil, []string{"--encryption-key-file", notBase64, "base64"}},
		{"encryption key missing", nil, []string{"--encryption-key-file", "/nonexistent/meshca.key"}, []string{"--encryption-key-file", "/nonexistent/meshca.key"}},
		{"audit log in a missing directory", nil, []string{"--audit-log", "/nonexistent/dir/audit.log"}, []string{"--audit-log", "/nonexistent/dir/audit.log"}},
		{"TLS cert without key", nil, []string{"--api-tls-cert", notBase64}, []string{"--api-tls-cert/--api-tls-key", "both the certificate and the key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"run", "--data-dir", filepath.Join(t.TempDir(), "data"), "--api-address", freePort(t),
				"--dp-server-address", freePort(t), "--api-tls-address", freePort(t)}, tc.args...)
			p := start(t, "meshca-cp", tc.env, args...)
			done, err := p.exited(15 * time.Second)
			if !done || err == nil {
				t.Fatalf("exited=%v err=%v, want a refusal", done, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(p.out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, p.out.String())
				}
			}
			if strings.Contains(p.out.String(), "this is not a key") {
				t.Error("the key file's content is echoed")
			}
		})
	}

	allowed := t.TempDir()
	cp := startCP(t, filepath.Join(t.TempDir(), "data"), "MESHCA_DATASOURCE_FILE_DIRS="+allowed)
	// A role with a bad access value and a bad type: every field named, nothing stored.
	_, err := cp.meshctlIn("type: AccessRole\nname: r\nrules:\n- types: [Dataplane, Nope]\n  access: [GET, FLY]\n", "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "rules[0].access[1]") || !strings.Contains(err.Error(), "rules[0].types[1]") {
		t.Errorf("bad AccessRole: %v", err)
	}
	_, err = cp.meshctlIn("apiVersion: kuma.io/v1alpha1\nkind: AccessRoleBinding\nmetadata: {name: b}\nspec:\n  subjects: [{type: Team, name: x}]\n  roles: []\n", "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "subjects[0].type") || !strings.Contains(err.Error(), "roles") {
		t.Errorf("bad AccessRoleBinding: %v", err)
	}
	if out := cp.mustMeshctl(t, "get", "access-roles"); strings.Contains(out, " r ") || strings.Count(out, "\n") > 1 {
		t.Errorf("a refused role was stored: %q", out)
	}
	// A user token needs a validity, and reserved groups are refused.
	if _, err := cp.meshctl("generate", "user-token", "--name", "x"); err == nil || !strings.Contains(err.Error(), "--valid-for") {
		t.Errorf("user token without --valid-for: %v", err)
	}
	status, body := call(t, http.DefaultClient, "POST", "http://"+cp.api+"/tokens/user", "", "application/json", `{"name":"x","groups":["mesh-system:unauthenticated"],"validFor":"1h"}`)
	if status != http.StatusBadRequest || !strings.Contains(body, "groups[0]") {
		t.Errorf("reserved group: %d %s", status, body)
	}
	status, body = call(t, http.DefaultClient, "POST", "http://"+cp.api+"/tokens/user", "", "application/json", `{"name":"x","validFor":"soon"}`)
	if status != http.StatusBadRequest || !strings.Contains(body, "validFor") {
		t.Errorf("bad validFor: %d %s", status, body)
	}
	status, body = call(t, http.DefaultClient, "POST", "http://"+cp.api+"/tokens/user", "", "application/json", `{"name":"x","validFor":"400d"}`)
	if status != http.StatusBadRequest || !strings.Contains(body, "at most") {
		t.Errorf("validFor over --max-token-validity: %d %s", status, body)
	}
	// A file DataSource outside --datasource-file-dirs is refused naming the field.
	outside := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(outside, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = cp.meshctlIn("type: Mesh\nname: m\nmtls:\n  enabledBackend: p\n  backends:\n  - name: p\n    type: provided\n    conf:\n      cert: {file: "+outside+"}\n      key: {file: "+outside+"}\n", "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "conf.cert.file") || !strings.Contains(err.Error(), "--datasource-file-dirs") {
		t.Errorf("file outside the allowed directories: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "BEGIN CERTIFICATE") {
		t.Error("the file's content is echoed")
	}
}
