package builtin_test

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
	"errors"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/ca/catest"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newBackend(t testing.TB, s store.Store, clk *catest.Clock) ca.Backend {
	t.Helper()
	b, err := builtin.New(ca.Deps{Store: s, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func backendConf(name, conf string) api.MTLSBackend {
	mb := api.MTLSBackend{Name: name, Type: builtin.Type}
	if conf != "" {
		mb.Conf = json.RawMessage(conf)
	}
	return mb
}

func ecKey(t testing.TB) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rsaKey(t testing.TB) crypto.Signer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func parseOne(t *testing.T, pemData []byte) *x509.Certificate {
	t.Helper()
	certs, err := ca.ParseCertificates(pemData)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 1 {
		t.Fatalf("want 1 certificate, got %d", len(certs))
	}
	return certs[0]
}

func TestIssueVerifies(t *testing.T) {
	tests := []struct {
		name      string
		conf      string
		leafKey   func(testing.TB) crypto.Signer
		rootAlg   x509.PublicKeyAlgorithm
		rootBits  int
		commonNam string
		wantCN    string
	}{
		{name: "default root, ECDSA leaf", leafKey: ecKey, rootAlg: x509.ECDSA, wantCN: "csr-cn"},
		{name: "default root, RSA leaf", leafKey: rsaKey, rootAlg: x509.ECDSA, commonNam: "backend", wantCN: "backend"},
		{name: "RSA 2048 root, ECDSA leaf", conf: `{"caCert":{"RSAbits":2048}}`, leafKey: ecKey, rootAlg: x509.RSA, rootBits: 2048, wantCN: "csr-cn"},
		{name: "RSA 3072 root, RSA leaf", conf: `{"caCert":{"RSAbits":3072,"expiration":"1y"}}`, leafKey: rsaKey, rootAlg: x509.RSA, rootBits: 3072, commonNam: "cn-template", wantCN: "cn-template"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clk := catest.NewClock(t0)
			s := memory.New()
			b := newBackend(t, s, clk)
			mb := backendConf("ca-1", tt.conf)
			if err := b.Validate(ctx, "default", mb); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if err := catest.Provision(ctx, s, b, "default", mb); err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			bundle, err := b.TrustBundle(ctx, "default", mb)
			if err != nil {
				t.Fatal(err)
			}
			root := parseOne(t, bundle)
			if root.PublicKeyAlgorithm != tt.rootAlg {
				t.Errorf("root key algorithm = %v, want %v", root.PublicKeyAlgorithm, tt.rootAlg)
			}
			if tt.rootBits != 0 && root.PublicKey.(*rsa.PublicKey).N.BitLen() != tt.rootBits {
				t.Errorf("root RSA bits = %d, want %d", root.PublicKey.(*rsa.PublicKey).N.BitLen(), tt.rootBits)
			}
			if !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 || root.KeyUsage&x509.KeyUsageCRLSign == 0 {
				t.Errorf("root is not a CA: IsCA=%v KeyUsage=%v", root.IsCA, root.KeyUsage)
			}
			if root.Subject.CommonName != "meshca builtin CA default" || !slices.Equal(root.Subject.Organization, []string{"meshca"}) {
				t.Errorf("root subject = %v", root.Subject)
			}
			if len(root.URIs) != 1 || root.URIs[0].String() != "spiffe://default" {
				t.Errorf("root URIs = %v, want [spiffe://default]", root.URIs)
			}
			if err := root.CheckSignatureFrom(root); err != nil {
				t.Errorf("root is not self-signed: %v", err)
			}

			leafKey := tt.leafKey(t)
			csr := catest.NewCSR(t, leafKey, "csr-cn", "spiffe://default/backend")
			iss, err := b.Issue(ctx, "default", mb, ca.IssueRequest{
				CSR:      csr,
				Identity: ca.Identity{Mesh: "default", CommonName: tt.commonNam},
				Validity: 24 * time.Hour,
			})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if len(iss.ChainPEM) != 0 {
				t.Errorf("builtin chain = %q, want empty", iss.ChainPEM)
			}
			leaf, err := ca.VerifyIssued(iss, bundle, clk.Now())
			if err != nil {
				t.Fatalf("VerifyIssued: %v", err)
			}
			// The standard verifier with the TLS usages the mesh needs.
			roots := x509.NewCertPool()
			roots.AddCert(root)
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: clk.Now(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("Verify for %v: %v", usage, err)
				}
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://default/backend" {
				t.Errorf("leaf URIs = %v", leaf.URIs)
			}
			if !slices.Equal(leaf.DNSNames, []string{"backend.default.svc"}) {
				t.Errorf("leaf DNS names = %v", leaf.DNSNames)
			}
			if leaf.Subject.CommonName != tt.wantCN || !slices.Equal(leaf.Subject.Organization, []string{"demo"}) {
				t.Errorf("leaf subject = %v, want CN %q O demo", leaf.Subject, tt.wantCN)
			}
			if leaf.IsCA {
				t.Error("leaf is a CA")
			}
			wantKU := x509.KeyUsageDigitalSignature // keyEncipherment is for RSA keys only
			if _, rsaKey := leaf.PublicKey.(*rsa.PublicKey); rsaKey {
				wantKU |= x509.KeyUsageKeyEncipherment
			}
			if leaf.KeyUsage != wantKU {
				t.Errorf("leaf KeyUsage = %v, want %v", leaf.KeyUsage, wantKU)
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("leaf ExtKeyUsage = %v", leaf.ExtKeyUsage)
			}
			if !leaf.NotBefore.Equal(t0.Add(-time.Minute)) || !leaf.NotAfter.Equal(t0.Add(24*time.Hour)) {
				t.Errorf("leaf validity = %s .. %s", leaf.NotBefore, leaf.NotAfter)
			}
			if len(root.SubjectKeyId) == 0 || !bytes.Equal(leaf.AuthorityKeyId, root.SubjectKeyId) {
				t.Errorf("leaf AuthorityKeyId = %x, root SubjectKeyId = %x", leaf.AuthorityKeyId, root.SubjectKeyId)
			}
			if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
				t.Errorf("leaf serial = %v", leaf.SerialNumber)
			}
			if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(leafKey.Public()) {
				t.Error("leaf public key is not the CSR's")
			}
		})
	}
}

