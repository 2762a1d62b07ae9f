// Package vault is the `vault` mTLS backend: data-plane certificates come
// from the PKI secrets engine of a HashiCorp Vault server, configured as
// Kong Mesh documents it (conf.fromCp).
//
// Behaviour:
//   - One Vault client per (mesh, backend), rebuilt when the backend's conf
//     or the data its DataSources resolve to change.
//   - Auth: exactly one of token (looked up with auth/token/lookup-self at
//     Ensure; renewed with auth/token/renew-self at two thirds of its TTL
//     while it is renewable), tls (auth/cert/login with the client
//     certificate) and aws (auth/aws/login with a signed
//     sts:GetCallerIdentity by default, the EC2 identity document on
//     request; see awslogin.go). Login tokens are replaced by a new login
//     shortly before they expire, or after Vault answers 403.
//   - mode issue (default, as Kong Mesh): POST <pki>/issue/<role>; Vault
//     makes the key, which is returned in Issued.KeyPEM converted to PKCS#8
//     ("PRIVATE KEY"), whatever form Vault used. mode sign (meshca's
//     extension): POST <pki>/sign/<role> with the caller's CSR.
//   - Both send uri_sans (every Identity URI, comma-separated), ttl
//     (Validity in seconds) and format=pem. common_name is sent only when the
//     rendered commonName template is not empty: otherwise the role needs
//     require_cn=false, as the role of Kong Mesh's documentation has. In sign
//     mode Vault's use_csr_common_name/use_csr_sans take the CSR's values.
//   - Trust bundle: the self-signed certificates of the mount's CA chain
//     (<pki>/cert/ca_chain, falling back to the bare <pki>/ca_chain); when
//     the chain has none (Vault holds an intermediate whose root lives
//     elsewhere) the top certificate of the chain is the trust anchor.
//   - Ensure does one test issuance, as Kong Mesh does, and checks that it
//     verifies against the trust bundle. Vault shortens a certificate asked
//     for longer than the role's max_ttl with a warning instead of an error:
//     the backend treats that warning as an error on
//     dpCert.rotation.expiration, at Ensure and at Issue.
//   - Vault's own error text ({"errors":[...]}) is reported as an
//     *api.ValidationError on the field it concerns.
package vault

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"text/template"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/datasource"
	"meshca/pkg/store"
)

// Type is the backend type this package implements.
const Type = "vault"

type stateKey struct{ mesh, name string }

type backend struct {
	sources *datasource.Resolver
	log     *slog.Logger
	now     func() time.Time
	// after waits for token renewal; tests replace it.
	after func(time.Duration) <-chan time.Time

	mu     sync.Mutex
	states map[stateKey]*state
}

var (
	_ ca.Backend     = (*backend)(nil)
	_ ca.SecretUser  = (*backend)(nil)
	_ ca.CommonNamer = (*backend)(nil)
	_ ca.Cleaner     = (*backend)(nil)
)

// New returns the vault backend. It uses deps.Sources, deps.Logger and
// deps.Now. The returned value also implements io.Closer, which stops every
// token renewal.
func New(deps ca.Deps) (ca.Backend, error) {
	return newBackend(deps)
}

