package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/datasource"
	"meshca/pkg/resources"
	"meshca/pkg/store/memory"
)

// TestAllFiveBackendsListed applies a Mesh that lists every backend type of
// this build with builtin enabled: it validates (each backend checks its own
// conf, none is contacted but the enabled one) and is stored.
func TestAllFiveBackendsListed(t *testing.T) {
	st := memory.New()
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now, Settings: map[string]string{}}, Backends())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(reg.Types(), ","); got != "acmpca,builtin,certmanager,provided,vault" {
		t.Fatalf("backends of this build: %s", got)
	}
	mgr := resources.NewManager(st, reg, resources.Options{})
	certPEM, keyPEM := testCA(t)
	b64 := base64.StdEncoding.EncodeToString
	in := `type: Mesh
name: default
---
type: Secret
mesh: default
name: ca-cert
data: ` + b64(certPEM) + `
---
type: Secret
mesh: default
name: ca-key
data: ` + b64(keyPEM) + `
---
type: Secret
mesh: default
name: vault-token
data: ` + b64([]byte("s.token")) + `
---
type: Mesh
name: default
mtls:
  enabledBackend: builtin-1
  backends:
  - name: builtin-1
    type: builtin
  - name: provided-1
    type: provided
    conf: {cert: {secret: ca-cert}, key: {secret: ca-key}}
  - name: vault-1
    type: vault
    conf:
      fromCp:
        address: https://vault.example:8200
        pki: kmesh-pki-default
        role: dataplane-proxies
        tls: {caCert: {secret: ca-cert}}
        auth: {token: {secret: vault-token}}
  - name: acmpca-1
    type: acmpca
    conf:
      arn: arn:aws:acm-pca:region:account:certificate-authority/12345678-1234-1234-1234-123456789012
      caCert: {secret: ca-cert}
  - name: certmanager-1
    type: certmanager
    conf:
      issuerRef: {name: mesh-ca}
`
	docs, err := api.DecodeDocuments([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if _, err := mgr.Apply(context.Background(), d.Resource, resources.ApplyOptions{}); err != nil {
			t.Fatalf("document %d: %v", d.Index, err)
		}
	}
	r, err := mgr.Get(context.Background(), api.TypeMesh, "", "default")
	if err != nil || len(r.(*api.Mesh).MTLS.Backends) != 5 {
		t.Fatalf("stored mesh: %v %v", r, err)
	}
}

func testCA(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}
