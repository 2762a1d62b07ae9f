// Package vaulttest runs an in-process HTTP(S) server that answers the
// Vault endpoints the vault mTLS backend uses, with Vault's request and
// answer shapes: the response envelope, {"errors":[...]} with 400, 403
// ("permission denied") and 404 ("no handler for route"), namespaces from
// the X-Vault-Namespace header (or a path prefix), role max_ttl capping with
// Vault's warning, and a real root + intermediate CA so that issued
// certificates verify.
//
// Endpoints (under the namespace of Options.Namespace when set):
//
//	POST <mount>/issue/:role     POST <mount>/sign/:role
//	GET  <mount>/ca_chain        GET  <mount>/cert/ca_chain
//	POST auth/cert/login         POST auth/aws/login
//	GET  auth/token/lookup-self  POST auth/token/renew-self
package vaulttest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Policies a token may hold.
const (
	PolicyRoot    = "root"    // everything
	PolicyPKI     = "pki"     // issue and sign on the mount, plus PolicyDefault
	PolicyDefault = "default" // lookup-self and renew-self only
)

// DefaultRole is the role Options.Roles gets when empty, like the role of
// Kong Mesh's documentation.
const DefaultRole = "dataplane-proxies"

// Role is a PKI role.
type Role struct {
	// TTL is used when a request has none (default: MaxTTL).
	TTL time.Duration
	// MaxTTL caps the ttl of a request, with Vault's warning (default 720h).
	MaxTTL time.Duration
	// AllowedURISANs are globs ("spiffe://default/*"); empty refuses URI SANs.
	AllowedURISANs []string
	// RequireCN refuses requests without common_name.
	RequireCN bool
	// AllowedCommonNames are globs a common_name must match; empty allows any.
	AllowedCommonNames []string
}

// Options configure a Server. The zero value is a usable HTTPS Vault with a
// root and intermediate CA on mount "pki" and role "dataplane-proxies".
type Options struct {
	Mount     string // default "pki"
	Namespace string // mounts and auth methods live in this namespace
	Roles     map[string]Role
	// HTTP serves plain HTTP instead of HTTPS.
	HTTP bool
	// RootIssues makes the root CA the mount's issuer (no intermediate).
	RootIssues bool
	// ExternalRoot leaves the root out of the mount's chain, as when Vault
	// holds an intermediate whose root lives elsewhere.
	ExternalRoot bool
	// RootTokenTTL makes the root token expire (and renewable); 0: never.
	RootTokenTTL time.Duration
	// LoginTTL is the lease of tokens from auth/cert and auth/aws (default 1h).
	LoginTTL time.Duration
	// AWSRole is the role auth/aws/login accepts (default "my-role").
	AWSRole string
	// AWSServerID, when set, is the X-Vault-AWS-IAM-Server-ID value the
	// signed request must carry.
	AWSServerID string
	// AWSPKCS7 is the instance identity document EC2 logins must carry.
	AWSPKCS7 string
	// Now is the server's clock (default time.Now).
	Now func() time.Time
}

// AWSLogin is one request that reached auth/aws/login: an IAM login (Method
// set) or an EC2 login (PKCS7 set).
type AWSLogin struct {
	Role        string
	Method      string
	URL         string
	Body        string
	AccessKeyID string
	ServerID    string
	Headers     http.Header
	PKCS7       string
	Nonce       string
}

// Request is one request the server received.
type Request struct {
	Method    string
	Path      string // as sent, after /v1/
	Namespace string // X-Vault-Namespace header
}

type token struct {
	policies    []string
	creationTTL time.Duration
	expiry      time.Time // zero: never
	renewable   bool
	explicitMax time.Time
	renewals    int
	created     time.Time
}

// Server is a running fake Vault.
type Server struct {
	// URL is the address to put in conf.fromCp.address.
	URL string
	// CACertPEM is the CA of the server's TLS certificate (nil with HTTP).
	CACertPEM []byte
	// ServerName is a DNS name of the TLS certificate besides 127.0.0.1
	// and localhost.
	ServerName string
	// RootToken may do anything.
	RootToken string
	// RootCertPEM and IntermediateCertPEM are the PKI CA certificates
	// (IntermediateCertPEM is nil with Options.RootIssues).
	RootCertPEM         []byte
	IntermediateCertPEM []byte
	// Mount and Namespace as configured.
	Mount     string
	Namespace string

	opts       Options
	now        func() time.Time
	root       *x509.Certificate
	issuer     *x509.Certificate
	issuerKey  *ecdsa.PrivateKey
	clientCA   *x509.Certificate
	clientKey  *ecdsa.PrivateKey
	clientPool *x509.CertPool

	mu        sync.Mutex
	roles     map[string]Role
	tokens    map[string]*token
	awsLogins []AWSLogin
	ec2Nonce  string // the nonce of the first EC2 login
	requests  []Request
	issued    int
	renewals  int
}

