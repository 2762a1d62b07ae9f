// Command haload measures meshca-cp in high availability: N instances on one
// PostgreSQL database against one instance on SQLite, in the same run.
//
//	go run ./bench/haload -dsn postgres://... -n 10000 -instances 3 -kills 10
//
// It builds the real meshca-cp, then (1) starts one instance on SQLite,
// registers -n Dataplanes through its HTTP API and times them until every
// one is certified; (2) empties the database, starts -instances instances
// on it sharing an encryption key, registers -n Dataplanes spread over
// their APIs and times them until every instance serves all certificates;
// (3) with -sds, opens one SDS stream per data plane spread over the
// instances and times a rotation of all as the clients see it; (4) -kills
// times: kill -9 of the leader, then one new Dataplane registered
// on a survivor, timed from the kill until it holds a certificate (that is,
// a new leader elected and issuing), the killed instance restarted before
// the next kill. It reports times and each instance's peak RSS (VmHWM).
// The database is the tool's: its tables are emptied.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"meshca/bench/internal/benchproc"
	"meshca/bench/internal/sdsload"
	"meshca/internal/promtext"
	"meshca/pkg/api"
	"meshca/pkg/meshctl"
	"meshca/pkg/store/postgres"
)

type config struct {
	dsn                string
	n, instances, kill int
	concurrency        int
	sds                bool
	lease, renew       time.Duration
	timeout            time.Duration
	// profileDir, when set, receives a CPU profile of each instance on
	// PostgreSQL over the first profileFor of its certification.
	profileDir string
	profileFor time.Duration
	// pgPID, when set, is the PostgreSQL server's postmaster: its CPU time
	// (and its backends') over the certification is reported.
	pgPID int
	// cpArgs are more meshca-cp flags, for every instance (SQLite's too).
	cpArgs []string
}

func main() {
	var c config
	flag.StringVar(&c.dsn, "dsn", os.Getenv("MESHCA_TEST_POSTGRES_DSN"), "PostgreSQL database the instances share (emptied)")
	flag.IntVar(&c.n, "n", 10000, "dataplanes to register")
	flag.IntVar(&c.instances, "instances", 3, "meshca-cp instances on PostgreSQL")
	flag.IntVar(&c.kill, "kills", 10, "leader kills to time")
	flag.IntVar(&c.concurrency, "concurrency", 32, "concurrent registrations")
	flag.DurationVar(&c.lease, "lease", 5*time.Second, "--leader-lease-duration")
	flag.DurationVar(&c.renew, "renew", time.Second, "--leader-renew-interval")
	flag.BoolVar(&c.sds, "sds", true, "hold one SDS stream per data plane (spread over the instances) and time a rotation of all")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Minute, "bound on the whole run")
	flag.Func("cp-args", "more meshca-cp flags for every instance, SQLite's too (space-separated)", func(v string) error {
		c.cpArgs = append(c.cpArgs, strings.Fields(v)...)
		return nil
	})
	flag.StringVar(&c.profileDir, "profile", "", "directory for CPU profiles (pprof) of the instances on PostgreSQL during their certification")
	flag.DurationVar(&c.profileFor, "profile-for", 8*time.Second, "how much of the certification -profile records")
	flag.IntVar(&c.pgPID, "pg-pid", 0, "PID of the PostgreSQL server's postmaster (head -1 DATADIR/postmaster.pid), to report the CPU time it and its backends used")
	flag.Parse()
	if c.dsn == "" {
		fmt.Fprintln(os.Stderr, "haload: -dsn (or MESHCA_TEST_POSTGRES_DSN) is required")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "haload:", err)
		os.Exit(1)
	}
}

type instance struct {
	name, dataDir string
	api, dp       string
	args          []string
	env           []string
	cmd           *exec.Cmd
	log           *os.File
	done          chan struct{}
	client        *meshctl.Client
}