func TestIssueLifetime(t *testing.T) {
	tests := []struct {
		name         string
		conf         string
		validity     time.Duration
		dpExpiration string
		wantNotAfter time.Time
	}{
		{name: "requested validity", validity: 6 * time.Hour, wantNotAfter: t0.Add(6 * time.Hour)},
		{name: "backend dpCert expiration when unset", dpExpiration: "2d", wantNotAfter: t0.Add(48 * time.Hour)},
		{name: "Kuma default when nothing is set", wantNotAfter: t0.Add(api.DefaultCertExpiration)},
		{name: "capped at the root's expiry", conf: `{"caCert":{"expiration":"2h"}}`, validity: 24 * time.Hour, wantNotAfter: t0.Add(2 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clk := catest.NewClock(t0)
			s := memory.New()
			b := newBackend(t, s, clk)
			mb := backendConf("ca-1", tt.conf)
			if tt.dpExpiration != "" {
				mb.DpCert = &api.DpCert{Rotation: &api.Rotation{Expiration: tt.dpExpiration}}
			}
			if err := catest.Provision(ctx, s, b, "default", mb); err != nil {
				t.Fatal(err)
			}
			iss, err := b.Issue(ctx, "default", mb, ca.IssueRequest{CSR: catest.NewCSR(t, ecKey(t), "x", "spiffe://default/backend"), Validity: tt.validity})
			if err != nil {
				t.Fatal(err)
			}
			if got := parseOne(t, iss.CertPEM).NotAfter; !got.Equal(tt.wantNotAfter) {
				t.Errorf("NotAfter = %s, want %s", got, tt.wantNotAfter)
			}
		})
	}
}

