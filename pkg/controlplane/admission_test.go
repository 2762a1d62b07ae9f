package controlplane

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"meshca/internal/kubetest"
	"meshca/pkg/ca"
	"meshca/pkg/datasource"
	"meshca/pkg/kube/admission"
	"meshca/pkg/resources"
	"meshca/pkg/sds"
	"meshca/pkg/store/kube"
)

// TestAdmissionWebhookStarts: two control planes on the Kubernetes store of
// one API server each serve the webhook with a certificate of the one CA
// they share through it, register it as the configuration's caBundle, and
// the API server, verifying it, sends them kubectl's writes: an invalid
// Mesh is refused.
func TestAdmissionWebhookStarts(t *testing.T) {
	srv := kubetest.Start(t)
	srv.Prepare(t, "meshca-system")
	ctx := t.Context()
	logger := slog.New(slog.DiscardHandler)

	var addrs []net.Addr
	for range 2 {
		st, err := kube.Open(ctx, srv.Config, kube.Options{Namespace: "meshca-system", Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Logger: logger, Now: time.Now}, Backends())
		if err != nil {
			t.Fatal(err)
		}
		mgr := resources.NewManager(st, reg, resources.Options{Logger: logger})
		port := freePort(t)
		cfg := Config{DataDir: t.TempDir(), Webhook: WebhookConfig{
			Address: "127.0.0.1:" + port,
			URL:     "https://127.0.0.1:" + port,
		}}
		addr, stop, err := startAdmission(ctx, cfg, srv.Config, "meshca-system", st, mgr, logger)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		addrs = append(addrs, addr)
	}

	// The configuration names the last one started, with the shared CA,
	// which both serve certificates of.
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	vwc, err := dyn.Resource(schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingwebhookconfigurations"}).
		Get(ctx, admission.ConfigurationName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hooks, _, _ := unstructured.NestedSlice(vwc.Object, "webhooks")
	if len(hooks) != 2 {
		t.Fatalf("webhooks %v", hooks)
	}
	cc := hooks[0].(map[string]any)["clientConfig"].(map[string]any)
	if cc["url"] != "https://"+addrs[1].String()+admission.Path {
		t.Errorf("clientConfig.url = %v, want the second instance's", cc["url"])
	}
	bundle, err := base64.StdEncoding.DecodeString(cc["caBundle"].(string))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatalf("caBundle holds no certificate: %q", bundle)
	}
	for _, a := range addrs {
		conn, err := tls.Dial("tcp", a.String(), &tls.Config{RootCAs: pool, ServerName: "meshca-control-plane.meshca-system.svc"})
		if err != nil {
			t.Errorf("%s does not verify with the caBundle as the Service's name: %v", a, err)
			continue
		}
		conn.Close()
	}

	kubectl := srv.Kubectl(t)
	bad := "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: bad}\nspec: {mtls: {enabledBackend: nope}}\n"
	deadline := time.Now().Add(30 * time.Second)
	for {
		cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", srv.Kubeconfig, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(bad)
		out, err := cmd.CombinedOutput()
		if err != nil && strings.Contains(string(out), "spec.mtls.enabledBackend") {
			break
		}
		if err == nil {
			_ = exec.CommandContext(ctx, kubectl, "--kubeconfig", srv.Kubeconfig, "delete", "mesh", "bad").Run()
		}
		if time.Now().After(deadline) {
			t.Fatalf("an invalid Mesh was never refused: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// TestServerCASharedOnKubernetesRace: replicas starting together on the
// Kubernetes store (which reads through informers) all end up with the one
// CA that was stored first, none failing because it lost the create and
// its cache has not shown the winner's yet.
func TestServerCASharedOnKubernetesRace(t *testing.T) {
	srv := kubetest.Start(t)
	srv.Prepare(t, "meshca-system")
	ctx := t.Context()
	logger := slog.New(slog.DiscardHandler)
	const replicas = 4
	var stores []*kube.Store
	for range replicas {
		st, err := kube.Open(ctx, srv.Config, kube.Options{Namespace: "meshca-system", Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	files := webhookServerFiles()
	dirs := make([]string, replicas)
	errs := make(chan error, replicas)
	start := make(chan struct{})
	for i := range replicas {
		dirs[i] = t.TempDir()
		go func() {
			<-start
			errs <- shareServerCA(ctx, stores[i], files, dirs[i], logger)
		}()
	}
	close(start)
	for range replicas {
		if err := <-errs; err != nil {
			t.Errorf("shareServerCA: %v", err)
		}
	}
	var first []byte
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, files.CA))
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = b
		} else if !bytes.Equal(b, first) {
			t.Errorf("%s holds another CA", d)
		}
	}
}

// TestWebhookCertificateRenewed: a webhook running past its certificate's
// renewal time serves a new one, from the same CA, without a restart.
func TestWebhookCertificateRenewed(t *testing.T) {
	dir := t.TempDir()
	files := webhookServerFiles()
	clock := time.Now()
	now := func() time.Time { return clock }
	load := func(now func() time.Time) (*tls.Config, error) {
		c, _, err := sds.LoadOrCreateTLS(files, dir, "", "", []string{"meshca-control-plane.meshca-system.svc"}, now)
		return c, err
	}
	first, err := load(now)
	if err != nil {
		t.Fatal(err)
	}
	conf := renewingTLS(first, load, now, slog.New(slog.DiscardHandler))
	serve := func() *x509.Certificate {
		t.Helper()
		c, err := conf.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf
	}
	a := serve()
	if b := serve(); b.SerialNumber.Cmp(a.SerialNumber) != 0 {
		t.Error("renewed a fresh certificate")
	}
	clock = a.NotAfter.Add(-sds.RenewBefore + time.Hour) // inside the renewal window
	b := serve()
	if b.SerialNumber.Cmp(a.SerialNumber) == 0 || !b.NotAfter.After(a.NotAfter) {
		t.Fatalf("not renewed: serial %v → %v, notAfter %v → %v", a.SerialNumber, b.SerialNumber, a.NotAfter, b.NotAfter)
	}
	if err := b.CheckSignatureFrom(caOf(t, dir, files)); err != nil {
		t.Errorf("the renewed certificate is not from the same CA: %v", err)
	}
}

func caOf(t *testing.T, dir string, files sds.ServerFiles) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, files.CA))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
