// Package benchproc holds what the load tools under bench/ share to run
// real meshca binaries: building them, loopback addresses, and reading a
// process's memory from /proc.
package benchproc

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build builds meshca/cmd/<name> into dir and returns the binary's path.
// Run the tools from inside the meshca module.
func Build(dir, name string) (string, error) {
	bin := filepath.Join(dir, name)
	if out, err := exec.Command("go", "build", "-o", bin, "meshca/cmd/"+name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build meshca/cmd/%s (run from inside the meshca module): %w\n%s", name, err, out)
	}
	return bin, nil
}

// FreeAddr returns a loopback address whose port was free a moment ago;
// a tool that cannot listen on loopback stops there.
func FreeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatalf("listen on loopback: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Status returns a field of /proc/PID/status, such as "VmHWM" (peak RSS)
// or "VmRSS", or "?" when it cannot be read.
func Status(pid int, field string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// SaveURL writes the body of a GET of url, which must answer 200, to path
// (its directory created if missing).
func SaveURL(ctx context.Context, hc *http.Client, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
