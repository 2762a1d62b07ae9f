package casign_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	"meshca/pkg/ca"
	"meshca/pkg/ca/casign"
)

// An EC data-plane key gets no Key Encipherment (RSA key transport, which
// an EC key cannot do); an RSA key keeps it.
func TestLeafKeyUsageFollowsTheKeyType(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SubjectKeyId: []byte{1, 2, 3}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(der)
	c, err := casign.New(caCert, caKey, nil, []*x509.Certificate{caCert})
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://default/backend")
	for _, tt := range []struct {
		name string
		pub  crypto.PublicKey
		want x509.KeyUsage
	}{
		{"EC", &ecKey.PublicKey, x509.KeyUsageDigitalSignature},
		{"RSA", &rsaKey.PublicKey, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
	} {
		iss, err := c.IssueForKey(context.Background(), tt.pub, ca.IssueRequest{Identity: ca.Identity{URIs: []*url.URL{u}}}, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(iss.CertPEM)
		leaf, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if leaf.KeyUsage != tt.want || leaf.IsCA {
			t.Errorf("%s key: KeyUsage %b IsCA %v, want %b and not a CA", tt.name, leaf.KeyUsage, leaf.IsCA, tt.want)
		}
	}
}
