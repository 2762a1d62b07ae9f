// Package e2e builds the real binaries and drives them on loopback ports
// chosen at run time, as a user would.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshca/internal/freeport"
	"meshca/internal/promtext"
	"meshca/internal/syncbuf"
)

var binDir string

// parallel is how many tests run at once unless go test's -parallel says
// otherwise. They mostly wait (on processes starting, leases, certificate
// lifetimes, rate limits), not on the CPU: the whole package used about
// 90 s of CPU in 6.5 min run one test at a time, so go test's default of
// GOMAXPROCS would leave a 2-core machine idle.
const parallel = 6

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		if err := flag.Set("test.parallel", strconv.Itoa(parallel)); err != nil {
			panic(err)
		}
	}
	dir, err := os.MkdirTemp("", "meshca-e2e-bin")
	if err != nil {
		panic(err)
	}
	binDir = dir
	// One go build for all: they share the packages it compiles.
	args := []string{"build", "-o", binDir + string(filepath.Separator)}
	if os.Getenv("MESHCA_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	for _, cmd := range []string{"meshca-cp", "meshctl", "meshca-dp", "acmpca-local"} {
		if _, err := os.Stat(filepath.Join("..", "..", "cmd", cmd)); err != nil {
			continue // not in this tree yet; tests that need it fail
		}
		args = append(args, "meshca/cmd/"+cmd)
	}
	build := exec.Command("go", args...)
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building the binaries: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }

// freePort returns a loopback address nobody listens on right now, below the
// ephemeral range (no test's outgoing connection takes it) and given to no
// other test of this run (they run in parallel).
func freePort(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// proc is a started binary whose output goes to a log kept for failures.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
	err  error
}

func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin(name), args...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{t: t, name: name, cmd: cmd, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits; it fails the test if the process does not
// exit within 10 s.
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
		p.t.Errorf("%s did not stop within 10s of SIGTERM", p.name)
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) exited(within time.Duration) (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(within):
		return false, nil
	}
}

// controlPlane is a running meshca-cp.
type controlPlane struct {
	*proc
	dataDir, api, dp string
	apiTLS           string // the HTTPS API
	env              []string
	args             []string // more flags of meshca-cp run
}

func startCP(t *testing.T, dataDir string, env ...string) *controlPlane {
	t.Helper()
	cp := &controlPlane{dataDir: dataDir, api: freePort(t), dp: freePort(t), apiTLS: freePort(t), env: env}
	cp.launch(t)
	return cp
}

func (cp *controlPlane) launch(t *testing.T) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		cp.proc = start(t, "meshca-cp", cp.env, append([]string{"run", "--data-dir", cp.dataDir, "--api-address", cp.api, "--dp-server-address", cp.dp, "--api-tls-address", cp.apiTLS, "--log-level", "debug"}, cp.args...)...)
		if cp.waitReady(30 * time.Second) {
			return
		}
		// freePort's ports are free only when asked: another process on
		// this machine may have bound one since. Take new ones and retry.
		if exited, _ := cp.proc.exited(0); exited && attempt < 3 && strings.Contains(cp.proc.out.String(), "address already in use") {
			t.Logf("meshca-cp lost a port to another process (attempt %d); retrying on new ports", attempt)
			cp.api, cp.dp, cp.apiTLS = freePort(t), freePort(t), freePort(t)
			continue
		}
		t.Fatalf("timed out after 30s waiting for control plane ready")
	}
}

