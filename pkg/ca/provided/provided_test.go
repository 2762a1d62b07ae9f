package provided_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"meshca/internal/syncbuf"
	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/catest"
	"meshca/pkg/ca/provided"
	"meshca/pkg/datasource"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	store store.Store
	clk   *catest.Clock
	logs  *syncbuf.Buffer
	b     ca.Backend
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	s := memory.New()
	f := &fixture{store: s, clk: catest.NewClock(t0), logs: &syncbuf.Buffer{}}
	b, err := provided.New(ca.Deps{
		Store:   s,
		Sources: datasource.New(s),
		Logger:  slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:     f.clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.b = b
	t.Cleanup(func() {
		if out := f.logs.String(); strings.Contains(out, "PRIVATE KEY") {
			t.Error("key material was logged")
		}
	})
	return f
}

func (f *fixture) putSecret(t *testing.T, mesh, name string, data []byte) {
	t.Helper()
	spec, err := api.MarshalSpec(&api.Secret{Meta: api.Meta{Type: api.TypeSecret, Mesh: mesh, Name: name}, Data: base64.StdEncoding.EncodeToString(data)})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Upsert(context.Background(), f.store, store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: mesh, Name: name}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
}

// testCA is a certificate with its key.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

type certOpts struct {
	name      string
	rsa       bool
	notCA     bool
	noCertUse bool
	notBefore time.Time
	notAfter  time.Time
}

func newCert(t *testing.T, o certOpts, parent *testCA) *testCA {
	t.Helper()
	var key crypto.Signer
	var err error
	if o.rsa {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	if o.notBefore.IsZero() {
		o.notBefore = t0.Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = t0.Add(365 * 24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: o.name, Organization: []string{"test"}},
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		BasicConstraintsValid: true,
		IsCA:                  !o.notCA,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if o.notCA {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	if o.noCertUse {
		tmpl.KeyUsage = x509.KeyUsageCRLSign
	}
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

func certPEM(cs ...*testCA) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, ca.EncodeCertificates(c.cert)...)
	}
	return out
}

func keyPEM(t *testing.T, c *testCA, form string) []byte {
	t.Helper()
	var blk *pem.Block
	switch form {
	case "pkcs1":
		blk = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(c.key.(*rsa.PrivateKey))}
	case "sec1":
		der, err := x509.MarshalECPrivateKey(c.key.(*ecdsa.PrivateKey))
		if err != nil {
			t.Fatal(err)
		}
		blk = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	default:
		der, err := x509.MarshalPKCS8PrivateKey(c.key)
		if err != nil {
			t.Fatal(err)
		}
		blk = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	return pem.EncodeToMemory(blk)
}

func secretConf(certSecret, keySecret string) json.RawMessage {
	return json.RawMessage(`{"cert":{"secret":"` + certSecret + `"},"key":{"secret":"` + keySecret + `"}}`)
}

func mtlsBackend(conf json.RawMessage) api.MTLSBackend {
	return api.MTLSBackend{Name: "ca-1", Type: provided.Type, Conf: conf}
}

func TestIssueVerifies(t *testing.T) {
	type setup struct {
		chain     []*testCA // conf.cert, signing CA first
		keyForm   string
		wantChain int // certificates in Issued.ChainPEM
	}
	build := map[string]func(t *testing.T) setup{
		"self-signed ECDSA root, PKCS#8 key": func(t *testing.T) setup {
			root := newCert(t, certOpts{name: "root"}, nil)
			return setup{chain: []*testCA{root}, keyForm: "pkcs8"}
		},
		"self-signed ECDSA root, SEC 1 key": func(t *testing.T) setup {
			root := newCert(t, certOpts{name: "root"}, nil)
			return setup{chain: []*testCA{root}, keyForm: "sec1"}
		},
		"self-signed RSA root, PKCS#1 key": func(t *testing.T) setup {
			root := newCert(t, certOpts{name: "root", rsa: true}, nil)
			return setup{chain: []*testCA{root}, keyForm: "pkcs1"}
		},
		"intermediate with its root": func(t *testing.T) setup {
			root := newCert(t, certOpts{name: "root", rsa: true}, nil)
			inter := newCert(t, certOpts{name: "intermediate"}, root)
			return setup{chain: []*testCA{inter, root}, keyForm: "pkcs8", wantChain: 1}
		},
		"two intermediates with the root": func(t *testing.T) setup {
			root := newCert(t, certOpts{name: "root"}, nil)
			mid := newCert(t, certOpts{name: "mid"}, root)
			issuing := newCert(t, certOpts{name: "issuing"}, mid)
			return setup{chain: []*testCA{issuing, mid, root}, keyForm: "sec1", wantChain: 2}
		},
		"intermediate without its root (anchor is the intermediate)": func(t *testing.T) setup {
			root := newCert(t, certOpts{name: "root"}, nil)
			inter := newCert(t, certOpts{name: "intermediate"}, root)
			return setup{chain: []*testCA{inter}, keyForm: "pkcs8"}
		},
	}
	leafKeys := map[string]func() (crypto.Signer, error){
		"ECDSA leaf": func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
		"RSA leaf":   func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) },
	}
	for name, mk := range build {
		for leafName, mkLeaf := range leafKeys {
			t.Run(name+"/"+leafName, func(t *testing.T) {
				ctx := context.Background()
				f := newFixture(t)
				s := mk(t)
				f.putSecret(t, "default", "ca-cert", certPEM(s.chain...))
				f.putSecret(t, "default", "ca-key", keyPEM(t, s.chain[0], s.keyForm))
				mb := mtlsBackend(secretConf("ca-cert", "ca-key"))
				if err := f.b.Validate(ctx, "default", mb); err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if err := f.b.Ensure(ctx, "default", mb); err != nil {
					t.Fatalf("Ensure: %v", err)
				}
				bundle, err := f.b.TrustBundle(ctx, "default", mb)
				if err != nil {
					t.Fatal(err)
				}
				anchor := s.chain[len(s.chain)-1]
				if !bytes.Equal(bundle, certPEM(anchor)) {
					t.Errorf("trust bundle is not the top-most provided certificate")
				}
				leafKey, err := mkLeaf()
				if err != nil {
					t.Fatal(err)
				}
				iss, err := f.b.Issue(ctx, "default", mb, ca.IssueRequest{CSR: catest.NewCSR(t, leafKey, "backend", "spiffe://default/backend"), Validity: time.Hour})
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				var chain []*x509.Certificate
				if len(iss.ChainPEM) > 0 {
					if chain, err = ca.ParseCertificates(iss.ChainPEM); err != nil {
						t.Fatal(err)
					}
				}
				if len(chain) != s.wantChain {
					t.Fatalf("chain has %d certificates, want %d", len(chain), s.wantChain)
				}
				for i, c := range chain {
					if !c.Equal(s.chain[i].cert) {
						t.Errorf("chain[%d] = %q, want %q", i, c.Subject, s.chain[i].cert.Subject)
					}
				}
				leaf, err := ca.VerifyIssued(iss, bundle, f.clk.Now())
				if err != nil {
					t.Fatalf("VerifyIssued: %v", err)
				}
				if err := leaf.CheckSignatureFrom(s.chain[0].cert); err != nil {
					t.Errorf("leaf is not signed by the first provided certificate: %v", err)
				}
				if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://default/backend" {
					t.Errorf("leaf URIs = %v", leaf.URIs)
				}
				if !bytes.Equal(leaf.AuthorityKeyId, s.chain[0].cert.SubjectKeyId) {
					t.Errorf("AuthorityKeyId = %x, want %x", leaf.AuthorityKeyId, s.chain[0].cert.SubjectKeyId)
				}
				if !leaf.NotAfter.Equal(t0.Add(time.Hour)) || !leaf.NotBefore.Equal(t0.Add(-time.Minute)) {
					t.Errorf("leaf validity = %s .. %s", leaf.NotBefore, leaf.NotAfter)
				}
			})
		}
	}
}

