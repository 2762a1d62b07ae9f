// Package casign holds the signing code shared by the CA backends that keep
// their CA key in meshca (builtin and provided): issuing a data-plane leaf
// from a CSR, parsing private keys, and strict decoding of backend conf.
package casign

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
)

// ClockSkew is how far in the past a certificate's NotBefore is put, so a
// peer whose clock is slightly behind still accepts it.
const ClockSkew = time.Minute

// CA is a parsed signing CA: its certificate, its key, and what goes with
// every certificate it issues. A CA is immutable once built and safe for
// concurrent use.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	// chainPEM is sent with each leaf (intermediates, signing CA first).
	chainPEM []byte
	// bundlePEM is the trust anchor peers must trust.
	bundlePEM []byte
}

// New builds a CA from its certificate and key. chain are the certificates
// to send with every leaf (from the signing CA up, excluding the trust
// anchor); anchors are the trust anchors of the trust bundle.
func New(cert *x509.Certificate, key crypto.Signer, chain, anchors []*x509.Certificate) (*CA, error) {
	if cert == nil || key == nil {
		return nil, errors.New("CA certificate and key are required")
	}
	if !KeyMatches(cert.PublicKey, key) {
		return nil, errors.New("CA key does not match the CA certificate's public key")
	}
	if len(anchors) == 0 {
		return nil, errors.New("CA has no trust anchor")
	}
	return &CA{
		cert:      cert,
		key:       key,
		chainPEM:  ca.EncodeCertificates(chain...),
		bundlePEM: ca.EncodeCertificates(anchors...),
	}, nil
}

// Certificate returns the signing certificate. Callers must not modify it.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// TrustBundle returns a copy of the trust anchors in PEM.
func (c *CA) TrustBundle() []byte { return bytes.Clone(c.bundlePEM) }

// Issue signs req.CSR into a data-plane leaf certificate valid from
// now-ClockSkew for validity (capped at the CA's own expiry).
//
// The leaf keeps the CSR's subject (its common name replaced by
// Identity.CommonName when set), URI and DNS SANs; it is a TLS server and
// client certificate whose AuthorityKeyId is the CA's SubjectKeyId (left out
// when the CA certificate has none, as RFC 5280 allows).
func (c *CA) Issue(ctx context.Context, req ca.IssueRequest, validity time.Duration, now time.Time) (ca.Issued, error) {
	csr := req.CSR
	if csr == nil {
		if len(req.CSRPEM) == 0 {
			return ca.Issued{}, errors.New("issue: no CSR in request")
		}
		var err error
		if csr, err = ParseCSR(req.CSRPEM); err != nil {
			return ca.Issued{}, fmt.Errorf("issue: %w", err)
		}
	}
	if err := csr.CheckSignature(); err != nil {
		return ca.Issued{}, fmt.Errorf("issue: CSR signature is invalid: %w", err)
	}
	subject := csr.Subject
	if req.Identity.CommonName != "" {
		subject.CommonName = req.Identity.CommonName
	}
	return c.sign(ctx, csr.PublicKey, subject, csr.URIs, csr.DNSNames, validity, now)
}

// IssueForKey signs a data-plane leaf for a public key meshca generated
// itself, so there is no CSR to parse or check: subject and SANs come from
// req.Identity. Otherwise it behaves as Issue.
func (c *CA) IssueForKey(ctx context.Context, pub crypto.PublicKey, req ca.IssueRequest, validity time.Duration, now time.Time) (ca.Issued, error) {
	return c.sign(ctx, pub, pkix.Name{CommonName: req.Identity.CommonName}, req.Identity.URIs, nil, validity, now)
}

