package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/ca/catest"
	"meshca/pkg/datasource"
	"meshca/pkg/secretbox"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

// BenchmarkIssuanceBuiltin measures one data-plane issuance through the
// builtin CA as the identity loop does it: key generation, signing, the
// issuer check, PEM encoding and persisting the record.
func BenchmarkIssuanceBuiltin(b *testing.B) { benchmarkIssuance(b, memory.New()) }

// BenchmarkIssuanceBuiltinEncrypted is BenchmarkIssuanceBuiltin with the
// store's secret records encrypted at rest, as meshca-cp runs it.
func BenchmarkIssuanceBuiltinEncrypted(b *testing.B) {
	key, err := secretbox.NewKey(make([]byte, secretbox.KeySize))
	if err != nil {
		b.Fatal(err)
	}
	benchmarkIssuance(b, secretbox.WrapStore(memory.New(), secretbox.NewBox(key), api.TypeSecret, api.TypeGlobalSecret, TypeDataplaneIdentity))
}

func benchmarkIssuance(b *testing.B, st store.Store) {
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now}, map[string]ca.Constructor{api.BackendBuiltin: builtin.New})
	if err != nil {
		b.Fatal(err)
	}
	m := New(st, reg, Options{})
	be, _ := reg.Get(api.BackendBuiltin)
	backend := api.MTLSBackend{Name: "ca-1", Type: api.BackendBuiltin}
	ctx := context.Background()
	if err := catest.Provision(ctx, st, be, "default", backend); err != nil {
		b.Fatal(err)
	}
	// The mesh is known, as in the running loop, so its trust bundle is cached.
	mesh := &api.Mesh{Meta: api.Meta{Type: api.TypeMesh, Name: "default"}}
	mesh.MTLS = &api.MTLS{EnabledBackend: "ca-1", Backends: []api.MTLSBackend{backend}}
	m.mu.Lock()
	m.setMeshLocked(ctx, mesh, 1)
	m.mu.Unlock()
	dp := &api.Dataplane{Meta: api.Meta{Type: api.TypeDataplane, Mesh: "default", Name: "backend-1"}}
	dp.Networking.Address = "127.0.0.1"
	dp.Networking.Inbound = []api.Inbound{{Port: 8080, Tags: map[string]string{api.ServiceTag: "backend"}}}
	// Identity records are written only while their Dataplane exists.
	spec, err := api.MarshalSpec(dp)
	if err != nil {
		b.Fatal(err)
	}
	if err := store.Create(ctx, st, store.Record{Key: store.Key{Type: api.TypeDataplane, Mesh: "default", Name: "backend-1"}, Spec: spec}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.obtain(ctx, dp, backend, be, api.DefaultSVIDFormat, record{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawFloor is the standard library's cost of what an issuance
// cannot avoid: one P-256 key pair and one certificate signature.
func BenchmarkRawFloor(b *testing.B) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	caCert, _ := x509.ParseCertificate(der)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		leaf := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		if _, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &k.PublicKey, caKey); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeyAndSignature is the strictest floor: one P-256 key pair and
// one bare ECDSA signature, with no certificate around it.
func BenchmarkKeyAndSignature(b *testing.B) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := make([]byte, 32)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			b.Fatal(err)
		}
		if _, err := ecdsa.SignASN1(rand.Reader, caKey, digest); err != nil {
			b.Fatal(err)
		}
	}
}
