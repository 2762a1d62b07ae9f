package vaulttest

// The PKI engine: issue and sign against a role, and the test CA material.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func (s *Server) signClient(t testing.TB, cn string, issuer *x509.Certificate, issuerKey *ecdsa.PrivateKey) ([]byte, []byte) {
	key := mustKey(t)
	now := s.now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, issuer, &key.PublicKey, issuerKey)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// ---- HTTP ----

func (s *Server) issue(w http.ResponseWriter, r *http.Request, roleName string, sign bool) {
	if _, _, good := s.auth(w, r, PolicyPKI); !good {
		return
	}
	body, good := readBody(w, r)
	if !good {
		return
	}
	s.mu.Lock()
	role, found := s.roles[roleName]
	s.mu.Unlock()
	if !found || strings.Contains(roleName, "/") {
		writeErr(w, http.StatusBadRequest, "unknown role: "+roleName)
		return
	}
	if f := str(body, "format"); f != "" && f != "pem" && f != "der" && f != "pem_bundle" {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("unknown format for certificate: %s", f))
		return
	}
	cn := str(body, "common_name")
	var uris []*url.URL
	var pub any
	var leafKey *ecdsa.PrivateKey
	source := "the API"
	if sign {
		block, _ := pem.Decode([]byte(str(body, "csr")))
		if block == nil || block.Type != "CERTIFICATE REQUEST" {
			writeErr(w, http.StatusBadRequest, "certificate request could not be parsed")
			return
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil || csr.CheckSignature() != nil {
			writeErr(w, http.StatusBadRequest, "certificate request could not be parsed")
			return
		}
		pub = csr.PublicKey
		// use_csr_common_name and use_csr_sans are true by default.
		if csr.Subject.CommonName != "" {
			cn = csr.Subject.CommonName
		}
		if len(csr.URIs) > 0 {
			uris, source = csr.URIs, "CSR"
		}
	}
	if uris == nil && str(body, "uri_sans") != "" {
		for _, v := range strings.Split(str(body, "uri_sans"), ",") {
			u, err := url.Parse(strings.TrimSpace(v))
			if err != nil {
				writeErr(w, http.StatusBadRequest, fmt.Sprintf("the provided URI Subject Alternative Name %q is not a valid URI", v))
				return
			}
			uris = append(uris, u)
		}
	}
	if cn == "" && role.RequireCN {
		writeErr(w, http.StatusBadRequest, `the common_name field is required, or must be provided in a CSR with "use_csr_common_name" set to true, unless "require_cn" is set to false`)
		return
	}
	if cn != "" && len(role.AllowedCommonNames) > 0 && !slices.ContainsFunc(role.AllowedCommonNames, func(g string) bool { return glob(g, cn) }) {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("common name %s not allowed by this role", cn))
		return
	}
	if len(uris) > 0 {
		if len(role.AllowedURISANs) == 0 {
			writeErr(w, http.StatusBadRequest, "URI Subject Alternative Names are not allowed in this role, but were provided via "+source)
			return
		}
		for _, u := range uris {
			if !slices.ContainsFunc(role.AllowedURISANs, func(g string) bool { return glob(g, u.String()) }) {
				writeErr(w, http.StatusBadRequest, "URI Subject Alternative Names were provided via "+source+" which are not valid for this role")
				return
			}
		}
	}
	ttl, err := parseTTL(str(body, "ttl"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("error converting input %v for field %q: %v", body["ttl"], "ttl", err))
		return
	}
	maxTTL := role.MaxTTL
	if maxTTL == 0 {
		maxTTL = 720 * time.Hour
	}
	if ttl == 0 {
		ttl = role.TTL
	}
	if ttl == 0 {
		ttl = maxTTL
	}
	var warnings []string
	if ttl > maxTTL {
		warnings = append(warnings, fmt.Sprintf("TTL %q is longer than permitted maxTTL %q, so maxTTL is being used", ttl.String(), maxTTL.String()))
		ttl = maxTTL
	}
	now := s.now()
	notAfter := now.Add(ttl)
	if notAfter.After(s.issuer.NotAfter) {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("cannot satisfy request, as TTL would result in notAfter of %s that is beyond the expiration of the CA certificate at %s",
			notAfter.UTC().Format(time.RFC3339Nano), s.issuer.NotAfter.UTC().Format(time.RFC3339Nano)))
		return
	}
	if !sign {
		leafKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		pub = &leafKey.PublicKey
	}
	serial := randSerial()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		URIs:                  uris,
		NotBefore:             now.Add(-30 * time.Second),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}, s.issuer, pub, s.issuerKey)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	chain := []string{strings.TrimSpace(string(encodeCert(s.issuer)))}
	if s.issuer != s.root && !s.opts.ExternalRoot {
		chain = append(chain, strings.TrimSpace(string(encodeCert(s.root))))
	}
	data := map[string]any{
		"certificate":   strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))),
		"issuing_ca":    chain[0],
		"ca_chain":      chain,
		"serial_number": colonHex(serial.Bytes()),
		"expiration":    notAfter.Unix(),
	}
	if leafKey != nil {
		kder, err := x509.MarshalECPrivateKey(leafKey)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		data["private_key"] = strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
		data["private_key_type"] = "ec"
	}
	s.mu.Lock()
	s.issued++
	s.mu.Unlock()
	ok(w, "pki", data, warnings)
}

// ---- helpers ----

// parseTTL accepts Vault's duration forms: seconds ("300", 300) or a Go
// duration ("5m", "300s"), and days ("1d").
func parseTTL(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	if strings.HasSuffix(v, "d") {
		n, err := strconv.ParseInt(strings.TrimSuffix(v, "d"), 10, 64)
		if err != nil {
			return 0, err
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

// glob matches Vault's globs: '*' matches any run of characters.
func glob(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

func newCA(t testing.TB, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, now time.Time, life time.Duration) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"meshca vaulttest"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(life),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return c, key
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	return k
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func uuid() string {
	h := randHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func colonHex(b []byte) string {
	var buf bytes.Buffer
	for i, c := range b {
		if i > 0 {
			buf.WriteByte(':')
		}
		fmt.Fprintf(&buf, "%02x", c)
	}
	return buf.String()
}
