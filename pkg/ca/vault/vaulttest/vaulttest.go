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
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
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

type reply struct {
	RequestID     string         `json:"request_id"`
	LeaseID       string         `json:"lease_id"`
	Renewable     bool           `json:"renewable"`
	LeaseDuration int            `json:"lease_duration"`
	Data          map[string]any `json:"data"`
	WrapInfo      any            `json:"wrap_info"`
	Warnings      []string       `json:"warnings"`
	Auth          *authInfo      `json:"auth"`
	MountType     string         `json:"mount_type"`
}

type authInfo struct {
	ClientToken   string            `json:"client_token"`
	Accessor      string            `json:"accessor"`
	Policies      []string          `json:"policies"`
	TokenPolicies []string          `json:"token_policies"`
	Metadata      map[string]string `json:"metadata"`
	LeaseDuration int               `json:"lease_duration"`
	Renewable     bool              `json:"renewable"`
	EntityID      string            `json:"entity_id"`
	TokenType     string            `json:"token_type"`
	Orphan        bool              `json:"orphan"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, msgs ...string) {
	writeJSON(w, status, map[string][]string{"errors": msgs})
}

func ok(w http.ResponseWriter, mountType string, data map[string]any, warnings []string) {
	writeJSON(w, http.StatusOK, reply{RequestID: uuid(), Data: data, Warnings: warnings, MountType: mountType})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/v1/") {
		writeErr(w, http.StatusNotFound)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/v1/")
	ns := strings.Trim(r.Header.Get("X-Vault-Namespace"), "/")
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: p, Namespace: r.Header.Get("X-Vault-Namespace")})
	s.mu.Unlock()
	full := strings.Trim(path.Join(ns, p), "/")
	rel, inNS := full, s.opts.Namespace == ""
	if s.opts.Namespace != "" && strings.HasPrefix(full, s.opts.Namespace+"/") {
		rel, inNS = strings.TrimPrefix(full, s.opts.Namespace+"/"), true
	}
	write := r.Method == http.MethodPost || r.Method == http.MethodPut
	read := r.Method == http.MethodGet
	mount := s.opts.Mount + "/"
	switch {
	case rel == "auth/token/lookup-self" && (read || write):
		s.lookupSelf(w, r)
	case rel == "auth/token/renew-self" && write:
		s.renewSelf(w, r)
	case inNS && rel == "auth/cert/login" && write:
		s.certLogin(w, r)
	case inNS && rel == "auth/aws/login" && write:
		s.awsLogin(w, r)
	case inNS && rel == mount+"ca_chain" && read:
		w.Header().Set("Content-Type", "application/pem-certificate-chain")
		_, _ = w.Write(s.chainPEM())
	case inNS && rel == mount+"cert/ca_chain" && read:
		ok(w, "pki", map[string]any{"certificate": string(s.chainPEM()), "revocation_time": 0}, nil)
	case inNS && strings.HasPrefix(rel, mount+"issue/") && write:
		s.issue(w, r, strings.TrimPrefix(rel, mount+"issue/"), false)
	case inNS && strings.HasPrefix(rel, mount+"sign/") && write:
		s.issue(w, r, strings.TrimPrefix(rel, mount+"sign/"), true)
	case r.Method != http.MethodGet && r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodDelete && r.Method != "LIST":
		writeErr(w, http.StatusMethodNotAllowed, "unsupported operation")
	default:
		writeErr(w, http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", full))
	}
}

// chainPEM is the mount's chain, issuer first.
func (s *Server) chainPEM() []byte {
	out := encodeCert(s.issuer)
	if s.issuer != s.root && !s.opts.ExternalRoot {
		out = append(out, encodeCert(s.root)...)
	}
	return out
}

// auth returns the caller's token, or writes 403.
func (s *Server) auth(w http.ResponseWriter, r *http.Request, allowed ...string) (string, *token, bool) {
	id := r.Header.Get("X-Vault-Token")
	s.mu.Lock()
	tok := s.tokens[id]
	s.mu.Unlock()
	if tok == nil || (!tok.expiry.IsZero() && !s.now().Before(tok.expiry)) {
		writeErr(w, http.StatusForbidden, "permission denied")
		return "", nil, false
	}
	if slices.Contains(tok.policies, PolicyRoot) {
		return id, tok, true
	}
	for _, p := range allowed {
		if slices.Contains(tok.policies, p) {
			return id, tok, true
		}
	}
	writeErr(w, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
	return "", nil, false
}

func readBody(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	body := map[string]any{}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil && err.Error() != "EOF" {
		writeErr(w, http.StatusBadRequest, "failed to parse JSON input: "+err.Error())
		return nil, false
	}
	return body, true
}

func str(body map[string]any, k string) string {
	switch v := body[k].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	}
	return ""
}

func (s *Server) tokenData(id string, tok *token) map[string]any {
	ttl := 0
	expire := any(nil)
	if !tok.expiry.IsZero() {
		ttl = int(tok.expiry.Sub(s.now()).Round(time.Second) / time.Second)
		expire = tok.expiry.UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{
		"accessor":         "acc." + id[len(id)-6:],
		"creation_time":    tok.created.Unix(),
		"creation_ttl":     int(tok.creationTTL / time.Second),
		"display_name":     "token",
		"entity_id":        "",
		"expire_time":      expire,
		"explicit_max_ttl": 0,
		"id":               id,
		"issue_time":       tok.created.UTC().Format(time.RFC3339Nano),
		"meta":             nil,
		"num_uses":         0,
		"orphan":           false,
		"path":             "auth/token/create",
		"policies":         tok.policies,
		"renewable":        tok.renewable,
		"ttl":              ttl,
		"type":             "service",
	}
}

func (s *Server) lookupSelf(w http.ResponseWriter, r *http.Request) {
	id, tok, good := s.auth(w, r, PolicyDefault, PolicyPKI)
	if !good {
		return
	}
	s.mu.Lock()
	data := s.tokenData(id, tok)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, reply{RequestID: uuid(), Data: data, MountType: "token"})
}

func (s *Server) renewSelf(w http.ResponseWriter, r *http.Request) {
	id, tok, good := s.auth(w, r, PolicyDefault, PolicyPKI)
	if !good {
		return
	}
	body, good := readBody(w, r)
	if !good {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !tok.renewable || tok.expiry.IsZero() {
		writeErr(w, http.StatusBadRequest, "lease is not renewable")
		return
	}
	ttl := tok.creationTTL
	if inc, err := parseTTL(str(body, "increment")); err == nil && inc > 0 {
		ttl = inc
	}
	now := s.now()
	exp := now.Add(ttl)
	var warnings []string
	if !tok.explicitMax.IsZero() && exp.After(tok.explicitMax) {
		exp = tok.explicitMax
		warnings = append(warnings, "TTL of \""+ttl.String()+"\" exceeded the effective max_ttl of \""+tok.explicitMax.Sub(now).Round(time.Second).String()+"\"; TTL value is capped accordingly")
	}
	tok.expiry = exp
	tok.renewals++
	s.renewals++
	lease := int(exp.Sub(now).Round(time.Second) / time.Second)
	writeJSON(w, http.StatusOK, reply{RequestID: uuid(), Warnings: warnings, Auth: &authInfo{
		ClientToken: id, Accessor: "acc." + id[len(id)-6:], Policies: tok.policies, TokenPolicies: tok.policies,
		LeaseDuration: lease, Renewable: lease > 0, TokenType: "service",
	}})
}

func (s *Server) login(w http.ResponseWriter, meta map[string]string) {
	id := s.CreateToken(TokenOptions{Policies: []string{PolicyDefault, PolicyPKI}, TTL: s.opts.LoginTTL, Renewable: true})
	writeJSON(w, http.StatusOK, reply{RequestID: uuid(), Auth: &authInfo{
		ClientToken: id, Accessor: "acc." + id[len(id)-6:], Policies: []string{PolicyDefault, PolicyPKI},
		TokenPolicies: []string{PolicyDefault, PolicyPKI}, Metadata: meta,
		LeaseDuration: int(s.opts.LoginTTL / time.Second), Renewable: true, TokenType: "service",
	}})
}

func (s *Server) certLogin(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		writeErr(w, http.StatusBadRequest, "invalid certificate or no client certificate supplied")
		return
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.clientPool, Intermediates: inter, CurrentTime: s.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid certificate or no client certificate supplied")
		return
	}
	s.login(w, map[string]string{"cert_name": "meshca", "common_name": leaf.Subject.CommonName})
}

var credentialRe = regexp.MustCompile(`Credential=([A-Z0-9]+)/`)

func (s *Server) awsLogin(w http.ResponseWriter, r *http.Request) {
	body, good := readBody(w, r)
	if !good {
		return
	}
	if pkcs7 := str(body, "pkcs7"); pkcs7 != "" {
		s.ec2Login(w, AWSLogin{Role: str(body, "role"), PKCS7: pkcs7, Nonce: str(body, "nonce")})
		return
	}
	method := str(body, "iam_http_request_method")
	if method == "" {
		writeErr(w, http.StatusBadRequest, "missing iam_http_request_method")
		return
	}
	dec := func(k string) ([]byte, bool) {
		b, err := base64.StdEncoding.DecodeString(str(body, k))
		if err != nil || len(b) == 0 {
			writeErr(w, http.StatusBadRequest, "failed to base64 decode "+k)
			return nil, false
		}
		return b, true
	}
	u, good := dec("iam_request_url")
	if !good {
		return
	}
	reqBody, good := dec("iam_request_body")
	if !good {
		return
	}
	hdrJSON, good := dec("iam_request_headers")
	if !good {
		return
	}
	var hdr http.Header
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil {
		writeErr(w, http.StatusBadRequest, "failed to parse iam_request_headers: "+err.Error())
		return
	}
	m := credentialRe.FindStringSubmatch(hdr.Get("Authorization"))
	if !strings.HasPrefix(hdr.Get("Authorization"), "AWS4-HMAC-SHA256 ") || m == nil {
		writeErr(w, http.StatusBadRequest, "error parsing iam_request_headers: missing or invalid Authorization header")
		return
	}
	login := AWSLogin{
		Role: str(body, "role"), Method: method, URL: string(u), Body: string(reqBody),
		AccessKeyID: m[1], ServerID: hdr.Get("X-Vault-AWS-IAM-Server-ID"), Headers: hdr,
	}
	s.mu.Lock()
	s.awsLogins = append(s.awsLogins, login)
	s.mu.Unlock()
	if s.opts.AWSServerID != "" && login.ServerID != s.opts.AWSServerID {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("expected %q but got %q", s.opts.AWSServerID, login.ServerID))
		return
	}
	if login.Role != s.opts.AWSRole {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("entry for role %q not found", login.Role))
		return
	}
	s.login(w, map[string]string{"role": login.Role, "client_user_id": login.AccessKeyID})
}

// ec2Login accepts an EC2 login whose document is Options.AWSPKCS7 and
// whose role is Options.AWSRole. Like Vault, it binds the instance to the
// first nonce it sees and refuses another one.
func (s *Server) ec2Login(w http.ResponseWriter, login AWSLogin) {
	s.mu.Lock()
	s.awsLogins = append(s.awsLogins, login)
	first := s.ec2Nonce == ""
	if first {
		s.ec2Nonce = login.Nonce
	}
	nonce := s.ec2Nonce
	s.mu.Unlock()
	switch {
	case login.PKCS7 != s.opts.AWSPKCS7:
		writeErr(w, http.StatusBadRequest, "failed to verify the signature of the instance identity document")
	case login.Nonce == "" || login.Nonce != nonce:
		writeErr(w, http.StatusBadRequest, "client nonce mismatch")
	case login.Role != s.opts.AWSRole:
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("entry for role %q not found", login.Role))
	default:
		s.login(w, map[string]string{"role": login.Role, "instance_id": "i-0meshca"})
	}
}

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