func newBackend(deps ca.Deps) (*backend, error) {
	if deps.Sources == nil {
		if deps.Store == nil {
			return nil, errors.New("vault backend needs Deps.Sources or Deps.Store")
		}
		deps.Sources = datasource.New(deps.Store)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &backend{
		sources: deps.Sources,
		log:     deps.Logger,
		now:     deps.Now,
		after:   time.After,
		states:  map[stateKey]*state{},
	}, nil
}

// Close stops every token renewal and forgets every client.
func (b *backend) Close() error {
	b.mu.Lock()
	states := b.states
	b.states = map[stateKey]*state{}
	b.mu.Unlock()
	for _, st := range states {
		st.stop()
	}
	return nil
}

// Validate checks the conf and that its DataSources resolve. It does not
// contact Vault.
func (b *backend) Validate(ctx context.Context, mesh string, mb api.MTLSBackend) error {
	f, err := ParseConf(mb.Conf)
	if err != nil || ca.SyntaxOnly(ctx) {
		return err
	}
	if _, err := b.resolve(ctx, mesh, f); err != nil {
		return err
	}
	b.warnInline(mesh, mb.Name, f)
	return nil
}

// UsedSecrets lists the mesh Secrets the conf references.
func (b *backend) UsedSecrets(mb api.MTLSBackend) []string {
	var c Conf
	if err := json.Unmarshal(mb.Conf, &c); err != nil || c.FromCp == nil {
		return nil
	}
	var out []string
	add := func(ds *api.DataSource) {
		if ds != nil && ds.Secret != "" {
			out = append(out, ds.Secret)
		}
	}
	f := c.FromCp
	if f.TLS != nil {
		add(f.TLS.CaCert)
	}
	if f.Auth != nil {
		add(f.Auth.Token)
		if f.Auth.TLS != nil {
			add(f.Auth.TLS.ClientKey)
			add(f.Auth.TLS.ClientCert)
		}
	}
	return out
}

// CommonNameTemplate returns conf.fromCp.commonName.
func (b *backend) CommonNameTemplate(mb api.MTLSBackend) string {
	var c Conf
	if err := json.Unmarshal(mb.Conf, &c); err != nil || c.FromCp == nil {
		return ""
	}
	return c.FromCp.CommonName
}

// CleanupOps forgets the backend's client and stops its token renewal; the
// vault backend stores nothing, so there are no ops.
func (b *backend) CleanupOps(_ context.Context, mesh string, mb api.MTLSBackend) ([]store.Op, error) {
	b.mu.Lock()
	st := b.states[stateKey{mesh, mb.Name}]
	delete(b.states, stateKey{mesh, mb.Name})
	b.mu.Unlock()
	if st != nil {
		st.stop()
	}
	return nil, nil
}

// getState returns the client state of the backend for its current conf,
// building and authenticating a new one when the conf or its data changed.
func (b *backend) getState(ctx context.Context, mesh string, mb api.MTLSBackend) (*state, error) {
	f, err := ParseConf(mb.Conf)
	if err != nil {
		return nil, err
	}
	m, err := b.resolve(ctx, mesh, f)
	if err != nil {
		return nil, err
	}
	key := stateKey{mesh, mb.Name}
	hash := confHash(mb.Conf, m)
	b.mu.Lock()
	cur := b.states[key]
	b.mu.Unlock()
	if cur != nil && cur.hash == hash {
		return cur, nil
	}

	client, err := newClient(f, m)
	if err != nil {
		return nil, err
	}
	st := &state{hash: hash, conf: f, client: client}
	renewTTL, err := b.authenticate(ctx, st, m)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	if cur := b.states[key]; cur != nil && cur.hash == hash {
		b.mu.Unlock() // another call won the race
		return cur, nil
	}
	old := b.states[key]
	b.states[key] = st
	if renewTTL > 0 {
		b.startRenewal(st, mesh, mb.Name, renewTTL)
	}
	b.mu.Unlock()
	if old != nil {
		old.stop()
	}
	b.warnInline(mesh, mb.Name, f)
	b.log.Info("vault backend: connected", "mesh", mesh, "backend", mb.Name, "vault", describe(f))
	return st, nil
}

// Ensure connects to Vault, reads the CA chain and performs one test
// issuance. Once it succeeded for the current conf and validity it is a
// no-op.
func (b *backend) Ensure(ctx context.Context, mesh string, mb api.MTLSBackend) error {
	_, err := b.ensure(ctx, mesh, mb)
	return err
}

func (b *backend) ensure(ctx context.Context, mesh string, mb api.MTLSBackend) ([]byte, error) {
	st, err := b.getState(ctx, mesh, mb)
	if err != nil {
		return nil, err
	}
	validity := mb.CertExpiration()
	st.mu.Lock()
	bundle, done := st.bundle, st.ensuredFor == validity
	st.mu.Unlock()
	if bundle != nil && done {
		return bundle, nil
	}

	cctx, cancel := context.WithTimeout(ctx, mb.RootChainRequestTimeout())
	bundle, err = b.fetchBundle(cctx, st)
	cancel()
	if err != nil {
		return nil, err
	}

	probe, err := probeRequest(mesh, st.conf, validity)
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, mb.CertRequestTimeout())
	iss, err := b.issue(ictx, st, probe)
	cancel()
	if err != nil {
		return nil, err
	}
	if _, err := ca.VerifyIssued(iss, bundle, b.now()); err != nil {
		return nil, api.FieldErr(fPki, "the test certificate Vault issued does not verify against the mount's CA chain: %v", err)
	}
	st.mu.Lock()
	st.bundle = bundle
	st.ensuredFor = validity
	st.mu.Unlock()
	return bundle, nil
}

// TrustBundle returns the root(s) of the mount's CA chain.
func (b *backend) TrustBundle(ctx context.Context, mesh string, mb api.MTLSBackend) ([]byte, error) {
	bundle, err := b.ensure(ctx, mesh, mb)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(bundle), nil
}

