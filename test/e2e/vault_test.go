package e2e

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"meshca/pkg/ca/vault/vaulttest"
)

// TestVaultBackend runs the core loop of TestDataplaneIdentity with a Vault
// PKI (the in-process Vault API server, reached by the real meshca-cp over
// HTTPS): both agents get Vault-issued certificates (Vault makes the key) and
// complete a mutual-TLS exchange; then the mesh switches from builtin to
// vault and both are re-issued.
func TestVaultBackend(t *testing.T) {
	t.Parallel()
	v := vaulttest.New(t, vaulttest.Options{})
	token := v.CreateToken(vaulttest.TokenOptions{})
	cp := startCP(t, t.TempDir())
	cp.apply(t, builtinMeshWith("1h"))
	cp.apply(t, dataplanes("default"))
	backend := startAgent(t, cp, "default", "backend-1", "backend-1")
	web := startAgent(t, cp, "default", "web-1", "web-1")
	b1, w1 := backend.waitCert(t), web.waitCert(t)
	requireSVID(t, backend, "spiffe://default/backend")
	before := openConn(t, backend.tlsConfig(t), web.tlsConfig(t))
	defer before.close()

	cp.apply(t, fmt.Sprintf("type: Secret\nmesh: default\nname: vault-ca\ndata: %s\n---\ntype: Secret\nmesh: default\nname: vault-token\ndata: %s\n",
		base64.StdEncoding.EncodeToString(v.CACertPEM), base64.StdEncoding.EncodeToString([]byte(token))))
	cp.apply(t, fmt.Sprintf(`type: Mesh
name: default
mtls:
  enabledBackend: vault-1
  backends:
  - name: ca-1
    type: builtin
    dpCert: {rotation: {expiration: 1h}}
  - name: vault-1
    type: vault
    dpCert: {rotation: {expiration: 1h}}
    conf:
      fromCp:
        address: %s
        pki: %s
        role: %s
        commonName: '{{ tag "kuma.io/service" }}.mesh'
        tls: {caCert: {secret: vault-ca}, serverName: %s}
        auth:
          token: {secret: vault-token}
`, v.URL, v.Mount, vaulttest.DefaultRole, v.ServerName))
	waitFor(t, 20*time.Second, "both re-issued by Vault", func() bool {
		b, w := backend.leaf(), web.leaf()
		return rotatedFrom(b, b1) && rotatedFrom(w, w1) &&
			b.Subject.CommonName == "backend.mesh" && w.Subject.CommonName == "web.mesh"
	})
	before.ping(t)
	if clientSaw, serverSaw := handshake(t, backend.tlsConfig(t), web.tlsConfig(t)); clientSaw != "spiffe://default/backend" || serverSaw != "spiffe://default/web" {
		t.Errorf("client saw %q, server saw %q", clientSaw, serverSaw)
	}
	if out := cp.mustMeshctl(t, "inspect", "dataplane", "web-1", "-m", "default"); !strings.Contains(out, "vault-1 (vault)") {
		t.Errorf("inspect:\n%s", out)
	}
	if strings.Contains(cp.out.String(), token) {
		t.Error("the Vault token appears in the control plane's log")
	}
}
