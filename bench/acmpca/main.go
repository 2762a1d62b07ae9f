// Command acmpca is the ACM Private CA issuance benchmark: it certifies N
// data planes through acmpca-local (with ACM's IssueCertificate quota) and
// the acmpca backend of meshca-cp, and checks the result against the floor
// set by the request budget.
//
//	go run ./bench/acmpca -n 1000 -issue-rate 25 -max-rps 25
//	go run ./bench/acmpca -n 1000 -issue-rate 25 -max-rps 0   # backend default (20/s)
//
// It builds acmpca-local and meshca-cp from the module it is run in, starts
// them on free loopback ports with temporary directories, applies a Mesh
// whose enabled backend is acmpca (caCert inline), registers N Dataplanes
// through the HTTP API, and measures the time from the first registration to
// N data planes in state valid (meshca_dataplanes_by_cert_state). Then it
// reads the emulator's counters (/_acmpca-local/stats) and the control
// plane's metrics and prints a report with PASS/FAIL per target:
//
//   - time within -slack (10 %) of the floor N / min(issue-rate, max-rps);
//   - no issuance failure surfaced to data planes
//     (meshca_certificates_issued_total{backend_type="acmpca",result="error"} = 0);
//   - exactly N certificates billed (the emulator's "issued").
//
// The report also prints the host's load and the CPU time both processes
// used, because the floor is only reachable when neither is CPU-starved:
// acmpca-local rewrites (and fsyncs) its whole state.json on every
// IssueCertificate, so its cost per certificate grows with the number
// already issued.
//
// Exit status: 0 when every target passes, 1 when one fails, 2 on a setup
// error.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"meshca/internal/promtext"
)

const (
	caARN     = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/12345678-1234-1234-1234-123456789012"
	accessKey = "AKIABENCHEXAMPLE"
	secretKey = "bench-secret-example"
	mesh      = "default"
	// defaultBackendRPS is pkg/ca/acmpca.DefaultMaxRequestsPerSecond, used
	// for the floor when -max-rps is 0 (conf.maxRequestsPerSecond omitted).
	defaultBackendRPS = 20.0
	pollEvery         = 100 * time.Millisecond
)

type config struct {
	n, concurrency, workers int
	issueRate, getRate      float64
	maxRPS                  float64
	inProgress              time.Duration
	slack                   float64
	timeout                 time.Duration
	keep                    bool
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 1000, "number of data planes to certify")
	flag.Float64Var(&c.issueRate, "issue-rate", 25, "acmpca-local IssueCertificate quota per second (ACM's default)")
	flag.Float64Var(&c.getRate, "get-rate", 75, "acmpca-local GetCertificate quota per second (ACM's default)")
	flag.DurationVar(&c.inProgress, "in-progress", 0, "how long acmpca-local answers RequestInProgressException to GetCertificate after issuance")
	flag.Float64Var(&c.maxRPS, "max-rps", 25, "conf.maxRequestsPerSecond of the backend (0 = omit it: the backend's default, 20)")
	flag.IntVar(&c.concurrency, "concurrency", 32, "concurrent dataplane registrations")
	flag.IntVar(&c.workers, "issuance-workers", 0, "meshca-cp --issuance-workers (0 = its default)")
	flag.Float64Var(&c.slack, "slack", 0.10, "allowed excess over the floor (0.10 = 10 %)")
	flag.DurationVar(&c.timeout, "timeout", 5*time.Minute, "give up waiting for certification after this long")
	flag.BoolVar(&c.keep, "keep", false, "keep the temporary directory (logs, state)")
	flag.Parse()
	if c.n < 1 || c.concurrency < 1 || c.maxRPS < 0 || c.issueRate < 0 || c.slack < 0 {
		fmt.Fprintln(os.Stderr, "acmpca bench: -n and -concurrency must be positive; -max-rps, -issue-rate and -slack not negative")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	rep, err := run(ctx, c)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "acmpca bench:", err)
		os.Exit(2)
	}
	rep.print(os.Stdout)
	if !rep.passed() {
		os.Exit(1)
	}
}

// proc is a started binary logging to a file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(dir, bin string, env []string, args ...string) (*proc, error) {
	name := filepath.Base(bin)
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

