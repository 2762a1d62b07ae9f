// Command loadcp load-tests a real meshca-cp on loopback: it registers many
// dataplanes in one builtin-CA mesh, measures how long until all hold a
// certificate and the control plane's peak RSS, then holds one SDS stream per
// dataplane, rotates every certificate at once and measures push latency.
//
// Run it from inside the meshca module (it builds ./cmd/meshca-cp):
//
//	go run ./bench/loadcp -n 10000
//	go run ./bench/loadcp -n 1000 --store memory --json
//
// Everything runs on 127.0.0.1 with a fresh temporary data directory, which
// is removed at the end; meshca-cp is stopped with SIGTERM.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"meshca/bench/internal/sdsload"
	"meshca/pkg/api"
	"meshca/pkg/meshctl"
	"meshca/pkg/sds"

	"meshca/internal/promtext"
)

// Targets from the issue (for 10,000 dataplanes, ECDSA).
const (
	targetCertified = 10 * time.Second
	targetRSSBytes  = 300e6
	targetPushP99   = time.Second
)

const (
	metricValid     = `meshca_dataplanes_by_cert_state{state="valid"}`
	metricIssued    = `meshca_certificates_issued_total{`
	metricPush      = `meshca_sds_push_latency_seconds`
	pollEvery       = 100 * time.Millisecond
	rssSampleEvery  = 100 * time.Millisecond
	stopGrace       = 15 * time.Second
	defaultServices = 100
)

type config struct {
	n, concurrency, sdsClients, perConn, openLimit, workers, services int
	store, mesh, expiration, rotateExpiration, cpBin, cpLogLevel      string
	profileDir, cpMemLimit                                            string
	timeout                                                           time.Duration
	jsonOut, keep                                                     bool
	// authCompare registers this many dataplanes over plain HTTP and as
	// many over HTTPS with a user token, interleaved (0: skip).
	authCompare int
}

