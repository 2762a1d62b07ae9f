package zonesync_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/sds"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
	"meshca/pkg/zonesync"
)

// tokenAuth accepts "token-<zone>" for <zone>, except revoked ones.
type tokenAuth struct{}

func (tokenAuth) VerifyZone(_ context.Context, token string) (string, error) {
	if len(token) > 6 && token[:6] == "token-" {
		return token[6:], nil
	}
	return "", errors.New("bad token")
}

// harness runs a global and one zone in process on loopback, each of which
// can be stopped and started again.
type harness struct {
	t            *testing.T
	global, zone store.Store
	addr         string
	serverTLS    *tls.Config
	clientTLS    *tls.Config
	stopGlobal   func()
	stopZone     func()
}

func newHarness(t *testing.T) *harness {
	dir := t.TempDir()
	files := sds.ServerFiles{CA: "ca.pem", CAKey: "ca.key", Cert: "srv.pem", CertKey: "srv.key", Name: "test sync"}
	conf, caPEM, err := sds.LoadOrCreateTLS(files, dir, "", "", []string{"127.0.0.1"}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	h := &harness{t: t, global: memory.New(), zone: memory.New(), addr: addr, serverTLS: conf,
		clientTLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	t.Cleanup(func() {
		if h.stopZone != nil {
			h.stopZone()
		}
		if h.stopGlobal != nil {
			h.stopGlobal()
		}
	})
	return h
}

func (h *harness) startGlobal() {
	ctx, cancel := context.WithCancel(context.Background())
	var lis net.Listener
	var err error
	for range 50 { // the port may linger a moment after a stop
		if lis, err = net.Listen("tcp", h.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	g := zonesync.NewGlobal(h.global, tokenAuth{}, nil)
	done := make(chan struct{})
	go func() { _ = g.Serve(ctx, lis, h.serverTLS); lis.Close(); close(done) }()
	h.stopGlobal = func() { cancel(); <-done; h.stopGlobal = nil }
}

func (h *harness) startZone() {
	ctx, cancel := context.WithCancel(context.Background())
	z := zonesync.NewZone(h.zone, zonesync.ZoneConfig{Zone: "zone-1", GlobalAddress: h.addr, TLS: h.clientTLS,
		Token:       func() (string, error) { return "token-zone-1", nil },
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Resync: 100 * time.Millisecond,
		Insight: func(dp store.Record) ([]byte, bool) {
			return []byte(`{"connected":true,"for":"` + dp.Name + `"}`), true
		}})
	done := make(chan struct{})
	go func() { _ = z.Run(ctx); close(done) }()
	h.stopZone = func() { cancel(); <-done; h.stopZone = nil }
}

// TestSyncConverges: random interleavings of changes on global (Meshes,
// Secrets) and in the zone (Dataplanes, zone-local Secrets), with zone
// disconnects and global restarts between them, converge to the same
// records on both sides, and sync never touches a zone-local record.
// MESHCA_SYNC_ROUNDS sets the number of rounds (default 5).
func TestSyncConverges(t *testing.T) {
	rounds := 5
	if v := os.Getenv("MESHCA_SYNC_ROUNDS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			rounds = n
		}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d rounds", seed, rounds)
	rng := mrand.New(mrand.NewPCG(seed, 1))
	h := newHarness(t)
	h.startGlobal()
	h.startZone()
	ctx := context.Background()
	upsert := func(s store.Store, r store.Record) {
		if err := store.Upsert(ctx, s, r); err != nil {
			t.Fatal(err)
		}
	}
	del := func(s store.Store, k store.Key) {
		if err := store.Delete(ctx, s, k); err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
	}
	// A zone-local Secret that sync must never touch, even when global
	// creates one of the same name.
	local := store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: "m0", Name: "local"}, Spec: []byte(`{"data":"bG9jYWw="}`)}
	upsert(h.zone, local)

	for round := range rounds {
		for range 40 {
			mesh := fmt.Sprintf("m%d", rng.IntN(3))
			switch n := rng.IntN(10); {
			case n < 2:
				upsert(h.global, store.Record{Key: store.Key{Type: api.TypeMesh, Name: mesh}, Spec: []byte(fmt.Sprintf(`{"v":%d}`, rng.IntN(5)))})
			case n < 3:
				del(h.global, store.Key{Type: api.TypeMesh, Name: mesh})
			case n < 5:
				name := fmt.Sprintf("s%d", rng.IntN(4))
				if rng.IntN(8) == 0 {
					name = "local"
				}
				upsert(h.global, store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: mesh, Name: name}, Spec: []byte(fmt.Sprintf(`{"data":"%d"}`, rng.IntN(5)))})
			case n < 6:
				del(h.global, store.Key{Type: api.TypeSecret, Mesh: mesh, Name: fmt.Sprintf("s%d", rng.IntN(4))})
			case n < 8:
				upsert(h.zone, store.Record{Key: store.Key{Type: api.TypeDataplane, Mesh: mesh, Name: fmt.Sprintf("dp%d", rng.IntN(4))},
					Spec: []byte(fmt.Sprintf(`{"networking":{"address":"10.0.0.%d"}}`, rng.IntN(5)))})
			default:
				del(h.zone, store.Key{Type: api.TypeDataplane, Mesh: mesh, Name: fmt.Sprintf("dp%d", rng.IntN(4))})
			}
			switch rng.IntN(30) {
			case 0:
				h.stopZone()
				h.startZone()
			case 1:
				h.stopGlobal()
				h.startGlobal()
			case 2:
				time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
			}
		}
		var diff error
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if diff = compare(ctx, h, local); diff == nil {
				break
			}
		}
		if diff != nil {
			t.Fatalf("round %d (seed %d): not converged after 20 s: %v", round, seed, diff)
		}
	}
}