// stop sends SIGTERM and kills after 10 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitUntil polls ok every 50 ms until it returns true, p exits, or d passes.
func waitUntil(ctx context.Context, d time.Duration, what string, p *proc, ok func() bool) error {
	deadline := time.Now().Add(d)
	for {
		if ok() {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited while waiting for %s:\n%s", p.name, what, p.tail(20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}

func doJSON(ctx context.Context, method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func run(ctx context.Context, c config) (*report, error) {
	dir, err := os.MkdirTemp("", "meshca-bench-acmpca-")
	if err != nil {
		return nil, err
	}
	if c.keep {
		defer fmt.Fprintln(os.Stderr, "kept", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, a...)...)
	}

	logf("building acmpca-local and meshca-cp")
	binDir := filepath.Join(dir, "bin")
	build := exec.CommandContext(ctx, "go", "build", "-o", binDir+string(filepath.Separator), "meshca/cmd/acmpca-local", "meshca/cmd/meshca-cp")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build (run from inside the meshca module): %w\n%s", err, out)
	}

	// acmpca-local, on a port it picks.
	addrFile := filepath.Join(dir, "acmpca.addr")
	pca, err := start(dir, filepath.Join(binDir, "acmpca-local"), nil, "run",
		"--address", "127.0.0.1:0", "--address-file", addrFile, "--state-dir", filepath.Join(dir, "acmpca"),
		"--ca", "arn="+caARN+",type=ROOT,key=EC_prime256v1,mode=GENERAL_PURPOSE",
		"--credentials", accessKey+":"+secretKey,
		"--issue-rate", fmt.Sprint(c.issueRate), "--get-rate", fmt.Sprint(c.getRate),
		"--in-progress", c.inProgress.String(), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	defer pca.stop()
	var pcaAddr string
	if err := waitUntil(ctx, 30*time.Second, "acmpca-local to listen", pca, func() bool {
		b, err := os.ReadFile(addrFile)
		pcaAddr = strings.TrimSpace(string(b))
		return err == nil && pcaAddr != ""
	}); err != nil {
		return nil, err
	}
	pcaURL := "http://" + pcaAddr
	chain, err := os.ReadFile(filepath.Join(dir, "acmpca", caARN[strings.LastIndexByte(caARN, '/')+1:]+"-chain.pem"))
	if err != nil {
		return nil, fmt.Errorf("CA chain written by acmpca-local: %w", err)
	}

	// meshca-cp, with static credentials from the environment (the mesh
	// sets no conf.auth: the default AWS chain finds them).
	apiAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	dpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"run", "--data-dir", filepath.Join(dir, "cp"), "--api-address", apiAddr, "--dp-server-address", dpAddr, "--api-tls-address", "127.0.0.1:0", "--log-level", "warn"}
	if c.workers > 0 {
		args = append(args, "--issuance-workers", fmt.Sprint(c.workers))
	}
	cp, err := start(dir, filepath.Join(binDir, "meshca-cp"), []string{
		"AWS_ENDPOINT_URL_ACM_PCA=" + pcaURL, "AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=" + accessKey, "AWS_SECRET_ACCESS_KEY=" + secretKey, "AWS_SESSION_TOKEN=",
		"AWS_PROFILE=", "AWS_EC2_METADATA_DISABLED=true",
	}, args...)
	if err != nil {
		return nil, err
	}
	defer cp.stop()
	apiURL := "http://" + apiAddr
	if err := waitUntil(ctx, 30*time.Second, "meshca-cp /readyz", cp, func() bool {
		return doJSON(ctx, http.MethodGet, apiURL+"/readyz", nil, nil) == nil
	}); err != nil {
		return nil, err
	}

	conf := map[string]any{
		"arn":        caARN,
		"commonName": `{{ tag "kuma.io/service" }}.mesh`,
		"caCert":     map[string]string{"inline": base64.StdEncoding.EncodeToString(chain)},
	}
	if c.maxRPS > 0 {
		conf["maxRequestsPerSecond"] = c.maxRPS
	}
	meshRes := map[string]any{
		"type": "Mesh", "name": mesh,
		"mtls": map[string]any{
			"enabledBackend": "acmpca-1",
			"backends": []any{map[string]any{
				"name": "acmpca-1", "type": "acmpca",
				"dpCert": map[string]any{"rotation": map[string]string{"expiration": "24h"}},
				"conf":   conf,
			}},
		},
	}
	if err := doJSON(ctx, http.MethodPut, apiURL+"/meshes/"+mesh, meshRes, nil); err != nil {
		return nil, fmt.Errorf("apply mesh: %w", err)
	}
	pre, err := promtext.Scrape(ctx, hc, apiURL)
	if err != nil {
		return nil, err
	}
	preStats, err := emuStats(ctx, pcaURL)
	if err != nil {
		return nil, err
	}

	effRPS := c.maxRPS
	if effRPS == 0 {
		effRPS = defaultBackendRPS
	}
	floorRate := effRPS
	if c.issueRate > 0 && c.issueRate < floorRate {
		floorRate = c.issueRate
	}
	rep := &report{
		cfg: c, args: os.Args[1:], effRPS: effRPS,
		floor: time.Duration(float64(c.n) / floorRate * float64(time.Second)),
	}
	rep.target = time.Duration(float64(rep.floor) * (1 + c.slack))

	logf("registering %d dataplanes (concurrency %d); max-rps %v, issue-rate %v/s, floor %v", c.n, c.concurrency, effRPS, c.issueRate, rep.floor)
	runCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	rep.cpus, rep.loadStart = runtime.NumCPU(), loadAvg()
	cpCPU0, pcaCPU0 := cpuSeconds(cp.cmd.Process.Pid), cpuSeconds(pca.cmd.Process.Pid)
	t0 := time.Now()
	regErr := make(chan error, 1)
	go func() { regErr <- register(runCtx, apiURL, c, func(d time.Duration) { rep.registered = d }, t0) }()

	var last samples
	var lastLog time.Time
	for {
		s, err := promtext.Scrape(runCtx, hc, apiURL)
		if err == nil {
			last = s
			if s.Get(`meshca_dataplanes_by_cert_state{state="valid"}`) >= float64(c.n) {
				rep.certified = time.Since(t0)
				break
			}
			if time.Since(lastLog) > 5*time.Second {
				lastLog = time.Now()
				logf("t+%5.1fs valid=%.0f failing=%.0f missing=%.0f", time.Since(t0).Seconds(),
					s.Get(`meshca_dataplanes_by_cert_state{state="valid"}`), s.Get(`meshca_dataplanes_by_cert_state{state="failing"}`),
					s.Get(`meshca_dataplanes_by_cert_state{state="missing"}`))
			}
		}
		if cp.exited() {
			return nil, fmt.Errorf("meshca-cp exited:\n%s", cp.tail(20))
		}
		select {
		case err := <-regErr:
			if err != nil {
				return nil, fmt.Errorf("register: %w", err)
			}
			regErr = nil // registration done; keep polling
			continue
		case <-runCtx.Done():
			rep.timedOut = true
			rep.certified = time.Since(t0)
		case <-time.After(pollEvery):
			continue
		}
		break
	}
	if regErr != nil {
		if err := <-regErr; err != nil && !rep.timedOut {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	rep.loadEnd = loadAvg()
	rep.cpCPU = cpuSeconds(cp.cmd.Process.Pid) - cpCPU0
	rep.pcaCPU = cpuSeconds(pca.cmd.Process.Pid) - pcaCPU0
	if rep.timedOut {
		logf("timed out after %v with %.0f valid", c.timeout, last.Get(`meshca_dataplanes_by_cert_state{state="valid"}`))
	} else {
		logf("all %d certified after %v; letting counters settle", c.n, rep.certified.Round(time.Millisecond))
	}
	// A late duplicate issuance would show up within a few seconds.
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(2 * time.Second):
	}
	post, err := promtext.Scrape(ctx, hc, apiURL)
	if err != nil {
		return nil, err
	}
	postStats, err := emuStats(ctx, pcaURL)
	if err != nil {
		return nil, err
	}
	rep.fill(pre, post, preStats, postStats)
	return rep, nil
}

// register PUTs c.n dataplanes with bounded concurrency.
func register(ctx context.Context, apiURL string, c config, done func(time.Duration), t0 time.Time) error {
	sem := make(chan struct{}, c.concurrency)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for i := range c.n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("dp-%05d", i)
			dp := map[string]any{
				"type": "Dataplane", "mesh": mesh, "name": name,
				"networking": map[string]any{
					"address": "127.0.0.1",
					"inbound": []any{map[string]any{
						"port": 20000 + i%40000, "servicePort": 8080,
						"tags": map[string]string{"kuma.io/service": fmt.Sprintf("svc-%03d", i%50)},
					}},
				},
			}
			if err := doJSON(ctx, http.MethodPut, apiURL+"/meshes/"+mesh+"/dataplanes/"+name, dp, nil); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("dataplane %s: %w", name, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	done(time.Since(t0))
	return first
}

// stats is the part of /_acmpca-local/stats the report uses.
type stats struct {
	Issued   int64                       `json:"issued"`
	Requests map[string]map[string]int64 `json:"requests"`
}

func emuStats(ctx context.Context, pcaURL string) (stats, error) {
	var s stats
	err := doJSON(ctx, http.MethodGet, pcaURL+"/_acmpca-local/stats", nil, &s)
	return s, err
}

func (s stats) req(op, outcome string) int64 { return s.Requests[op][outcome] }

func (s stats) total(op string) int64 {
	var n int64
	for _, v := range s.Requests[op] {
		n += v
	}
	return n
}

type report struct {
	cfg               config
	args              []string
	effRPS            float64
	floor, target     time.Duration
	registered        time.Duration
	certified         time.Duration
	timedOut          bool
	valid, failing    float64
	surfacedErrors    float64
	meshcaThrottles   map[string]float64
	meshcaRequests    map[string]float64
	meshcaBilled      float64
	emuIssued         int64
	emuIssueOK        int64
	emuIssueThrottled int64
	emuGetOK          int64
	emuGetThrottled   int64
	emuGetInProgress  int64
	emuIssueTotal     int64
	emuGetTotal       int64
	budgetWaitAvg     float64
	budgetWaitCount   float64
	// Host contention: other processes compete with the two under test.
	cpus               int
	loadStart, loadEnd string
	cpCPU, pcaCPU      float64
}

func (r *report) fill(pre, post samples, a, b stats) {
	d := func(name string) float64 { return post.Get(name) - pre.Get(name) }
	r.valid = post.Get(`meshca_dataplanes_by_cert_state{state="valid"}`)
	r.failing = post.Get(`meshca_dataplanes_by_cert_state{state="failing"}`)
	r.surfacedErrors = post.SumWhere("meshca_certificates_issued_total", `backend_type="acmpca"`, `result="error"`) -
		pre.SumWhere("meshca_certificates_issued_total", `backend_type="acmpca"`, `result="error"`)
	r.meshcaThrottles = post.ByLabel("meshca_acmpca_throttles_total", "operation")
	r.meshcaRequests = post.ByLabel("meshca_acmpca_requests_total", "operation")
	r.meshcaBilled = post.SumWhere("meshca_acmpca_certificates_issued_total") - pre.SumWhere("meshca_acmpca_certificates_issued_total")
	r.budgetWaitCount = d("meshca_acmpca_rate_limit_wait_seconds_count")
	if r.budgetWaitCount > 0 {
		r.budgetWaitAvg = d("meshca_acmpca_rate_limit_wait_seconds_sum") / r.budgetWaitCount
	}
	r.emuIssued = b.Issued - a.Issued
	r.emuIssueOK = b.req("IssueCertificate", "ok") - a.req("IssueCertificate", "ok")
	r.emuIssueThrottled = b.req("IssueCertificate", "ThrottlingException") - a.req("IssueCertificate", "ThrottlingException")
	r.emuIssueTotal = b.total("IssueCertificate") - a.total("IssueCertificate")
	r.emuGetOK = b.req("GetCertificate", "ok") - a.req("GetCertificate", "ok")
	r.emuGetThrottled = b.req("GetCertificate", "ThrottlingException") - a.req("GetCertificate", "ThrottlingException")
	r.emuGetInProgress = b.req("GetCertificate", "RequestInProgressException") - a.req("GetCertificate", "RequestInProgressException")
	r.emuGetTotal = b.total("GetCertificate") - a.total("GetCertificate")
}

func (r *report) checks() []check {
	timeOK := !r.timedOut && r.certified <= r.target
	return []check{
		{fmt.Sprintf("time to certify %d ≤ %v (floor %v + %.0f %%)", r.cfg.n, r.target.Round(time.Millisecond), r.floor.Round(time.Millisecond), r.cfg.slack*100),
			fmt.Sprintf("%v (%.2f × floor)", r.certified.Round(time.Millisecond), r.certified.Seconds()/r.floor.Seconds()), timeOK},
		{"no issuance failure surfaced to data planes (acmpca result=\"error\" = 0, failing = 0)",
			fmt.Sprintf("%.0f errors, %.0f failing", r.surfacedErrors, r.failing), r.surfacedErrors == 0 && r.failing == 0},
		{fmt.Sprintf("exactly %d certificates billed (acmpca-local issued)", r.cfg.n),
			fmt.Sprint(r.emuIssued), r.emuIssued == int64(r.cfg.n)},
	}
}

type check struct {
	what, got string
	ok        bool
}

func (r *report) passed() bool {
	for _, c := range r.checks() {
		if !c.ok {
			return false
		}
	}
	return true
}

func (r *report) print(w io.Writer) {
	rps := "omitted (default 20)"
	if r.cfg.maxRPS > 0 {
		rps = fmt.Sprint(r.cfg.maxRPS)
	}
	secs := r.certified.Seconds()
	fmt.Fprintf(w, "\nACM PCA issuance benchmark\n")
	fmt.Fprintf(w, "  command:                 go run ./bench/acmpca %s\n", strings.Join(r.args, " "))
	fmt.Fprintf(w, "  acmpca-local:            --issue-rate %v --get-rate %v --in-progress %v\n", r.cfg.issueRate, r.cfg.getRate, r.cfg.inProgress)
	fmt.Fprintf(w, "  conf.maxRequestsPerSecond: %s\n", rps)
	fmt.Fprintf(w, "  data planes:             %d (registered in %v, concurrency %d)\n", r.cfg.n, r.registered.Round(time.Millisecond), r.cfg.concurrency)
	if r.timedOut {
		fmt.Fprintf(w, "  certified:               TIMED OUT after %v with %.0f valid\n", r.certified.Round(time.Millisecond), r.valid)
	} else {
		fmt.Fprintf(w, "  certified:               %.0f valid after %v (%.2f certificates/s)\n", r.valid, r.certified.Round(time.Millisecond), float64(r.cfg.n)/secs)
	}
	fmt.Fprintf(w, "  floor:                   %d / %v/s = %v; target ≤ %v\n", r.cfg.n, math.Min(r.effRPS, nonZero(r.cfg.issueRate, r.effRPS)), r.floor.Round(time.Millisecond), r.target.Round(time.Millisecond))
	fmt.Fprintf(w, "  acmpca-local:            issued %d; IssueCertificate %d requests (%d ok, %d ThrottlingException); GetCertificate %d requests (%d ok, %d RequestInProgress, %d ThrottlingException)\n",
		r.emuIssued, r.emuIssueTotal, r.emuIssueOK, r.emuIssueThrottled, r.emuGetTotal, r.emuGetOK, r.emuGetInProgress, r.emuGetThrottled)
	if secs > 0 {
		fmt.Fprintf(w, "  request rates seen:      IssueCertificate %.1f/s, GetCertificate %.1f/s, together %.1f/s\n",
			float64(r.emuIssueTotal)/secs, float64(r.emuGetTotal)/secs, float64(r.emuIssueTotal+r.emuGetTotal)/secs)
	}
	fmt.Fprintf(w, "  meshca:                  billed %.0f; requests %s; throttles %s; budget wait avg %.2fs over %.0f attempts\n",
		r.meshcaBilled, fmtMap(r.meshcaRequests), fmtMap(r.meshcaThrottles), r.budgetWaitAvg, r.budgetWaitCount)
	fmt.Fprintf(w, "  surfaced to data planes: %.0f issuance errors (meshca_certificates_issued_total{backend_type=\"acmpca\",result=\"error\"})\n", r.surfacedErrors)
	if secs > 0 {
		fmt.Fprintf(w, "  host:                    %d CPUs, load average %s at start, %s at end; CPU used during certification: meshca-cp %.1fs (%.0f %% of one CPU), acmpca-local %.1fs\n",
			r.cpus, r.loadStart, r.loadEnd, r.cpCPU, 100*r.cpCPU/secs, r.pcaCPU)
	}
	fmt.Fprintln(w, "targets:")
	for _, c := range r.checks() {
		v := "PASS"
		if !c.ok {
			v = "FAIL"
		}
		fmt.Fprintf(w, "  %s  %s: %s\n", v, c.what, c.got)
	}
}

func nonZero(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

func fmtMap(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%.0f", k, m[k])
	}
	return strings.Join(parts, " ")
}