func main() {
	var cfg config
	fs := flag.NewFlagSet("loadcp", flag.ExitOnError)
	fs.IntVar(&cfg.n, "n", 10000, "dataplanes to register")
	fs.IntVar(&cfg.concurrency, "concurrency", 32, "concurrent HTTP API requests (registration, tokens)")
	fs.IntVar(&cfg.sdsClients, "sds-clients", -1, "SDS streams to hold (-1: one per dataplane; 0: skip the SDS phases)")
	fs.IntVar(&cfg.perConn, "streams-per-conn", 100, "SDS streams multiplexed on one gRPC connection")
	fs.IntVar(&cfg.openLimit, "sds-open-concurrency", 256, "SDS streams awaiting their first response at once")
	fs.IntVar(&cfg.workers, "issuance-workers", 0, "meshca-cp --issuance-workers (0: its default)")
	fs.IntVar(&cfg.services, "services", defaultServices, "distinct kuma.io/service values among the dataplanes")
	fs.StringVar(&cfg.store, "store", "sqlite", "meshca-cp --store: sqlite or memory")
	fs.StringVar(&cfg.mesh, "mesh", "default", "mesh name")
	fs.StringVar(&cfg.expiration, "expiration", "1h", "dpCert.rotation.expiration of the mesh")
	fs.StringVar(&cfg.rotateExpiration, "rotate-expiration", "59m", "expiration re-applied to trigger the rotation of every dataplane")
	fs.StringVar(&cfg.cpBin, "cp-bin", "", "a prebuilt meshca-cp (default: go build meshca/cmd/meshca-cp)")
	fs.StringVar(&cfg.cpLogLevel, "cp-log-level", "info", "meshca-cp --log-level (its log goes to a file in the temp dir)")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "bound on the whole run; each phase fails with a clear error when it is reached")
	fs.StringVar(&cfg.cpMemLimit, "cp-memory-limit", "", "meshca-cp --memory-limit (default: its default, auto)")
	fs.StringVar(&cfg.profileDir, "profile-dir", "", "run meshca-cp with --pprof and save its heap (after a GC) and goroutine profiles at the end of each phase into this directory (<phase>.heap.pb.gz, <phase>.goroutine.pb.gz)")
	fs.IntVar(&cfg.authCompare, "auth-compare", 0, "before the main phases, register this many dataplanes (in a mesh without mTLS) over plain HTTP as the loopback admin and as many over HTTPS with a user token bound to a role, interleaved, and report both rates (0: skip)")
	fs.BoolVar(&cfg.jsonOut, "json", false, "print the report as JSON")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the temp dir (data dir and meshca-cp.log)")
	_ = fs.Parse(os.Args[1:])

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := cfg.check(); err != nil {
		fmt.Fprintln(os.Stderr, "loadcp:", err)
		os.Exit(2)
	}
	if err := checkFileLimit(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "loadcp:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep, err := run(ctx, cfg, logger)
	if rep != nil {
		if cfg.jsonOut {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(rep); jerr != nil {
				err = errors.Join(err, fmt.Errorf("encode JSON report: %w", jerr))
			}
		} else {
			rep.writeText(os.Stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadcp:", err)
		os.Exit(1)
	}
	if !rep.allPass() {
		os.Exit(3)
	}
}

func (c *config) check() error {
	switch {
	case c.n < 1:
		return errors.New("-n must be at least 1")
	case c.concurrency < 1:
		return errors.New("--concurrency must be at least 1")
	case c.perConn < 1:
		return errors.New("--streams-per-conn must be at least 1")
	case c.openLimit < 1:
		return errors.New("--sds-open-concurrency must be at least 1")
	case c.services < 1:
		return errors.New("--services must be at least 1")
	case c.store != "sqlite" && c.store != "memory":
		return fmt.Errorf("--store %q: must be sqlite or memory", c.store)
	case c.timeout <= 0:
		return errors.New("--timeout must be positive")
	}
	if c.sdsClients < 0 || c.sdsClients > c.n {
		c.sdsClients = c.n
	}
	for _, d := range []string{c.expiration, c.rotateExpiration} {
		if _, err := api.ParseDuration(d); err != nil {
			return fmt.Errorf("expiration %q: %w", d, err)
		}
	}
	if c.expiration == c.rotateExpiration {
		return errors.New("--rotate-expiration must differ from --expiration (the change triggers the rotation)")
	}
	return nil
}

// runner carries the state of one run.
type runner struct {
	cfg    config
	log    *slog.Logger
	rep    *report
	cp     *cpProcess
	api    *meshctl.Client
	hc     *http.Client
	rss    *rssSampler
	cpuAt  time.Duration // control-plane CPU time at the start of the current phase
	selfAt time.Duration // loadcp's own CPU time at the start of the current phase
	phase0 time.Time
}

func run(ctx context.Context, cfg config, logger *slog.Logger) (*report, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.timeout, fmt.Errorf("--timeout %s reached", cfg.timeout))
	defer cancel()
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)

	r := &runner{cfg: cfg, log: logger, rep: newReport(cfg), rss: &rssSampler{}}
	tmp, err := os.MkdirTemp("", "loadcp-")
	if err != nil {
		return nil, err
	}
	if cfg.keep {
		r.rep.TempDir = tmp
	} else {
		defer os.RemoveAll(tmp)
	}

	bin := cfg.cpBin
	if bin == "" {
		logger.Info("building meshca-cp")
		if bin, err = buildCP(ctx, tmp); err != nil {
			return nil, err
		}
	}
	r.rep.Machine.CPVersion = cpVersion(ctx, bin)

	start := time.Now()
	r.cp, err = startCP(ctx, cpOptions{bin: bin, dataDir: filepath.Join(tmp, "data"), store: cfg.store, logLevel: cfg.cpLogLevel, workers: cfg.workers, pprof: cfg.profileDir != "", memLimit: cfg.cpMemLimit},
		func(err error) { abort(fmt.Errorf("meshca-cp exited unexpectedly (%v)", err)) })
	if err != nil {
		return nil, err
	}
	r.rep.Phases.StartupSeconds = time.Since(start).Seconds()
	logger.Info("meshca-cp ready", "pid", r.cp.cmd.Process.Pid, "api", r.cp.apiURL, "sds", r.cp.sdsAddr, "log", r.cp.logPath)
	stopped := false
	defer func() {
		if !stopped {
			_, _ = r.cp.stop(stopGrace)
		}
	}()

	sampleCtx, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		r.rss.run(sampleCtx, r.cp.cmd.Process.Pid, rssSampleEvery)
	}()

	runErr := r.phases(ctx)
	if runErr != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(runErr, cause) {
			runErr = fmt.Errorf("%w (%v)", runErr, cause)
		}
		r.rep.Error = runErr.Error()
		if tail := r.cp.logTail(15); tail != "" {
			fmt.Fprintf(os.Stderr, "--- last lines of %s ---\n%s\n---\n", r.cp.logPath, tail)
		}
	}

	// Peak RSS as the kernel saw it, before the process goes away.
	if ps, err := readProc(r.cp.cmd.Process.Pid); err == nil {
		r.rep.Memory.PeakHWMMiB = kib2mib(ps.hwmKiB)
		r.rep.Memory.FinalRSSMiB = kib2mib(ps.rssKiB)
		r.rep.CPU.TotalSeconds = ps.cpu.Seconds()
	} else if runErr == nil {
		runErr = fmt.Errorf("read VmHWM of meshca-cp: %w", err)
	}
	stopSampling()
	<-sampled
	maxRSS, n, sampleErr := r.rss.stats()
	r.rep.Memory.SampledMaxRSSMiB, r.rep.Memory.Samples = kib2mib(maxRSS), n
	if n == 0 && sampleErr != nil && runErr == nil {
		runErr = fmt.Errorf("sample VmRSS of meshca-cp: %w", sampleErr)
	}

	took, stopErr := r.cp.stop(stopGrace)
	stopped = true
	r.rep.Phases.ShutdownSeconds = took.Seconds()
	r.rep.CleanShutdown = stopErr == nil
	if stopErr != nil {
		r.rep.Notes = append(r.rep.Notes, "shutdown: "+stopErr.Error())
	}
	r.rep.Machine.LoadAvgEnd = loadAvg()
	r.rep.evaluate()
	return r.rep, runErr
}