func run(ctx context.Context, c config) (err error) {
	dir, err := os.MkdirTemp("", "haload-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintf(os.Stderr, "haload: logs kept in %s\n", dir)
		}
	}()
	bin := filepath.Join(dir, "meshca-cp")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "meshca/cmd/meshca-cp").CombinedOutput(); err != nil {
		return fmt.Errorf("go build meshca-cp: %w\n%s", err, out)
	}
	fmt.Printf("haload: n=%d, %d instances, %d kills, lease %v / renew %v, %d CPUs\n", c.n, c.instances, c.kill, c.lease, c.renew, numCPU())

	// 1. One instance on SQLite.
	single, err := start(ctx, bin, dir, "sqlite", nil, c.cpArgs)
	if err != nil {
		return err
	}
	selfBefore := cpuTime(os.Getpid(), false)
	took, registered, _, err := certify(ctx, c, []*instance{single})
	rss, cpu := vmHWM(single), cpuTime(single.cmd.Process.Pid, false)
	self := cpuTime(os.Getpid(), false) - selfBefore
	single.stop()
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	fmt.Printf("1 instance, SQLite:      all %d certified in %v (all registered after %v); peak RSS %s; CPU %.1f s (load tool %.1f s)\n",
		c.n, took.Round(time.Millisecond), registered.Round(time.Millisecond), rss, cpu.Seconds(), self.Seconds())

	// 2. N instances on PostgreSQL.
	if err := emptyDatabase(ctx, c.dsn); err != nil {
		return err
	}
	keyFile := filepath.Join(dir, "encryption.key")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return err
	}
	env := []string{"MESHCA_STORE=postgres", "MESHCA_STORE_DSN=" + c.dsn}
	args := append([]string{"--encryption-key-file", keyFile, "--leader-lease-duration", c.lease.String(), "--leader-renew-interval", c.renew.String()}, c.cpArgs...)
	if c.profileDir != "" {
		args = append(args, "--pprof")
	}
	var cps []*instance
	defer func() {
		for _, cp := range cps {
			cp.stop()
		}
	}()
	for i := range c.instances {
		cp, err := start(ctx, bin, dir, fmt.Sprintf("pg-%d", i), env, args)
		if err != nil {
			return err
		}
		cps = append(cps, cp)
	}
	var profiles errgroup.Group
	if c.profileDir != "" {
		for _, cp := range cps {
			profiles.Go(func() error {
				return cpuProfile(ctx, cp, c.profileFor, filepath.Join(c.profileDir, cp.name+".cpu.pprof"))
			})
		}
	}
	cpuBefore := make([]time.Duration, len(cps))
	for i, cp := range cps {
		cpuBefore[i] = cpuTime(cp.cmd.Process.Pid, false)
	}
	var pgBefore time.Duration
	if c.pgPID != 0 {
		pgBefore = cpuTime(c.pgPID, true)
	}
	selfBefore = cpuTime(os.Getpid(), false)
	took2, registered2, each, err := certify(ctx, c, cps)
	self = cpuTime(os.Getpid(), false) - selfBefore
	if perr := profiles.Wait(); perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	var rsses, cpus, served []string
	for i, cp := range cps {
		served = append(served, fmt.Sprintf("%s %v", cp.name, each[i].Round(time.Millisecond)))
		rsses = append(rsses, cp.name+" "+vmHWM(cp))
		cpus = append(cpus, fmt.Sprintf("%s %.1f s", cp.name, (cpuTime(cp.cmd.Process.Pid, false)-cpuBefore[i]).Seconds()))
	}
	if c.pgPID != 0 {
		cpus = append(cpus, fmt.Sprintf("PostgreSQL %.1f s", (cpuTime(c.pgPID, true)-pgBefore).Seconds()))
	}
	cpus = append(cpus, fmt.Sprintf("load tool %.1f s", self.Seconds()))
	fmt.Printf("%d instances, PostgreSQL: all %d certified (served by every instance) in %v (%.2fx the SQLite time; all registered after %v; each served all after: %s); peak RSS %s; CPU %s\n",
		c.instances, c.n, took2.Round(time.Millisecond), took2.Seconds()/took.Seconds(), registered2.Round(time.Millisecond), strings.Join(served, ", "), strings.Join(rsses, ", "), strings.Join(cpus, ", "))

	// 3. SDS: every data plane streaming from one of the instances, a
	// rotation of all, measured as the clients see it.
	if c.sds {
		if err := sdsRotation(ctx, c, cps); err != nil {
			return fmt.Errorf("sds: %w", err)
		}
	}

	// 4. Failover.
	var times []time.Duration
	for k := range c.kill {
		d, err := failover(ctx, cps, k)
		if err != nil {
			return fmt.Errorf("kill %d: %w", k+1, err)
		}
		times = append(times, d)
		fmt.Printf("kill %d: first certificate from the new leader %v after kill -9\n", k+1, d.Round(time.Millisecond))
	}
	if len(times) > 0 {
		slices.Sort(times)
		fmt.Printf("failover (kill -9 of the leader -> first certificate issued by the new leader), %d kills: p50 %v, p99 %v, min %v\n",
			len(times), times[(len(times)-1)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond), times[0].Round(time.Millisecond))
	}
	return nil
}