// Issue returns one data-plane certificate from Vault.
func (b *backend) Issue(ctx context.Context, mesh string, mb api.MTLSBackend, req ca.IssueRequest) (ca.Issued, error) {
	st, err := b.getState(ctx, mesh, mb)
	if err != nil {
		return ca.Issued{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, mb.CertRequestTimeout())
	defer cancel()
	return b.issue(ctx, st, req)
}

// issue performs one issue or sign call.
func (b *backend) issue(ctx context.Context, st *state, req ca.IssueRequest) (ca.Issued, error) {
	f := st.conf
	if len(req.Identity.URIs) == 0 {
		return ca.Issued{}, errors.New("vault backend: the request has no URI SAN")
	}
	uris := make([]string, len(req.Identity.URIs))
	for i, u := range req.Identity.URIs {
		uris[i] = u.String()
	}
	validity := req.Validity
	if validity <= 0 {
		validity = api.DefaultCertExpiration
	}
	data := map[string]any{
		"uri_sans": strings.Join(uris, ","),
		"ttl":      fmt.Sprintf("%ds", int64(validity/time.Second)),
		"format":   "pem",
	}
	if req.Identity.CommonName != "" {
		data["common_name"] = req.Identity.CommonName
	}
	op, path := "issue a certificate", f.mount()+"/issue/"+url.PathEscape(f.Role)
	if f.mode() == ModeSign {
		if len(req.CSRPEM) == 0 {
			return ca.Issued{}, errors.New("vault backend: sign mode needs the request's CSR")
		}
		data["csr"] = string(req.CSRPEM)
		op, path = "sign a certificate", f.mount()+"/sign/"+url.PathEscape(f.Role)
	}

	sec, err := b.write(ctx, st, path, data)
	if err != nil {
		return ca.Issued{}, vaultError(op, path, err, fAuth, fPki)
	}
	if sec == nil || sec.Data == nil {
		return ca.Issued{}, api.FieldErr(fPki, "Vault returned no certificate for %s", path)
	}
	if w := ttlWarning(sec.Warnings); w != "" {
		return ca.Issued{}, api.FieldErr(fExpiration, "Vault would issue certificates shorter than %s: %s (raise the max_ttl of role %q or lower the expiration)", validity, w, f.Role)
	}
	return parseIssued(sec, f.mode() == ModeIssue)
}

// write posts to Vault, logging in again once when a login token was refused.
func (b *backend) write(ctx context.Context, st *state, path string, data map[string]any) (*vaultapi.Secret, error) {
	if err := b.freshToken(ctx, st); err != nil {
		return nil, err
	}
	sec, err := st.client.Logical().WriteWithContext(ctx, path, data)
	var re *vaultapi.ResponseError
	if err != nil && st.login != nil && errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
		if lerr := b.relogin(ctx, st); lerr != nil {
			return nil, lerr
		}
		sec, err = st.client.Logical().WriteWithContext(ctx, path, data)
	}
	return sec, err
}

type pkiData struct {
	Certificate  string   `json:"certificate"`
	IssuingCA    string   `json:"issuing_ca"`
	CAChain      []string `json:"-"`
	PrivateKey   string   `json:"private_key"`
	SerialNumber string   `json:"serial_number"`
}

func decodePKIData(raw map[string]any) (pkiData, error) {
	var d pkiData
	js, err := json.Marshal(raw)
	if err != nil {
		return d, err
	}
	var aux struct {
		pkiData
		CAChain json.RawMessage `json:"ca_chain"`
	}
	if err := json.Unmarshal(js, &aux); err != nil {
		return d, err
	}
	d = aux.pkiData
	d.CAChain = stringOrList(aux.CAChain)
	return d, nil
}

// stringOrList accepts "pem" or ["pem", ...] (Vault used both).
func stringOrList(raw json.RawMessage) []string {
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return []string{s}
	}
	return nil
}

func parseIssued(sec *vaultapi.Secret, wantKey bool) (ca.Issued, error) {
	d, err := decodePKIData(sec.Data)
	if err != nil {
		return ca.Issued{}, fmt.Errorf("vault backend: unexpected answer: %w", err)
	}
	certs, err := ca.ParseCertificates([]byte(d.Certificate))
	if err != nil {
		return ca.Issued{}, fmt.Errorf("vault backend: certificate of the answer: %w", err)
	}
	leaf := certs[0]
	var chainPEM []string
	chainPEM = append(chainPEM, d.CAChain...)
	if len(chainPEM) == 0 && d.IssuingCA != "" {
		chainPEM = append(chainPEM, d.IssuingCA)
	}
	var chain []*x509.Certificate
	for _, c := range certs[1:] {
		chain = appendUnique(chain, c)
	}
	for _, p := range chainPEM {
		cs, err := ca.ParseCertificates([]byte(p))
		if err != nil {
			return ca.Issued{}, fmt.Errorf("vault backend: ca_chain of the answer: %w", err)
		}
		for _, c := range cs {
			if !selfSigned(c) {
				chain = appendUnique(chain, c)
			}
		}
	}
	iss := ca.Issued{
		CertPEM:  ca.EncodeCertificates(leaf),
		ChainPEM: ca.EncodeCertificates(chain...),
		Ref:      d.SerialNumber,
	}
	if wantKey {
		if d.PrivateKey == "" {
			return ca.Issued{}, errors.New("vault backend: Vault returned no private key")
		}
		key, err := toPKCS8([]byte(d.PrivateKey), leaf.PublicKey)
		if err != nil {
			return ca.Issued{}, fmt.Errorf("vault backend: private key of the answer: %w", err)
		}
		iss.KeyPEM = key
	}
	return iss, nil
}