// phases runs the measured phases in order.
func (r *runner) phases(ctx context.Context) error {
	hc := &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        r.cfg.concurrency * 2,
			MaxIdleConnsPerHost: r.cfg.concurrency * 2,
			IdleConnTimeout:     30 * time.Second,
		},
	}
	defer hc.CloseIdleConnections()
	r.hc = hc
	var err error
	if r.api, err = meshctl.NewClient(r.cp.apiURL, hc); err != nil {
		return err
	}
	r.beginPhase()

	if r.cfg.authCompare > 0 {
		if err := r.compareAuth(ctx); err != nil {
			return fmt.Errorf("phase auth-compare: %w", err)
		}
		r.endPhase("auth-compare")
	}
	if err := r.createMesh(ctx, r.cfg.expiration); err != nil {
		return fmt.Errorf("phase create-mesh: %w", err)
	}
	r.endPhase("create-mesh")
	if err := r.registerAndCertify(ctx); err != nil {
		return err
	}
	if r.cfg.sdsClients == 0 {
		r.rep.Notes = append(r.rep.Notes, "SDS phases skipped (--sds-clients 0)")
		return nil
	}
	return r.sdsRotation(ctx)
}

func (r *runner) beginPhase() {
	r.phase0 = time.Now()
	if ps, err := readProc(r.cp.cmd.Process.Pid); err == nil {
		r.cpuAt = ps.cpu
	}
	if ps, err := readProc(os.Getpid()); err == nil {
		r.selfAt = ps.cpu
	}
	r.rss.takePhaseMax()
}

