package sds

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"meshca/pkg/atomicfile"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Files written by LoadOrCreateServerTLS under its data directory.
const (
	ServerCAFile      = "dp-server-ca.pem"
	ServerCAKeyFile   = "dp-server-ca.key"
	ServerCertFile    = "dp-server.pem"
	ServerCertKeyFile = "dp-server.key"
)

// ServerFiles names what LoadOrCreateTLS keeps under its data directory, so
// that several servers (the dp server, the API's HTTPS listener) each keep
// their own CA beside the others.
type ServerFiles struct {
	CA, CAKey, Cert, CertKey string
	// Name is the server's name in the certificates' common names.
	Name string
}

// DPServerFiles are the files of the data-plane server.
func DPServerFiles() ServerFiles {
	return ServerFiles{CA: ServerCAFile, CAKey: ServerCAKeyFile, Cert: ServerCertFile, CertKey: ServerCertKeyFile, Name: "meshca data-plane server"}
}

const (
	serverCAValidity   = 10 * 365 * 24 * time.Hour
	serverCertValidity = 365 * 24 * time.Hour
	// RenewBefore: a persisted server certificate this close to expiry is re-issued.
	RenewBefore = 30 * 24 * time.Hour
)

// LoadOrCreateServerTLS returns the TLS configuration of the data-plane server
// and the PEM of the CA proxies must trust.
//
// With certFile and keyFile (both or neither), the operator's certificate is
// served, re-read whenever the files change; caPEM is nil (the operator
// distributes their own CA).
//
// Otherwise a self-signed ECDSA P-256 CA (10 years) and a server certificate
// (1 year; SANs: hosts, 127.0.0.1, ::1, localhost) are created once under
// dataDir (dp-server-ca.pem 0644, dp-server-ca.key 0600, dp-server.pem 0644,
// dp-server.key 0600) and reused on later calls: regenerating the CA would
// strand every proxy that trusts it. The server certificate is re-issued from
// the persisted CA when it is within 30 days of expiry, when its SANs do not
// cover hosts, or when it was not signed by that CA. Files are written
// atomically. One process should own dataDir at a time.
func LoadOrCreateServerTLS(dataDir string, certFile, keyFile string, hosts []string, now func() time.Time) (*tls.Config, []byte, error) {
	return LoadOrCreateTLS(DPServerFiles(), dataDir, certFile, keyFile, hosts, now)
}

// LoadOrCreateTLS is LoadOrCreateServerTLS for the server whose files are files.
func LoadOrCreateTLS(files ServerFiles, dataDir string, certFile, keyFile string, hosts []string, now func() time.Time) (*tls.Config, []byte, error) {
	if now == nil {
		now = time.Now
	}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, nil, errors.New("server TLS: both the certificate and the key file are required")
		}
		r := &keyPairReloader{certFile: certFile, keyFile: keyFile}
		if _, err := r.get(); err != nil {
			return nil, nil, fmt.Errorf("server TLS: %w", err)
		}
		return &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.get() },
		}, nil, nil
	}
	if dataDir == "" {
		return nil, nil, errors.New("server TLS: a data directory is required to keep the generated CA")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("server TLS: %w", err)
	}
	caCert, caKey, caPEM, err := loadOrCreateCA(files, dataDir, now())
	if err != nil {
		return nil, nil, fmt.Errorf("server TLS: %w", err)
	}
	sans := slices.Clone(hosts)
	for _, h := range []string{"127.0.0.1", "::1", "localhost"} {
		if !slices.Contains(sans, h) {
			sans = append(sans, h)
		}
	}
	cert, err := loadOrIssueServerCert(files, dataDir, caCert, caKey, caPEM, sans, now())
	if err != nil {
		return nil, nil, fmt.Errorf("server TLS: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, caPEM, nil
}

func loadOrCreateCA(files ServerFiles, dir string, now time.Time) (*x509.Certificate, crypto.Signer, []byte, error) {
	certPath, keyPath := filepath.Join(dir, files.CA), filepath.Join(dir, files.CAKey)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("persisted CA %s: %w", certPath, err)
		}
		signer, ok := pair.PrivateKey.(crypto.Signer)
		if !ok {
			return nil, nil, nil, fmt.Errorf("persisted CA key %s cannot sign", keyPath)
		}
		return pair.Leaf, signer, certPEM, nil
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		// First start: create below.
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, nil, nil, fmt.Errorf("read CA: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, nil, fmt.Errorf("read CA key: %w", keyErr)
	default:
		// Refuse to replace half a CA: proxies may trust it.
		return nil, nil, nil, fmt.Errorf("only one of %s and %s exists; restore the other or remove both to create a new CA (every proxy must then trust the new one)", certPath, keyPath)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: files.Name + " CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(serverCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// Key first: a CA certificate without its key would be unusable.
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, nil, err
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return nil, nil, nil, err
	}
	return cert, key, certPEM, nil
}

func loadOrIssueServerCert(files ServerFiles, dir string, ca *x509.Certificate, caKey crypto.Signer, caPEM []byte, sans []string, now time.Time) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, files.Cert), filepath.Join(dir, files.CertKey)
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && usable(pair.Leaf, ca, sans, now) {
		return pair, nil
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: files.Name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverCertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range sans {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	// The served chain is leaf + CA so clients can build it either way.
	certPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), caPEM...)
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// usable reports whether a persisted server certificate may be kept.
func usable(leaf, ca *x509.Certificate, sans []string, now time.Time) bool {
	if leaf == nil || leaf.CheckSignatureFrom(ca) != nil {
		return false
	}
	if now.Before(leaf.NotBefore) || now.Add(RenewBefore).After(leaf.NotAfter) {
		return false
	}
	for _, h := range sans {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("random serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// keyPairReloader serves an operator's key pair, re-reading it when either
// file's modification time or size changes.
type keyPairReloader struct {
	certFile, keyFile string

	mu    sync.Mutex
	stamp [2]fileStamp
	cert  *tls.Certificate
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func (r *keyPairReloader) get() (*tls.Certificate, error) {
	var stamp [2]fileStamp
	for i, p := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return r.fallback(err)
		}
		stamp[i] = fileStamp{fi.ModTime(), fi.Size()}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert != nil && stamp == r.stamp {
		return r.cert, nil
	}
	pair, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		if r.cert != nil {
			return r.cert, nil // mid-rotation: keep serving the previous pair
		}
		return nil, fmt.Errorf("load %s / %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.stamp = &pair, stamp
	return r.cert, nil
}

func (r *keyPairReloader) fallback(err error) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert != nil {
		return r.cert, nil
	}
	return nil, err
}
