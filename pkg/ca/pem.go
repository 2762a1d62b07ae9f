package ca

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// ParseCertificates parses every CERTIFICATE block of a PEM bundle, in order.
func ParseCertificates(pemData []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := pemData
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// EncodeCertificates renders certificates as a PEM bundle.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// VerifyIssued checks that the leaf of an Issued certificate chains up to
// one of the roots in bundlePEM at time now, through the intermediates of
// ChainPEM. It returns the parsed leaf.
func VerifyIssued(iss Issued, bundlePEM []byte, now time.Time) (*x509.Certificate, error) {
	leafs, err := ParseCertificates(iss.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("issued certificate: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundlePEM) {
		return nil, errors.New("trust bundle holds no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range leafs[1:] {
		inter.AddCert(c)
	}
	if len(iss.ChainPEM) > 0 {
		chain, err := ParseCertificates(iss.ChainPEM)
		if err != nil {
			return nil, fmt.Errorf("issued chain: %w", err)
		}
		for _, c := range chain {
			inter.AddCert(c)
		}
	}
	leaf := leafs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("issued certificate does not verify against the trust bundle: %w", err)
	}
	return leaf, nil
}
