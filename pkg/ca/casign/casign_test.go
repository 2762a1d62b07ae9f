package casign_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"meshca/pkg/ca/casign"
)

func TestParsePrivateKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	p8ec, _ := x509.MarshalPKCS8PrivateKey(ec)
	p8ed, _ := x509.MarshalPKCS8PrivateKey(ed)
	enc := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	cert := enc("CERTIFICATE", []byte{1, 2, 3})

	tests := []struct {
		name    string
		pem     []byte
		want    crypto.PublicKey
		wantErr string
	}{
		{"PKCS#1 RSA", enc("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)), rk.Public(), ""},
		{"SEC 1 EC", enc("EC PRIVATE KEY", sec1), ec.Public(), ""},
		{"PKCS#8 EC after a certificate", append(cert, enc("PRIVATE KEY", p8ec)...), ec.Public(), ""},
		{"PKCS#8 Ed25519", enc("PRIVATE KEY", p8ed), ed.Public(), ""},
		{"garbage PKCS#1", enc("RSA PRIVATE KEY", []byte{0x30, 0}), nil, "not a valid PKCS#1 key"},
		{"no key", cert, nil, "no PEM private key found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := casign.ParsePrivateKey(tt.pem)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !casign.KeyMatches(tt.want, k) {
				t.Error("parsed key does not match the original public key")
			}
			if casign.KeyMatches(rk.Public(), ec) || casign.KeyMatches(ec.Public(), rk) {
				t.Error("KeyMatches accepted keys of different types")
			}
		})
	}
}

func TestSerialNumber(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		n, err := casign.SerialNumber(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if n.Sign() <= 0 || n.BitLen() > 128 {
			t.Fatalf("serial %v out of range", n)
		}
		if seen[n.String()] {
			t.Fatal("duplicate serial")
		}
		seen[n.String()] = true
	}
}
