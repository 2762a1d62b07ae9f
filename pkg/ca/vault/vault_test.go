package vault

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"meshca/internal/syncbuf"
	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/vault/vaulttest"
	"meshca/pkg/datasource"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

const mesh = "default"

type env struct {
	srv   *vaulttest.Server
	store store.Store
	b     *backend
	logs  *syncbuf.Buffer
}

func newEnv(t *testing.T, opts vaulttest.Options) *env {
	t.Helper()
	e := &env{store: memory.New(), logs: &syncbuf.Buffer{}}
	e.srv = vaulttest.New(t, opts)
	b, err := newBackend(ca.Deps{
		Store:   e.store,
		Sources: datasource.New(e.store),
		Logger:  slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:     time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	e.b = b
	if e.srv.CACertPEM != nil {
		e.secret(t, "vault-ca", e.srv.CACertPEM)
	}
	e.secret(t, "vault-token", []byte(e.srv.RootToken))
	return e
}

func (e *env) secret(t *testing.T, name string, data []byte) {
	t.Helper()
	spec, err := api.MarshalSpec(&api.Secret{Data: base64.StdEncoding.EncodeToString(data)})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Upsert(context.Background(), e.store, store.Record{
		Key:  store.Key{Type: api.TypeSecret, Mesh: mesh, Name: name},
		Spec: spec,
	}); err != nil {
		t.Fatal(err)
	}
}

// fromCp returns a working token-auth conf for the env, changed by mod.
func (e *env) fromCp(mod func(m map[string]any)) map[string]any {
	m := map[string]any{
		"address": e.srv.URL,
		"pki":     e.srv.Mount,
		"role":    vaulttest.DefaultRole,
		"auth":    map[string]any{"token": map[string]any{"secret": "vault-token"}},
	}
	if e.srv.CACertPEM != nil {
		m["tls"] = map[string]any{"caCert": map[string]any{"secret": "vault-ca"}}
	}
	if e.srv.Namespace != "" {
		m["namespace"] = e.srv.Namespace
	}
	if mod != nil {
		mod(m)
	}
	return m
}

func mtlsBackend(t *testing.T, fromCp map[string]any, expiration string) api.MTLSBackend {
	t.Helper()
	conf, err := json.Marshal(map[string]any{"fromCp": fromCp})
	if err != nil {
		t.Fatal(err)
	}
	b := api.MTLSBackend{Name: "vault-1", Type: Type, Conf: conf}
	if expiration != "" {
		b.DpCert = &api.DpCert{Rotation: &api.Rotation{Expiration: expiration}}
	}
	return b
}

func issueRequest(t *testing.T, withCSR bool) (ca.IssueRequest, *ecdsa.PrivateKey) {
	t.Helper()
	u, _ := url.Parse("spiffe://default/web")
	k, _ := url.Parse("kuma://app/web")
	req := ca.IssueRequest{
		Identity: ca.Identity{Mesh: mesh, Dataplane: "web-1", Services: []string{"web"}, URIs: []*url.URL{u, k}},
		Validity: 24 * time.Hour,
	}
	var key *ecdsa.PrivateKey
	if withCSR {
		var err error
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{}, URIs: req.Identity.URIs}, key)
		if err != nil {
			t.Fatal(err)
		}
		req.CSR, _ = x509.ParseCertificateRequest(der)
		req.CSRPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	return req, key
}

// fieldsOf returns the fields of a ValidationError, or fails.
func fieldsOf(t *testing.T, err error) []api.FieldError {
	t.Helper()
	var ve *api.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want *api.ValidationError, got %T: %v", err, err)
	}
	return ve.Causes
}

func wantField(t *testing.T, err error, field, msgPart string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error on %s, got nil", field)
	}
	for _, c := range fieldsOf(t, err) {
		if c.Field == field && strings.Contains(c.Message, msgPart) {
			return
		}
	}
	t.Fatalf("want an error on %s containing %q, got %v", field, msgPart, err)
}

