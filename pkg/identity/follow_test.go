package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/ca/catest"
	"meshca/pkg/datasource"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

// pemSerial reads the serial x509 reads, for serials of every length and
// sign of their first byte; what is not a certificate is refused.
func TestPEMSerialIsX509s(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	big159 := new(big.Int).Lsh(big.NewInt(1), 158)
	for _, serial := range []*big.Int{big.NewInt(1), big.NewInt(0x80), big.NewInt(0x7f), big.NewInt(0), new(big.Int).Add(big159, big.NewInt(12345))} {
		tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		got, err := pemSerial(append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}), p...))
		if err != nil || got != c.SerialNumber.Text(16) {
			t.Errorf("serial %s: pemSerial = %q, %v; want %q", serial, got, err, c.SerialNumber.Text(16))
		}
		for _, bad := range [][]byte{nil, []byte("not PEM"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der[:len(der)/3]}),
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: append(der[:len(der):len(der)], 0)})} {
			if s, err := pemSerial(bad); err == nil {
				t.Errorf("pemSerial(%q) = %q, want an error", bad, s)
			}
		}
	}
}

// A follower's trust bundle follows which backends the leader's
// certificates come from, although it recomputes it only when that set
// changes: during a switch from ca-1 to ca-2 it holds both roots, once
// every certificate is ca-2's only ca-2's.
func TestFollowerBundleFollowsBackendsInUse(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now}, map[string]ca.Constructor{api.BackendBuiltin: builtin.New})
	if err != nil {
		t.Fatal(err)
	}
	be, _ := reg.Get(api.BackendBuiltin)
	ca1 := api.MTLSBackend{Name: "ca-1", Type: api.BackendBuiltin}
	ca2 := api.MTLSBackend{Name: "ca-2", Type: api.BackendBuiltin}
	for _, b := range []api.MTLSBackend{ca1, ca2} {
		if err := catest.Provision(ctx, st, be, "default", b); err != nil {
			t.Fatal(err)
		}
	}
	mesh := func(enabled string) *api.Mesh {
		m := &api.Mesh{Meta: api.Meta{Type: api.TypeMesh, Name: "default"}}
		m.MTLS = &api.MTLS{EnabledBackend: enabled, Backends: []api.MTLSBackend{ca1, ca2}}
		return m
	}
	root := func(b api.MTLSBackend) string {
		tb, err := be.TrustBundle(ctx, "default", b)
		if err != nil {
			t.Fatal(err)
		}
		return string(tb)
	}
	quiet := slog.New(slog.DiscardHandler)
	leader := New(st, reg, Options{Logger: quiet})
	follower := New(st, reg, Options{Logger: quiet})
	follower.static = false
	follower.term.Store(nil)
	follower.mu.Lock()
	follower.setMeshLocked(ctx, mesh("ca-1"), 1)
	follower.mu.Unlock()
	follower.refreshBundle(ctx, "default")

	var version int64
	issue := func(name string, b api.MTLSBackend) {
		t.Helper()
		dp := &api.Dataplane{Meta: api.Meta{Type: api.TypeDataplane, Mesh: "default", Name: name}}
		dp.Networking.Address = "127.0.0.1"
		dp.Networking.Inbound = []api.Inbound{{Port: 8080, Tags: map[string]string{api.ServiceTag: "web"}}}
		spec, _ := api.MarshalSpec(dp)
		if err := st.Commit(ctx, store.Op{Kind: store.OpUpsert, Record: store.Record{Key: store.Key{Type: api.TypeDataplane, Mesh: "default", Name: name}, Spec: spec}}); err != nil {
			t.Fatal(err)
		}
		leader.mu.Lock()
		leader.setMeshLocked(ctx, mesh(b.Name), 1)
		leader.mu.Unlock()
		if _, err := leader.obtain(ctx, dp, b, be, api.DefaultSVIDFormat, record{}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Get(ctx, store.Key{Type: TypeDataplaneIdentity, Mesh: "default", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		follower.mu.Lock()
		if follower.dps[dpKey{"default", name}] == nil {
			follower.dps[dpKey{"default", name}] = &dpState{dp: dp}
		}
		follower.mu.Unlock()
		version++
		r.Version = version
		follower.handle(ctx, store.Event{Kind: store.EventUpdated, Record: r})
	}
	bundle := func() string {
		follower.mu.Lock()
		defer follower.mu.Unlock()
		return string(follower.meshes["default"].bundle)
	}

	for _, name := range []string{"a", "b", "c"} {
		issue(name, ca1)
	}
	if got := bundle(); got != root(ca1) {
		t.Fatalf("before the switch the follower's bundle is\n%s\nwant ca-1's root only", got)
	}
	// The mesh switches to ca-2 (the follower sees the Mesh change); ca-1's
	// certificates stay in service until each is re-issued.
	m2, _ := api.MarshalSpec(mesh("ca-2"))
	follower.handle(ctx, store.Event{Kind: store.EventUpdated, Record: store.Record{Key: store.Key{Type: api.TypeMesh, Name: "default"}, Version: 2, Spec: m2}})
	issue("a", ca2)
	issue("b", ca2)
	if got := bundle(); !strings.Contains(got, root(ca1)) || !strings.Contains(got, root(ca2)) {
		t.Fatalf("during the switch the follower's bundle is\n%s\nwant both roots", got)
	}
	issue("c", ca2)
	if got := bundle(); got != root(ca2) {
		t.Errorf("after the switch the follower's bundle is\n%s\nwant ca-2's root only", got)
	}
}
