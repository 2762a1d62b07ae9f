// Package invariants drives the real HTTP API of a control plane (real
// resource manager, CA backends, identity loop and store) from many
// goroutines with random interleavings of Mesh, Secret and Dataplane
// changes, and checks after quiescence what must hold whatever the
// interleaving (issue 9):
//
//   - each enabled builtin backend of each Mesh has its root, and every data
//     plane's certificate was issued by its Mesh's enabled backend and
//     verifies against the trust bundle it is given;
//   - nothing stored belongs to a Mesh that no longer exists, and no identity
//     record outlives its Dataplane;
//   - no Mesh references a missing Secret.
//
// By default it runs a fixed seed for a few rounds (CI, under -race). Set
// MESHCA_INVARIANT_SEED=random and MESHCA_INVARIANT_ROUNDS=N for a longer
// search; the seed is logged so a failure can be replayed.
package invariants

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/ca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/controlplane"
	"meshca/pkg/datasource"
	"meshca/pkg/identity"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

const (
	meshes     = 3
	dataplanes = 4
	workers    = 8
	opsPerWork = 30
)

func TestInvariantsUnderConcurrency(t *testing.T) {
	seed := uint64(20261129)
	if v := os.Getenv("MESHCA_INVARIANT_SEED"); v == "random" {
		seed = mrand.Uint64()
	} else if v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("MESHCA_INVARIANT_SEED=%q: want a number or random", v)
		}
		seed = n
	}
	rounds := 3
	if v := os.Getenv("MESHCA_INVARIANT_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("MESHCA_INVARIANT_ROUNDS=%q: want a positive number", v)
		}
		rounds = n
	}
	caCert, caKey := newCA(t)
	total := map[int]int{}
	for r := range rounds {
		s := seed + uint64(r)
		statuses := runRound(t, s, caCert, caKey)
		for k, v := range statuses {
			total[k] += v
		}
		if t.Failed() {
			t.Fatalf("round %d (MESHCA_INVARIANT_SEED=%d) failed", r, s)
		}
	}
	t.Logf("seed %d: %d rounds, %d interleaved requests (%d workers x %d each per round); answers by status: %v",
		seed, rounds, rounds*workers*opsPerWork, workers, opsPerWork, total)
}

type env struct {
	base  string
	store store.Store
	reg   *ca.Registry
	ids   *identity.Manager
}

func start(t *testing.T) *env {
	st := memory.New()
	logger := slog.New(slog.DiscardHandler)
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Logger: logger, Now: time.Now}, controlplane.Backends())
	if err != nil {
		t.Fatal(err)
	}
	mgr := resources.NewManager(st, reg, resources.Options{Logger: logger, OwnedTypes: []string{identity.TypeDataplaneIdentity}})
	ids := identity.New(st, reg, identity.Options{Logger: logger, Workers: 8, RetryBase: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ids.Run(ctx); close(done) }()
	srv := httptest.NewServer(apiserver.New(mgr, apiserver.Options{Logger: logger}).Handler())
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		_ = st.Close()
	})
	return &env{base: srv.URL, store: st, reg: reg, ids: ids}
}

