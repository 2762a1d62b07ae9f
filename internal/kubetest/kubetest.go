package kubetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"meshca/internal/freeport"
)

// EnvAssets names the directory holding etcd, kube-apiserver and kubectl.
const EnvAssets = "KUBEBUILDER_ASSETS"

// readyTimeout bounds the wait for /readyz; generous because tests run in
// parallel on small CI machines (the API server alone is ready in ~2.5 s).
const readyTimeout = 90 * time.Second

// Server is a running etcd + kube-apiserver pair.
type Server struct {
	// Config is a cluster-admin (system:masters) client configuration that
	// verifies the API server's certificate.
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file holding Config, for
	// kubectl and for --kubeconfig flags.
	Kubeconfig string
	// Assets is the directory of the binaries (and of any files
	// scripts/build-kube.sh put beside them).
	Assets string
	// EtcdPID and APIServerPID are the processes' ids (to read their
	// memory from /proc, say).
	EtcdPID, APIServerPID int

	procs []*proc
}

// Kubectl returns the path of the kubectl built beside the API server, or
// skips the test when there is none.
func (s *Server) Kubectl(t testing.TB) string {
	t.Helper()
	p := filepath.Join(s.Assets, "kubectl")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no kubectl in %s=%s: build it with scripts/build-kube.sh", EnvAssets, s.Assets)
	}
	return p
}

// Assets returns the directory of the test binaries, or skips the test when
// KUBEBUILDER_ASSETS is unset.
func Assets(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(EnvAssets)
	if dir == "" {
		t.Skipf("%s not set: this test needs a real Kubernetes API server; build etcd and kube-apiserver with "+
			"scripts/build-kube.sh DIR and set %s=DIR (.ci/run does both)", EnvAssets, EnvAssets)
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("%s=%s: %s missing (build it with scripts/build-kube.sh %s)", EnvAssets, dir, b, dir)
		}
	}
	return dir
}

// Start runs etcd and kube-apiserver for the test, waits until the API
// server is ready, and stops both when the test ends. It skips the test when
// KUBEBUILDER_ASSETS is unset.
func Start(t testing.TB) *Server {
	t.Helper()
	assets := Assets(t)
	s, err := Launch(assets, t.TempDir())
	if s != nil {
		t.Cleanup(func() {
			s.Stop()
			if t.Failed() {
				for _, p := range s.procs {
					t.Logf("%s log (tail):\n%s", p.name, tail(p.logPath, 4000))
				}
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Launch runs etcd and kube-apiserver from the binaries in assets, with
// their data, certificates and logs under dir, and waits until the API
// server is ready. The caller stops them with Stop; on error whatever was
// started is returned for stopping too (the Server is nil only if nothing
// was). Tests use Start; Launch serves tools that are not tests (bench/).
func Launch(assets, dir string) (*Server, error) {
	s := &Server{Assets: assets}
	ports, err := freeport.Ports(3)
	if err != nil {
		return nil, err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	etcd, err := start(dir, "etcd", filepath.Join(assets, "etcd"),
		"--name=kubetest",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls=http://127.0.0.1:"+strconv.Itoa(etcdPeer),
		"--initial-advertise-peer-urls=http://127.0.0.1:"+strconv.Itoa(etcdPeer),
		"--initial-cluster=kubetest=http://127.0.0.1:"+strconv.Itoa(etcdPeer),
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, etcd)
	s.EtcdPID = etcd.cmd.Process.Pid

	p, err := newPKI(time.Now())
	if err != nil {
		return s, fmt.Errorf("kubetest PKI: %w", err)
	}
	certDir := filepath.Join(dir, "pki")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		return s, err
	}
	files, err := p.write(certDir)
	if err != nil {
		return s, err
	}
	api, err := start(dir, "kube-apiserver", filepath.Join(assets, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(apiPort),
		"--cert-dir="+certDir,
		"--tls-cert-file="+files["server.crt"],
		"--tls-private-key-file="+files["server.key"],
		"--client-ca-file="+files["ca.crt"],
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+files["sa.pub"],
		"--service-account-signing-key-file="+files["sa.key"],
		// No controller-manager runs, so nothing would create the
		// ServiceAccounts this admission plugin insists on.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		// The kubernetes Service's endpoints would name 127.0.0.1, which the
		// reconciler refuses; nothing in the tests uses them.
		"--endpoint-reconciler-type=none",
	)
	if err != nil {
		return s, err
	}
	s.procs = append(s.procs, api)
	s.APIServerPID = api.cmd.Process.Pid

	cfg := &rest.Config{
		Host: "https://127.0.0.1:" + strconv.Itoa(apiPort),
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   p.caPEM,
			CertData: p.clientCert,
			KeyData:  p.clientKey,
		},
		QPS:   200,
		Burst: 400,
	}
	if err := waitReady(cfg, api.exited, api.logPath); err != nil {
		return s, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, cfg); err != nil {
		return s, err
	}
	s.Config, s.Kubeconfig = cfg, kubeconfig
	return s, nil
}

// Stop stops the API server, then etcd (SIGTERM, then SIGKILL after 10 s).
func (s *Server) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop()
	}
}

// proc is one started binary.
type proc struct {
	name, logPath string
	cmd           *exec.Cmd
	// exited is closed when it exits.
	exited chan struct{}
}

// start runs bin with its output in dir/name.log.
func start(dir, name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// waitReady polls /readyz until it answers 200, the server exits, or
// readyTimeout passes.
func waitReady(cfg *rest.Config, exited <-chan struct{}, logPath string) error {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return fmt.Errorf("kubetest client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/readyz", nil)
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: %s: %s", resp.Status, bytes.TrimSpace(body))
		}
		last = err
		select {
		case <-exited:
			return fmt.Errorf("kube-apiserver exited before it was ready:\n%s", tail(logPath, 4000))
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready after %s: %w\nlog (tail):\n%s", readyTimeout, last, tail(logPath, 4000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func writeKubeconfig(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["kubetest-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest-admin", Namespace: "default"}
	kc.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return os.Chmod(path, 0o600)
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
