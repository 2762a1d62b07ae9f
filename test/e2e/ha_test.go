package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"meshca/internal/pgtest"
	"meshca/pkg/insights"
	"meshca/pkg/secretbox"
	"meshca/pkg/store/postgres"
)

// HA lease of these tests: short, so a failover fits well inside a 10s
// certificate's life (see failoverBudget in pkg/controlplane).
const (
	haLease = 2 * time.Second
	haRenew = 500 * time.Millisecond
)

// haDatabase returns the DSN of a new database for one HA test (dropped at
// its end: several runs of these tests on one server, or one test's
// instances still listed in the next one's, must not see each other), and
// the encryption key file the instances share (secrets in the store are
// sealed with it; an instance with another key refuses to start).
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
	name := fmt.Sprintf("meshca_test_e2e_ha_%d_%d", os.Getpid(), haDatabases.Add(1))
	dsn := pgtest.DSN(t, name)
	t.Cleanup(func() {
		// Last (registered first): the instances have stopped.
		conn, err := pgx.Connect(context.Background(), os.Getenv("MESHCA_TEST_POSTGRES_DSN"))
		if err != nil {
			t.Logf("dropping %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
			t.Logf("dropping %s: %v", name, err)
		}
	})
	st, err := postgres.Open(t.Context(), dsn, nil) // migrates
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	return dsn, keyFile
}