// waitReady reports whether /readyz answered 200 within d; false at once
// if the process exited.
func (cp *controlPlane) waitReady(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if exited, _ := cp.proc.exited(0); exited {
			return false
		}
		if resp, err := http.Get("http://" + cp.api + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (cp *controlPlane) restart(t *testing.T) {
	t.Helper()
	cp.proc.stop()
	cp.launch(t)
}

// meshctl runs the CLI against cp and returns stdout; stderr is in the error.
func (cp *controlPlane) meshctl(args ...string) (string, error) {
	return cp.meshctlIn("", args...)
}

func (cp *controlPlane) meshctlIn(stdin string, args ...string) (string, error) {
	cmd := exec.Command(bin("meshctl"), append([]string{"--api", "http://" + cp.api}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("meshctl %s: %v: %s%s", strings.Join(args, " "), err, errb.String(), out.String())
	}
	return out.String(), nil
}

func (cp *controlPlane) mustMeshctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := cp.meshctl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (cp *controlPlane) apply(t *testing.T, yaml string) string {
	t.Helper()
	out, err := cp.meshctlIn(yaml, "apply", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
}

// agent is a running meshca-dp with its output directory.
type agent struct {
	*proc
	out string
}

func startAgent(t *testing.T, cp *controlPlane, mesh, name, tokenFor string, extra ...string) *agent {
	t.Helper()
	dir := t.TempDir()
	tok := cp.mustMeshctl(t, "generate", "dataplane-token", "--mesh", mesh, "--name", tokenFor)
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(strings.TrimSpace(tok)), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	args := append([]string{"run", "--cp-address", cp.dp, "--cp-ca-cert", filepath.Join(cp.dataDir, "dp-server-ca.pem"),
		"--token-file", tokFile, "--mesh", mesh, "--name", name, "--out", out}, extra...)
	return &agent{proc: start(t, "meshca-dp", nil, args...), out: out}
}

func (a *agent) waitCert(t *testing.T) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	waitFor(t, 30*time.Second, "certificate of "+a.out, func() bool {
		leaf = a.leaf()
		return leaf != nil
	})
	return leaf
}

// leaf returns the certificate currently in cert.pem, or nil. It reads
// cert.pem alone: a rotation replaces key.pem and cert.pem one rename apart.
// file returns the content of one of the agent's files ("" if unreadable).
func (a *agent) file(name string) string {
	b, _ := os.ReadFile(filepath.Join(a.out, name))
	return string(b)
}

func (a *agent) leaf() *x509.Certificate {
	b, err := os.ReadFile(filepath.Join(a.out, "cert.pem"))
	if err != nil {
		return nil
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil
	}
	return c
}

// sameSerial reports whether c is non-nil and has the serial of ref.
func sameSerial(c, ref *x509.Certificate) bool {
	return c != nil && c.SerialNumber.Cmp(ref.SerialNumber) == 0
}

// rotatedFrom reports whether c is non-nil and differs from ref.
func rotatedFrom(c, ref *x509.Certificate) bool {
	return c != nil && c.SerialNumber.Cmp(ref.SerialNumber) != 0
}

// tlsFiles returns a tls.Config built only from the agent's files.
func (a *agent) tlsConfig(t *testing.T) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(a.out, "cert.pem"), filepath.Join(a.out, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(a.out, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

// handshake runs a mutual-TLS exchange between server and client configs
// and returns the SPIFFE IDs each side saw of the other.
func handshake(t *testing.T, serverConf, clientConf *tls.Config) (clientSaw, serverSaw string) {
	t.Helper()
	clientSaw, serverSaw, err := tryHandshake(serverConf, clientConf)
	if err != nil {
		t.Fatal(err)
	}
	return clientSaw, serverSaw
}

// tryHandshake is handshake returning the failure instead of failing the
// test.
func tryHandshake(serverConf, clientConf *tls.Config) (clientSaw, serverSaw string, err error) {
	// SPIFFE certificates carry no DNS name: verify the chain, not the host.
	cc := clientConf.Clone()
	cc.InsecureSkipVerify = true
	roots := clientConf.RootCAs
	cc.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", serverConf)
	if err != nil {
		return "", "", err
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	serverResult := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			serverResult <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.HandshakeContext(ctx); err != nil {
			serverResult <- "handshake: " + err.Error()
			return
		}
		buf := make([]byte, 4)
		if _, err := tc.Read(buf); err != nil {
			serverResult <- "read: " + err.Error()
			return
		}
		_, _ = tc.Write([]byte("pong"))
		serverResult <- spiffeOf(tc.ConnectionState().PeerCertificates[0])
	}()
	d := tls.Dialer{Config: cc}
	conn, err := d.DialContext(ctx, "tcp", l.Addr().String())
	if err != nil {
		return "", "", fmt.Errorf("client handshake: %v (server: %s)", err, <-serverResult)
	}
	defer conn.Close()
	tc := conn.(*tls.Conn)
	if _, err := tc.Write([]byte("ping")); err != nil {
		return "", "", fmt.Errorf("exchange: %v (server: %s)", err, <-serverResult)
	}
	buf := make([]byte, 4)
	if _, err := tc.Read(buf); err != nil || string(buf) != "pong" {
		return "", "", fmt.Errorf("exchange: %q %v (server: %s)", buf, err, <-serverResult)
	}
	return spiffeOf(tc.ConnectionState().PeerCertificates[0]), <-serverResult, nil
}

func spiffeOf(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	return ""
}

// metric returns the value of one sample of the control plane's /metrics
// (0 when absent), e.g. `meshca_dataplanes_by_cert_state{state="valid"}`.
func (cp *controlPlane) metric(t *testing.T, sample string) float64 {
	t.Helper()
	s, err := promtext.Scrape(context.Background(), http.DefaultClient, "http://"+cp.api)
	if err != nil {
		t.Fatal(err)
	}
	return s.Get(sample)
}