func runRound(t *testing.T, seed uint64, caCert, caKey []byte) map[int]int {
	e := start(t)
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for w := range workers {
		rng := mrand.New(mrand.NewPCG(seed, uint64(w)))
		wg.Go(func() {
			for range opsPerWork {
				method, path, body := randomOp(rng, caCert, caKey)
				status := e.do(t, method, path, body)
				mu.Lock()
				statuses[status]++
				mu.Unlock()
				if status >= 500 {
					t.Errorf("%s %s: status %d", method, path, status)
				}
			}
		})
	}
	wg.Wait()
	// Quiescence: the identity loop converges; the invariants must then hold.
	var last error
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if last = e.check(t.Context()); last == nil {
			return statuses
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("seed %d: invariant broken after quiescence: %v", seed, last)
	return statuses
}

func (e *env) do(t *testing.T, method, path, body string) int {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/yaml")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, path, err)
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// randomOp picks one request: Mesh create/update (builtin and provided
// backends, switches between them, mTLS on and off) and delete, Secret
// changes (the provided CA's and others), Dataplane registration and
// deletion.
func randomOp(rng *mrand.Rand, caCert, caKey []byte) (method, path, body string) {
	mesh := fmt.Sprintf("m%d", rng.IntN(meshes))
	switch n := rng.IntN(100); {
	case n < 25:
		return "PUT", "/meshes/" + mesh, meshYAML(rng, mesh)
	case n < 32:
		return "DELETE", "/meshes/" + mesh, ""
	case n < 45:
		name, data := "prov-cert", caCert
		if rng.IntN(2) == 0 {
			name, data = "prov-key", caKey
		}
		if rng.IntN(4) == 0 {
			name, data = fmt.Sprintf("other-%d", rng.IntN(3)), []byte("x")
		}
		return "PUT", "/meshes/" + mesh + "/secrets/" + name,
			fmt.Sprintf("type: Secret\nmesh: %s\nname: %s\ndata: %s\n", mesh, name, base64.StdEncoding.EncodeToString(data))
	case n < 52:
		names := []string{"prov-cert", "prov-key", "other-0", "other-1"}
		return "DELETE", "/meshes/" + mesh + "/secrets/" + names[rng.IntN(len(names))], ""
	case n < 85:
		d := rng.IntN(dataplanes)
		return "PUT", fmt.Sprintf("/meshes/%s/dataplanes/dp-%d", mesh, d), fmt.Sprintf(`type: Dataplane
mesh: %s
name: dp-%d
networking:
  address: 127.0.0.1
  inbound:
  - port: %d
    tags:
      kuma.io/service: svc-%d
`, mesh, d, 9000+d, rng.IntN(3))
	default:
		return "DELETE", fmt.Sprintf("/meshes/%s/dataplanes/dp-%d", mesh, rng.IntN(dataplanes)), ""
	}
}

func meshYAML(rng *mrand.Rand, mesh string) string {
	enabled := []string{"", "ca-1", "ca-2", "prov-1"}[rng.IntN(4)]
	b := fmt.Sprintf("type: Mesh\nname: %s\nmtls:\n", mesh)
	if enabled != "" {
		b += "  enabledBackend: " + enabled + "\n"
	}
	b += "  backends:\n  - name: ca-1\n    type: builtin\n"
	if rng.IntN(2) == 0 || enabled == "ca-2" {
		b += "  - name: ca-2\n    type: builtin\n"
	}
	if rng.IntN(2) == 0 || enabled == "prov-1" {
		b += "  - name: prov-1\n    type: provided\n    conf:\n      cert: {secret: prov-cert}\n      key: {secret: prov-key}\n"
	}
	return b
}

// check returns the first invariant that does not hold.
func (e *env) check(ctx context.Context) error {
	meshRecs, err := e.store.List(ctx, api.TypeMesh, "")
	if err != nil {
		return err
	}
	known := map[string]*api.Mesh{}
	for _, rec := range meshRecs {
		r, err := resources.FromRecord(rec)
		if err != nil {
			return err
		}
		known[rec.Name] = r.(*api.Mesh)
	}
	// Nothing stored belongs to a Mesh that no longer exists.
	for _, typ := range []string{api.TypeSecret, api.TypeDataplane, identity.TypeDataplaneIdentity} {
		recs, err := e.store.List(ctx, typ, "")
		if err != nil {
			return err
		}
		for _, r := range recs {
			if known[r.Mesh] == nil {
				return fmt.Errorf("%s %s/%s belongs to mesh %q, which does not exist", typ, r.Mesh, r.Name, r.Mesh)
			}
			if typ == identity.TypeDataplaneIdentity {
				if _, err := e.store.Get(ctx, store.Key{Type: api.TypeDataplane, Mesh: r.Mesh, Name: r.Name}); err != nil {
					return fmt.Errorf("identity record %s/%s outlives its Dataplane: %v", r.Mesh, r.Name, err)
				}
			}
		}
	}
	names := make([]string, 0, len(known))
	for n := range known {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		mesh := known[name]
		if mesh.MTLS == nil {
			continue
		}
		// No Mesh references a missing Secret.
		for _, b := range mesh.MTLS.Backends {
			be, err := e.reg.Get(b.Type)
			if err != nil {
				return err
			}
			if u, ok := be.(ca.SecretUser); ok {
				for _, s := range u.UsedSecrets(b) {
					if _, err := e.store.Get(ctx, store.Key{Type: api.TypeSecret, Mesh: name, Name: s}); err != nil {
						return fmt.Errorf("mesh %q backend %q references secret %q: %v", name, b.Name, s, err)
					}
				}
			}
		}
		b, _, ok := mesh.EnabledMTLSBackend()
		if !ok {
			continue
		}
		if b.Type == api.BackendBuiltin {
			for _, s := range []string{builtin.CertSecretName(name, b.Name), builtin.KeySecretName(name, b.Name)} {
				if _, err := e.store.Get(ctx, store.Key{Type: api.TypeSecret, Mesh: name, Name: s}); err != nil {
					return fmt.Errorf("mesh %q: enabled builtin backend %q has no root (%s: %v)", name, b.Name, s, err)
				}
			}
		}
		be, err := e.reg.Get(b.Type)
		if err != nil {
			return err
		}
		enabledBundle, err := be.TrustBundle(ctx, name, b)
		if err != nil {
			return fmt.Errorf("mesh %q backend %q: trust bundle: %v", name, b.Name, err)
		}
		dps, err := e.store.List(ctx, api.TypeDataplane, name)
		if err != nil {
			return err
		}
		for _, dp := range dps {
			sec, ok := e.ids.Current(name, dp.Name)
			if !ok {
				return fmt.Errorf("dataplane %s/%s has no certificate", name, dp.Name)
			}
			// Verifies against what the data plane is given, and was issued
			// by the enabled backend (not a root since replaced).
			for what, bundle := range map[string][]byte{"its trust bundle": sec.TrustBundlePEM, "the enabled backend's root": enabledBundle} {
				if err := verify(sec.CertChainPEM, bundle); err != nil {
					return fmt.Errorf("dataplane %s/%s: certificate does not verify against %s: %v", name, dp.Name, what, err)
				}
			}
		}
	}
	return nil
}

func verify(chainPEM, bundlePEM []byte) error {
	certs, err := ca.ParseCertificates(chainPEM)
	if err != nil {
		return err
	}
	roots, err := ca.ParseCertificates(bundlePEM)
	if err != nil {
		return err
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err = certs[0].Verify(opts)
	return err
}

func newCA(t *testing.T) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "provided root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}