// endPhase records the control plane's CPU time and peak RSS during the
// phase just ended and starts the next one.
func (r *runner) endPhase(name string) {
	p := phaseUsage{Name: name, WallSeconds: time.Since(r.phase0).Seconds(), MaxRSSMiB: kib2mib(r.rss.takePhaseMax())}
	if ps, err := readProc(r.cp.cmd.Process.Pid); err == nil {
		p.CPUSeconds = (ps.cpu - r.cpuAt).Seconds()
		r.cpuAt = ps.cpu
		p.MaxRSSMiB = max(p.MaxRSSMiB, kib2mib(ps.rssKiB))
	}
	if ps, err := readProc(os.Getpid()); err == nil {
		p.LoadcpCPUSeconds = (ps.cpu - r.selfAt).Seconds()
		r.selfAt = ps.cpu
	}
	if p.WallSeconds > 0 {
		p.CPUCores = p.CPUSeconds / p.WallSeconds
	}
	// The control plane's Go runtime view, for attributing memory.
	if s, err := promtext.Scrape(context.Background(), r.hc, r.cp.apiURL); err == nil {
		p.Goroutines = int(s["go_goroutines"])
		p.HeapInuseMiB = kib2mib(int64(s["go_memstats_heap_inuse_bytes"]) / 1024)
		p.StackInuseMiB = kib2mib(int64(s["go_memstats_stack_inuse_bytes"]) / 1024)
		p.GCGoalMiB = kib2mib(int64(s["go_memstats_next_gc_bytes"]) / 1024)
		p.HeldMiB = kib2mib(int64(s["go_memstats_sys_bytes"]-s["go_memstats_heap_released_bytes"]) / 1024)
	}
	r.rep.CPU.Phases = append(r.rep.CPU.Phases, p)
	if r.cfg.profileDir != "" {
		if err := r.saveProfiles(name); err != nil {
			r.log.Warn("cannot save profiles", "phase", name, "error", err)
		}
	}
	r.phase0 = time.Now()
}

func (r *runner) createMesh(ctx context.Context, expiration string) error {
	mesh := &api.Mesh{
		Meta: api.Meta{Type: api.TypeMesh, Name: r.cfg.mesh},
		MeshSpec: api.MeshSpec{MTLS: &api.MTLS{
			EnabledBackend: "ca-1",
			Backends: []api.MTLSBackend{{
				Name: "ca-1", Type: "builtin",
				DpCert: &api.DpCert{Rotation: &api.Rotation{Expiration: expiration}, KeyType: api.KeyTypeECDSAP256},
			}},
		}},
	}
	if _, err := r.api.Apply(ctx, mesh, false); err != nil {
		return fmt.Errorf("apply mesh %q: %w", r.cfg.mesh, err)
	}
	return nil
}

func dpName(i int) string { return fmt.Sprintf("dp-%05d", i) }

func (r *runner) dataplane(i int) *api.Dataplane {
	return &api.Dataplane{
		Meta: api.Meta{Type: api.TypeDataplane, Mesh: r.cfg.mesh, Name: dpName(i)},
		DataplaneSpec: api.DataplaneSpec{Networking: api.Networking{
			Address: "127.0.0.1",
			Inbound: []api.Inbound{{
				Port: 20000 + uint32(i%40000), ServicePort: 8080,
				Tags: map[string]string{api.ServiceTag: fmt.Sprintf("svc-%03d", i%r.cfg.services), "loadcp": "true"},
			}},
		}},
	}
}

// registerAndCertify registers every dataplane while a poller watches the
// number of valid certificates.
func (r *runner) registerAndCertify(ctx context.Context) error {
	n := r.cfg.n
	r.log.Info("registering dataplanes", "n", n, "concurrency", r.cfg.concurrency)
	t0 := time.Now()

	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	type pollResult struct {
		at  time.Time
		err error
	}
	certified := make(chan pollResult, 1)
	var lastValid float64
	go func() {
		at, err := r.waitMetric(pollCtx, func(s samples) bool {
			lastValid = s[metricValid]
			return lastValid >= float64(n)
		})
		certified <- pollResult{at, err}
	}()

	var done atomic.Int64
	finished := make([]time.Duration, n) // by completion order
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.concurrency)
	for i := range n {
		g.Go(func() error {
			if _, err := r.api.Apply(gctx, r.dataplane(i), false); err != nil {
				return fmt.Errorf("register dataplane %s: %w", dpName(i), err)
			}
			finished[done.Add(1)-1] = time.Since(t0)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("phase register: %w", err)
	}
	regDone := time.Since(t0)
	r.rep.Phases.Register = &registerStats{
		Seconds: regDone.Seconds(), PerSecond: float64(n) / regDone.Seconds(),
	}
	// Rate per tenth of the registrations: a falling rate means per-request
	// cost grows with the number of dataplanes already registered.
	prev := time.Duration(0)
	for d := 1; d <= 10; d++ {
		end := finished[max(d*n/10-1, 0)]
		cnt := d*n/10 - (d-1)*n/10
		if span := end - prev; span > 0 && cnt > 0 {
			r.rep.Phases.Register.RatePerTenth = append(r.rep.Phases.Register.RatePerTenth, math.Round(float64(cnt)/span.Seconds()))
		}
		prev = end
	}
	if s, err := promtext.Scrape(ctx, r.hc, r.cp.apiURL); err == nil {
		r.rep.Phases.Register.ValidAtEnd = int(s[metricValid])
	}
	r.endPhase("register")
	r.log.Info("registered", "took", regDone.Round(time.Millisecond), "validAtEnd", r.rep.Phases.Register.ValidAtEnd)

	res := <-certified
	if res.err != nil {
		return fmt.Errorf("phase certify: waiting for %d valid certificates (last seen %.0f): %w", n, lastValid, res.err)
	}
	all := res.at.Sub(t0)
	r.rep.Phases.AllCertifiedSeconds = all.Seconds()
	r.rep.Phases.CertifiedAfterRegisterSeconds = max(0, (all - regDone).Seconds())
	r.endPhase("certify (after registration)")
	r.log.Info("all dataplanes certified", "sinceFirstRegistration", all.Round(time.Millisecond))
	return nil
}

// waitMetric scrapes /metrics every pollEvery until done returns true and
// returns the time of that scrape's start.
func (r *runner) waitMetric(ctx context.Context, done func(samples) bool) (time.Time, error) {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		at := time.Now()
		s, err := promtext.Scrape(ctx, r.hc, r.cp.apiURL)
		if err != nil && ctx.Err() != nil {
			return time.Time{}, context.Cause(ctx)
		}
		if err == nil && done(s) {
			return at, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, context.Cause(ctx)
		case <-t.C:
		}
	}
}