func TestIssueRefusals(t *testing.T) {
	ctx := context.Background()
	clk := catest.NewClock(t0)
	s := memory.New()
	b := newBackend(t, s, clk)
	mb := backendConf("ca-1", `{"caCert":{"expiration":"1h"}}`)

	good := catest.NewCSR(t, ecKey(t), "x", "spiffe://default/backend")
	if _, err := b.Issue(ctx, "default", mb, ca.IssueRequest{CSR: good, Validity: time.Hour}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Issue before Ensure: err = %v, want store.ErrNotFound", err)
	}
	if err := catest.Provision(ctx, s, b, "default", mb); err != nil {
		t.Fatal(err)
	}

	tampered := *good
	tampered.Signature = slices.Clone(good.Signature)
	tampered.Signature[len(tampered.Signature)-2] ^= 0xff
	if _, err := b.Issue(ctx, "default", mb, ca.IssueRequest{CSR: &tampered, Validity: time.Hour}); err == nil || !strings.Contains(err.Error(), "CSR signature") {
		t.Errorf("tampered CSR: err = %v, want CSR signature error", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Issue(cctx, "default", mb, ca.IssueRequest{CSR: good, Validity: time.Hour}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: err = %v", err)
	}

	clk.Add(2 * time.Hour)
	if _, err := b.Issue(ctx, "default", mb, ca.IssueRequest{CSR: good, Validity: time.Hour}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired root: err = %v, want expiry error", err)
	}
}

func secretPEM(t *testing.T, s store.Store, mesh, name string) []byte {
	t.Helper()
	rec, err := s.Get(context.Background(), store.Key{Type: api.TypeSecret, Mesh: mesh, Name: name})
	if err != nil {
		t.Fatalf("secret %q: %v", name, err)
	}
	r, err := api.UnmarshalSpec(api.Meta{Type: api.TypeSecret, Mesh: mesh, Name: name}, rec.Spec)
	if err != nil {
		t.Fatal(err)
	}
	data, err := base64.StdEncoding.DecodeString(r.(*api.Secret).Data)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestRootPersistedAndReused(t *testing.T) {
	ctx := context.Background()
	clk := catest.NewClock(t0)
	s := memory.New()
	mb := backendConf("ca-1", "")

	first := newBackend(t, s, clk)
	if err := catest.Provision(ctx, s, first, "default", mb); err != nil {
		t.Fatal(err)
	}
	bundle1, err := first.TrustBundle(ctx, "default", mb)
	if err != nil {
		t.Fatal(err)
	}

	certPEM := secretPEM(t, s, "default", "default.ca-builtin-cert-ca-1")
	if !bytes.Equal(certPEM, bundle1) {
		t.Error("stored certificate secret differs from the trust bundle")
	}
	keyPEM := secretPEM(t, s, "default", "default.ca-builtin-key-ca-1")
	if blk, _ := pem.Decode(keyPEM); blk == nil || blk.Type != "PRIVATE KEY" {
		t.Errorf("stored key secret is not a PKCS#8 PEM key")
	}

	// A second instance (another control-plane replica, or a restart) uses
	// the stored root instead of generating one.
	second := newBackend(t, s, clk)
	if err := catest.Provision(ctx, s, second, "default", mb); err != nil {
		t.Fatal(err)
	}
	bundle2, err := second.TrustBundle(ctx, "default", mb)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bundle1, bundle2) {
		t.Fatal("second instance has a different root")
	}
	iss, err := second.Issue(ctx, "default", mb, ca.IssueRequest{CSR: catest.NewCSR(t, ecKey(t), "x", "spiffe://default/backend"), Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.VerifyIssued(iss, bundle1, clk.Now()); err != nil {
		t.Errorf("certificate of the second instance does not verify against the first's bundle: %v", err)
	}
	recs, err := s.List(ctx, api.TypeSecret, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Errorf("store holds %d secrets, want 2", len(recs))
	}

	// Other backends and meshes get their own roots.
	for _, other := range []struct{ mesh, backend string }{{"default", "ca-2"}, {"other", "ca-1"}} {
		omb := backendConf(other.backend, "")
		if err := catest.Provision(ctx, s, second, other.mesh, omb); err != nil {
			t.Fatal(err)
		}
		ob, err := second.TrustBundle(ctx, other.mesh, omb)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(ob, bundle1) {
			t.Errorf("mesh %q backend %q shares the root of default/ca-1", other.mesh, other.backend)
		}
	}
}

func TestConcurrentProvisionCreatesOneRoot(t *testing.T) {
	ctx := context.Background()
	clk := catest.NewClock(t0)
	s := memory.New()
	mb := backendConf("ca-1", "")
	// Two instances, four goroutines each: the in-process lock and the
	// store's OpCreate race are both exercised.
	instances := []ca.Backend{newBackend(t, s, clk), newBackend(t, s, clk)}
	const n = 8
	bundles := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			b := instances[i%len(instances)]
			<-start
			if errs[i] = catest.Provision(ctx, s, b, "default", mb); errs[i] != nil {
				return
			}
			bundles[i], errs[i] = b.TrustBundle(ctx, "default", mb)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if !bytes.Equal(bundles[i], bundles[0]) {
			t.Errorf("goroutine %d sees a different root", i)
		}
	}
	recs, err := s.List(ctx, api.TypeSecret, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("store holds %d secrets, want 2", len(recs))
	}
	for _, r := range recs {
		if r.Version != 1 {
			t.Errorf("secret %q has version %d: it was written more than once", r.Name, r.Version)
		}
	}
}

func TestCacheFollowsStoredRoot(t *testing.T) {
	ctx := context.Background()
	clk := catest.NewClock(t0)
	s := memory.New()
	mb := backendConf("ca-1", "")
	a := newBackend(t, s, clk)
	other := newBackend(t, s, clk)
	if err := catest.Provision(ctx, s, a, "default", mb); err != nil {
		t.Fatal(err)
	}
	oldBundle, _ := a.TrustBundle(ctx, "default", mb)

	// Another replica removes and regenerates the root.
	ops, err := other.(ca.Cleaner).CleanupOps(ctx, "default", mb)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, ops...); err != nil {
		t.Fatal(err)
	}
	if err := catest.Provision(ctx, s, other, "default", mb); err != nil {
		t.Fatal(err)
	}
	newBundle, _ := other.TrustBundle(ctx, "default", mb)
	if bytes.Equal(oldBundle, newBundle) {
		t.Fatal("regenerated root equals the old one")
	}

	// Within the revalidation window Issue keeps using the cached root...
	got, _ := a.TrustBundle(ctx, "default", mb)
	if !bytes.Equal(got, oldBundle) {
		t.Error("cached root was re-read before the revalidation window elapsed")
	}
	// ...and after it, follows the store's new version.
	clk.Add(11 * time.Second)
	iss, err := a.Issue(ctx, "default", mb, ca.IssueRequest{CSR: catest.NewCSR(t, ecKey(t), "x", "spiffe://default/backend"), Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.VerifyIssued(iss, newBundle, clk.Now()); err != nil {
		t.Errorf("after revalidation the certificate is not from the new root: %v", err)
	}
	// Ensure always checks the store.
	if err := catest.Provision(ctx, s, other, "default", mb); err != nil {
		t.Fatal(err)
	}
}

func TestCleanupOps(t *testing.T) {
	ctx := context.Background()
	clk := catest.NewClock(t0)
	s := memory.New()
	mb := backendConf("ca-1", "")
	b := newBackend(t, s, clk)
	cleaner, ok := b.(ca.Cleaner)
	if !ok {
		t.Fatal("builtin backend does not implement ca.Cleaner")
	}
	if _, ok := b.(ca.CommonNamer); ok {
		t.Error("builtin backend has no commonName conf and must not implement ca.CommonNamer")
	}

	ops, err := cleaner.CleanupOps(ctx, "default", mb)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 0 {
		t.Errorf("CleanupOps before Ensure = %d ops, want 0", len(ops))
	}

	if err := catest.Provision(ctx, s, b, "default", mb); err != nil {
		t.Fatal(err)
	}
	// A secret of another backend is not touched.
	if err := catest.Provision(ctx, s, b, "default", backendConf("ca-2", "")); err != nil {
		t.Fatal(err)
	}
	ops, err = cleaner.CleanupOps(ctx, "default", mb)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, op := range ops {
		if op.Kind != store.OpDelete || op.Record.Type != api.TypeSecret || op.Record.Mesh != "default" || op.Record.Version == 0 {
			t.Errorf("unexpected op %+v", op)
		}
		names = append(names, op.Record.Name)
	}
	slices.Sort(names)
	if want := []string{"default.ca-builtin-cert-ca-1", "default.ca-builtin-key-ca-1"}; !slices.Equal(names, want) {
		t.Fatalf("CleanupOps deletes %v, want %v", names, want)
	}
	if err := s.Commit(ctx, ops...); err != nil {
		t.Fatal(err)
	}
	recs, _ := s.List(ctx, api.TypeSecret, "default")
	var left []string
	for _, r := range recs {
		left = append(left, r.Name)
	}
	if want := []string{"default.ca-builtin-cert-ca-2", "default.ca-builtin-key-ca-2"}; !slices.Equal(left, want) {
		t.Errorf("secrets left = %v, want %v", left, want)
	}
	if _, err := b.TrustBundle(ctx, "default", mb); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("TrustBundle after cleanup: err = %v, want store.ErrNotFound", err)
	}
}

func TestEnsureIncompleteRoot(t *testing.T) {
	ctx := context.Background()
	clk := catest.NewClock(t0)
	s := memory.New()
	mb := backendConf("ca-1", "")
	b := newBackend(t, s, clk)
	if err := catest.Provision(ctx, s, b, "default", mb); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, s, store.Key{Type: api.TypeSecret, Mesh: "default", Name: builtin.KeySecretName("default", "ca-1")}); err != nil {
		t.Fatal(err)
	}
	err := b.Ensure(ctx, "default", mb)
	if err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("Ensure with the key secret missing: err = %v, want an incomplete-root error", err)
	}
}

func TestValidateConf(t *testing.T) {
	tests := []struct {
		name      string
		conf      string
		wantField string // "" means valid
	}{
		{name: "no conf", conf: ""},
		{name: "empty object", conf: `{}`},
		{name: "RSA 4096 and years", conf: `{"caCert":{"RSAbits":4096,"expiration":"10y"}}`},
		{name: "days", conf: `{"caCert":{"expiration":"3650d"}}`},
		{name: "Go duration", conf: `{"caCert":{"expiration":"87600h"}}`},
		{name: "unknown top-level field", conf: `{"caCert":{},"bogus":1}`, wantField: "conf.bogus"},
		{name: "unknown nested field", conf: `{"caCert":{"bits":2048}}`, wantField: "conf.caCert.bits"},
		{name: "unsupported RSA size", conf: `{"caCert":{"RSAbits":1024}}`, wantField: "conf.caCert.RSAbits"},
		{name: "RSAbits of the wrong type", conf: `{"caCert":{"RSAbits":"2048"}}`, wantField: "conf.caCert.RSAbits"},
		{name: "bad expiration", conf: `{"caCert":{"expiration":"forever"}}`, wantField: "conf.caCert.expiration"},
		{name: "zero expiration", conf: `{"caCert":{"expiration":"0y"}}`, wantField: "conf.caCert.expiration"},
		{name: "caCert not an object", conf: `{"caCert":3}`, wantField: "conf.caCert"},
	}
	b := newBackend(t, memory.New(), catest.NewClock(t0))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := b.Validate(context.Background(), "default", backendConf("ca-1", tt.conf))
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if got := api.Fields(err); !slices.Equal(got, []string{tt.wantField}) {
				t.Fatalf("Validate error fields = %v (%v), want [%s]", got, err, tt.wantField)
			}
			// Ensure refuses the same conf without touching the store.
			if err := b.Ensure(context.Background(), "default", backendConf("ca-1", tt.conf)); err == nil {
				t.Error("Ensure accepted an invalid conf")
			}
		})
	}
}

