package benchproc

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"meshca/internal/promtext"
)

// CP is a meshca-cp started by StartCP.
type CP struct {
	Name string
	// API is the plain-HTTP API address (host:port); DP the SDS address.
	API, DP string
	// DataDir is its --data-dir; Log the path of its output.
	DataDir, Log string

	cmd  *exec.Cmd
	done chan struct{}
}

// StartCP runs `meshca-cp run` with bin on free loopback ports (HTTPS API
// off), data under dir/name, output in dir/name.log, more flags in args and
// env added to the environment, and waits until /readyz answers 200.
func StartCP(ctx context.Context, bin, dir, name string, env []string, args ...string) (*CP, error) {
	cp := &CP{Name: name, API: FreeAddr(), DP: FreeAddr(), DataDir: filepath.Join(dir, name), Log: filepath.Join(dir, name+".log")}
	log, err := os.OpenFile(cp.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	all := append([]string{"run", "--data-dir", cp.DataDir, "--api-address", cp.API, "--dp-server-address", cp.DP, "--api-tls-address", ""}, args...)
	cp.cmd = exec.Command(bin, all...)
	cp.cmd.Env = append(os.Environ(), env...)
	cp.cmd.Stdout, cp.cmd.Stderr = log, log
	if err := cp.cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	cp.done = make(chan struct{})
	go func() { _ = cp.cmd.Wait(); log.Close(); close(cp.done) }()
	for {
		if resp, err := http.Get("http://" + cp.API + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cp, nil
			}
		}
		select {
		case <-cp.done:
			return nil, fmt.Errorf("%s exited at start (log %s)", name, cp.Log)
		case <-ctx.Done():
			cp.Stop()
			return nil, fmt.Errorf("%s not ready: %w (log %s)", name, ctx.Err(), cp.Log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PID is the process id.
func (cp *CP) PID() int { return cp.cmd.Process.Pid }

// Stop sends SIGTERM and waits for the exit.
func (cp *CP) Stop() {
	select {
	case <-cp.done:
	default:
		_ = cp.cmd.Process.Signal(syscall.SIGTERM)
		<-cp.done
	}
}

// Metric returns one sample of the control plane's /metrics (0 when absent).
func (cp *CP) Metric(ctx context.Context, series string) (float64, error) {
	s, err := promtext.Scrape(ctx, http.DefaultClient, "http://"+cp.API)
	if err != nil {
		return 0, err
	}
	return s.Get(series), nil
}

// MiB turns a /proc status value such as "123456 kB" into "121 MiB".
func MiB(v string) string {
	kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	if err != nil {
		return v
	}
	return fmt.Sprintf("%.0f MiB", float64(kb)/1024)
}