// issuedSuccess sums meshca_certificates_issued_total{result="success"}.
func issuedSuccess(s samples) float64 {
	var sum float64
	for k, v := range s {
		if strings.HasPrefix(k, metricIssued) && strings.Contains(k, `result="success"`) {
			sum += v
		}
	}
	return sum
}

// fetchTokens gets one dataplane token per client.
func (r *runner) fetchTokens(ctx context.Context, clients []*sdsload.Client) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.concurrency)
	for _, c := range clients {
		g.Go(func() error {
			var tok []byte
			body := map[string]string{"mesh": c.Mesh, "name": c.Name}
			if _, err := r.api.Do(gctx, http.MethodPost, "/tokens/dataplane", nil, body, &tok); err != nil {
				return fmt.Errorf("token for %s: %w", c.Name, err)
			}
			c.Token = strings.TrimSpace(string(tok))
			if c.Token == "" {
				return fmt.Errorf("token for %s: empty answer", c.Name)
			}
			return nil
		})
	}
	return g.Wait()
}

// sdsRotation opens the SDS streams, waits for first secrets, rotates every
// certificate and measures delivery.
func (r *runner) sdsRotation(ctx context.Context) error {
	k := r.cfg.sdsClients
	clients := make([]*sdsload.Client, k)
	for i := range clients {
		clients[i] = &sdsload.Client{Mesh: r.cfg.mesh, Name: dpName(i)}
	}
	r.log.Info("fetching dataplane tokens", "n", k)
	t := time.Now()
	if err := r.fetchTokens(ctx, clients); err != nil {
		return fmt.Errorf("phase tokens: %w", err)
	}
	r.rep.Phases.TokensSeconds = time.Since(t).Seconds()
	r.endPhase("tokens")

	caPEM, err := os.ReadFile(filepath.Join(r.cp.dataDir, sds.ServerCAFile))
	if err != nil {
		return fmt.Errorf("phase sds-connect: read the SDS server CA: %w", err)
	}
	conns := (k + r.cfg.perConn - 1) / r.cfg.perConn
	r.rep.Config.SDSConnections = conns
	r.log.Info("opening SDS streams", "streams", k, "connections", conns)
	sdsCtx, stopSDS := context.WithCancel(ctx)
	defer stopSDS()
	t = time.Now()
	load, err := sdsload.Start(sdsCtx, r.cp.sdsAddr, caPEM, clients, r.cfg.perConn, r.cfg.openLimit)
	if err != nil {
		return fmt.Errorf("phase sds-connect: %w", err)
	}
	defer load.Wait()
	defer stopSDS()

	if err := waitCount(ctx, func() bool { return load.GotFirst.Load()+load.Failed.Load() >= int64(k) }); err != nil {
		return fmt.Errorf("phase sds-connect: %d of %d streams got their first secrets (%d failed): %w",
			load.GotFirst.Load(), k, load.Failed.Load(), err)
	}
	if f := load.Failed.Load(); f > 0 {
		stopSDS()
		load.Wait()
		return fmt.Errorf("phase sds-connect: %d of %d SDS streams failed, e.g.: %s", f, k, strings.Join(load.FirstErrors(3), "; "))
	}
	r.rep.Phases.SDSConnectSeconds = time.Since(t).Seconds()
	r.endPhase("sds-connect")
	r.log.Info("all SDS streams hold their first secrets", "took", time.Since(t).Round(time.Millisecond))

	before, err := promtext.Scrape(ctx, r.hc, r.cp.apiURL)
	if err != nil {
		return fmt.Errorf("phase rotate: %w", err)
	}
	issued0 := issuedSuccess(before)

	r.log.Info("triggering rotation", "expiration", r.cfg.rotateExpiration)
	trigger := time.Now()
	if err := r.createMesh(ctx, r.cfg.rotateExpiration); err != nil {
		return fmt.Errorf("phase rotate: %w", err)
	}
	rot := &rotationStats{}
	r.rep.Phases.Rotation = rot
	rot.ApplySeconds = time.Since(trigger).Seconds()

	reissued := make(chan error, 1)
	go func() {
		at, err := r.waitMetric(ctx, func(s samples) bool { return issuedSuccess(s)-issued0 >= float64(r.cfg.n) })
		if err == nil {
			rot.AllReissuedSeconds = at.Sub(trigger).Seconds()
		}
		reissued <- err
	}()
	waitErr := waitCount(ctx, func() bool { return load.Rotated.Load()+load.Failed.Load() >= int64(k) })
	clientsDone := time.Since(trigger)
	if err := <-reissued; err != nil && waitErr == nil {
		waitErr = fmt.Errorf("waiting for %d re-issuances: %w", r.cfg.n, err)
	}
	after, scrapeErr := promtext.Scrape(ctx, r.hc, r.cp.apiURL)
	r.endPhase("rotate")
	stopSDS()
	load.Wait()

	var lat []time.Duration
	early := 0
	for _, c := range clients {
		if c.RotatedAt.IsZero() {
			continue
		}
		d := c.RotatedAt.Sub(trigger)
		if d < 0 {
			early++
		}
		lat = append(lat, d)
	}
	rot.Client = summarize(lat)
	rot.AllReceivedSeconds = clientsDone.Seconds()
	if early > 0 {
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("%d clients saw a new certificate before the trigger", early))
	}
	if scrapeErr == nil {
		h := histogramOf(after, before, metricPush)
		rot.Server = serverPush{Count: int(h.count), P50: jsonFloat(h.quantile(0.5)), P90: jsonFloat(h.quantile(0.9)), P99: jsonFloat(h.quantile(0.99))}
		if h.count > 0 {
			rot.Server.Mean = jsonFloat(h.sum / h.count)
		}
		for _, b := range h.buckets {
			rot.Server.Buckets = append(rot.Server.Buckets, histBucket{LE: jsonFloat(b.le), Count: int(b.count)})
		}
	}
	if waitErr != nil {
		return fmt.Errorf("phase rotate: %d of %d streams received a new certificate (%d failed: %s): %w",
			load.Rotated.Load(), k, load.Failed.Load(), strings.Join(load.FirstErrors(3), "; "), waitErr)
	}
	if scrapeErr != nil {
		return fmt.Errorf("phase rotate: %w", scrapeErr)
	}
	r.log.Info("rotation delivered", "took", clientsDone.Round(time.Millisecond))
	return nil
}

// waitCount polls cond every 20 ms until it holds or ctx ends.
func waitCount(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
	return nil
}

func kib2mib(k int64) float64 { return math.Round(float64(k)/1024*10) / 10 }

func cpVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// machineInfo describes the host.
func machineInfo() machine {
	m := machine{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, LoadAvgStart: loadAvg()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kib int64
				if _, err := fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kib); err == nil {
					m.MemTotalMiB = kib2mib(kib)
				}
			}
		}
	}
	return m
}

// loadAvg returns the 1, 5 and 15 minute load averages (the box may be shared).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