func appendUnique(list []*x509.Certificate, c *x509.Certificate) []*x509.Certificate {
	for _, have := range list {
		if bytes.Equal(have.Raw, c.Raw) {
			return list
		}
	}
	return append(list, c)
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// toPKCS8 re-encodes a PEM private key (PKCS#1, SEC 1 or PKCS#8) as PKCS#8
// and checks that it belongs to pub.
func toPKCS8(pemData []byte, pub crypto.PublicKey) ([]byte, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key crypto.Signer
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		key = k
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		key = k
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported key type %T", k)
		}
		key = s
	default:
		return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
	}
	if eq, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(pub) {
		return nil, errors.New("the private key does not match the certificate")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// fetchBundle reads the mount's CA chain and returns its trust anchors.
func (b *backend) fetchBundle(ctx context.Context, st *state) ([]byte, error) {
	if err := b.freshToken(ctx, st); err != nil {
		return nil, err
	}
	mount := st.conf.mount()
	var chainPEM []byte
	path := mount + "/cert/ca_chain"
	sec, err := st.client.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return nil, vaultError("read the CA chain", path, err, fAuth, fPki)
	}
	if sec != nil && sec.Data != nil {
		if s, ok := sec.Data["certificate"].(string); ok {
			chainPEM = []byte(s)
		}
		if len(bytes.TrimSpace(chainPEM)) == 0 {
			js, _ := json.Marshal(sec.Data["ca_chain"])
			chainPEM = []byte(strings.Join(stringOrList(js), "\n"))
		}
	}
	if len(bytes.TrimSpace(chainPEM)) == 0 {
		path = mount + "/ca_chain"
		resp, err := st.client.Logical().ReadRawWithContext(ctx, path)
		if resp != nil {
			defer resp.Body.Close()
		}
		if err != nil {
			return nil, vaultError("read the CA chain", path, err, fAuth, fPki)
		}
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(io.LimitReader(resp.Body, 1<<20)); err != nil {
			return nil, vaultError("read the CA chain", path, err, fAuth, fPki)
		}
		chainPEM = buf.Bytes()
	}
	certs, err := ca.ParseCertificates(chainPEM)
	if err != nil {
		return nil, api.FieldErr(fPki, "the CA chain of mount %q holds no certificate: is a CA configured on it? (%v)", mount, err)
	}
	var roots []*x509.Certificate
	for _, c := range certs {
		if selfSigned(c) {
			roots = appendUnique(roots, c)
		}
	}
	if len(roots) == 0 {
		roots = []*x509.Certificate{certs[len(certs)-1]}
	}
	return ca.EncodeCertificates(roots...), nil
}

// probeRequest builds the test issuance of Ensure: one SPIFFE URI of the
// mesh and, when a commonName template is set, that template rendered with
// placeholder tag values.
func probeRequest(mesh string, f *FromCp, validity time.Duration) (ca.IssueRequest, error) {
	u := &url.URL{Scheme: "spiffe", Host: mesh, Path: "/meshca-vault-probe"}
	cn := probeCommonName(f.CommonName)
	req := ca.IssueRequest{
		Identity: ca.Identity{Mesh: mesh, Services: []string{"meshca-vault-probe"}, URIs: []*url.URL{u}, CommonName: cn},
		Validity: validity,
	}
	if f.mode() == ModeSign {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return req, err
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: cn},
			URIs:    []*url.URL{u},
		}, key)
		if err != nil {
			return req, err
		}
		req.CSR, _ = x509.ParseCertificateRequest(der)
		req.CSRPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	return req, nil
}

func probeCommonName(tmpl string) string {
	if !strings.Contains(tmpl, "{{") {
		return tmpl
	}
	t, err := template.New("cn").Funcs(template.FuncMap{
		"tag": func(string) string { return "meshca-vault-probe" },
	}).Parse(tmpl)
	if err != nil {
		return ""
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, nil); err != nil {
		return ""
	}
	return buf.String()
}
