package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildCP builds meshca-cp into dir and returns the binary's path.
func buildCP(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "meshca-cp")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "meshca/cmd/meshca-cp")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build meshca/cmd/meshca-cp (run loadcp from inside the meshca module): %w\n%s", err, out.String())
	}
	return bin, nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// cpProcess is a running meshca-cp.
type cpProcess struct {
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	apiURL  string
	// apiTLSURL is the HTTPS listener (user tokens), its CA under dataDir.
	apiTLSURL string
	sdsAddr   string
	dataDir   string
	exited    chan struct{} // closed when the process has exited
	waitErr   error         // valid after exited is closed
}

type cpOptions struct {
	bin, dataDir, store, logLevel string
	memLimit                      string
	workers                       int
	pprof                         bool
}

// startCP starts meshca-cp on free loopback ports and waits for /readyz.
// onExit is called (once) if the process exits before stop is called.
func startCP(ctx context.Context, o cpOptions, onExit func(error)) (*cpProcess, error) {
	apiPort, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("pick API port: %w", err)
	}
	sdsPort, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("pick SDS port: %w", err)
	}
	tlsPort, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("pick HTTPS API port: %w", err)
	}
	p := &cpProcess{
		apiTLSURL: fmt.Sprintf("https://127.0.0.1:%d", tlsPort),
		logPath:   filepath.Join(filepath.Dir(o.dataDir), "meshca-cp.log"),
		apiURL:    fmt.Sprintf("http://127.0.0.1:%d", apiPort),
		sdsAddr:   fmt.Sprintf("127.0.0.1:%d", sdsPort),
		dataDir:   o.dataDir,
		exited:    make(chan struct{}),
	}
	if p.logFile, err = os.Create(p.logPath); err != nil {
		return nil, fmt.Errorf("create control-plane log: %w", err)
	}
	args := []string{"run",
		"--data-dir", o.dataDir,
		"--api-address", fmt.Sprintf("127.0.0.1:%d", apiPort),
		"--dp-server-address", p.sdsAddr,
		"--api-tls-address", fmt.Sprintf("127.0.0.1:%d", tlsPort),
		// The load comes from one address, on purpose: no per-client rate.
		"--api-client-rate", "-1",
		"--store", o.store,
		"--log-level", o.logLevel,
	}
	if o.workers > 0 {
		args = append(args, "--issuance-workers", strconv.Itoa(o.workers))
	}
	if o.memLimit != "" {
		args = append(args, "--memory-limit", o.memLimit)
	}
	if o.pprof {
		args = append(args, "--pprof")
	}
	p.cmd = exec.Command(o.bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logFile, p.logFile
	// Clear variables that would redirect the store or addresses.
	p.cmd.Env = filterEnv(os.Environ(), "MESHCA_")
	if err := p.cmd.Start(); err != nil {
		p.logFile.Close()
		return nil, fmt.Errorf("start %s: %w", o.bin, err)
	}
	var stopping sync.Once
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
		stopping.Do(func() {
			if onExit != nil {
				onExit(p.waitErr)
			}
		})
	}()

	readyCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := waitReady(readyCtx, p); err != nil {
		p.stop(10 * time.Second)
		return nil, fmt.Errorf("meshca-cp did not become ready (log: %s): %w", p.logPath, err)
	}
	return p, nil
}

func filterEnv(env []string, prefix string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return out
}

func waitReady(ctx context.Context, p *cpProcess) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.apiURL+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("/readyz: HTTP %d", resp.StatusCode)
		} else {
			last = err
		}
		select {
		case <-p.exited:
			return fmt.Errorf("meshca-cp exited: %v", p.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

// stop sends SIGTERM and waits up to grace before killing. It returns how
// long the process took to exit and whether it exited cleanly.
func (p *cpProcess) stop(grace time.Duration) (time.Duration, error) {
	defer p.logFile.Close()
	select {
	case <-p.exited:
		return 0, fmt.Errorf("meshca-cp had already exited: %v", p.waitErr)
	default:
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("SIGTERM meshca-cp: %w", err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
		took := time.Since(start)
		if p.waitErr != nil {
			return took, fmt.Errorf("meshca-cp exited with %w after SIGTERM", p.waitErr)
		}
		return took, nil
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
		return time.Since(start), fmt.Errorf("meshca-cp did not exit within %s of SIGTERM; killed", grace)
	}
}

// logTail returns the last n lines of the control plane's log.
func (p *cpProcess) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procStat is what /proc tells about the control-plane process.
type procStat struct {
	rssKiB, hwmKiB int64
	cpu            time.Duration // user + system
}

// readProc reads VmRSS, VmHWM and CPU time of pid.
func readProc(pid int) (procStat, error) {
	var ps procStat
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &ps.rssKiB
		case "VmHWM":
			dst = &ps.hwmKiB
		default:
			continue
		}
		fields := strings.Fields(v)
		if len(fields) > 0 {
			*dst, _ = strconv.ParseInt(fields[0], 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return ps, err
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ps, err
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return ps, errors.New("unexpected /proc/pid/stat format")
	}
	fields := strings.Fields(string(stat[i+1:]))
	// utime and stime are fields 14 and 15 overall; fields[0] is field 3.
	if len(fields) > 12 {
		ut, _ := strconv.ParseInt(fields[11], 10, 64)
		st, _ := strconv.ParseInt(fields[12], 10, 64)
		const clkTck = 100 // USER_HZ on Linux
		ps.cpu = time.Duration(ut+st) * time.Second / clkTck
	}
	return ps, nil
}

// rssSampler samples the control plane's VmRSS periodically.
type rssSampler struct {
	mu       sync.Mutex
	phaseMax int64 // since the last takePhaseMax
	totalMax int64
	samples  int
	lastErr  error
}

func (s *rssSampler) run(ctx context.Context, pid int, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		ps, err := readProc(pid)
		s.mu.Lock()
		if err != nil {
			s.lastErr = err
		} else {
			s.samples++
			s.phaseMax = max(s.phaseMax, ps.rssKiB)
			s.totalMax = max(s.totalMax, ps.rssKiB)
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// takePhaseMax returns the largest VmRSS (KiB) sampled since the last call.
func (s *rssSampler) takePhaseMax() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.phaseMax
	s.phaseMax = 0
	return m
}

// stats returns the largest VmRSS (KiB) sampled, the sample count and the last error.
func (s *rssSampler) stats() (maxKiB int64, samples int, lastErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.totalMax, s.samples, s.lastErr
}