func start(ctx context.Context, bin, dir, name string, env, args []string) (*instance, error) {
	cp := &instance{name: name, dataDir: filepath.Join(dir, name), env: env}
	cp.api, cp.dp = freeAddr(), freeAddr()
	store := "sqlite"
	if env != nil {
		store = "postgres"
	}
	cp.args = append([]string{"run", "--store", store, "--data-dir", cp.dataDir, "--api-address", cp.api, "--dp-server-address", cp.dp, "--api-tls-address", ""}, args...)
	var err error
	// Connections are kept for every concurrent registration (the default
	// keeps 2 per host): otherwise most registrations open a connection of
	// their own, and the instances spend their CPU on accepting them.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	if cp.client, err = meshctl.NewClient("http://"+cp.api, &http.Client{Timeout: 30 * time.Second, Transport: tr}); err != nil {
		return nil, err
	}
	return cp, cp.launch(ctx, bin)
}

func (cp *instance) launch(ctx context.Context, bin string) error {
	log, err := os.OpenFile(filepath.Join(filepath.Dir(cp.dataDir), cp.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cp.log = log
	cp.cmd = exec.Command(bin, cp.args...)
	cp.cmd.Env = append(os.Environ(), cp.env...)
	cp.cmd.Stdout, cp.cmd.Stderr = log, log
	if err := cp.cmd.Start(); err != nil {
		return err
	}
	cp.done = make(chan struct{})
	go func() { _ = cp.cmd.Wait(); close(cp.done) }()
	for ctx.Err() == nil {
		if resp, err := http.Get("http://" + cp.api + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-cp.done:
			return fmt.Errorf("%s exited at start (log %s)", cp.name, log.Name())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return ctx.Err()
}

func (cp *instance) stop() {
	select {
	case <-cp.done:
	default:
		_ = cp.cmd.Process.Signal(syscall.SIGTERM)
		<-cp.done
	}
	cp.log.Close()
}

// cpuProfile saves cp's CPU profile over the next d.
func cpuProfile(ctx context.Context, cp *instance, d time.Duration, file string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", cp.api, int(d.Seconds()))
	if err := benchproc.SaveURL(ctx, http.DefaultClient, url, file); err != nil {
		return fmt.Errorf("profile %s: %w", cp.name, err)
	}
	return nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func emptyDatabase(ctx context.Context, dsn string) error {
	st, err := postgres.Open(ctx, dsn, nil) // migrates
	if err != nil {
		return err
	}
	_ = st.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, `TRUNCATE resources, changes, leader_lease, control_planes`)
	return err
}

func dataplane(name string, i int) *api.Dataplane {
	return &api.Dataplane{
		Meta: api.Meta{Type: api.TypeDataplane, Mesh: "default", Name: name},
		DataplaneSpec: api.DataplaneSpec{Networking: api.Networking{
			Address: "127.0.0.1",
			Inbound: []api.Inbound{{Port: 20000 + uint32(i%40000), ServicePort: 8080,
				Tags: map[string]string{api.ServiceTag: fmt.Sprintf("svc-%03d", i%100)}}},
		}},
	}
}

const validMetric = `meshca_dataplanes_by_cert_state{state="valid"}`

// certify creates the mesh, registers c.n data planes round-robin over the
// instances and returns the time from the first registration until every
// instance reports all of them certified, and until the last registration
// was answered.
func certify(ctx context.Context, c config, cps []*instance) (certified, registered time.Duration, each []time.Duration, err error) {
	mesh := &api.Mesh{Meta: api.Meta{Type: api.TypeMesh, Name: "default"}, MeshSpec: api.MeshSpec{MTLS: &api.MTLS{
		EnabledBackend: "ca-1",
		Backends:       []api.MTLSBackend{{Name: "ca-1", Type: "builtin", DpCert: &api.DpCert{Rotation: &api.Rotation{Expiration: "1h"}, KeyType: api.KeyTypeECDSAP256}}},
	}}}
	if _, err := cps[0].client.Apply(ctx, mesh, false); err != nil {
		return 0, 0, nil, fmt.Errorf("apply mesh: %w", err)
	}
	t0 := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.concurrency)
	var next atomic.Int64
	for i := range c.n {
		g.Go(func() error {
			cp := cps[int(next.Add(1))%len(cps)]
			if _, err := cp.client.Apply(gctx, dataplane(fmt.Sprintf("dp-%05d", i), i), false); err != nil {
				return fmt.Errorf("register dp-%05d on %s: %w", i, cp.name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, nil, err
	}
	registered = time.Since(t0)
	// Every instance watched at once: when each served all says whether
	// the leader's issuing or the followers' following is the tail.
	each = make([]time.Duration, len(cps))
	w, wctx := errgroup.WithContext(ctx)
	for i, cp := range cps {
		w.Go(func() error {
			for {
				s, err := promtext.Scrape(wctx, http.DefaultClient, "http://"+cp.api)
				if err == nil && s.Get(validMetric) >= float64(c.n) {
					each[i] = time.Since(t0)
					return nil
				}
				if wctx.Err() != nil {
					return fmt.Errorf("%s: waiting for %d valid certificates: %w", cp.name, c.n, wctx.Err())
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	if err := w.Wait(); err != nil {
		return 0, 0, nil, err
	}
	return slices.Max(each), registered, each, nil
}

// failover kills the leader, registers a data plane on a survivor and times
// the kill until that data plane is certified; then restarts the killed one.
func failover(ctx context.Context, cps []*instance, k int) (time.Duration, error) {
	leader := -1
	for i, cp := range cps {
		s, err := promtext.Scrape(ctx, http.DefaultClient, "http://"+cp.api)
		if err == nil && s.Get("meshca_leader") == 1 {
			leader = i
		}
	}
	if leader < 0 {
		return 0, errors.New("no leader")
	}
	survivor := cps[(leader+1)%len(cps)]
	killed := cps[leader]
	t0 := time.Now()
	_ = killed.cmd.Process.Kill()
	<-killed.done
	name := "failover-" + strconv.Itoa(k)
	if _, err := survivor.client.Apply(ctx, dataplane(name, 39000+k), false); err != nil {
		return 0, fmt.Errorf("register %s: %w", name, err)
	}
	for {
		if ok, _ := certified(ctx, survivor, name); ok {
			break
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("%s not certified after killing %s (leader): %w", name, killed.name, ctx.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	d := time.Since(t0)
	killed.log.Close()
	restart := time.Now()
	if err := killed.launch(ctx, killed.cmd.Path); err != nil {
		return d, err
	}
	fmt.Printf("  (%s restarted, ready after %v)\n", killed.name, time.Since(restart).Round(time.Millisecond))
	return d, nil
}

func certified(ctx context.Context, cp *instance, name string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cp.api+"/meshes/default/dataplanes/"+name+"/_overview", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.Contains(b.String(), `"serial"`), nil
}

// vmHWM returns the instance's peak RSS, read from /proc.
func vmHWM(cp *instance) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", cp.cmd.Process.Pid))
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return fmt.Sprintf("%.0f MiB", float64(kb)/1024)
		}
	}
	return "?"
}

// cpuTime is the user and system CPU time process pid used; with server,
// also that of its children: the ones it reaped (a PostgreSQL backend that
// ended) and the ones alive.
func cpuTime(pid int, server bool) time.Duration {
	ticks := func(pid int, reaped bool) int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0
		}
		// Fields after the command name (in parentheses, may hold spaces):
		// state is field 3, utime 14, stime 15, cutime 16, cstime 17.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 15 {
			return 0
		}
		var sum int64
		last := 12
		if reaped {
			last = 14
		}
		for _, v := range f[11 : last+1] {
			n, _ := strconv.ParseInt(v, 10, 64)
			sum += n
		}
		return sum
	}
	total := ticks(pid, server)
	if server {
		procs, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
			if len(f) > 1 && f[1] == strconv.Itoa(pid) {
				child, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				total += ticks(child, false)
			}
		}
	}
	return time.Duration(total) * time.Second / 100 // USER_HZ
}

func numCPU() int {
	out, _ := exec.Command("nproc").Output()
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

// sdsRotation fetches a token per data plane, opens its SDS stream on
// instance i%N, re-applies the mesh with another lifetime (every certificate
// re-issued by the leader) and reports when the clients received theirs.
func sdsRotation(ctx context.Context, c config, cps []*instance) error {
	clients := make([]*sdsload.Client, c.n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.concurrency)
	for i := range clients {
		clients[i] = &sdsload.Client{Mesh: "default", Name: fmt.Sprintf("dp-%05d", i)}
		g.Go(func() error {
			var tok []byte
			body := map[string]string{"mesh": "default", "name": clients[i].Name}
			if _, err := cps[i%len(cps)].client.Do(gctx, http.MethodPost, "/tokens/dataplane", nil, body, &tok); err != nil {
				return fmt.Errorf("token for %s: %w", clients[i].Name, err)
			}
			clients[i].Token = strings.TrimSpace(string(tok))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var loads []*sdsload.Load
	defer func() {
		stop()
		for _, l := range loads {
			l.Wait()
		}
	}()
	for i, cp := range cps {
		caPEM, err := os.ReadFile(filepath.Join(cp.dataDir, "dp-server-ca.pem"))
		if err != nil {
			return err
		}
		var mine []*sdsload.Client
		for j := i; j < len(clients); j += len(cps) {
			mine = append(mine, clients[j])
		}
		l, err := sdsload.Start(sctx, cp.dp, caPEM, mine, streamsPerConn, openLimit)
		if l != nil {
			loads = append(loads, l)
		}
		if err != nil {
			return err
		}
	}
	count := func(f func(*sdsload.Load) int64) int64 {
		var n int64
		for _, l := range loads {
			n += f(l)
		}
		return n
	}
	for count(func(l *sdsload.Load) int64 { return l.GotFirst.Load() + l.Failed.Load() }) < int64(c.n) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f := count(func(l *sdsload.Load) int64 { return l.Failed.Load() }); f > 0 {
		return fmt.Errorf("%d SDS streams failed", f)
	}
	mesh := &api.Mesh{Meta: api.Meta{Type: api.TypeMesh, Name: "default"}, MeshSpec: api.MeshSpec{MTLS: &api.MTLS{
		EnabledBackend: "ca-1",
		Backends:       []api.MTLSBackend{{Name: "ca-1", Type: "builtin", DpCert: &api.DpCert{Rotation: &api.Rotation{Expiration: "59m"}, KeyType: api.KeyTypeECDSAP256}}},
	}}}
	before := pushBuckets(ctx, cps)
	trigger := time.Now()
	if _, err := cps[0].client.Apply(ctx, mesh, false); err != nil {
		return fmt.Errorf("re-apply mesh: %w", err)
	}
	for count(func(l *sdsload.Load) int64 { return l.Rotated.Load() + l.Failed.Load() }) < int64(c.n) {
		if ctx.Err() != nil {
			return fmt.Errorf("%d of %d clients got their new certificate: %w", count(func(l *sdsload.Load) int64 { return l.Rotated.Load() }), c.n, ctx.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
	all := time.Since(trigger)
	lat := make([]time.Duration, 0, len(clients))
	for _, cl := range clients {
		lat = append(lat, cl.RotatedAt.Sub(trigger))
	}
	slices.Sort(lat)
	q := func(f float64) time.Duration { return lat[int(f*float64(len(lat)-1))].Round(time.Millisecond) }
	fmt.Printf("rotation of all %d, %d SDS streams spread over %d instances: received by all %v after the trigger; per client p50 %v, p99 %v\n",
		c.n, c.n, len(cps), all.Round(time.Millisecond), q(0.5), q(0.99))
	after := pushBuckets(ctx, cps)
	fmt.Printf("  server view (certificate changed on the instance -> response sent), all instances: p50 <= %s, p99 <= %s\n",
		bucketQuantile(before, after, 0.5), bucketQuantile(before, after, 0.99))
	var rsses []string
	for _, cp := range cps {
		rsses = append(rsses, cp.name+" "+vmHWM(cp))
	}
	fmt.Printf("peak RSS with the streams and the rotation: %s\n", strings.Join(rsses, ", "))
	return nil
}

const pushBucket = `meshca_sds_push_latency_seconds_bucket{le="`

// pushBuckets sums the SDS push latency histogram's cumulative buckets over
// the instances, by upper bound.
func pushBuckets(ctx context.Context, cps []*instance) map[float64]float64 {
	out := map[float64]float64{}
	for _, cp := range cps {
		s, err := promtext.Scrape(ctx, http.DefaultClient, "http://"+cp.api)
		if err != nil {
			continue
		}
		for k, v := range s {
			if le, ok := strings.CutPrefix(k, pushBucket); ok {
				bound, err := strconv.ParseFloat(strings.TrimSuffix(le, `"}`), 64)
				if err == nil || strings.HasPrefix(le, "+Inf") {
					if err != nil {
						bound = 1e18
					}
					out[bound] += v
				}
			}
		}
	}
	return out
}

// bucketQuantile returns the upper bound of the bucket holding quantile q of
// the pushes between two scrapes.
func bucketQuantile(before, after map[float64]float64, q float64) string {
	bounds := make([]float64, 0, len(after))
	for b := range after {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return "?"
	}
	total := after[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	for _, b := range bounds {
		if after[b]-before[b] >= q*total {
			if b >= 1e18 {
				return "+Inf"
			}
			return (time.Duration(b * float64(time.Second))).String()
		}
	}
	return "?"
}

// The SDS clients' connections: streamsPerConn streams per gRPC connection,
// at most openLimit awaiting their first secrets at a time.
const (
	streamsPerConn = 100
	openLimit      = 128
)