func TestIssueCappedAtCAExpiry(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	root := newCert(t, certOpts{name: "root", notAfter: t0.Add(3 * time.Hour)}, nil)
	mb := mtlsBackend(json.RawMessage(`{"cert":{"inline":"` + base64.StdEncoding.EncodeToString(certPEM(root)) +
		`"},"key":{"inlineString":` + string(must(json.Marshal(string(keyPEM(t, root, "pkcs8"))))) + `}}`))
	if err := f.b.Ensure(ctx, "default", mb); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := f.b.Issue(ctx, "default", mb, ca.IssueRequest{CSR: catest.NewCSR(t, key, "backend", "spiffe://default/backend"), Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := ca.ParseCertificates(iss.CertPEM)
	if !certs[0].NotAfter.Equal(root.cert.NotAfter) {
		t.Errorf("NotAfter = %s, want the CA's %s", certs[0].NotAfter, root.cert.NotAfter)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestValidateRefusals(t *testing.T) {
	type refusal struct {
		conf       json.RawMessage
		wantFields []string
		wantMsg    string
	}
	tests := map[string]func(t *testing.T, f *fixture) refusal{
		"non-CA certificate": func(t *testing.T, f *fixture) refusal {
			leaf := newCert(t, certOpts{name: "leaf", notCA: true}, newCert(t, certOpts{name: "root"}, nil))
			f.putSecret(t, "default", "c", certPEM(leaf))
			f.putSecret(t, "default", "k", keyPEM(t, leaf, "pkcs8"))
			return refusal{secretConf("c", "k"), []string{"conf.cert"}, "certificate is not a CA (basicConstraints CA:FALSE or no keyCertSign usage)"}
		},
		"CA without keyCertSign": func(t *testing.T, f *fixture) refusal {
			c := newCert(t, certOpts{name: "crl-only", noCertUse: true}, nil)
			f.putSecret(t, "default", "c", certPEM(c))
			f.putSecret(t, "default", "k", keyPEM(t, c, "pkcs8"))
			return refusal{secretConf("c", "k"), []string{"conf.cert"}, "certificate is not a CA"}
		},
		"key of another CA": func(t *testing.T, f *fixture) refusal {
			a, b := newCert(t, certOpts{name: "a"}, nil), newCert(t, certOpts{name: "b"}, nil)
			f.putSecret(t, "default", "c", certPEM(a))
			f.putSecret(t, "default", "k", keyPEM(t, b, "sec1"))
			return refusal{secretConf("c", "k"), []string{"conf.key"}, "does not match"}
		},
		"key of the root instead of the intermediate": func(t *testing.T, f *fixture) refusal {
			root := newCert(t, certOpts{name: "root"}, nil)
			inter := newCert(t, certOpts{name: "inter"}, root)
			f.putSecret(t, "default", "c", certPEM(inter, root))
			f.putSecret(t, "default", "k", keyPEM(t, root, "pkcs8"))
			return refusal{secretConf("c", "k"), []string{"conf.key"}, "does not match"}
		},
		"expired CA": func(t *testing.T, f *fixture) refusal {
			c := newCert(t, certOpts{name: "old", notBefore: t0.Add(-48 * time.Hour), notAfter: t0.Add(-time.Hour)}, nil)
			f.putSecret(t, "default", "c", certPEM(c))
			f.putSecret(t, "default", "k", keyPEM(t, c, "pkcs8"))
			return refusal{secretConf("c", "k"), []string{"conf.cert"}, "expired at"}
		},
		"expired root above a valid intermediate": func(t *testing.T, f *fixture) refusal {
			root := newCert(t, certOpts{name: "root", notBefore: t0.Add(-48 * time.Hour), notAfter: t0.Add(-time.Hour)}, nil)
			inter := newCert(t, certOpts{name: "inter"}, root)
			f.putSecret(t, "default", "c", certPEM(inter, root))
			f.putSecret(t, "default", "k", keyPEM(t, inter, "pkcs8"))
			return refusal{secretConf("c", "k"), []string{"conf.cert"}, "certificate 2"}
		},
		"CA not yet valid": func(t *testing.T, f *fixture) refusal {
			c := newCert(t, certOpts{name: "future", notBefore: t0.Add(time.Hour)}, nil)
			f.putSecret(t, "default", "c", certPEM(c))
			f.putSecret(t, "default", "k", keyPEM(t, c, "pkcs8"))
			return refusal{secretConf("c", "k"), []string{"conf.cert"}, "not valid before"}
		},
		"chain in the wrong order": func(t *testing.T, f *fixture) refusal {
			root := newCert(t, certOpts{name: "root"}, nil)
			inter := newCert(t, certOpts{name: "inter"}, root)
			f.putSecret(t, "default", "c", certPEM(root, inter))
			f.putSecret(t, "default", "k", keyPEM(t, root, "pkcs8"))
			return refusal{secretConf("c", "k"), []string{"conf.cert"}, "is not signed by"}
		},
		"missing cert secret": func(t *testing.T, f *fixture) refusal {
			c := newCert(t, certOpts{name: "ca"}, nil)
			f.putSecret(t, "default", "k", keyPEM(t, c, "pkcs8"))
			return refusal{secretConf("nope", "k"), []string{"conf.cert.secret"}, `secret "nope" not found`}
		},
		"both secrets missing": func(t *testing.T, f *fixture) refusal {
			return refusal{secretConf("c", "k"), []string{"conf.cert.secret", "conf.key.secret"}, "not found"}
		},
		"secret in another mesh": func(t *testing.T, f *fixture) refusal {
			c := newCert(t, certOpts{name: "ca"}, nil)
			f.putSecret(t, "other", "c", certPEM(c))
			f.putSecret(t, "default", "k", keyPEM(t, c, "pkcs8"))
			return refusal{secretConf("c", "k"), []string{"conf.cert.secret"}, "not found"}
		},
		"not PEM": func(t *testing.T, f *fixture) refusal {
			f.putSecret(t, "default", "c", []byte("hello"))
			f.putSecret(t, "default", "k", []byte("world"))
			return refusal{secretConf("c", "k"), []string{"conf.cert", "conf.key"}, "no PEM"}
		},
		"unknown conf field": func(t *testing.T, f *fixture) refusal {
			return refusal{json.RawMessage(`{"cert":{"secret":"c"},"key":{"secret":"k"},"caCert":{}}`), []string{"conf.caCert"}, "unknown field"}
		},
		"unknown DataSource field": func(t *testing.T, f *fixture) refusal {
			return refusal{json.RawMessage(`{"cert":{"secrett":"c"},"key":{"secret":"k"}}`), []string{"conf.cert.secrett"}, "unknown field"}
		},
		"cert and key missing": func(t *testing.T, f *fixture) refusal {
			return refusal{json.RawMessage(`{}`), []string{"conf.cert", "conf.key"}, "must be set"}
		},
		"no conf": func(t *testing.T, f *fixture) refusal {
			return refusal{nil, []string{"conf.cert", "conf.key"}, "must be set"}
		},
	}
	for name, mk := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			r := mk(t, f)
			mb := mtlsBackend(r.conf)
			err := f.b.Validate(ctx, "default", mb)
			if got := api.Fields(err); !slices.Equal(got, r.wantFields) {
				t.Fatalf("error fields = %v, want %v (error: %v)", got, r.wantFields, err)
			}
			if !strings.Contains(err.Error(), r.wantMsg) {
				t.Errorf("error %q does not contain %q", err, r.wantMsg)
			}
			if err := f.b.Ensure(ctx, "default", mb); err == nil {
				t.Error("Ensure accepted what Validate refused")
			}
			if _, err := f.b.Issue(ctx, "default", mb, ca.IssueRequest{CSR: catest.NewCSR(t, must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)), "backend", "spiffe://default/backend"), Validity: time.Hour}); err == nil {
				t.Error("Issue succeeded with a refused CA")
			}
		})
	}
}