func TestParseConf(t *testing.T) {
	base := func() map[string]any {
		return map[string]any{
			"address": "https://vault.example:8200", "pki": "kmesh-pki-default", "role": "dataplane-proxies",
			"auth": map[string]any{"token": map[string]any{"secret": "token-1"}},
		}
	}
	tests := []struct {
		name      string
		mod       func(m map[string]any)
		raw       string
		wantField string
		wantMsg   string
	}{
		{name: "valid token"},
		{name: "valid tls auth", mod: func(m map[string]any) {
			m["auth"] = map[string]any{"tls": map[string]any{"clientKey": map[string]any{"secret": "k"}, "clientCert": map[string]any{"file": "/tmp/cert.pem"}}}
		}},
		{name: "valid aws", mod: func(m map[string]any) {
			m["auth"] = map[string]any{"aws": map[string]any{"type": "IAM", "role": "my-role", "iamServerIdHeader": "vault.example"}}
		}},
		{name: "valid sign mode", mod: func(m map[string]any) { m["mode"] = "sign" }},
		{name: "unknown top field", mod: func(m map[string]any) { m["bogus"] = 1 }, wantField: "conf.fromCp.bogus", wantMsg: "unknown field"},
		{name: "unknown nested field", mod: func(m map[string]any) {
			m["tls"] = map[string]any{"caCert": map[string]any{"secret": "a"}, "verify": true}
		}, wantField: "conf.fromCp.tls.verify", wantMsg: "unknown field"},
		{name: "unknown datasource field", mod: func(m map[string]any) { m["auth"] = map[string]any{"token": map[string]any{"sekret": "a"}} }, wantField: "conf.fromCp.auth.token.sekret", wantMsg: "unknown field"},
		{name: "no auth", mod: func(m map[string]any) { delete(m, "auth") }, wantField: "conf.fromCp.auth", wantMsg: "must be set"},
		{name: "empty auth", mod: func(m map[string]any) { m["auth"] = map[string]any{} }, wantField: "conf.fromCp.auth", wantMsg: "exactly one of token, tls, aws must be set"},
		{name: "two auths", mod: func(m map[string]any) {
			m["auth"] = map[string]any{"token": map[string]any{"secret": "t"}, "aws": map[string]any{"role": "r"}}
		}, wantField: "conf.fromCp.auth", wantMsg: "exactly one of token, tls, aws must be set"},
		{name: "address not a URL", mod: func(m map[string]any) { m["address"] = "vault.example:8200" }, wantField: "conf.fromCp.address", wantMsg: "not an http(s) URL"},
		{name: "address ftp", mod: func(m map[string]any) { m["address"] = "ftp://vault" }, wantField: "conf.fromCp.address", wantMsg: "not an http(s) URL"},
		{name: "no address", mod: func(m map[string]any) { delete(m, "address") }, wantField: "conf.fromCp.address", wantMsg: "must be set"},
		{name: "no pki", mod: func(m map[string]any) { delete(m, "pki") }, wantField: "conf.fromCp.pki", wantMsg: "must be set"},
		{name: "no role", mod: func(m map[string]any) { delete(m, "role") }, wantField: "conf.fromCp.role", wantMsg: "must be set"},
		{name: "bad mode", mod: func(m map[string]any) { m["mode"] = "generate" }, wantField: "conf.fromCp.mode", wantMsg: "unknown mode"},
		{name: "bad aws type", mod: func(m map[string]any) { m["auth"] = map[string]any{"aws": map[string]any{"type": "OIDC"}} }, wantField: "conf.fromCp.auth.aws.type", wantMsg: "unknown type"},
		{name: "token datasource with two sources", mod: func(m map[string]any) {
			m["auth"] = map[string]any{"token": map[string]any{"secret": "a", "file": "/b"}}
		}, wantField: "conf.fromCp.auth.token", wantMsg: "exactly one of"},
		{name: "wrong type", mod: func(m map[string]any) { m["role"] = 3 }, wantField: "conf.fromCp.role", wantMsg: "must be string"},
		{name: "no fromCp", raw: `{}`, wantField: "conf.fromCp", wantMsg: "must be set"},
		{name: "duplicate key", raw: `{"fromCp":{"address":"https://v:8200","pki":"p","role":"r","role":"s","auth":{"token":{"secret":"t"}}}}`, wantField: "conf.fromCp.role", wantMsg: "duplicate key"},
		{name: "no conf", raw: ``, wantField: "conf.fromCp", wantMsg: "must be set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := []byte(tt.raw)
			if tt.raw == "" && tt.name != "no conf" {
				m := base()
				if tt.mod != nil {
					tt.mod(m)
				}
				raw, _ = json.Marshal(map[string]any{"fromCp": m})
			}
			f, err := ParseConf(raw)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("ParseConf: %v", err)
				}
				if f.Address == "" || f.Role == "" {
					t.Fatalf("decoded conf lost fields: %+v", f)
				}
				return
			}
			wantField(t, err, tt.wantField, tt.wantMsg)
		})
	}
}