// haDatabases numbers the databases of this process's HA tests.
var haDatabases atomic.Int64

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
	t.Parallel()
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

	// An instance given another encryption key refuses to start, and says
	// what instances on one store need.
	stray := start(t, "meshca-cp", cps[0].env, "run", "--data-dir", t.TempDir(), "--api-address", freePort(t),
		"--dp-server-address", freePort(t), "--api-tls-address", "")
	if done, err := stray.exited(30 * time.Second); !done || err == nil || !strings.Contains(stray.out.String(), "must all be given the same --encryption-key-file") {
		t.Fatalf("an instance with its own encryption key: exited %v (%v)\n%s", done, err, stray.out.String())
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

	// GET / lists them too (Kuma's index, and meshca's controlPlanes).
	resp, err := http.Get("http://" + cps[1].api + "/")
	if err != nil {
		t.Fatal(err)
	}
	var index struct {
		Product       string       `json:"product"`
		InstanceID    string       `json:"instanceId"`
		ControlPlanes []haInstance `json:"controlPlanes"`
	}
	err = json.NewDecoder(resp.Body).Decode(&index)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	leaders, self := 0, false
	for _, in := range index.ControlPlanes {
		if in.Leader {
			leaders++
		}
		self = self || (in.ID == index.InstanceID && in.Address == cps[1].api)
	}
	if index.Product != "Kuma" || len(index.ControlPlanes) != 3 || leaders != 1 || !self {
		t.Errorf("GET / on instance 1: %+v, want Kuma's index listing the 3 instances, one leader, itself by its instanceId", index)
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
	serials, watch := watchAgents(t, map[string]*agent{"web": web, "backend": backend})
	watch(25 * time.Second)
	for name, s := range serials {
		if len(s) < 3 {
			t.Errorf("%s rotated %d times in 25s after the failover, want at least 3 certificates", name, len(s))
		}
	}
	if client, server := handshake(t, web.tlsConfig(t), backend.tlsConfig(t)); client != "spiffe://default/web" || server != "spiffe://default/backend" {
		t.Fatalf("mutual TLS after failover saw %q and %q", client, server)
	}
}

// acmpca under three instances, the leader killed in the middle of a mass
// rotation of 200 data planes: the emulator issued exactly one certificate
// per issuance and rotation — nothing bought twice, nothing lost.
func TestHAACMPCAMassRotation(t *testing.T) {
	t.Parallel()
	dsn, keyFile := haDatabase(t)
	emu := startEmulator(t, "--ca", "arn="+seedARN+",type=ROOT,key=EC_prime256v1,mode=GENERAL_PURPOSE",
		"--credentials", "AKIDENV:secret-env")
	emu.admin(t, "rates", `{"IssueCertificate":100}`)
	aws := []string{"AWS_ENDPOINT_URL_ACM_PCA=" + emu.url, "AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=AKIDENV", "AWS_SECRET_ACCESS_KEY=secret-env", "AWS_EC2_METADATA_DISABLED=true"}
	start := func() *controlPlane {
		cp := &controlPlane{dataDir: t.TempDir(), api: freePort(t), dp: freePort(t), apiTLS: freePort(t),
			env:  append([]string{"MESHCA_STORE=postgres", "MESHCA_STORE_DSN=" + dsn}, aws...),
			args: []string{"--encryption-key-file", keyFile, "--leader-lease-duration", haLease.String(), "--leader-renew-interval", haRenew.String()}}
		cp.launch(t)
		return cp
	}
	cps := []*controlPlane{start()}
	waitFor(t, 10*time.Second, "the first instance leads", func() bool { return cps[0].metric(t, "meshca_leader") == 1 })
	cps = append(cps, start(), start())

	mesh := func(expiration string) string {
		return fmt.Sprintf("type: Mesh\nname: default\nmtls:\n  enabledBackend: pca\n  backends:\n  - name: pca\n    type: acmpca\n"+
			"    dpCert: {rotation: {expiration: %s}}\n    conf:\n      arn: %s\n      caCert: {secret: ca}\n", expiration, seedARN)
	}
	cps[1].apply(t, "type: Mesh\nname: default\n")
	cps[1].apply(t, fmt.Sprintf("type: Secret\nmesh: default\nname: ca\ndata: %s\n", base64.StdEncoding.EncodeToString(emu.chain(t, seedARN))))
	cps[1].apply(t, mesh("2h"))
	const n = 200
	var docs []string
	for i := range n {
		docs = append(docs, fmt.Sprintf("type: Dataplane\nmesh: default\nname: dp-%d\nnetworking: {address: 127.0.0.1, inbound: [{port: %d, tags: {kuma.io/service: svc}}]}\n", i, 10000+i))
	}
	cps[2].apply(t, strings.Join(docs, "---\n"))
	// validUntil counts the data planes whose certificate outlives d, as a
	// surviving instance serves them.
	validUntil := func(cp *controlPlane, d time.Duration) int {
		resp, err := http.Get("http://" + cp.api + "/meshes/default/dataplanes/_overview?size=1000")
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		var list dataplaneOverviewList
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			return 0
		}
		count := 0
		for _, o := range list.Items {
			if m := o.DataplaneInsight.MTLS; m != nil && m.CertificateExpirationTime.After(time.Now().Add(d)) {
				count++
			}
		}
		return count
	}
	waitFor(t, 60*time.Second, "200 data planes certified", func() bool { return validUntil(cps[1], 0) == n })
	if got := emu.stats(t).Issued; got != n {
		t.Fatalf("emulator issued %d certificates for %d data planes", got, n)
	}

	// A new expiration re-issues all; kill the leader a quarter of the way.
	cps[2].apply(t, mesh("3h"))
	waitFor(t, 30*time.Second, "the mass rotation under way", func() bool { return emu.stats(t).Issued >= n+n/4 })
	cps[0].kill()
	t.Logf("leader killed after %d of %d rotations were bought", emu.stats(t).Issued-n, n)
	waitFor(t, 2*haLease+2*time.Second, "a new leader", func() bool { return leaderOf(t, cps, map[int]bool{0: true}) >= 0 })
	waitFor(t, 90*time.Second, "every data plane rotated", func() bool { return validUntil(cps[1], 2*time.Hour+30*time.Minute) == n })
	time.Sleep(2 * time.Second) // anything still being bought would show now
	if got := emu.stats(t).Issued; got != 2*n {
		t.Errorf("emulator issued %d certificates for %d issuances and %d rotations (want %d)", got, n, n, 2*n)
	}
}

// dataplaneOverviewList is GET /meshes/{mesh}/dataplanes/_overview.
type dataplaneOverviewList struct {
	Items []insights.DataplaneOverview `json:"items"`
}