// IssueFor issues from req.CSR when pub is nil, else for pub (ca.KeySigner),
// valid for req.Validity or, when unset, the backend's dpCert expiration.
func (c *CA) IssueFor(ctx context.Context, mb api.MTLSBackend, req ca.IssueRequest, pub crypto.PublicKey, now time.Time) (ca.Issued, error) {
	validity := req.Validity
	if validity <= 0 {
		validity = mb.CertExpiration()
	}
	if pub == nil {
		return c.Issue(ctx, req, validity, now)
	}
	return c.IssueForKey(ctx, pub, req, validity, now)
}

func (c *CA) sign(ctx context.Context, pub crypto.PublicKey, subject pkix.Name, uris []*url.URL, dnsNames []string, validity time.Duration, now time.Time) (ca.Issued, error) {
	if err := ctx.Err(); err != nil {
		return ca.Issued{}, err
	}
	if validity <= 0 {
		return ca.Issued{}, fmt.Errorf("issue: validity must be positive, got %s", validity)
	}
	if !now.Before(c.cert.NotAfter) {
		return ca.Issued{}, fmt.Errorf("issue: CA certificate %q expired at %s", c.cert.Subject.CommonName, c.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := SerialNumber(rand.Reader)
	if err != nil {
		return ca.Issued{}, fmt.Errorf("issue: %w", err)
	}
	notAfter := now.Add(validity)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		URIs:                  uris,
		DNSNames:              dnsNames,
		KeyUsage:              leafKeyUsage(pub),
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		AuthorityKeyId:        c.cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return ca.Issued{}, fmt.Errorf("issue: sign certificate: %w", err)
	}
	return ca.Issued{
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		ChainPEM: bytes.Clone(c.chainPEM),
		// x509 encodes validity in whole UTC seconds.
		Built: &ca.BuiltLeaf{Serial: serial, NotAfter: notAfter.UTC().Truncate(time.Second), Issuer: c.cert},
	}, nil
}

// leafKeyUsage is digitalSignature, plus keyEncipherment for an RSA key
// only: that usage is RSA key transport, which an EC key cannot do (RFC 5480
// section 3 lists what an EC key may assert).
func leafKeyUsage(pub crypto.PublicKey) x509.KeyUsage {
	ku := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	return ku
}

// SerialNumber returns a random positive 128-bit serial number.
func SerialNumber(r io.Reader) (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
}

// ParseCSR parses the first CERTIFICATE REQUEST block of a PEM document.
func ParseCSR(pemData []byte) (*x509.CertificateRequest, error) {
	for rest := pemData; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM certificate request found")
		}
		if block.Type == "CERTIFICATE REQUEST" || block.Type == "NEW CERTIFICATE REQUEST" {
			return x509.ParseCertificateRequest(block.Bytes)
		}
	}
}

// ParsePrivateKey parses the first private key of a PEM document, in PKCS#1
// ("RSA PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#8 ("PRIVATE KEY")
// form. Errors never include key material.
func ParsePrivateKey(pemData []byte) (crypto.Signer, error) {
	for rest := pemData; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key found (want RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY)")
		}
		switch block.Type {
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, errors.New("RSA PRIVATE KEY block is not a valid PKCS#1 key")
			}
			return k, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, errors.New("EC PRIVATE KEY block is not a valid SEC 1 key")
			}
			return k, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, errors.New("PRIVATE KEY block is not a valid PKCS#8 key")
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("PKCS#8 key of type %T cannot sign", k)
			}
			return s, nil
		}
	}
}

// MarshalPrivateKey renders a key as a PKCS#8 PEM block.
func MarshalPrivateKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// KeyMatches reports whether key is the private half of pub.
func KeyMatches(pub crypto.PublicKey, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return false
	}
	e, ok := key.Public().(equaler)
	return ok && e.Equal(pub)
}

// IsCA reports whether a certificate may sign other certificates: basic
// constraints CA:TRUE and the keyCertSign key usage.
func IsCA(c *x509.Certificate) bool {
	return c.BasicConstraintsValid && c.IsCA && c.KeyUsage&x509.KeyUsageCertSign != 0
}
