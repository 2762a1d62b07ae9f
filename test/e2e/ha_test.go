package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"meshca/internal/pgtest"
	"meshca/pkg/secretbox"
	"meshca/pkg/store/postgres"
)

// HA lease of these tests: short, so a failover fits well inside a 10s
// certificate's life (see failoverBudget in pkg/controlplane).
const (
	haLease = 2 * time.Second
	haRenew = 500 * time.Millisecond
)

// haDatabase returns the DSN of an emptied database for HA tests, and the
// encryption key file the instances share (secrets in the store are sealed
// with it; an instance with another key refuses to start).
func haDatabase(t *testing.T) (string, string) {
	t.Helper()
	key, err := secretbox.NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "encryption.key")
	if err := secretbox.WriteKeyFile(keyFile, key); err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.DSN(t, "meshca_test_e2e_ha")
	st, err := postgres.Open(t.Context(), dsn, nil) // migrates
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `TRUNCATE resources, changes, leader_lease, control_planes`); err != nil {
		t.Fatal(err)
	}
	return dsn, keyFile
}

func startHACP(t *testing.T, dsn, keyFile string) *controlPlane {
	t.Helper()
	cp := &controlPlane{dataDir: t.TempDir(), api: freePort(t), dp: freePort(t), apiTLS: freePort(t),
		env:  []string{"MESHCA_STORE=postgres", "MESHCA_STORE_DSN=" + dsn},
		args: []string{"--encryption-key-file", keyFile, "--leader-lease-duration", haLease.String(), "--leader-renew-interval", haRenew.String()}}
	cp.launch(t)
	return cp
}

// leaderOf returns the index of the one instance (not in dead) whose
// meshca_leader is 1, or -1.
func leaderOf(t *testing.T, cps []*controlPlane, dead map[int]bool) int {
	t.Helper()
	found := -1
	for i, cp := range cps {
		if dead[i] {
			continue
		}
		if cp.metric(t, "meshca_leader") == 1 {
			if found >= 0 {
				t.Fatalf("instances %d and %d both lead", found, i)
			}
			found = i
		}
	}
	return found
}

type haInstance struct {
	ID, Address string
	Leader      bool
	Online      bool
}

// Three meshca-cp on one PostgreSQL, two agents on different instances:
// both are certified and talk mutual TLS; kill -9 of the leader: another
// leads within 2 lease periods, the 10s certificates keep rotating on both
// agents (none ever expired), the agent on the killed instance moves to
// another and keeps its serial.
func TestHAFailover(t *testing.T) {
	dsn, keyFile := haDatabase(t)
	cps := []*controlPlane{startHACP(t, dsn, keyFile)}
	waitFor(t, 10*time.Second, "the first instance leads", func() bool { return cps[0].metric(t, "meshca_leader") == 1 })
	cps = append(cps, startHACP(t, dsn, keyFile), startHACP(t, dsn, keyFile))
	ca0, err := os.ReadFile(filepath.Join(cps[0].dataDir, "dp-server-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range cps[1:] {
		if ca, err := os.ReadFile(filepath.Join(cp.dataDir, "dp-server-ca.pem")); err != nil || string(ca) != string(ca0) {
			t.Fatalf("instance started with an empty data dir has another dp-server-ca.pem (%v)", err)
		}
	}

	// Writes go to any instance.
	cps[1].apply(t, "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n    dpCert:\n      rotation:\n        expiration: 10s\n")
	cps[2].apply(t, "type: Dataplane\nmesh: default\nname: web-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 9001, tags: {kuma.io/service: web}}]}\n---\n"+
		"type: Dataplane\nmesh: default\nname: backend-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 9002, tags: {kuma.io/service: backend}}]}\n")
	all := func(first *controlPlane) string {
		addrs := []string{first.dp}
		for _, cp := range cps {
			if cp != first {
				addrs = append(addrs, cp.dp)
			}
		}
		return strings.Join(addrs, ",")
	}
	web := startAgent(t, cps[1], "default", "web-1", "web-1", "--cp-address", all(cps[1]))
	backend := startAgent(t, cps[0], "default", "backend-1", "backend-1", "--cp-address", all(cps[0]))
	web.waitCert(t)
	backend.waitCert(t)
	if client, server := handshake(t, web.tlsConfig(t), backend.tlsConfig(t)); client != "spiffe://default/web" || server != "spiffe://default/backend" {
		t.Fatalf("mutual TLS saw %q and %q", client, server)
	}

	var list struct{ Items []haInstance }
	if err := json.Unmarshal([]byte(cps[2].mustMeshctl(t, "inspect", "control-planes", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 3 {
		t.Fatalf("inspect control-planes lists %d instances, want 3", len(list.Items))
	}
	for _, in := range list.Items {
		if in.Leader != (in.Address == cps[0].api) || !in.Online {
			t.Errorf("instance %+v: want online, leader only for %s", in, cps[0].api)
		}
	}

	// Kill the leader right after the agent it serves got a new certificate,
	// so the move cannot coincide with a rotation.
	before := backend.leaf()
	waitFor(t, 15*time.Second, "a rotation of backend-1", func() bool { return rotatedFrom(backend.leaf(), before) })
	held, heldAt := backend.leaf(), time.Now()
	cps[0].kill()
	killed := time.Now()
	dead := map[int]bool{0: true}
	waitFor(t, 2*haLease+2*time.Second, "a new leader", func() bool { return leaderOf(t, cps, dead) >= 0 })
	t.Logf("new leader %v after kill -9 of the leader (lease %v)", time.Since(killed).Round(10*time.Millisecond), haLease)

	waitFor(t, 10*time.Second, "backend-1's agent on another instance", func() bool {
		return strings.Count(backend.proc.out.String(), "connected to the control plane") >= 2
	})
	// Its next rotation is due 5.5s (half its life at least) after it got it.
	if got := backend.leaf(); !sameSerial(got, held) && time.Since(heldAt) < 5*time.Second {
		t.Fatalf("the agent's certificate changed on the move: serial %x, held %x", got.SerialNumber, held.SerialNumber)
	}

	// 25s of 10s certificates: every sample valid, several rotations each.
	serials := map[string]map[string]bool{"web": {}, "backend": {}}
	end := time.Now().Add(25 * time.Second)
	for time.Now().Before(end) {
		for name, a := range map[string]*agent{"web": web, "backend": backend} {
			c := a.leaf()
			if c == nil {
				continue // between the two renames of a rotation
			}
			if now := time.Now(); now.After(c.NotAfter) {
				t.Fatalf("%s's certificate expired %v ago (notAfter %v)", name, now.Sub(c.NotAfter), c.NotAfter)
			}
			serials[name][c.SerialNumber.String()] = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, s := range serials {
		if len(s) < 3 {
			t.Errorf("%s rotated %d times in 25s after the failover, want at least 3 certificates", name, len(s))
		}
	}
	if client, server := handshake(t, web.tlsConfig(t), backend.tlsConfig(t)); client != "spiffe://default/web" || server != "spiffe://default/backend" {
		t.Fatalf("mutual TLS after failover saw %q and %q", client, server)
	}
}