// compare checks that both sides hold the same records.
func compare(ctx context.Context, h *harness, local store.Record) error {
	for _, typ := range []string{api.TypeMesh, api.TypeSecret} {
		want := map[string]string{}
		recs, err := h.global.List(ctx, typ, "")
		if err != nil {
			return err
		}
		for _, r := range recs {
			if !(typ == api.TypeSecret && r.Mesh == local.Mesh && r.Name == local.Name) {
				want[r.Mesh+"/"+r.Name] = string(r.Spec)
			}
		}
		got := map[string]string{}
		zrecs, err := h.zone.List(ctx, typ, "")
		if err != nil {
			return err
		}
		for _, r := range zrecs {
			if r.Labels[zonesync.LabelOrigin] == zonesync.OriginGlobal {
				got[r.Mesh+"/"+r.Name] = string(r.Spec)
			} else if r.Key != local.Key || string(r.Spec) != string(local.Spec) {
				return fmt.Errorf("zone holds %s that did not come from global and is not the zone-local record", r.Key)
			}
		}
		if err := sameMaps(typ+" global->zone", want, got); err != nil {
			return err
		}
	}
	for _, typ := range []string{api.TypeDataplane, zonesync.TypeDataplaneInsight} {
		want := map[string]string{}
		dps, err := h.zone.List(ctx, api.TypeDataplane, "")
		if err != nil {
			return err
		}
		for _, r := range dps {
			if typ == api.TypeDataplane {
				want[r.Mesh+"/"+r.Name+".zone-1"] = string(r.Spec)
			} else {
				want[r.Mesh+"/"+r.Name+".zone-1"] = `{"connected":true,"for":"` + r.Name + `"}`
			}
		}
		got := map[string]string{}
		recs, err := h.global.List(ctx, typ, "")
		if err != nil {
			return err
		}
		for _, r := range recs {
			if r.Labels[zonesync.LabelZone] != "zone-1" {
				return fmt.Errorf("global holds %s without its zone", r.Key)
			}
			got[r.Mesh+"/"+r.Name] = string(r.Spec)
		}
		// A Dataplane of a Mesh global no longer has is refused there.
		for k := range want {
			mesh := k[:2]
			if _, err := h.global.Get(ctx, store.Key{Type: api.TypeMesh, Name: mesh}); errors.Is(err, store.ErrNotFound) {
				delete(want, k)
				delete(got, k)
			}
		}
		if err := sameMaps(typ+" zone->global", want, got); err != nil {
			return err
		}
	}
	return nil
}

func sameMaps(what string, want, got map[string]string) error {
	for k, v := range want {
		if got[k] != v {
			return fmt.Errorf("%s: %s is %q, want %q", what, k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			return fmt.Errorf("%s: %s should not be there", what, k)
		}
	}
	return nil
}
