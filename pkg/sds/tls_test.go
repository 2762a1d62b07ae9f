package sds_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"meshca/pkg/sds"
)

func TestLoadOrCreateServerTLSPersists(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	conf1, ca1, err := sds.LoadOrCreateServerTLS(dir, "", "", []string{"cp.example.com"}, clock)
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{
		sds.ServerCAFile: 0o644, sds.ServerCAKeyFile: 0o600,
		sds.ServerCertFile: 0o644, sds.ServerCertKeyFile: 0o600,
	}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	leaf1 := verifyServes(t, conf1.Certificates[0].Certificate[0], ca1, now, "cp.example.com", "127.0.0.1", "localhost", "::1")

	// Restart: same CA, same server certificate.
	conf2, ca2, err := sds.LoadOrCreateServerTLS(dir, "", "", []string{"cp.example.com"}, clock)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca1, ca2) {
		t.Fatal("CA regenerated on restart")
	}
	if !bytes.Equal(conf2.Certificates[0].Certificate[0], conf1.Certificates[0].Certificate[0]) {
		t.Fatal("server certificate re-issued although still valid")
	}

	// Within 30 days of expiry: re-issued from the same CA.
	later := leaf1.NotAfter.Add(-29 * 24 * time.Hour)
	conf3, ca3, err := sds.LoadOrCreateServerTLS(dir, "", "", []string{"cp.example.com"}, func() time.Time { return later })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca1, ca3) {
		t.Fatal("CA regenerated on renewal")
	}
	leaf3 := verifyServes(t, conf3.Certificates[0].Certificate[0], ca1, later, "cp.example.com")
	if !leaf3.NotAfter.After(leaf1.NotAfter) {
		t.Fatal("server certificate not renewed near expiry")
	}

	// A new host: re-issued to cover it.
	conf4, _, err := sds.LoadOrCreateServerTLS(dir, "", "", []string{"cp.example.com", "10.0.0.7"}, func() time.Time { return later })
	if err != nil {
		t.Fatal(err)
	}
	verifyServes(t, conf4.Certificates[0].Certificate[0], ca1, later, "10.0.0.7", "cp.example.com")

	// Half a CA is refused rather than silently replaced.
	if err := os.Remove(filepath.Join(dir, sds.ServerCAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sds.LoadOrCreateServerTLS(dir, "", "", nil, clock); err == nil {
		t.Fatal("missing CA key: no error")
	}
}

func TestLoadOrCreateServerTLSOperatorFiles(t *testing.T) {
	src := t.TempDir()
	_, _, err := sds.LoadOrCreateServerTLS(src, "", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	conf, ca, err := sds.LoadOrCreateServerTLS("", filepath.Join(src, sds.ServerCertFile), filepath.Join(src, sds.ServerCertKeyFile), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ca != nil {
		t.Fatal("CA returned for operator-provided certificate")
	}
	cert, err := conf.GetCertificate(nil)
	if err != nil || cert == nil {
		t.Fatalf("GetCertificate: %v", err)
	}
	if _, _, err := sds.LoadOrCreateServerTLS("", filepath.Join(src, sds.ServerCertFile), "", nil, nil); err == nil {
		t.Fatal("cert without key: no error")
	}
}

func verifyServes(t *testing.T, der, caPEM []byte, at time.Time, hosts ...string) *x509.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	block, _ := pem.Decode(caPEM)
	if block == nil {
		t.Fatal("CA is not PEM")
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool.AddCert(ca)
	for _, h := range hosts {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: h, CurrentTime: at}); err != nil {
			t.Errorf("certificate not valid for %s: %v", h, err)
		}
	}
	return leaf
}