// New starts a server that is closed when t ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Mount == "" {
		opts.Mount = "pki"
	}
	opts.Mount = strings.Trim(opts.Mount, "/")
	opts.Namespace = strings.Trim(opts.Namespace, "/")
	if opts.LoginTTL == 0 {
		opts.LoginTTL = time.Hour
	}
	if opts.AWSRole == "" {
		opts.AWSRole = "my-role"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	roles := map[string]Role{}
	for k, v := range opts.Roles {
		roles[k] = v
	}
	if len(roles) == 0 {
		roles[DefaultRole] = Role{MaxTTL: 720 * time.Hour, AllowedURISANs: []string{"spiffe://*", "kuma://*"}}
	}
	s := &Server{
		ServerName: "vault.test",
		Mount:      opts.Mount,
		Namespace:  opts.Namespace,
		opts:       opts,
		now:        opts.Now,
		roles:      roles,
		tokens:     map[string]*token{},
	}
	now := s.now()
	var rootKey *ecdsa.PrivateKey
	s.root, rootKey = newCA(t, "meshca-vaulttest Root CA", nil, nil, now, 10*365*24*time.Hour)
	s.RootCertPEM = encodeCert(s.root)
	s.issuer, s.issuerKey = s.root, rootKey
	if !opts.RootIssues {
		s.issuer, s.issuerKey = newCA(t, "meshca-vaulttest Intermediate CA", s.root, rootKey, now, 5*365*24*time.Hour)
		s.IntermediateCertPEM = encodeCert(s.issuer)
	}
	s.clientCA, s.clientKey = newCA(t, "meshca-vaulttest cert-auth CA", nil, nil, now, 365*24*time.Hour)
	s.clientPool = x509.NewCertPool()
	s.clientPool.AddCert(s.clientCA)

	s.RootToken = s.CreateToken(TokenOptions{Policies: []string{PolicyRoot}, TTL: opts.RootTokenTTL, Renewable: opts.RootTokenTTL > 0})

	srv := httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	// Refused client certificates and closed connections are expected.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if opts.HTTP {
		srv.Start()
	} else {
		tlsCA, tlsKey := newCA(t, "meshca-vaulttest TLS CA", nil, nil, now, 365*24*time.Hour)
		s.CACertPEM = encodeCert(tlsCA)
		leafKey := mustKey(t)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: randSerial(),
			Subject:      pkix.Name{CommonName: s.ServerName},
			DNSNames:     []string{s.ServerName, "localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(365 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}, tlsCA, &leafKey.PublicKey, tlsKey)
		if err != nil {
			t.Fatalf("vaulttest: %v", err)
		}
		srv.TLS = &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: leafKey}},
			ClientAuth:   tls.RequestClientCert,
			MinVersion:   tls.VersionTLS12,
		}
		srv.StartTLS()
	}
	s.URL = srv.URL
	t.Cleanup(srv.Close)
	return s
}

// TokenOptions describe a token made by CreateToken.
type TokenOptions struct {
	Policies []string // default [pki, default]
	// TTL is the lease; 0: never expires.
	TTL       time.Duration
	Renewable bool
	// ExplicitMaxTTL bounds renewals; 0: none.
	ExplicitMaxTTL time.Duration
}

// CreateToken makes a token and returns it.
func (s *Server) CreateToken(o TokenOptions) string {
	if len(o.Policies) == 0 {
		o.Policies = []string{PolicyPKI, PolicyDefault}
	}
	now := s.now()
	tok := &token{policies: o.Policies, creationTTL: o.TTL, renewable: o.Renewable, created: now}
	if o.TTL > 0 {
		tok.expiry = now.Add(o.TTL)
	}
	if o.ExplicitMaxTTL > 0 {
		tok.explicitMax = now.Add(o.ExplicitMaxTTL)
	}
	id := "hvs." + randHex(12)
	s.mu.Lock()
	s.tokens[id] = tok
	s.mu.Unlock()
	return id
}

// RevokeToken makes a token invalid.
func (s *Server) RevokeToken(id string) {
	s.mu.Lock()
	delete(s.tokens, id)
	s.mu.Unlock()
}

// TokenRenewals returns how often a token was renewed.
func (s *Server) TokenRenewals(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tok := s.tokens[id]; tok != nil {
		return tok.renewals
	}
	return 0
}

// Renewals returns how many renew-self calls succeeded.
func (s *Server) Renewals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renewals
}

// Issued returns how many certificates were issued or signed.
func (s *Server) Issued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// SetRole creates or replaces a role.
func (s *Server) SetRole(name string, r Role) {
	s.mu.Lock()
	s.roles[name] = r
	s.mu.Unlock()
}

// AWSLogins returns the requests that reached auth/aws/login.
func (s *Server) AWSLogins() []AWSLogin {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.awsLogins)
}

// Requests returns every request received, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ClientCertificate returns a certificate and key (PEM) that auth/cert/login
// accepts.
func (s *Server) ClientCertificate(t testing.TB, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	return s.signClient(t, cn, s.clientCA, s.clientKey)
}

// UntrustedClientCertificate returns a certificate auth/cert/login refuses.
func (s *Server) UntrustedClientCertificate(t testing.TB, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	other, otherKey := newCA(t, "untrusted CA", nil, nil, s.now(), 24*time.Hour)
	return s.signClient(t, cn, other, otherKey)
}
