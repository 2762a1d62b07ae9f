package resources_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/ca/catest"
	"meshca/pkg/datasource"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

const builtinMeshYAML = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n"

// TestConcurrentMeshCreationKeepsOneRoot is issue 9's first bug: two
// requests create the same new builtin Mesh at once; both read "no such
// Mesh" before either commits. The one that loses the commit must neither
// fail the user (PUT is idempotent) nor remove the CA root the winner's Mesh
// was stored with: afterwards the stored root is the one the Mesh was
// committed with, exactly once, and it signs certificates that verify
// against the bundle peers are given.
func TestConcurrentMeshCreationKeepsOneRoot(t *testing.T) {
	ctx := context.Background()
	st := &barrierStore{Store: memory.New(), key: store.Key{Type: api.TypeMesh, Name: "default"}, n: 2}
	st.cond = sync.NewCond(&st.mu)
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now},
		map[string]ca.Constructor{api.BackendBuiltin: builtin.New})
	if err != nil {
		t.Fatal(err)
	}
	m := resources.NewManager(st, reg, resources.Options{})

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { _, errs[i] = m.Apply(ctx, decode(t, builtinMeshYAML), resources.ApplyOptions{}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("apply %d: %v (two identical PUTs must both succeed)", i, err)
		}
	}

	secrets, err := st.List(ctx, api.TypeSecret, "default")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int64{}
	for _, r := range secrets {
		names[r.Name] = r.Version
	}
	certName, keyName := builtin.CertSecretName("default", "ca-1"), builtin.KeySecretName("default", "ca-1")
	if len(secrets) != 2 || names[certName] != 1 || names[keyName] != 1 {
		t.Fatalf("stored secrets %v: want exactly %q and %q, each written once", names, certName, keyName)
	}

	// The root works: a certificate it signs verifies against the bundle.
	be, _ := reg.Get(api.BackendBuiltin)
	mb := api.MTLSBackend{Name: "ca-1", Type: api.BackendBuiltin}
	bundle, err := be.TrustBundle(ctx, "default", mb)
	if err != nil {
		t.Fatalf("trust bundle after the race: %v", err)
	}
	roots, err := ca.ParseCertificates(bundle)
	if err != nil || len(roots) != 1 {
		t.Fatalf("bundle: %d roots, err %v; want 1", len(roots), err)
	}
	rec, err := st.Get(ctx, store.Key{Type: api.TypeSecret, Mesh: "default", Name: certName})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := resources.FromRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := base64.StdEncoding.DecodeString(sec.(*api.Secret).Data)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ca.ParseCertificates(stored)
	if err != nil || !want[0].Equal(roots[0]) {
		t.Fatalf("the bundle's root is not the stored root (err %v)", err)
	}
	// A certificate the backend issues now verifies against that bundle.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr := catest.NewCSR(t, key, "", "spiffe://default/backend")
	iss, err := be.Issue(ctx, "default", mb, ca.IssueRequest{CSR: csr, Validity: time.Hour})
	if err != nil {
		t.Fatalf("issue after the race: %v", err)
	}
	leaf, err := ca.ParseCertificates(iss.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	if _, err := leaf[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("a certificate issued after the race does not verify against the mesh's bundle: %v", err)
	}
}

// barrierStore holds the first n Gets of key until all n have arrived, so
// that n writers all see the same "before" state.
type barrierStore struct {
	store.Store
	key  store.Key
	n    int
	mu   sync.Mutex
	cond *sync.Cond
}

func (s *barrierStore) Get(ctx context.Context, key store.Key) (store.Record, error) {
	if key == s.key {
		s.mu.Lock()
		if s.n > 0 {
			s.n--
			if s.n == 0 {
				s.cond.Broadcast()
			}
			for s.n > 0 {
				s.cond.Wait()
			}
		}
		s.mu.Unlock()
	}
	return s.Store.Get(ctx, key)
}