func TestValidateResolvesDataSources(t *testing.T) {
	e := newEnv(t, vaulttest.Options{})
	tests := []struct {
		name      string
		mod       func(m map[string]any)
		wantField string
		wantMsg   string
	}{
		{name: "ok"},
		{name: "missing token secret", mod: func(m map[string]any) {
			m["auth"] = map[string]any{"token": map[string]any{"secret": "token-1"}}
		}, wantField: "conf.fromCp.auth.token.secret", wantMsg: "not found"},
		{name: "missing ca file", mod: func(m map[string]any) {
			m["tls"] = map[string]any{"caCert": map[string]any{"file": "/nonexistent/ca.pem"}}
		}, wantField: "conf.fromCp.tls.caCert.file", wantMsg: "does not exist"},
		{name: "ca not PEM", mod: func(m map[string]any) {
			m["tls"] = map[string]any{"caCert": map[string]any{"inlineString": "hello"}}
		}, wantField: "conf.fromCp.tls.caCert", wantMsg: "no PEM certificate"},
		{name: "client key missing", mod: func(m map[string]any) {
			m["auth"] = map[string]any{"tls": map[string]any{"clientKey": map[string]any{"secret": "nope"}, "clientCert": map[string]any{"secret": "vault-ca"}}}
		}, wantField: "conf.fromCp.auth.tls.clientKey.secret", wantMsg: "not found"},
		{name: "cert and key mismatch", mod: func(m map[string]any) {
			m["auth"] = map[string]any{"tls": map[string]any{"clientKey": map[string]any{"inlineString": "x"}, "clientCert": map[string]any{"secret": "vault-ca"}}}
		}, wantField: "conf.fromCp.auth.tls", wantMsg: "not a PEM certificate and its private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.b.Validate(context.Background(), mesh, mtlsBackend(t, e.fromCp(tt.mod), ""))
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			wantField(t, err, tt.wantField, tt.wantMsg)
		})
	}
	if n := len(e.srv.Requests()); n != 0 {
		t.Fatalf("Validate contacted Vault %d times", n)
	}
}

