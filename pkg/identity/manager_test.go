package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/ca/provided"
	"meshca/pkg/datasource"
	"meshca/pkg/identity"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

// gated holds back issuance for one data plane until released, and can be
// made to fail, so a test can observe the middle of a change.
type gated struct {
	ca.Backend
	hold    string
	release chan struct{}
	fail    atomic.Bool
}

func (g *gated) Issue(ctx context.Context, mesh string, b api.MTLSBackend, req ca.IssueRequest) (ca.Issued, error) {
	if g.fail.Load() {
		return ca.Issued{}, errors.New("CA unavailable")
	}
	if req.Identity.Dataplane == g.hold {
		select {
		case <-g.release:
		case <-ctx.Done():
			return ca.Issued{}, ctx.Err()
		}
	}
	return g.Backend.Issue(ctx, mesh, b, req)
}

type fixture struct {
	t    *testing.T
	st   store.Store
	res  *resources.Manager
	ids  *identity.Manager
	gate *gated
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st := memory.New()
	f := &fixture{t: t, st: st, gate: &gated{release: make(chan struct{})}}
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now}, map[string]ca.Constructor{
		api.BackendBuiltin: builtin.New,
		api.BackendProvided: func(d ca.Deps) (ca.Backend, error) {
			b, err := provided.New(d)
			f.gate.Backend = b
			return f.gate, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.res = resources.NewManager(st, reg, resources.Options{OwnedTypes: []string{identity.TypeDataplaneIdentity}})
	f.ids = identity.New(st, reg, identity.Options{RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.ids.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	<-f.ids.Ready()
	return f
}

func (f *fixture) apply(yaml string) {
	f.t.Helper()
	docs, err := api.DecodeDocuments([]byte(yaml))
	if err != nil {
		f.t.Fatal(err)
	}
	for _, d := range docs {
		if _, err := f.res.Apply(context.Background(), d.Resource, resources.ApplyOptions{}); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) leaf(name string) (*x509.Certificate, identity.Secrets) {
	sec, ok := f.ids.Current("default", name)
	if !ok {
		return nil, sec
	}
	certs, err := ca.ParseCertificates(sec.CertChainPEM)
	if err != nil {
		f.t.Fatal(err)
	}
	return certs[0], sec
}

func (f *fixture) waitFor(what string, ok func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.t.Fatalf("timed out waiting for %s", what)
}

const twoDataplanes = `type: Dataplane
mesh: default
name: backend-1
networking: {address: 127.0.0.1, inbound: [{port: 9001, tags: {kuma.io/service: backend}}]}
---
type: Dataplane
mesh: default
name: web-1
networking: {address: 127.0.0.1, inbound: [{port: 9002, tags: {kuma.io/service: web}}]}
`

func verify(t *testing.T, leaf *x509.Certificate, bundle []byte) error {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func countCerts(p []byte) int {
	n := 0
	for {
		var b *pem.Block
		b, p = pem.Decode(p)
		if b == nil {
			return n
		}
		n++
	}
}

// TestSwitchKeepsBothRootsUntilDone switches a mesh from builtin to
// provided while one data plane's re-issue is held back: in between, every
// data plane trusts both roots, so old and new certificates verify each
// other; once all are re-issued the old root is dropped.
func TestSwitchKeepsBothRootsUntilDone(t *testing.T) {
	f := newFixture(t)
	f.apply("type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - {name: ca-1, type: builtin}\n")
	f.apply(twoDataplanes)
	f.waitFor("both certified", func() bool {
		a, _ := f.leaf("backend-1")
		b, _ := f.leaf("web-1")
		return a != nil && b != nil
	})
	webOld, _ := f.leaf("web-1")

	certPEM, keyPEM := newCA(t)
	f.gate.hold = "web-1"
	f.apply("type: Secret\nmesh: default\nname: c\ndata: " + base64.StdEncoding.EncodeToString(certPEM) + "\n---\ntype: Secret\nmesh: default\nname: k\ndata: " + base64.StdEncoding.EncodeToString(keyPEM) + "\n")
	f.apply("type: Mesh\nname: default\nmtls:\n  enabledBackend: p-1\n  backends:\n  - {name: ca-1, type: builtin}\n  - {name: p-1, type: provided, conf: {cert: {secret: c}, key: {secret: k}}}\n")

	var backendNew *x509.Certificate
	f.waitFor("backend-1 re-issued by the provided CA", func() bool {
		backendNew, _ = f.leaf("backend-1")
		return backendNew != nil && backendNew.Issuer.CommonName == "provided test root"
	})
	_, webSec := f.leaf("web-1")
	_, backendSec := f.leaf("backend-1")
	if n := countCerts(webSec.TrustBundlePEM); n != 2 {
		t.Fatalf("during the switch the bundle holds %d roots, want 2", n)
	}
	if err := verify(t, backendNew, webSec.TrustBundlePEM); err != nil {
		t.Errorf("new certificate does not verify with the old peer's bundle: %v", err)
	}
	if err := verify(t, webOld, backendSec.TrustBundlePEM); err != nil {
		t.Errorf("old certificate does not verify with the new peer's bundle: %v", err)
	}

	close(f.gate.release)
	f.waitFor("switch complete: one root left", func() bool {
		w, sec := f.leaf("web-1")
		return w != nil && w.Issuer.CommonName == "provided test root" && countCerts(sec.TrustBundlePEM) == 1
	})
	in, ok := f.ids.Insight("default", "web-1")
	if !ok || in.MTLS.IssuedBackend != "p-1" || in.MTLS.CertificateRegenerations != 1 {
		t.Errorf("insight = %+v", in.MTLS)
	}
}

// TestFailureKeepsCurrentCertificate makes the CA fail at rotation: the
// current certificate stays in service, the error is surfaced, retries back
// off, and issuance recovers when the CA does.
func TestFailureKeepsCurrentCertificate(t *testing.T) {
	f := newFixture(t)
	certPEM, keyPEM := newCA(t)
	f.apply("type: Mesh\nname: default\n")
	f.apply("type: Secret\nmesh: default\nname: c\ndata: " + base64.StdEncoding.EncodeToString(certPEM) + "\n---\ntype: Secret\nmesh: default\nname: k\ndata: " + base64.StdEncoding.EncodeToString(keyPEM) + "\n")
	f.apply("type: Mesh\nname: default\nmtls:\n  enabledBackend: p-1\n  backends:\n  - {name: p-1, type: provided, dpCert: {rotation: {expiration: 2s}}, conf: {cert: {secret: c}, key: {secret: k}}}\n")
	f.apply(twoDataplanes)
	var first *x509.Certificate
	f.waitFor("certified", func() bool { first, _ = f.leaf("web-1"); return first != nil })
	f.gate.fail.Store(true)
	f.waitFor("a failed rotation surfaced", func() bool {
		in, _ := f.ids.Insight("default", "web-1")
		return in.MTLS != nil && in.MTLS.LastError != "" && in.MTLS.FailedAttempts >= 2
	})
	if cur, _ := f.leaf("web-1"); cur == nil || cur.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("the current certificate was withdrawn during the outage")
	}
	f.gate.fail.Store(false)
	f.waitFor("recovered", func() bool {
		cur, _ := f.leaf("web-1")
		in, _ := f.ids.Insight("default", "web-1")
		return cur != nil && cur.SerialNumber.Cmp(first.SerialNumber) != 0 && in.MTLS.LastError == ""
	})
}

func newCA(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "provided test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		SubjectKeyId: []byte{1, 2, 3, 4},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// TestSubscribe: a subscription made before the data plane exists is told
// when it is certified and when it is deleted; a cancelled one is not told
// anything more.
func TestSubscribe(t *testing.T) {
	f := newFixture(t)
	var web, backend atomic.Int32
	cancelWeb := f.ids.Subscribe("default", "web-1", func() { web.Add(1) })
	cancelBackend := f.ids.Subscribe("default", "backend-1", func() { backend.Add(1) })
	defer cancelBackend()
	f.apply("type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - {name: ca-1, type: builtin}\n")
	f.apply(twoDataplanes)
	f.waitFor("both certified and signalled", func() bool {
		_, a := f.ids.Current("default", "web-1")
		_, b := f.ids.Current("default", "backend-1")
		return a && b && web.Load() > 0 && backend.Load() > 0
	})

	cancelWeb()
	cancelWeb() // twice is harmless
	seenWeb, seenBackend := web.Load(), backend.Load()
	for _, name := range []string{"web-1", "backend-1"} {
		if err := f.res.Delete(context.Background(), api.TypeDataplane, "default", name); err != nil {
			t.Fatal(err)
		}
	}
	f.waitFor("backend-1's deletion signalled", func() bool {
		_, ok := f.ids.Current("default", "backend-1")
		return !ok && backend.Load() > seenBackend
	})
	if web.Load() != seenWeb {
		t.Fatalf("a cancelled subscription was signalled %d more times", web.Load()-seenWeb)
	}
}

// TestRecordMatchesCertificate: what the identity loop records of a
// certificate signed in process (without parsing it back) is what the
// certificate says, and the leaf links to the mesh's root.
func TestRecordMatchesCertificate(t *testing.T) {
	f := newFixture(t)
	f.apply("type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - {name: ca-1, type: builtin, dpCert: {rotation: {expiration: 90m}}}\n")
	f.apply(twoDataplanes)
	f.waitFor("web-1 certified", func() bool { leaf, _ := f.leaf("web-1"); return leaf != nil })
	leaf, sec := f.leaf("web-1")
	in, ok := f.ids.Insight("default", "web-1")
	if !ok || in.MTLS == nil {
		t.Fatal("no insight for web-1")
	}
	if !in.MTLS.CertificateExpirationTime.Equal(leaf.NotAfter) || in.MTLS.CertificateExpirationTime.Location() != time.UTC {
		t.Fatalf("recorded expiry %v, certificate's %v", in.MTLS.CertificateExpirationTime, leaf.NotAfter)
	}
	if got := time.Until(leaf.NotAfter); got < 85*time.Minute || got > 90*time.Minute {
		t.Fatalf("certificate valid for %v more, want about 90m", got)
	}
	if err := verify(t, leaf, sec.TrustBundlePEM); err != nil {
		t.Fatalf("leaf does not verify against the trust bundle: %v", err)
	}
	if strings.Count(string(sec.CertChainPEM), "BEGIN CERTIFICATE") != 1 {
		t.Fatalf("builtin chain: want the leaf alone, got %s", sec.CertChainPEM)
	}
}
