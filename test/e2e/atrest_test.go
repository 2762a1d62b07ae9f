package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dbBytes is every byte of the store's files (the SQLite database and its
// write-ahead log) under dataDir.
func dbBytes(t *testing.T, dataDir string) []byte {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dataDir, "meshca.db*"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no database files in %s (%v)", dataDir, err)
	}
	var all []byte
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// secretData returns the decoded data of a secret, read with --show-data.
func secretData(t *testing.T, cp *controlPlane, args ...string) []byte {
	t.Helper()
	var s struct{ Data string }
	if err := json.Unmarshal([]byte(cp.mustMeshctl(t, append([]string{"get"}, append(args, "--show-data", "-o", "json")...)...)), &s); err != nil {
		t.Fatal(err)
	}
	b, err := base64.StdEncoding.DecodeString(s.Data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSecretsEncryptedAtRest: the SQLite files hold none of a Secret's
// value, the CA's private key, a data plane's private key or a token
// signing key, in any encoding; a wrong key is refused at start and
// changes nothing.
func TestSecretsEncryptedAtRest(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	cp := startCP(t, dataDir)
	const value = "correct horse battery staple 7f3a"
	// A Mesh may hold inline credentials in its backends' conf; a marker
	// in a field kept as written stands for them.
	const inMesh = "inline-credential-5d1e"
	cp.apply(t, "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\nlogging:\n  backends:\n  - name: f\n    type: file\n    conf: {path: "+inMesh+"}\n")
	cp.apply(t, "type: Secret\nmesh: default\nname: db-password\ndata: "+base64.StdEncoding.EncodeToString([]byte(value))+"\n")
	cp.apply(t, dataplaneYAML("default", "backend-1"))
	a := startAgent(t, cp, "default", "backend-1", "backend-1")
	a.waitCert(t)
	cp.mustMeshctl(t, "generate", "user-token", "--name", "ops", "--valid-for", "1h")
	if fi, err := os.Stat(filepath.Join(dataDir, "encryption.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("encryption.key: %v", err)
	}
	if !strings.Contains(cp.out.String(), "created the key that encrypts secrets at rest") {
		t.Error("no log line about the created key")
	}

	caKeyPEM := secretData(t, cp, "secret", "default.ca-builtin-key-ca-1", "-m", "default")
	dpSigning := secretData(t, cp, "secret", "dataplane-token-signing-key-default-1", "-m", "default")
	userSigning := secretData(t, cp, "global-secret", "user-token-signing-key-1")
	dpKeyPEM := []byte(a.file("key.pem"))
	needles := map[string][]byte{"Mesh's inline credential": []byte(inMesh), "secret value": []byte(value), "secret value (base64)": []byte(base64.StdEncoding.EncodeToString([]byte(value)))}
	for name, p := range map[string][]byte{"CA key": caKeyPEM, "data-plane key": dpKeyPEM, "dataplane-token signing key": dpSigning, "user-token signing key": userSigning} {
		block, _ := pem.Decode(p)
		if block == nil {
			t.Fatalf("%s is not PEM", name)
		}
		needles[name+" (DER)"] = block.Bytes
		needles[name+" (PEM body)"] = []byte(base64.StdEncoding.EncodeToString(block.Bytes)[:64])
		needles[name+" (base64 PEM)"] = []byte(base64.StdEncoding.EncodeToString(p)[:64])
	}
	a.stop()
	cp.stop()
	db := dbBytes(t, dataDir)
	for name, n := range needles {
		if bytes.Contains(db, n) {
			t.Errorf("the database files contain the %s", name)
		}
	}

	// A wrong key: refused at start, the database untouched.
	before := sha256.Sum256(db)
	wrong := filepath.Join(t.TempDir(), "wrong.key")
	if err := os.WriteFile(wrong, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := start(t, "meshca-cp", []string{"MESHCA_ENCRYPTION_KEY_FILE=" + wrong}, "run", "--data-dir", dataDir,
		"--api-address", freePort(t), "--dp-server-address", freePort(t), "--api-tls-address", freePort(t))
	done, err := bad.exited(15 * time.Second)
	if !done || err == nil {
		t.Fatalf("meshca-cp with the wrong key: exited=%v err=%v", done, err)
	}
	if out := bad.out.String(); !strings.Contains(out, "does not open this store's secrets") || !strings.Contains(out, wrong) {
		t.Fatalf("the refusal does not explain itself:\n%s", out)
	}
	if after := sha256.Sum256(dbBytes(t, dataDir)); after != before {
		t.Error("the database changed when started with the wrong key")
	}
	// The right key still reads everything.
	cp.launch(t)
	if got := secretData(t, cp, "secret", "db-password", "-m", "default"); string(got) != value {
		t.Fatalf("secret after restart: %q", got)
	}
}

// TestEncryptionKeyRotation: `meshca-cp rotate-encryption-key` re-encrypts
// everything with a new key; the old key alone is then refused, the new one
// reads everything; rotating at start with --previous-encryption-key-file
// works too.
func TestEncryptionKeyRotation(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	cp := startCP(t, dataDir)
	const value = "rotate me 91c2"
	cp.apply(t, "type: Mesh\nname: default\n---\ntype: Secret\nmesh: default\nname: s\ndata: "+base64.StdEncoding.EncodeToString([]byte(value))+"\n")
	cp.stop()

	newKey := filepath.Join(t.TempDir(), "new.key")
	rot := start(t, "meshca-cp", nil, "rotate-encryption-key", "--data-dir", dataDir, "--new-encryption-key-file", newKey)
	if done, err := rot.exited(30 * time.Second); !done || err != nil {
		t.Fatalf("rotate: exited=%v err=%v\n%s", done, err, rot.out.String())
	}
	if !strings.Contains(rot.out.String(), "re-encrypted") {
		t.Fatalf("rotate output: %s", rot.out.String())
	}
	if fi, err := os.Stat(newKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new key file: %v", err)
	}
	// The old key (the data directory's) no longer opens anything.
	old := start(t, "meshca-cp", nil, "run", "--data-dir", dataDir, "--api-address", freePort(t), "--dp-server-address", freePort(t), "--api-tls-address", freePort(t))
	if done, err := old.exited(15 * time.Second); !done || err == nil || !strings.Contains(old.out.String(), "does not open this store's secrets") {
		t.Fatalf("start with the old key: exited=%v err=%v\n%s", done, err, old.out.String())
	}
	// The new key reads everything.
	cp.env = []string{"MESHCA_ENCRYPTION_KEY_FILE=" + newKey}
	cp.launch(t)
	if got := secretData(t, cp, "secret", "s", "-m", "default"); string(got) != value {
		t.Fatalf("secret after rotation: %q", got)
	}
	cp.stop()

	// Rotation at start: a third key, the second as previous.
	third := filepath.Join(t.TempDir(), "third.key")
	if err := os.WriteFile(third, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cp.env = []string{"MESHCA_ENCRYPTION_KEY_FILE=" + third}
	cp.proc = start(t, "meshca-cp", cp.env, "run", "--data-dir", cp.dataDir, "--api-address", cp.api, "--dp-server-address", cp.dp,
		"--api-tls-address", cp.apiTLS, "--previous-encryption-key-file", newKey)
	waitFor(t, 30*time.Second, "control plane ready", func() bool {
		resp, err := http.Get("http://" + cp.api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if !strings.Contains(cp.out.String(), "encrypted secrets at rest with the current key") {
		t.Errorf("no re-encryption at start:\n%s", cp.out.String())
	}
	cp.stop()
	cp.launch(t) // the third key alone now
	if got := secretData(t, cp, "secret", "s", "-m", "default"); string(got) != value {
		t.Fatalf("secret after the second rotation: %q", got)
	}
}
