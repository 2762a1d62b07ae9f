//go:build linux

package sds_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"meshca/pkg/sds"
	"meshca/pkg/sds/sdstest"
)

const fdLimitChildEnv = "MESHCA_SDS_FDLIMIT_CHILD"

// TestOutOfFileDescriptors runs the SDS server in a child process whose
// RLIMIT_NOFILE leaves room for a few connections, connects more than that,
// and checks that the server says so (a log line and
// meshca_sds_accept_errors_total), does not crash, and serves a proxy once
// descriptors are free again.
func TestOutOfFileDescriptors(t *testing.T) {
	if os.Getenv(fdLimitChildEnv) != "" {
		fdLimitChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOutOfFileDescriptors$")
	cmd.Env = append(os.Environ(), fdLimitChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	defer func() {
		if !exited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	logLines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logLines <- sc.Text()
		}
		close(logLines)
	}()
	out := bufio.NewScanner(stdout)
	if !out.Scan() {
		t.Fatalf("child printed nothing: %v", out.Err())
	}
	var addr, caFile string
	if _, err := fmt.Sscanf(out.Text(), "ADDR %s %s", &addr, &caFile); err != nil {
		t.Fatalf("child said %q: %v", out.Text(), err)
	}

	// More connections than the child has descriptors for; each accepted
	// one waits for a TLS handshake that never comes.
	var raw []net.Conn
	for range 40 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, c)
	}
	var exhausted []string
	timeout := time.After(30 * time.Second)
wait:
	for {
		select {
		case l, ok := <-logLines:
			if !ok {
				t.Fatal("child exited while out of descriptors")
			}
			if strings.Contains(l, "out of file descriptors") {
				exhausted = append(exhausted, l)
				break wait
			}
		case <-timeout:
			t.Fatal("no log line about file descriptors after 30s")
		}
	}
	if l := exhausted[0]; !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "reason=EMFILE") || !strings.Contains(l, "fdLimit=") {
		t.Errorf("log line lacks level, reason or limit: %s", l)
	}
	for _, c := range raw {
		_ = c.Close()
	}

	// Descriptors free again: a proxy is served.
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := secretv3.NewSecretDiscoveryServiceClient(cc).StreamSecrets(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer default.dp-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(sotwRequest("default.dp-1", nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("a proxy after the descriptors were freed: %v", err)
	}

	_ = stdin.Close()
	if !out.Scan() {
		t.Fatalf("child printed no metric: %v", out.Err())
	}
	var failures float64
	if _, err := fmt.Sscanf(out.Text(), "EMFILE %g", &failures); err != nil {
		t.Fatalf("child said %q: %v", out.Text(), err)
	}
	if failures < 1 {
		t.Errorf("meshca_sds_accept_errors_total{reason=\"EMFILE\"} = %v, want at least 1", failures)
	}
	exited = true
	if err := cmd.Wait(); err != nil {
		t.Errorf("child: %v (the server must not crash)", err)
	}
}

// fdLimitChild serves SDS with a file limit a few descriptors above what
// the process holds, prints its address, and on end of stdin prints the
// EMFILE accept failures counted.
func fdLimitChild(t *testing.T) {
	src := sdstest.NewSource()
	src.Set("default", "dp-1", sdstest.NewSecrets(t, "default", "dp-1", 1, time.Now()))
	reg := prometheus.NewRegistry()
	srv := sds.NewServer(src, newNameAuth(t), slog.New(slog.NewTextHandler(os.Stderr, nil)), reg)
	dir := t.TempDir()
	tlsConf, caPEM, err := sds.LoadOrCreateServerTLS(dir, "", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	caFile := dir + "/ca.pem"
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	lim := uint64(len(fds) + 12)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: lim, Max: lim}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis, tlsConf) }()
	fmt.Printf("ADDR %s %s\n", lis.Addr(), caFile)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "meshca_sds_accept_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "EMFILE" {
				n = m.GetCounter().GetValue()
			}
		}
	}
	fmt.Printf("EMFILE %g\n", n)
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	os.Exit(0)
}
