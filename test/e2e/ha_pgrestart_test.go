package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"meshca/internal/freeport"
	"meshca/pkg/secretbox"
	"meshca/pkg/store/postgres"
)

// privatePostgres is a PostgreSQL server of one test, which it may restart.
type privatePostgres struct {
	t         *testing.T
	bin, data string
	port      int
	cred      *syscall.Credential // run as postgres when the test runs as root
	log       string
}

// startPrivatePostgres initdb's and starts a server of the test's own, or
// skips the test when PostgreSQL's binaries are not installed.
func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(dirs) == 0 {
		t.Skip("PostgreSQL server binaries (/usr/lib/postgresql/<version>/bin/initdb, pg_ctl) not installed: this test restarts a server of its own (.ci/run installs the postgresql package)")
	}
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) < pgVersion(dirs[j]) })
	pg := &privatePostgres{t: t, bin: filepath.Dir(dirs[len(dirs)-1])}
	// initdb refuses to run as root: run the server as postgres then, in
	// a directory it owns (t.TempDir's parents are not open to it).
	data, err := os.MkdirTemp("", "meshca-e2e-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("running as root and there is no postgres user to run the test's PostgreSQL server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		pg.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(data, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	pg.data = filepath.Join(data, "data")
	pg.log = filepath.Join(data, "log")
	pg.run("initdb", "-D", pg.data, "-A", "trust", "-U", "postgres", "--no-sync")
	// A port below the ephemeral range (freeport's), so nothing takes it
	// while the server restarts.
	ports, err := freeport.Ports(1)
	if err != nil {
		t.Fatal(err)
	}
	pg.port = ports[0]
	pg.start()
	t.Cleanup(func() {
		_ = pg.ctl("stop", "-m", "immediate")
		if t.Failed() {
			b, _ := os.ReadFile(pg.log)
			t.Logf("--- postgres log ---\n%s", b)
		}
	})
	return pg
}

func pgVersion(pgCtl string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(pgCtl))))
	return v
}

func (pg *privatePostgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(pg.bin, name), args...)
	if pg.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	}
	cmd.Dir = "/"
	return cmd
}