func TestIssueAndSign(t *testing.T) {
	tests := []struct {
		name     string
		opts     vaulttest.Options
		mode     string
		wantRoot func(s *vaulttest.Server) []byte
	}{
		{name: "issue, intermediate", opts: vaulttest.Options{}, mode: ModeIssue, wantRoot: func(s *vaulttest.Server) []byte { return s.RootCertPEM }},
		{name: "sign, intermediate", opts: vaulttest.Options{}, mode: ModeSign, wantRoot: func(s *vaulttest.Server) []byte { return s.RootCertPEM }},
		{name: "issue, root issues", opts: vaulttest.Options{RootIssues: true}, mode: ModeIssue, wantRoot: func(s *vaulttest.Server) []byte { return s.RootCertPEM }},
		{name: "issue, root outside vault", opts: vaulttest.Options{ExternalRoot: true}, mode: ModeIssue, wantRoot: func(s *vaulttest.Server) []byte { return s.IntermediateCertPEM }},
		{name: "sign, root outside vault", opts: vaulttest.Options{ExternalRoot: true}, mode: ModeSign, wantRoot: func(s *vaulttest.Server) []byte { return s.IntermediateCertPEM }},
		{name: "issue, namespace and custom mount", opts: vaulttest.Options{Namespace: "team-a", Mount: "kmesh-pki-default"}, mode: ModeIssue, wantRoot: func(s *vaulttest.Server) []byte { return s.RootCertPEM }},
		{name: "issue, plain http", opts: vaulttest.Options{HTTP: true}, mode: ModeIssue, wantRoot: func(s *vaulttest.Server) []byte { return s.RootCertPEM }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts)
			ctx := context.Background()
			mb := mtlsBackend(t, e.fromCp(func(m map[string]any) { m["mode"] = tt.mode }), "1d")
			if err := e.b.Validate(ctx, mesh, mb); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if err := e.b.Ensure(ctx, mesh, mb); err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			if got := e.srv.Issued(); got != 1 {
				t.Fatalf("Ensure made %d test issuances, want 1", got)
			}
			if err := e.b.Ensure(ctx, mesh, mb); err != nil {
				t.Fatalf("second Ensure: %v", err)
			}
			if got := e.srv.Issued(); got != 1 {
				t.Fatalf("second Ensure issued again (%d)", got)
			}
			bundle, err := e.b.TrustBundle(ctx, mesh, mb)
			if err != nil {
				t.Fatalf("TrustBundle: %v", err)
			}
			if !bytes.Equal(bundle, tt.wantRoot(e.srv)) {
				t.Fatalf("trust bundle is not the expected anchor:\n%s", bundle)
			}
			req, csrKey := issueRequest(t, tt.mode == ModeSign)
			iss, err := e.b.Issue(ctx, mesh, mb, req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			leaf, err := ca.VerifyIssued(iss, bundle, time.Now())
			if err != nil {
				t.Fatalf("VerifyIssued: %v", err)
			}
			if len(leaf.URIs) != 2 || leaf.URIs[0].String() != "spiffe://default/web" || leaf.URIs[1].String() != "kuma://app/web" {
				t.Fatalf("URI SANs = %v", leaf.URIs)
			}
			if life := time.Until(leaf.NotAfter); life < 23*time.Hour || life > 25*time.Hour {
				t.Fatalf("lifetime %v, want about 24h", life)
			}
			if iss.Ref == "" || !strings.Contains(iss.Ref, ":") {
				t.Fatalf("Ref = %q, want Vault's serial number", iss.Ref)
			}
			if chain, err := ca.ParseCertificates(iss.ChainPEM); len(iss.ChainPEM) > 0 {
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range chain {
					if bytes.Equal(c.RawIssuer, c.RawSubject) {
						t.Fatalf("ChainPEM holds the self-signed root %s", c.Subject)
					}
				}
			}
			switch tt.mode {
			case ModeIssue:
				block, _ := pem.Decode(iss.KeyPEM)
				if block == nil || block.Type != "PRIVATE KEY" {
					t.Fatalf("KeyPEM is not PKCS#8 PEM: %q", iss.KeyPEM)
				}
				key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				if !key.(*ecdsa.PrivateKey).PublicKey.Equal(leaf.PublicKey) {
					t.Fatal("KeyPEM does not match the certificate")
				}
			case ModeSign:
				if iss.KeyPEM != nil {
					t.Fatal("sign mode returned a key")
				}
				if !csrKey.PublicKey.Equal(leaf.PublicKey) {
					t.Fatal("the signed certificate is not for the CSR's key")
				}
			}
			if tt.opts.Namespace != "" {
				for _, r := range e.srv.Requests() {
					if r.Namespace != tt.opts.Namespace {
						t.Fatalf("request %s %s sent namespace %q, want %q", r.Method, r.Path, r.Namespace, tt.opts.Namespace)
					}
				}
			}
		})
	}
}

func TestCommonName(t *testing.T) {
	e := newEnv(t, vaulttest.Options{Roles: map[string]vaulttest.Role{
		"cn": {AllowedURISANs: []string{"spiffe://*", "kuma://*"}, RequireCN: true, AllowedCommonNames: []string{"*.mesh"}},
	}})
	ctx := context.Background()
	withCN := mtlsBackend(t, e.fromCp(func(m map[string]any) {
		m["role"] = "cn"
		m["commonName"] = `{{ tag "kuma.io/service" }}.mesh`
	}), "")
	if got := e.b.CommonNameTemplate(withCN); got != `{{ tag "kuma.io/service" }}.mesh` {
		t.Fatalf("CommonNameTemplate = %q", got)
	}
	if err := e.b.Ensure(ctx, mesh, withCN); err != nil {
		t.Fatalf("Ensure with a commonName template: %v", err)
	}
	req, _ := issueRequest(t, false)
	req.Identity.CommonName = "web.mesh"
	iss, err := e.b.Issue(ctx, mesh, withCN, req)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := ca.ParseCertificates(iss.CertPEM)
	if leaf[0].Subject.CommonName != "web.mesh" {
		t.Fatalf("CN = %q", leaf[0].Subject.CommonName)
	}
	without := mtlsBackend(t, e.fromCp(func(m map[string]any) { m["role"] = "cn" }), "")
	wantField(t, e.b.Ensure(ctx, mesh, without), "conf.fromCp.commonName", `"require_cn" is set to false`)
}

