// Package benchproc holds what the load tools under bench/ share to run
// real meshca binaries: building them, loopback addresses, and reading a
// process's memory from /proc.
package benchproc

import (
	"fmt"
	"log"
	"net"
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