func (pg *privatePostgres) run(name string, args ...string) {
	pg.t.Helper()
	if out, err := pg.command(name, args...).CombinedOutput(); err != nil {
		pg.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func (pg *privatePostgres) ctl(args ...string) error {
	args = append([]string{"-D", pg.data, "-l", pg.log, "-w"}, args...)
	out, err := pg.command("pg_ctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (pg *privatePostgres) options() string {
	return fmt.Sprintf("-h 127.0.0.1 -p %d -k %s -c fsync=on", pg.port, filepath.Dir(pg.data))
}

func (pg *privatePostgres) start() {
	pg.t.Helper()
	if err := pg.ctl("start", "-o", pg.options()); err != nil {
		pg.t.Fatal(err)
	}
}

func (pg *privatePostgres) stop() {
	pg.t.Helper()
	if err := pg.ctl("stop", "-m", "fast"); err != nil {
		pg.t.Fatal(err)
	}
}

// restart is `pg_ctl restart -m fast`: every session is ended, the server
// shuts down cleanly and comes back.
func (pg *privatePostgres) restart() {
	pg.t.Helper()
	if err := pg.ctl("restart", "-m", "fast", "-o", pg.options()); err != nil {
		pg.t.Fatal(err)
	}
}

func (pg *privatePostgres) dsn() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pg.port)
}

// PostgreSQL itself restarted (twice, and once stopped for longer than a
// lease) while data planes are written through both instances and 10s
// certificates rotate: every write the API acknowledged is in the database
// and reached a watcher in order (its listener caught up), the instances
// reconnect and a leader issues again, and no agent's certificate file ever
// expired (the instances serve what they hold while the database is away).
// Not parallel: it stops and restarts a PostgreSQL server, and its timings
// (a stop longer than a lease, 10s certificates) are kept free of the other
// tests' load.
func TestHAPostgresRestarted(t *testing.T) {
	pg := startPrivatePostgres(t)
	dsn := pg.dsn()
	key, err := secretbox.NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "encryption.key")
	if err := secretbox.WriteKeyFile(keyFile, key); err != nil {
		t.Fatal(err)
	}

	cps := []*controlPlane{startHACP(t, dsn, keyFile)}
	waitFor(t, 10*time.Second, "the first instance leads", func() bool { return cps[0].metric(t, "meshca_leader") == 1 })
	cps = append(cps, startHACP(t, dsn, keyFile))
	cps[1].apply(t, "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n    dpCert:\n      rotation:\n        expiration: 10s\n")
	cps[1].apply(t, dataplanes("default"))
	web := startAgent(t, cps[1], "default", "web-1", "web-1", "--cp-address", cps[1].dp)
	backend := startAgent(t, cps[0], "default", "backend-1", "backend-1", "--cp-address", cps[0].dp)
	web.waitCert(t)
	backend.waitCert(t)

	// A watcher of this process, on a store of its own: it must see every
	// Dataplane created, in order, across the restarts.
	watcher, err := postgres.Open(t.Context(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	wctx, stopWatch := context.WithCancel(t.Context())
	defer stopWatch()
	var seenMu sync.Mutex
	seen := map[string]int64{} // name -> last version seen
	var disorder []string
	events := watcher.Watch(wctx, "Dataplane")
	go func() {
		for ev := range events {
			seenMu.Lock()
			if last, ok := seen[ev.Record.Name]; ok && ev.Record.Version <= last {
				disorder = append(disorder, fmt.Sprintf("%s v%d after v%d", ev.Record.Name, ev.Record.Version, last))
			}
			seen[ev.Record.Name] = ev.Record.Version
			seenMu.Unlock()
		}
	}()

	// Writes through both instances, all along.
	var ackMu sync.Mutex
	var acked []string
	refused := map[string]int{} // why -> count
	wrctx, stopWrites := context.WithCancel(t.Context())
	writesDone := make(chan struct{})
	go func() {
		defer close(writesDone)
		client := &http.Client{Timeout: 10 * time.Second}
		for i := 0; wrctx.Err() == nil; i++ {
			name := fmt.Sprintf("load-%04d", i)
			body := fmt.Sprintf(`{"type":"Dataplane","mesh":"default","name":%q,"networking":{"address":"127.0.0.1","inbound":[{"port":%d,"tags":{"kuma.io/service":"load"}}]}}`, name, 20000+i)
			req, _ := http.NewRequestWithContext(wrctx, http.MethodPut, "http://"+cps[i%2].api+"/meshes/default/dataplanes/"+name, bytes.NewReader([]byte(body)))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			why := ""
			switch {
			case err != nil:
				why = err.Error()
			case resp.StatusCode/100 != 2:
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
				why = fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			if resp != nil {
				resp.Body.Close()
			}
			if err != nil && wrctx.Err() != nil {
				return // the last write, abandoned by stopWrites: neither acknowledged nor refused
			}
			ackMu.Lock()
			if why == "" {
				acked = append(acked, name)
			} else {
				refused[why]++
			}
			ackMu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	ackedCount := func() int {
		ackMu.Lock()
		defer ackMu.Unlock()
		return len(acked)
	}

	serials, watch := watchAgents(t, map[string]*agent{"web": web, "backend": backend})
	issued := `meshca_certificates_issued_total{backend_type="builtin",result="success"}`
	issuedBy := func() float64 {
		var sum float64
		for _, cp := range cps {
			sum += cp.metric(t, issued)
		}
		return sum
	}

	watch(3 * time.Second)
	for round := 1; round <= 2; round++ {
		before := ackedCount()
		began := time.Now()
		pg.restart()
		t.Logf("restart %d: pg_ctl restart -m fast took %v", round, time.Since(began).Round(time.Millisecond))
		watch(8 * time.Second)
		if ackedCount() == before {
			t.Fatalf("no write acknowledged in 8s after restart %d", round)
		}
	}
	// Down for longer than a lease: the leader steps down, the agents keep
	// what they hold.
	pg.stop()
	watch(haLease + time.Second)
	for i, cp := range cps {
		if cp.metric(t, "meshca_leader") != 0 {
			t.Errorf("instance %d still leads with the database down for longer than its lease", i)
		}
	}
	pg.start()
	issuedAt := issuedBy()
	watch(10 * time.Second)
	if got := issuedBy(); got <= issuedAt {
		t.Errorf("no certificate issued in 10s after the database came back (issued %v, then %v)", issuedAt, got)
	}
	stopWrites()
	<-writesDone

	for name, s := range serials {
		if len(s) < 4 {
			t.Errorf("%s held %d certificates in about 30s of 10s certificates, want at least 4", name, len(s))
		}
	}
	ackMu.Lock()
	n := 0
	for why, count := range refused {
		n += count
		if !strings.HasPrefix(why, "503 ") {
			t.Errorf("%d writes refused with %q while the database was away, want 503 (retry)", count, why)
		}
	}
	t.Logf("%d writes acknowledged, %d refused with 503 while the database was away", len(acked), n)
	ackMu.Unlock()

	// Nothing acknowledged is lost: every instance serves every one.
	for i, cp := range cps {
		have := map[string]bool{}
		for _, r := range listDataplanes(t, cp) {
			have[r] = true
		}
		for _, name := range acked {
			if !have[name] {
				t.Errorf("instance %d does not list %s, whose write was acknowledged", i, name)
			}
		}
	}
	// Every acknowledged write reached the watcher, in order.
	waitFor(t, 10*time.Second, "the watcher to see every acknowledged write", func() bool {
		seenMu.Lock()
		defer seenMu.Unlock()
		for _, name := range acked {
			if _, ok := seen[name]; !ok {
				return false
			}
		}
		return true
	})
	seenMu.Lock()
	if len(disorder) > 0 {
		t.Errorf("the watcher saw events out of order: %v", disorder)
	}
	seenMu.Unlock()

	for i, cp := range cps {
		if got := cp.metric(t, "meshca_store_listener_reconnects_total"); got < 3 {
			t.Errorf("instance %d: listener reconnected %v times, want 3", i, got)
		}
		if got := cp.metric(t, "meshca_store_listener_lost_commits_total"); got != 0 {
			t.Errorf("instance %d lost %v commits", i, got)
		}
	}
	// The leader certified every data plane, the ones written while the
	// database restarted included.
	total := len(listDataplanes(t, cps[0]))
	states := func() string {
		var b strings.Builder
		for i, cp := range cps {
			fmt.Fprintf(&b, "instance %d:", i)
			for _, st := range []string{"valid", "expired", "missing", "failing"} {
				fmt.Fprintf(&b, " %s %v", st, cp.metric(t, `meshca_dataplanes_by_cert_state{state="`+st+`"}`))
			}
			b.WriteString("; ")
		}
		return b.String()
	}
	deadline := time.Now().Add(20 * time.Second)
	for cps[0].metric(t, `meshca_dataplanes_by_cert_state{state="valid"}`) != float64(total) ||
		cps[1].metric(t, `meshca_dataplanes_by_cert_state{state="valid"}`) != float64(total) {
		if time.Now().After(deadline) {
			t.Fatalf("not all %d data planes certified 20s after the database came back: %s", total, states())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if leaderOf(t, cps, nil) < 0 {
		t.Error("no leader after the database came back")
	}
	if client, server := handshake(t, web.tlsConfig(t), backend.tlsConfig(t)); client != "spiffe://default/web" || server != "spiffe://default/backend" {
		t.Fatalf("mutual TLS after the restarts saw %q and %q", client, server)
	}
}

// listDataplanes returns the names of mesh default's data planes as cp lists
// them.
func listDataplanes(t *testing.T, cp *controlPlane) []string {
	t.Helper()
	resp, err := http.Get("http://" + cp.api + "/meshes/default/dataplanes?size=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Total int                     `json:"total"`
		Items []struct{ Name string } `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET dataplanes: %d %v", resp.StatusCode, err)
	}
	if list.Total != len(list.Items) {
		t.Fatalf("GET dataplanes: %d of %d on one page", len(list.Items), list.Total)
	}
	names := make([]string, len(list.Items))
	for i, it := range list.Items {
		names[i] = it.Name
	}
	return names
}