func TestEnsureReportsVaultErrors(t *testing.T) {
	e := newEnv(t, vaulttest.Options{Roles: map[string]vaulttest.Role{
		vaulttest.DefaultRole: {MaxTTL: 72 * time.Hour, AllowedURISANs: []string{"spiffe://*"}},
		"no-uris":             {MaxTTL: 72 * time.Hour},
		"other-mesh":          {MaxTTL: 72 * time.Hour, AllowedURISANs: []string{"spiffe://other/*"}},
	}})
	e.secret(t, "weak-token", []byte(e.srv.CreateToken(vaulttest.TokenOptions{Policies: []string{vaulttest.PolicyDefault}})))
	e.secret(t, "bogus-token", []byte("hvs.not-a-token"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := "https://" + ln.Addr().String()
	ln.Close()
	host := strings.TrimPrefix(e.srv.URL, "https://")

	tests := []struct {
		name       string
		mod        func(m map[string]any)
		expiration string
		wantField  string
		wantMsg    string
	}{
		{name: "ttl over max_ttl", expiration: "30d", wantField: "dpCert.rotation.expiration", wantMsg: `TTL "720h0m0s" is longer than permitted maxTTL "72h0m0s"`},
		{name: "ttl beyond the CA", expiration: "3650d", wantField: "dpCert.rotation.expiration", wantMsg: "maxTTL"},
		{name: "permission denied", mod: func(m map[string]any) { m["auth"] = map[string]any{"token": map[string]any{"secret": "weak-token"}} }, wantField: "conf.fromCp.auth", wantMsg: "permission denied"},
		{name: "invalid token", mod: func(m map[string]any) { m["auth"] = map[string]any{"token": map[string]any{"secret": "bogus-token"}} }, wantField: "conf.fromCp.auth.token", wantMsg: "permission denied"},
		{name: "unknown role", mod: func(m map[string]any) { m["role"] = "nope" }, wantField: "conf.fromCp.role", wantMsg: "unknown role: nope"},
		{name: "role without URI SANs", mod: func(m map[string]any) { m["role"] = "no-uris" }, wantField: "conf.fromCp.role", wantMsg: "URI Subject Alternative Names are not allowed in this role"},
		{name: "role for another mesh", mod: func(m map[string]any) { m["role"] = "other-mesh" }, wantField: "conf.fromCp.role", wantMsg: "not valid for this role"},
		{name: "sign mode, role for another mesh", mod: func(m map[string]any) { m["role"] = "other-mesh"; m["mode"] = "sign" }, wantField: "conf.fromCp.role", wantMsg: "provided via CSR which are not valid"},
		{name: "unknown mount", mod: func(m map[string]any) { m["pki"] = "nowhere" }, wantField: "conf.fromCp.pki", wantMsg: "no handler for route"},
		{name: "connection refused", mod: func(m map[string]any) { m["address"] = closedAddr }, wantField: "conf.fromCp.address", wantMsg: "not reachable"},
		{name: "untrusted server", mod: func(m map[string]any) { delete(m, "tls") }, wantField: "conf.fromCp.tls.caCert", wantMsg: "not trusted"},
		{name: "wrong server name", mod: func(m map[string]any) {
			m["tls"] = map[string]any{"caCert": map[string]any{"secret": "vault-ca"}, "serverName": "other.test"}
		}, wantField: "conf.fromCp.tls.serverName", wantMsg: "does not match"},
		{name: "namespace missing", mod: func(m map[string]any) { m["namespace"] = "team-b" }, wantField: "conf.fromCp.namespace", wantMsg: "no handler for route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mb := mtlsBackend(t, e.fromCp(tt.mod), tt.expiration)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := e.b.Ensure(ctx, mesh, mb)
			wantField(t, err, tt.wantField, tt.wantMsg)
			if strings.Contains(err.Error(), e.srv.RootToken) {
				t.Fatal("the error shows the token")
			}
		})
	}
	// The server name of the certificate works.
	mb := mtlsBackend(t, e.fromCp(func(m map[string]any) {
		m["tls"] = map[string]any{"caCert": map[string]any{"secret": "vault-ca"}, "serverName": e.srv.ServerName}
	}), "")
	if err := e.b.Ensure(context.Background(), mesh, mb); err != nil {
		t.Fatalf("Ensure with serverName %s at %s: %v", e.srv.ServerName, host, err)
	}
	// skipVerify works without the CA, with a warning.
	mb = mtlsBackend(t, e.fromCp(func(m map[string]any) { m["tls"] = map[string]any{"skipVerify": true} }), "")
	if err := e.b.Ensure(context.Background(), mesh, mb); err != nil {
		t.Fatalf("Ensure with skipVerify: %v", err)
	}
	if !strings.Contains(e.logs.String(), "skipVerify") {
		t.Fatal("skipVerify was not logged as a warning")
	}
}

func TestIssueTTLOverMaxIsAnError(t *testing.T) {
	e := newEnv(t, vaulttest.Options{Roles: map[string]vaulttest.Role{
		vaulttest.DefaultRole: {MaxTTL: 48 * time.Hour, AllowedURISANs: []string{"spiffe://*", "kuma://*"}},
	}})
	mb := mtlsBackend(t, e.fromCp(nil), "")
	req, _ := issueRequest(t, false)
	req.Validity = 72 * time.Hour
	_, err := e.b.Issue(context.Background(), mesh, mb, req)
	wantField(t, err, "dpCert.rotation.expiration", "maxTTL")
}

func TestCertAuth(t *testing.T) {
	e := newEnv(t, vaulttest.Options{})
	cert, key := e.srv.ClientCertificate(t, "meshca-cp")
	e.secret(t, "client-key", key)
	e.secret(t, "client-cert", cert)
	badCert, badKey := e.srv.UntrustedClientCertificate(t, "intruder")
	e.secret(t, "bad-key", badKey)
	e.secret(t, "bad-cert", badCert)
	tests := []struct {
		name      string
		key, cert string
		wantField string
	}{
		{name: "trusted certificate", key: "client-key", cert: "client-cert"},
		{name: "untrusted certificate", key: "bad-key", cert: "bad-cert", wantField: "conf.fromCp.auth.tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mb := mtlsBackend(t, e.fromCp(func(m map[string]any) {
				m["auth"] = map[string]any{"tls": map[string]any{
					"clientKey": map[string]any{"secret": tt.key}, "clientCert": map[string]any{"secret": tt.cert},
				}}
			}), "")
			err := e.b.Ensure(context.Background(), mesh, mb)
			if tt.wantField != "" {
				wantField(t, err, tt.wantField, "invalid certificate or no client certificate supplied")
				return
			}
			if err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			req, _ := issueRequest(t, false)
			iss, err := e.b.Issue(context.Background(), mesh, mb, req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			bundle, _ := e.b.TrustBundle(context.Background(), mesh, mb)
			if _, err := ca.VerifyIssued(iss, bundle, time.Now()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAWSAuth(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAMESHCATEST000001")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "")
	e := newEnv(t, vaulttest.Options{AWSRole: "my-role", AWSServerID: "vault.example"})
	tests := []struct {
		name      string
		aws       map[string]any
		wantField string
		wantMsg   string
	}{
		{name: "iam login", aws: map[string]any{"type": "IAM", "role": "my-role", "iamServerIdHeader": "vault.example"}},
		{name: "unknown role", aws: map[string]any{"type": "IAM", "role": "other", "iamServerIdHeader": "vault.example"}, wantField: "conf.fromCp.auth.aws", wantMsg: `entry for role "other" not found`},
		{name: "wrong server id", aws: map[string]any{"role": "my-role", "iamServerIdHeader": "evil.example"}, wantField: "conf.fromCp.auth.aws", wantMsg: `expected "vault.example"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.srv.AWSLogins())
			mb := mtlsBackend(t, e.fromCp(func(m map[string]any) { m["auth"] = map[string]any{"aws": tt.aws} }), "")
			err := e.b.Ensure(context.Background(), mesh, mb)
			logins := e.srv.AWSLogins()
			if len(logins) != before+1 {
				t.Fatalf("want one request at auth/aws/login, got %d", len(logins)-before)
			}
			l := logins[len(logins)-1]
			if l.Method != "POST" || l.AccessKeyID != "AKIAMESHCATEST000001" || !strings.Contains(l.Body, "Action=GetCallerIdentity") || !strings.Contains(l.URL, "sts") {
				t.Fatalf("login request is not a signed GetCallerIdentity: %+v", l)
			}
			if tt.wantField != "" {
				wantField(t, err, tt.wantField, tt.wantMsg)
				return
			}
			if err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			if l.Role != "my-role" || l.ServerID != "vault.example" {
				t.Fatalf("login role %q, server id %q", l.Role, l.ServerID)
			}
			checkSigV4(t, l, "AKIAMESHCATEST000001", "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ")
			if strings.Contains(e.logs.String(), "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ") {
				t.Fatal("the AWS secret key was logged")
			}
		})
	}
}

// fakeAfter replaces the renewal timer so a test decides when it fires.
type fakeAfter struct {
	waits chan time.Duration
	fires chan chan time.Time
}

func newFakeAfter(b *backend) *fakeAfter {
	f := &fakeAfter{waits: make(chan time.Duration, 16), fires: make(chan chan time.Time, 16)}
	b.after = func(d time.Duration) <-chan time.Time {
		ch := make(chan time.Time, 1)
		f.waits <- d
		f.fires <- ch
		return ch
	}
	return f
}

func (f *fakeAfter) next(t *testing.T) (time.Duration, chan time.Time) {
	t.Helper()
	select {
	case d := <-f.waits:
		return d, <-f.fires
	case <-time.After(5 * time.Second):
		t.Fatal("the renewal loop is not waiting")
		return 0, nil
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTokenRenewal(t *testing.T) {
	e := newEnv(t, vaulttest.Options{})
	fa := newFakeAfter(e.b)
	tok := e.srv.CreateToken(vaulttest.TokenOptions{TTL: time.Hour, Renewable: true})
	e.secret(t, "renewable", []byte(tok))
	conf := e.fromCp(func(m map[string]any) { m["auth"] = map[string]any{"token": map[string]any{"secret": "renewable"}} })
	mb := mtlsBackend(t, conf, "")
	ctx := context.Background()
	if err := e.b.Ensure(ctx, mesh, mb); err != nil {
		t.Fatal(err)
	}
	wait, fire := fa.next(t)
	if wait < 39*time.Minute || wait > 40*time.Minute {
		t.Fatalf("renewal scheduled after %v, want 2/3 of the 1h TTL", wait)
	}
	fire <- time.Now()
	eventually(t, "a renewal", func() bool { return e.srv.TokenRenewals(tok) == 1 })
	wait, oldFire := fa.next(t)
	if wait < 39*time.Minute {
		t.Fatalf("next renewal after %v", wait)
	}

	// A conf change stops the old renewal and starts one for the new conf.
	conf["commonName"] = "cp.mesh"
	mb2 := mtlsBackend(t, conf, "")
	if err := e.b.Ensure(ctx, mesh, mb2); err != nil {
		t.Fatal(err)
	}
	_, newFire := fa.next(t)
	oldFire <- time.Now() // the stopped loop must not renew
	time.Sleep(50 * time.Millisecond)
	if got := e.srv.TokenRenewals(tok); got != 1 {
		t.Fatalf("renewals after the conf change = %d, want 1 (old loop stopped)", got)
	}
	newFire <- time.Now()
	eventually(t, "the new loop's renewal", func() bool { return e.srv.TokenRenewals(tok) == 2 })
	fa.next(t) // the new loop waits again
	if strings.Contains(e.logs.String(), tok) {
		t.Fatal("the token was logged")
	}

	// A non-renewable token starts no renewal.
	fixed := e.srv.CreateToken(vaulttest.TokenOptions{TTL: time.Hour})
	e.secret(t, "fixed", []byte(fixed))
	mb3 := mtlsBackend(t, e.fromCp(func(m map[string]any) { m["auth"] = map[string]any{"token": map[string]any{"secret": "fixed"}} }), "")
	mb3.Name = "vault-2"
	if err := e.b.Ensure(ctx, mesh, mb3); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-fa.waits:
		t.Fatalf("a renewal was scheduled (%v) for a non-renewable token", d)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestTokenRenewalRealTimer(t *testing.T) {
	e := newEnv(t, vaulttest.Options{})
	tok := e.srv.CreateToken(vaulttest.TokenOptions{TTL: 2 * time.Second, Renewable: true})
	e.secret(t, "short", []byte(tok))
	mb := mtlsBackend(t, e.fromCp(func(m map[string]any) { m["auth"] = map[string]any{"token": map[string]any{"secret": "short"}} }), "")
	if err := e.b.Ensure(context.Background(), mesh, mb); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a renewal of the 2s token", func() bool { return e.srv.TokenRenewals(tok) >= 1 })
	time.Sleep(2500 * time.Millisecond) // past the original TTL
	req, _ := issueRequest(t, false)
	if _, err := e.b.Issue(context.Background(), mesh, mb, req); err != nil {
		t.Fatalf("Issue after the token's first TTL: %v", err)
	}
	_ = e.b.Close()
	n := e.srv.TokenRenewals(tok)
	time.Sleep(1500 * time.Millisecond)
	if got := e.srv.TokenRenewals(tok); got != n {
		t.Fatalf("renewals went on after Close: %d -> %d", n, got)
	}
}

func TestLoginTokenIsReplacedWhenRefused(t *testing.T) {
	e := newEnv(t, vaulttest.Options{})
	cert, key := e.srv.ClientCertificate(t, "meshca-cp")
	e.secret(t, "client-key", key)
	e.secret(t, "client-cert", cert)
	mb := mtlsBackend(t, e.fromCp(func(m map[string]any) {
		m["auth"] = map[string]any{"tls": map[string]any{"clientKey": map[string]any{"secret": "client-key"}, "clientCert": map[string]any{"secret": "client-cert"}}}
	}), "")
	if err := e.b.Ensure(context.Background(), mesh, mb); err != nil {
		t.Fatal(err)
	}
	st := e.b.states[stateKey{mesh, mb.Name}]
	e.srv.RevokeToken(st.client.Token())
	req, _ := issueRequest(t, false)
	if _, err := e.b.Issue(context.Background(), mesh, mb, req); err != nil {
		t.Fatalf("Issue after the login token was revoked: %v", err)
	}
}

func TestClientReuse(t *testing.T) {
	e := newEnv(t, vaulttest.Options{})
	ctx := context.Background()
	conf := e.fromCp(nil)
	mb := mtlsBackend(t, conf, "")
	req, _ := issueRequest(t, false)
	if _, err := e.b.Issue(ctx, mesh, mb, req); err != nil {
		t.Fatal(err)
	}
	st1 := e.b.states[stateKey{mesh, mb.Name}]
	if _, err := e.b.Issue(ctx, mesh, mb, req); err != nil {
		t.Fatal(err)
	}
	if st2 := e.b.states[stateKey{mesh, mb.Name}]; st2 != st1 {
		t.Fatal("the same conf built a new client")
	}
	// A new token in the same Secret gives a new client.
	e.secret(t, "vault-token", []byte(e.srv.CreateToken(vaulttest.TokenOptions{})))
	if _, err := e.b.Issue(ctx, mesh, mb, req); err != nil {
		t.Fatal(err)
	}
	if st3 := e.b.states[stateKey{mesh, mb.Name}]; st3 == st1 {
		t.Fatal("a changed Secret kept the old client")
	}
	ops, err := e.b.CleanupOps(ctx, mesh, mb)
	if err != nil || len(ops) != 0 {
		t.Fatalf("CleanupOps = %v, %v", ops, err)
	}
	if len(e.b.states) != 0 {
		t.Fatal("CleanupOps kept the client")
	}
}

func TestUsedSecretsAndInlineWarning(t *testing.T) {
	e := newEnv(t, vaulttest.Options{})
	mb := mtlsBackend(t, map[string]any{
		"address": "https://v:8200", "pki": "pki", "role": "r",
		"tls": map[string]any{"caCert": map[string]any{"secret": "ca"}},
		"auth": map[string]any{"tls": map[string]any{
			"clientKey": map[string]any{"secret": "key"}, "clientCert": map[string]any{"file": "/tmp/c.pem"},
		}},
	}, "")
	if got := strings.Join(e.b.UsedSecrets(mb), ","); got != "ca,key" {
		t.Fatalf("UsedSecrets = %s", got)
	}
	inline := mtlsBackend(t, e.fromCp(func(m map[string]any) {
		m["auth"] = map[string]any{"token": map[string]any{"inlineString": e.srv.RootToken}}
	}), "")
	if err := e.b.Validate(context.Background(), mesh, inline); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Ensure(context.Background(), mesh, inline); err != nil {
		t.Fatal(err)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "inline") || !strings.Contains(logs, "conf.fromCp.auth.token") {
		t.Fatalf("no inline warning in logs:\n%s", logs)
	}
	if strings.Contains(logs, e.srv.RootToken) {
		t.Fatal("the inline token was logged")
	}
}

func TestNewIsABackend(t *testing.T) {
	b, err := New(ca.Deps{Store: memory.New()})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.(interface{ Close() error }); !ok {
		t.Fatal("backend has no Close")
	}
	if _, ok := b.(ca.SecretUser); !ok {
		t.Fatal("not a SecretUser")
	}
	if _, ok := b.(ca.CommonNamer); !ok {
		t.Fatal("not a CommonNamer")
	}
}
