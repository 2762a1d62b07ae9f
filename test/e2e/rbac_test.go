package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const teamARBAC = `type: AccessRole
name: team-a-dataplanes
rules:
- types: ["Dataplane"]
  mesh: team-a
  access: ["CREATE", "UPDATE", "DELETE", "GET", "GENERATE_DATAPLANE_TOKEN"]
---
type: AccessRoleBinding
name: team-a
subjects:
- type: Group
  name: team-a
roles: ["team-a-dataplanes"]
`

func dataplaneYAML(mesh, name string) string {
	return "type: Dataplane\nmesh: " + mesh + "\nname: " + name + "\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: 9001\n    tags:\n      kuma.io/service: web\n"
}

// userCtl runs meshctl as the user of configFile (its current control plane).
func userCtl(configFile, stdin string, args ...string) (string, string, error) {
	cmd := exec.Command(bin("meshctl"), append([]string{"--config-file", configFile}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &errb, strings.NewReader(stdin)
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// TestTeamAccessOverHTTPS: a user token of group team-a, bound to a role
// for Dataplanes of mesh team-a, works over HTTPS for exactly that.
func TestTeamAccessOverHTTPS(t *testing.T) {
	t.Parallel()
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	cp := startCP(t, filepath.Join(t.TempDir(), "data"), "MESHCA_AUDIT_LOG="+auditLog)
	cp.apply(t, "type: Mesh\nname: team-a\n---\ntype: Mesh\nname: team-b\n---\ntype: Secret\nmesh: team-a\nname: db-password\ndata: aHVudGVyMg==\n")
	cp.apply(t, teamARBAC)
	token := strings.TrimSpace(cp.mustMeshctl(t, "generate", "user-token", "--name", "alice", "--group", "team-a", "--valid-for", "24h"))

	cfg := filepath.Join(t.TempDir(), "meshctl-config")
	if out, errOut, err := userCtl(cfg, "", "config", "control-planes", "add", "--name", "cp", "--address", "https://"+cp.apiTLS,
		"--ca-cert-file", filepath.Join(cp.dataDir, "api-server-ca.pem"), "--auth-type", "tokens", "--auth-conf", "token="+token); err != nil {
		t.Fatalf("add control plane: %v %s %s", err, out, errOut)
	}
	allowed := [][]string{
		{"apply", "-f", "-"},
		{"generate", "dataplane-token", "--mesh", "team-a", "--name", "web-1", "--valid-for", "1h"},
		{"get", "dataplanes", "-m", "team-a"},
		{"get", "meshes"},
		{"delete", "dataplane", "web-1", "-m", "team-a"},
	}
	for _, args := range allowed {
		if out, errOut, err := userCtl(cfg, dataplaneYAML("team-a", "web-1"), args...); err != nil {
			t.Errorf("alice: meshctl %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
	}
	refused := []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"get", "secret", "db-password", "-m", "team-a", "--show-data"}, "lacks VIEW_SECRET_DATA on Secret \"db-password\" in mesh \"team-a\""},
		{"type: Mesh\nname: team-c\n", []string{"apply", "-f", "-"}, "lacks CREATE on Mesh \"team-c\""},
		{dataplaneYAML("team-b", "web-1"), []string{"apply", "-f", "-"}, "lacks CREATE on Dataplane \"web-1\" in mesh \"team-b\""},
		{"", []string{"generate", "dataplane-token", "--mesh", "team-b", "--name", "web-1"}, "lacks GENERATE_DATAPLANE_TOKEN"},
		{"", []string{"generate", "user-token", "--name", "mallory", "--group", "mesh-system:admin", "--valid-for", "1h"}, "lacks GENERATE_USER_TOKEN"},
		{"", []string{"delete", "mesh", "team-b"}, "lacks DELETE on Mesh \"team-b\""},
	}
	for _, tc := range refused {
		_, errOut, err := userCtl(cfg, tc.stdin, tc.args...)
		if err == nil || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, `user "alice"`) {
			t.Errorf("alice: meshctl %s: err %v, stderr %q; want a refusal containing %q", strings.Join(tc.args, " "), err, errOut, tc.want)
		}
	}
	// Raw status codes: 403 for a refusal.
	hc := cp.httpsClient(t)
	if status, body := call(t, hc, "GET", "https://"+cp.apiTLS+"/meshes/team-a/secrets/db-password", token, "", ""); status != http.StatusForbidden || strings.Contains(body, "aHVudGVyMg==") {
		t.Errorf("GET secret as alice: %d %s", status, body)
	}
	// The audit trail has alice's token generation and refusals, never a token.
	trail, err := os.ReadFile(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"user":"alice","groups":["team-a","mesh-system:authenticated"],"via":"user-token","action":"generate-dataplane-token","type":"Dataplane","mesh":"team-a","name":"web-1"`,
		`"user":"alice","groups":["team-a","mesh-system:authenticated"],"via":"user-token","action":"apply","type":"Mesh","name":"team-c","path":"/meshes/team-c","result":"denied","status":403`,
		`"user":"mesh-system:admin","groups":["mesh-system:admin","mesh-system:authenticated"],"via":"localhost","action":"generate-user-token","type":"User","name":"alice"`,
	} {
		if !strings.Contains(string(trail), want) {
			t.Errorf("audit trail lacks %s:\n%s", want, trail)
		}
	}
	if strings.Contains(string(trail), token) || strings.Contains(string(trail), "aHVudGVyMg==") {
		t.Error("the audit trail holds a token or secret data")
	}
	// Lists of secrets never carry data, even for the admin.
	if out := cp.mustMeshctl(t, "get", "secrets", "-m", "team-a", "-o", "yaml"); strings.Contains(out, "aHVudGVyMg==") || !strings.Contains(out, "db-password") {
		t.Errorf("admin's list of secrets:\n%s", out)
	}
	if out := cp.mustMeshctl(t, "get", "secret", "db-password", "-m", "team-a", "--show-data", "-o", "yaml"); !strings.Contains(out, "aHVudGVyMg==") {
		t.Errorf("admin's --show-data:\n%s", out)
	}
}

// TestBadUserTokens: each kind of unacceptable token gets 401 over HTTPS.
func TestBadUserTokens(t *testing.T) {
	t.Parallel()
	cp := startCP(t, filepath.Join(t.TempDir(), "data"))
	good := strings.TrimSpace(cp.mustMeshctl(t, "generate", "user-token", "--name", "alice", "--group", "team-a", "--valid-for", "24h"))
	short := strings.TrimSpace(cp.mustMeshctl(t, "generate", "user-token", "--name", "bob", "--valid-for", "1s"))
	hc := cp.httpsClient(t)
	url := "https://" + cp.apiTLS + "/meshes"
	if status, body := call(t, hc, "GET", url, good, "", ""); status != http.StatusOK {
		t.Fatalf("good token: %d %s", status, body)
	}

	// The signing key, as only an admin can read it, to forge tokens the server must still refuse.
	var gs struct{ Data string }
	if err := json.Unmarshal([]byte(cp.mustMeshctl(t, "get", "global-secret", "user-token-signing-key-1", "--show-data", "-o", "json")), &gs); err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := base64.StdEncoding.DecodeString(gs.Data)
	block, _ := pem.Decode(keyPEM)
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	forge := func(m jwt.SigningMethod, k any, mod func(jwt.MapClaims)) string {
		c := jwt.MapClaims{"Name": "alice", "Groups": []string{"mesh-system:admin"}, "jti": "forged", "iss": "meshca", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if mod != nil {
			mod(c)
		}
		tok := jwt.NewWithClaims(m, c)
		tok.Header["kid"] = "1"
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "team-a", "mesh-system:admin", 1))) + "." + parts[2]

	// Revoke the good token by its ID.
	var claims struct {
		JTI string `json:"jti"`
	}
	_ = json.Unmarshal(payload, &claims)
	cp.apply(t, "type: GlobalSecret\nname: user-token-revocations\ndata: "+base64.StdEncoding.EncodeToString([]byte(claims.JTI))+"\n")
	waitFor(t, 5*time.Second, "the short token to expire", func() bool { return time.Now().After(now.Add(2 * time.Second)) })

	for name, tok := range map[string]string{
		"expired":               short,
		"revoked":               good,
		"alg none":              forge(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil),
		"HS256 with public key": forge(jwt.SigningMethodHS256, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), nil),
		"wrong issuer":          forge(jwt.SigningMethodRS256, key, func(c jwt.MapClaims) { c["iss"] = "kuma" }),
		"tampered":              tampered,
	} {
		status, body := call(t, hc, "GET", url, tok, "", "")
		if status != http.StatusUnauthorized || strings.Contains(body, tok) {
			t.Errorf("%s token: %d %s", name, status, body)
		}
	}
	// The control plane's log never carries a token.
	if strings.Contains(cp.out.String(), good) || strings.Contains(cp.out.String(), short) {
		t.Error("a token appears in the control plane's log")
	}
	// The well-formed forgery (same key, right issuer) is accepted: the refusals above are for their flaw alone.
	if status, _ := call(t, hc, "GET", url, forge(jwt.SigningMethodRS256, key, nil), "", ""); status != http.StatusOK {
		t.Errorf("well-formed token refused: %d", status)
	}
}
