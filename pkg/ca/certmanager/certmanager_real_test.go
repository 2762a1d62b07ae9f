package certmanager

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"meshca/internal/kubetest"
	"meshca/pkg/ca"
	"meshca/pkg/ca/certmanager/certmanagertest"
	"meshca/pkg/datasource"
	"meshca/pkg/store/memory"
)

// TestRealCertManager has cert-manager's own controllers (its Issuer
// controller, CA CertificateRequest signer and built-in approver, run by
// tools/certmanager's cert-manager-controllers) sign what the backend asks
// for through a real API server: a CA Issuer made Ready from a Secret, the
// approver's approval, the CA signer's certificate with the SPIFFE URI SAN;
// and an Issuer that never becomes Ready leaves the request pending until
// dpCert.requestTimeout, with cert-manager's own reason in the error.
func TestRealCertManager(t *testing.T) {
	srv := kubetest.Start(t)
	bin := filepath.Join(srv.Assets, "cert-manager-controllers")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s missing: build the assets with scripts/build-kube.sh %s", bin, srv.Assets)
	}
	crds, _ := filepath.Glob(filepath.Join(srv.Assets, "crds", "cert-manager", "*.yaml"))
	if len(crds) == 0 {
		t.Fatalf("no cert-manager CRDs under %s/crds/cert-manager", srv.Assets)
	}
	for _, f := range crds {
		manifest, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := kubetest.Apply(t.Context(), srv.Config, manifest); err != nil {
			t.Fatalf("%s: %v", filepath.Base(f), err)
		}
	}

	// The CA the Issuer signs with, in a kubernetes.io/tls Secret.
	now := time.Now()
	caCert, caKey, err := certmanagertest.NewCA("cert-manager test CA", now)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	const ns = "meshca-system"
	setupManifest := fmt.Sprintf(rbacManifest, ns) + fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata: {name: ca-key-pair, namespace: %[1]s}
type: kubernetes.io/tls
stringData:
  tls.crt: |
%[2]s
  tls.key: |
%[3]s
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: ca-issuer, namespace: %[1]s}
spec: {ca: {secretName: ca-key-pair}}
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: not-ready, namespace: %[1]s}
spec: {ca: {secretName: no-such-secret}}
`, ns, indent(caPEM), indent(keyPEM))
	if err := kubetest.Apply(t.Context(), srv.Config, []byte(setupManifest)); err != nil {
		t.Fatal(err)
	}

	ctrl := exec.Command(bin, "--kubeconfig", srv.Kubeconfig)
	logPath := filepath.Join(t.TempDir(), "cert-manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ctrl.Stdout, ctrl.Stderr = logFile, logFile
	if err := ctrl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ctrl.Process.Signal(syscall.SIGTERM)
		_ = ctrl.Wait()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("cert-manager-controllers log (tail):\n%s", b)
		}
	})

	admin, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	issuers := schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "issuers"}
	waitCtx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for ready := false; !ready; {
		obj, err := admin.Resource(issuers).Namespace(ns).Get(waitCtx, "ca-issuer", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Issuer ca-issuer never became Ready: %v", err)
		}
		conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] == "Ready" && m["status"] == "True" {
				ready = true
			}
		}
		if !ready {
			time.Sleep(50 * time.Millisecond)
		}
	}

	client, err := dynamic.NewForConfig(impersonate(srv, ns))
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New()
	b := NewWithClient(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now,
		Settings: map[string]string{SettingNamespace: ns}}, client).(*Backend)
	b.pollInterval = time.Hour // the watch alone must see the outcome

	t.Run("signed by cert-manager", func(t *testing.T) {
		mb := mtlsBackend(t, issuerConf, "30s")
		bundle, err := b.TrustBundle(t.Context(), testMesh, mb)
		if err != nil {
			t.Fatalf("TrustBundle: %v", err)
		}
		if string(bundle) != string(caPEM) {
			t.Fatalf("trust bundle is not the Issuer's CA:\n%s", bundle)
		}
		req := issueRequest(t, "backend-1", "backend")
		start := time.Now()
		iss, err := b.Issue(t.Context(), testMesh, mb, req)
		t.Logf("Issue took %s", time.Since(start))
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		leaf, err := ca.VerifyIssued(iss, bundle, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://default/backend" {
			t.Errorf("URI SANs = %v, want spiffe://default/backend", leaf.URIs)
		}
		if got := leaf.NotAfter.Sub(leaf.NotBefore); got != req.Validity {
			t.Errorf("validity = %s, want %s (spec.duration)", got, req.Validity)
		}
		if err := leaf.CheckSignatureFrom(caCert); err != nil {
			t.Errorf("not signed by the Issuer's CA: %v", err)
		}
	})

	t.Run("issuer not Ready", func(t *testing.T) {
		mb := mtlsBackend(t, `{"issuerRef":{"name":"not-ready"}}`, "3s")
		_, err := b.Issue(t.Context(), testMesh, mb, issueRequest(t, "backend-2", "backend"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error = %v, want a deadline error", err)
		}
		// cert-manager approves, then keeps the request Pending while the
		// Issuer is not Ready; the backend reports what it saw last.
		if !strings.Contains(err.Error(), "not issued within 3s") ||
			!strings.Contains(err.Error(), "Ready=False (Pending): Referenced issuer does not have a Ready status condition") {
			t.Errorf("error = %v, want the request's Pending reason", err)
		}
	})

	list, err := admin.Resource(CertificateRequestResource()).Namespace(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("%d certificate requests left behind", len(list.Items))
	}
}

func indent(b []byte) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}