func TestParseExpiration(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "10y", want: 3650 * day},
		{in: "1y12h", want: 365*day + 12*time.Hour},
		{in: "1y2d", want: 367 * day},
		{in: "3650d", want: 3650 * day},
		{in: "87600h", want: 87600 * time.Hour},
		{in: "0y", wantErr: true},
		{in: "y", wantErr: true},
		{in: "-1y", wantErr: true},
		{in: "1000y", wantErr: true},
		{in: "ten years", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := builtin.ParseExpiration(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseExpiration(%q) = %s, want error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseExpiration(%q) = %s, %v; want %s", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestRootLifetime(t *testing.T) {
	tests := []struct {
		conf string
		want time.Duration
	}{
		{conf: ``, want: builtin.DefaultCAExpiration},
		{conf: `{"caCert":{"expiration":"2y"}}`, want: 730 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.conf, func(t *testing.T) {
			ctx := context.Background()
			s := memory.New()
			b := newBackend(t, s, catest.NewClock(t0))
			mb := backendConf("ca-1", tt.conf)
			if err := catest.Provision(ctx, s, b, "default", mb); err != nil {
				t.Fatal(err)
			}
			bundle, _ := b.TrustBundle(ctx, "default", mb)
			root := parseOne(t, bundle)
			if !root.NotAfter.Equal(t0.Add(tt.want)) || !root.NotBefore.Equal(t0.Add(-time.Minute)) {
				t.Errorf("root validity = %s .. %s, want until %s", root.NotBefore, root.NotAfter, t0.Add(tt.want))
			}
		})
	}
}

// BenchmarkIssue measures Issue alone with a pre-made P-256 CSR against the
// default (P-256) root. Compare with BenchmarkRawFloor.
func BenchmarkIssue(b *testing.B) {
	ctx := context.Background()
	s := memory.New()
	be, err := builtin.New(ca.Deps{Store: s})
	if err != nil {
		b.Fatal(err)
	}
	mb := backendConf("ca-1", "")
	if err := catest.Provision(ctx, s, be, "default", mb); err != nil {
		b.Fatal(err)
	}
	req := ca.IssueRequest{CSR: catest.NewCSR(b, ecKey(b), "backend", "spiffe://default/backend"), Validity: 24 * time.Hour}
	b.ReportAllocs()
	cpu := startCPU(b)
	for b.Loop() {
		if _, err := be.Issue(ctx, "default", mb, req); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report()
}

// cpuMeter reports process CPU time per operation as "cpu-ns/op".
type cpuMeter struct {
	b     *testing.B
	start time.Duration
	ok    bool
}

func startCPU(b *testing.B) cpuMeter {
	t, ok := processCPUTime()
	return cpuMeter{b: b, start: t, ok: ok}
}

func (m cpuMeter) report() {
	end, ok := processCPUTime()
	if m.ok && ok && m.b.N > 0 {
		m.b.ReportMetric(float64(end-m.start)/float64(m.b.N), "cpu-ns/op")
	}
}

// BenchmarkRawFloor is the floor Issue is compared with: one P-256 key
// generation plus one x509.CreateCertificate signature by a P-256 CA.
func BenchmarkRawFloor(b *testing.B) {
	caKey := ecKey(b).(*ecdsa.PrivateKey)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "floor"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		b.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(der)
	u, _ := url.Parse("spiffe://default/backend")
	b.ReportAllocs()
	cpu := startCPU(b)
	for b.Loop() {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		leaf := &x509.Certificate{
			SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "backend"}, URIs: []*url.URL{u},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		}
		if _, err := x509.CreateCertificate(rand.Reader, leaf, caCert, k.Public(), caKey); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report()
}