func TestChangedSecretIsPickedUp(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	first := newCert(t, certOpts{name: "first"}, nil)
	f.putSecret(t, "default", "c", certPEM(first))
	f.putSecret(t, "default", "k", keyPEM(t, first, "pkcs8"))
	mb := mtlsBackend(secretConf("c", "k"))
	if err := f.b.Ensure(ctx, "default", mb); err != nil {
		t.Fatal(err)
	}
	loads := func() int { return strings.Count(f.logs.String(), "loaded provided CA") }
	issueAndBundle := func() (ca.Issued, []byte) {
		t.Helper()
		iss, err := f.b.Issue(ctx, "default", mb, ca.IssueRequest{CSR: catest.NewCSR(t, must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)), "backend", "spiffe://default/backend"), Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		bundle, err := f.b.TrustBundle(ctx, "default", mb)
		if err != nil {
			t.Fatal(err)
		}
		return iss, bundle
	}

	// Unchanged data: Ensure and revalidation do not parse again.
	if err := f.b.Ensure(ctx, "default", mb); err != nil {
		t.Fatal(err)
	}
	f.clk.Add(time.Minute)
	issueAndBundle()
	if n := loads(); n != 1 {
		t.Errorf("CA parsed %d times for unchanged secrets, want 1", n)
	}

	second := newCert(t, certOpts{name: "second"}, nil)
	f.putSecret(t, "default", "c", certPEM(second))
	f.putSecret(t, "default", "k", keyPEM(t, second, "pkcs8"))

	// Within the revalidation window the cached CA is used.
	iss, bundle := issueAndBundle()
	if !bytes.Equal(bundle, certPEM(first)) {
		t.Error("cached CA replaced before the revalidation window elapsed")
	}
	if _, err := ca.VerifyIssued(iss, certPEM(first), f.clk.Now()); err != nil {
		t.Error(err)
	}
	// After it, the new secret is used.
	f.clk.Add(11 * time.Second)
	iss, bundle = issueAndBundle()
	if !bytes.Equal(bundle, certPEM(second)) {
		t.Error("changed secret not picked up")
	}
	if _, err := ca.VerifyIssued(iss, certPEM(second), f.clk.Now()); err != nil {
		t.Error(err)
	}
	if n := loads(); n != 2 {
		t.Errorf("CA parsed %d times, want 2", n)
	}

	// Ensure picks up a change at once.
	third := newCert(t, certOpts{name: "third"}, nil)
	f.putSecret(t, "default", "c", certPEM(third))
	f.putSecret(t, "default", "k", keyPEM(t, third, "pkcs8"))
	if err := f.b.Ensure(ctx, "default", mb); err != nil {
		t.Fatal(err)
	}
	if _, bundle := issueAndBundle(); !bytes.Equal(bundle, certPEM(third)) {
		t.Error("Ensure did not pick up the changed secret")
	}
}

func TestUsedSecrets(t *testing.T) {
	tests := []struct {
		name string
		conf string
		want []string
	}{
		{"both secrets", `{"cert":{"secret":"c"},"key":{"secret":"k"}}`, []string{"c", "k"}},
		{"same secret twice", `{"cert":{"secret":"pem"},"key":{"secret":"pem"}}`, []string{"pem"}},
		{"file and inline", `{"cert":{"file":"/etc/ca.pem"},"key":{"inlineString":"x"}}`, nil},
		{"key only", `{"cert":{"file":"/etc/ca.pem"},"key":{"secret":"k"}}`, []string{"k"}},
		{"no conf", ``, nil},
	}
	f := newFixture(t)
	su, ok := f.b.(ca.SecretUser)
	if !ok {
		t.Fatal("provided backend does not implement ca.SecretUser")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conf json.RawMessage
			if tt.conf != "" {
				conf = json.RawMessage(tt.conf)
			}
			if got := su.UsedSecrets(mtlsBackend(conf)); !slices.Equal(got, tt.want) {
				t.Errorf("UsedSecrets = %v, want %v", got, tt.want)
			}
		})
	}
}