// Split brain: the leader suspended (SIGSTOP) past its lease, another takes
// over, then the old one resumes: it commits nothing (its writes are fenced),
// steps down, and one instance leads. Not parallel: what it checks hangs on
// how long the leader stays stopped against the lease, which the other
// tests' load would blur.
func TestHASplitBrain(t *testing.T) {
	dsn, keyFile := haDatabase(t)
	cps := []*controlPlane{startHACP(t, dsn, keyFile)}
	waitFor(t, 10*time.Second, "the first instance leads", func() bool { return cps[0].metric(t, "meshca_leader") == 1 })
	cps = append(cps, startHACP(t, dsn, keyFile), startHACP(t, dsn, keyFile))
	cps[1].apply(t, "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n    dpCert:\n      rotation:\n        expiration: 10s\n")
	const n = 30
	var docs []string
	for i := range n {
		docs = append(docs, fmt.Sprintf("type: Dataplane\nmesh: default\nname: dp-%d\nnetworking: {address: 127.0.0.1, inbound: [{port: %d, tags: {kuma.io/service: svc}}]}\n", i, 10000+i))
	}
	cps[2].apply(t, strings.Join(docs, "---\n"))
	waitFor(t, 30*time.Second, "30 data planes certified", func() bool {
		return cps[1].metric(t, `meshca_dataplanes_by_cert_state{state="valid"}`) == n
	})

	old := cps[0]
	if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = old.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	stopped := map[int]bool{0: true}
	waitFor(t, 2*haLease+2*time.Second, "a new leader", func() bool { return leaderOf(t, cps, stopped) >= 0 })
	newLeader := leaderOf(t, cps, stopped)
	issued := `meshca_certificates_issued_total{backend_type="builtin",result="success"}`
	before := cps[newLeader].metric(t, issued)
	waitFor(t, 15*time.Second, "rotations by the new leader", func() bool { return cps[newLeader].metric(t, issued) >= before+n })

	mark := len(old.proc.out.String())
	resume()
	waitFor(t, 5*time.Second, "the old leader steps down", func() bool { return old.metric(t, "meshca_leader") == 0 })
	time.Sleep(3 * time.Second) // 10s certificates keep falling due meanwhile
	after := old.proc.out.String()[mark:]
	if strings.Contains(after, `msg="certificate issued"`) {
		t.Errorf("the resumed old leader committed certificates:\n%s", after)
	}
	if !strings.Contains(after, "no longer the leader") {
		t.Errorf("the resumed old leader did not say it stepped down:\n%s", after)
	}
	t.Logf("old leader after resuming: %d issuances refused", strings.Count(after, "certificate issuance failed"))
	if got := leaderOf(t, cps, nil); got != newLeader {
		t.Errorf("leader after the old one resumed: %d, want %d", got, newLeader)
	}
	waitFor(t, 15*time.Second, "every certificate still valid and served", func() bool {
		return cps[0].metric(t, `meshca_dataplanes_by_cert_state{state="valid"}`) == n &&
			cps[newLeader].metric(t, `meshca_dataplanes_by_cert_state{state="valid"}`) == n
	})
}

// Every connection of every instance to the database cut at once (as a
// PostgreSQL restart does), twice, under rotation of 10s certificates: the
// instances reconnect, their listeners catch up, a leader carries on, and no
// agent's certificate ever expires.
func TestHADatabaseConnectionsLost(t *testing.T) {
	t.Parallel()
	dsn, keyFile := haDatabase(t)
	cps := []*controlPlane{startHACP(t, dsn, keyFile)}
	waitFor(t, 10*time.Second, "the first instance leads", func() bool { return cps[0].metric(t, "meshca_leader") == 1 })
	cps = append(cps, startHACP(t, dsn, keyFile))
	cps[1].apply(t, "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n    dpCert:\n      rotation:\n        expiration: 10s\n")
	cps[1].apply(t, dataplanes("default"))
	web := startAgent(t, cps[1], "default", "web-1", "web-1", "--cp-address", cps[0].dp)
	backend := startAgent(t, cps[0], "default", "backend-1", "backend-1", "--cp-address", cps[1].dp)
	web.waitCert(t)
	backend.waitCert(t)

	admin, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	cut := func() {
		t.Helper()
		var n int
		if err := admin.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		t.Logf("cut %d connections", n)
	}
	serials, watch := watchAgents(t, map[string]*agent{"web": web, "backend": backend})
	cut()
	watch(8 * time.Second)
	cut()
	watch(12 * time.Second)
	for name, s := range serials {
		if len(s) < 3 {
			t.Errorf("%s held %d certificates in 20s of 10s certificates, want at least 3", name, len(s))
		}
	}
	for i, cp := range cps {
		if got := cp.metric(t, "meshca_store_listener_reconnects_total"); got < 2 {
			t.Errorf("instance %d: listener reconnected %v times, want 2", i, got)
		}
		if got := cp.metric(t, "meshca_store_listener_lost_commits_total"); got != 0 {
			t.Errorf("instance %d lost %v commits", i, got)
		}
	}
	if leaderOf(t, cps, nil) < 0 {
		t.Error("no leader after the database came back")
	}
}

// A zone of two meshca-cp on one PostgreSQL: only the leader runs the sync
// with global (its writes fenced by its term); kill -9 of it: the other
// leads and syncs, what global changes next reaches the zone, the zone's new
// data planes reach global, and the agent on the survivor never holds an
// expired certificate.
func TestHAZone(t *testing.T) {
	t.Parallel()
	dsn, keyFile := haDatabase(t)
	f := startGlobal(t)
	f.global.apply(t, builtinMeshWith("10s"))
	tokenFile := f.zoneToken(t, "zone-1")
	startZone := func() *controlPlane {
		cp := &controlPlane{dataDir: t.TempDir(), api: freePort(t), dp: freePort(t), apiTLS: freePort(t),
			env: []string{"MESHCA_MODE=zone", "MESHCA_ZONE=zone-1", "MESHCA_GLOBAL_ADDRESS=" + f.kds,
				"MESHCA_GLOBAL_CA_CERT=" + filepath.Join(f.global.dataDir, "kds-server-ca.pem"), "MESHCA_ZONE_TOKEN_FILE=" + tokenFile,
				"MESHCA_STORE=postgres", "MESHCA_STORE_DSN=" + dsn},
			args: []string{"--encryption-key-file", keyFile, "--leader-lease-duration", haLease.String(), "--leader-renew-interval", haRenew.String()}}
		cp.launch(t)
		return cp
	}
	zs := []*controlPlane{startZone()}
	waitFor(t, 10*time.Second, "the first zone instance leads", func() bool { return zs[0].metric(t, "meshca_leader") == 1 })
	zs = append(zs, startZone())
	waitFor(t, 20*time.Second, "the mesh synced to the zone", func() bool {
		_, err := zs[1].meshctl("get", "mesh", "default")
		return err == nil
	})
	if connected, _ := zoneStatus(t, zs[0]); !connected {
		t.Error("the zone's leader is not connected to global")
	}
	if connected, _ := zoneStatus(t, zs[1]); connected {
		t.Error("the zone's follower runs a sync with global too")
	}

	zs[1].apply(t, dataplane("default", "backend-1", "backend", 9001))
	tok := strings.TrimSpace(f.global.mustMeshctl(t, "generate", "dataplane-token", "--mesh", "default", "--name", "backend-1"))
	backend := startAgentWithToken(t, zs[1], "default", "backend-1", tok)
	backend.waitCert(t)
	onGlobal := func(name string) bool {
		out, err := f.global.meshctl("inspect", "dataplanes", "-m", "default")
		return err == nil && strings.Contains(out, name) && strings.Contains(out, "zone-1")
	}
	waitFor(t, 20*time.Second, "backend-1 on global", func() bool { return onGlobal("backend-1") })

	zs[0].kill()
	waitFor(t, 2*haLease+2*time.Second, "the other zone instance leads", func() bool { return zs[1].metric(t, "meshca_leader") == 1 })
	waitFor(t, 20*time.Second, "the new leader's sync connected to global", func() bool {
		connected, _ := zoneStatus(t, zs[1])
		return connected
	})
	f.global.apply(t, "type: Mesh\nname: other\n")
	zs[1].apply(t, dataplane("default", "backend-2", "backend", 9002))
	waitFor(t, 20*time.Second, "global's new Mesh in the zone after the failover", func() bool {
		_, err := zs[1].meshctl("get", "mesh", "other")
		return err == nil
	})
	waitFor(t, 20*time.Second, "the zone's new data plane on global after the failover", func() bool { return onGlobal("backend-2") })

	// 12s of 10s certificates on the survivor: every sample valid, rotated.
	first := backend.leaf()
	end := time.Now().Add(12 * time.Second)
	for time.Now().Before(end) {
		if c := backend.leaf(); c != nil && time.Now().After(c.NotAfter) {
			t.Fatalf("backend-1's certificate expired at %v", c.NotAfter)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !rotatedFrom(backend.leaf(), first) {
		t.Error("backend-1's certificate did not rotate in 12s after the failover")
	}
}

// watchAgents returns the serials each agent was seen holding and a watch
// that samples the agents' certificates every 100 ms for a while, failing
// the test if one is ever held past its expiry.
func watchAgents(t *testing.T, agents map[string]*agent) (map[string]map[string]bool, func(time.Duration)) {
	serials := map[string]map[string]bool{}
	for name := range agents {
		serials[name] = map[string]bool{}
	}
	return serials, func(d time.Duration) {
		t.Helper()
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			for name, a := range agents {
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
	}
}
