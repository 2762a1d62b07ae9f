package certmanager

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

var (
	issuersResource        = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "issuers"}
	clusterIssuersResource = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "clusterissuers"}
)

// TestRealCertManager has cert-manager's own controllers (its Issuer and
// ClusterIssuer controllers, CA CertificateRequest signer and built-in
// approver, run by tools/certmanager's cert-manager-controllers) act on what
// the backend asks for through a real API server, and checks what a user
// sees in each outcome:
//
//   - with the built-in approver: requests to a CA Issuer and a CA
//     ClusterIssuer are approved and signed with the SPIFFE URI SAN; an Issuer
//     and a ClusterIssuer that are not Ready (their Secret is missing) leave
//     the request pending until dpCert.requestTimeout, and the error carries
//     both cert-manager's reason on the request and the issuer's own;
//   - with the built-in approver disabled (cert-manager's
//     --controllers=*,-certificaterequests-approver) and the test acting as a
//     policy approver the way approver-policy does: a request the policy
//     denies fails at once naming the approver and its reason; a request for
//     an issuer no policy selects stays pending past dpCert.requestTimeout.
//
// In every case the backend deletes its CertificateRequest afterwards.
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

	// The CAs the issuers sign with, in kubernetes.io/tls Secrets: the
	// Issuer's in the backend's namespace, the ClusterIssuer's in
	// cert-manager's cluster resource namespace.
	now := time.Now()
	caPEM, caKeyPEM, caCert := newCAPair(t, "cert-manager test CA", now)
	clusterCAPEM, clusterKeyPEM, clusterCACert := newCAPair(t, "cert-manager test cluster CA", now)
	const ns = "meshca-system"
	setupManifest := fmt.Sprintf(rbacManifest, ns) + fmt.Sprintf(`---
apiVersion: v1
kind: Namespace
metadata: {name: cert-manager}
---
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
apiVersion: v1
kind: Secret
metadata: {name: cluster-ca-key-pair, namespace: cert-manager}
type: kubernetes.io/tls
stringData:
  tls.crt: |
%[4]s
  tls.key: |
%[5]s
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: ca-issuer, namespace: %[1]s}
spec: {ca: {secretName: ca-key-pair}}
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: unselected-issuer, namespace: %[1]s}
spec: {ca: {secretName: ca-key-pair}}
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: not-ready, namespace: %[1]s}
spec: {ca: {secretName: no-such-secret}}
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: ca-cluster-issuer}
spec: {ca: {secretName: cluster-ca-key-pair}}
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: cluster-not-ready}
spec: {ca: {secretName: no-such-cluster-secret}}
`, ns, indent(caPEM), indent(caKeyPEM), indent(clusterCAPEM), indent(clusterKeyPEM))
	if err := kubetest.Apply(t.Context(), srv.Config, []byte(setupManifest)); err != nil {
		t.Fatal(err)
	}
	admin, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}

	stopControllers := startCertManager(t, bin, srv.Kubeconfig, "*")
	waitIssuer(t, admin.Resource(issuersResource).Namespace(ns), "ca-issuer", "True")
	waitIssuer(t, admin.Resource(issuersResource).Namespace(ns), "not-ready", "False")
	waitIssuer(t, admin.Resource(clusterIssuersResource), "ca-cluster-issuer", "True")
	waitIssuer(t, admin.Resource(clusterIssuersResource), "cluster-not-ready", "False")

	client, err := dynamic.NewForConfig(impersonate(srv, ns))
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New()
	b := NewWithClient(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now,
		Settings: map[string]string{SettingNamespace: ns}}, client).(*Backend)
	b.pollInterval = time.Hour // the watch alone must see the outcome

	// signed has the backend learn the issuer's CA and issue a data-plane
	// certificate, and checks it is the issuer's.
	signed := func(t *testing.T, conf, dataplane string, wantCA []byte, issuerCA *x509.Certificate) {
		t.Helper()
		mb := mtlsBackend(t, conf, "30s")
		bundle, err := b.TrustBundle(t.Context(), testMesh, mb)
		if err != nil {
			t.Fatalf("TrustBundle: %v", err)
		}
		if string(bundle) != string(wantCA) {
			t.Fatalf("trust bundle is not the issuer's CA:\n%s", bundle)
		}
		req := issueRequest(t, dataplane, "backend")
		start := time.Now()
		iss, err := b.Issue(t.Context(), testMesh, mb, req)
		t.Logf("Issue took %s", time.Since(start))
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		leaf := verifyBackendLeaf(t, iss, bundle, req)
		if err := leaf.CheckSignatureFrom(issuerCA); err != nil {
			t.Errorf("not signed by the issuer's CA: %v", err)
		}
	}
	// pending issues against conf with a 2s requestTimeout and checks the
	// deadline error names the request and carries each of want.
	pending := func(t *testing.T, conf, dataplane string, want ...string) {
		t.Helper()
		_, err := b.Issue(t.Context(), testMesh, mtlsBackend(t, conf, "2s"), issueRequest(t, dataplane, "backend"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error = %v, want a deadline error", err)
		}
		name := regexp.MustCompile(`^certificate request meshca-default-` + dataplane + `-[a-z0-9]{5} not issued within 2s \(last state: `)
		if !name.MatchString(err.Error()) {
			t.Errorf("error = %v, want it to start with %s", err, name)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error = %v\nwant it to contain %q", err, w)
			}
		}
	}

	t.Run("built-in approver", func(t *testing.T) {
		t.Run("Issuer signs", func(t *testing.T) {
			signed(t, issuerConf, "backend-1", caPEM, caCert)
		})
		t.Run("ClusterIssuer signs", func(t *testing.T) {
			signed(t, `{"issuerRef":{"name":"ca-cluster-issuer","kind":"ClusterIssuer"}}`, "backend-2", clusterCAPEM, clusterCACert)
		})
		// cert-manager approves, then keeps the request Pending while the
		// issuer is not Ready.
		t.Run("Issuer not Ready", func(t *testing.T) {
			t.Parallel()
			pending(t, `{"issuerRef":{"name":"not-ready"}}`, "backend-3",
				"Ready=False (Pending): Referenced issuer does not have a Ready status condition",
				`Issuer "not-ready" in namespace meshca-system: Ready=False (ErrGetKeyPair): Error getting keypair for CA issuer: secrets "no-such-secret" not found`)
		})
		t.Run("ClusterIssuer not Ready", func(t *testing.T) {
			t.Parallel()
			pending(t, `{"issuerRef":{"name":"cluster-not-ready","kind":"ClusterIssuer"}}`, "backend-4",
				"Ready=False (Pending): Referenced issuer does not have a Ready status condition",
				`ClusterIssuer "cluster-not-ready": Ready=False (ErrGetKeyPair): Error getting keypair for CA issuer: secrets "no-such-cluster-secret" not found`)
		})
		t.Run("ClusterIssuer that does not exist", func(t *testing.T) {
			t.Parallel()
			pending(t, `{"issuerRef":{"name":"no-such-issuer","kind":"ClusterIssuer"}}`, "backend-5",
				`Ready=False (Pending): Referenced "ClusterIssuer" not found`,
				`ClusterIssuer "no-such-issuer" does not exist`)
		})
	})
	assertNoRequests(t, admin, ns)

	// An operator who decides which requests are signed disables the
	// built-in approver and runs a policy approver instead.
	stopControllers()
	startCertManager(t, bin, srv.Kubeconfig, "*,-certificaterequests-approver")
	policyCtx, stopPolicy := context.WithCancel(context.Background())
	policyDone := make(chan error, 1)
	go func() {
		policyDone <- runPolicyApprover(policyCtx, admin.Resource(CertificateRequestResource()).Namespace(ns))
	}()
	t.Cleanup(func() {
		stopPolicy()
		if err := <-policyDone; err != nil {
			t.Errorf("policy approver: %v", err)
		}
	})

	t.Run("policy approver", func(t *testing.T) {
		t.Run("approved and signed", func(t *testing.T) {
			signed(t, issuerConf, "backend-6", caPEM, caCert)
		})
		t.Run("denied", func(t *testing.T) {
			t.Parallel()
			_, err := b.Issue(t.Context(), testMesh, mtlsBackend(t, issuerConf, "30s"), issueRequest(t, "payments-1", "payments"))
			want := regexp.MustCompile(`^certificate request meshca-default-payments-1-[a-z0-9]{5} denied by policy.cert-manager.io: ` +
				regexp.QuoteMeta(`No policy approved this request: [mesh-services: spec.allowed.uris.values: Invalid value: []string{"spiffe://default/payments"}: spiffe://default/backend]`) + `$`)
			if err == nil || !want.MatchString(err.Error()) {
				t.Fatalf("error = %v\nwant %s", err, want)
			}
		})
		t.Run("pending past requestTimeout", func(t *testing.T) {
			t.Parallel()
			// The issuer is Ready: what is missing is an approval.
			pending(t, `{"issuerRef":{"name":"unselected-issuer"}}`, "backend-7",
				"no approver approved or denied it and no Ready condition yet",
				`Issuer "unselected-issuer" in namespace meshca-system: Ready=True (KeyPairVerified): Signing CA verified`)
		})
	})
	assertNoRequests(t, admin, ns)
}

// startCertManager runs cert-manager-controllers with --controllers
// selection and returns a function that stops it (also called at cleanup).
func startCertManager(t *testing.T, bin, kubeconfig, selection string) (stop func()) {
	t.Helper()
	ctrl := exec.Command(bin, "--kubeconfig", kubeconfig, "--controllers", selection)
	logPath := filepath.Join(t.TempDir(), "cert-manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ctrl.Stdout, ctrl.Stderr = logFile, logFile
	if err := ctrl.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = ctrl.Process.Signal(syscall.SIGTERM)
		_ = ctrl.Wait()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("cert-manager-controllers --controllers %s log (tail):\n%s", selection, b)
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitIssuer waits until cert-manager set the Ready condition of issuer name
// to status.
func waitIssuer(t *testing.T, c dynamic.ResourceInterface, name, status string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for {
		obj, err := c.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("issuer %s never got Ready=%s: %v", name, status, err)
		}
		for _, c := range conditions(obj) {
			if c.Type == "Ready" && c.Status == status {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func assertNoRequests(t *testing.T, admin dynamic.Interface, ns string) {
	t.Helper()
	list, err := admin.Resource(CertificateRequestResource()).Namespace(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list.Items {
		t.Errorf("certificate request %s left behind", o.GetName())
	}
}

// runPolicyApprover approves or denies the CertificateRequests of one
// namespace the way cert-manager's approver-policy does with one
// CertificateRequestPolicy, "mesh-services", that selects the Issuer
// "ca-issuer" and allows only the URI spiffe://default/backend: it sets the
// Approved or Denied condition through the status subresource, with reason
// policy.cert-manager.io. Requests for other issuers are no policy's
// business and are left alone, as approver-policy does. It runs until ctx
// ends.
func runPolicyApprover(ctx context.Context, crs dynamic.ResourceInterface) error {
	const allowed = "spiffe://default/backend"
	for {
		list, err := crs.List(ctx, metav1.ListOptions{})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		for i := range list.Items {
			cr := &list.Items[i]
			if name, _, _ := unstructured.NestedString(cr.Object, "spec", "issuerRef", "name"); name != "ca-issuer" {
				continue
			}
			decided := false
			for _, c := range conditions(cr) {
				decided = decided || c.Type == "Approved" || c.Type == "Denied"
			}
			if decided {
				continue
			}
			uris, err := requestURIs(cr)
			if err != nil {
				return fmt.Errorf("%s: %w", cr.GetName(), err)
			}
			typ, msg := "Approved", `Approved by CertificateRequestPolicy: "mesh-services"`
			if len(uris) != 1 || uris[0] != allowed {
				typ = "Denied"
				msg = fmt.Sprintf(`No policy approved this request: [mesh-services: spec.allowed.uris.values: Invalid value: []string{%q}: %s]`,
					strings.Join(uris, `", "`), allowed)
			}
			conds, _, _ := unstructured.NestedSlice(cr.Object, "status", "conditions")
			conds = append(conds, map[string]any{
				"type": typ, "status": "True", "reason": "policy.cert-manager.io", "message": msg,
				"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
			})
			if err := unstructured.SetNestedSlice(cr.Object, conds, "status", "conditions"); err != nil {
				return err
			}
			if _, err := crs.UpdateStatus(ctx, cr, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
				// A conflict or a request deleted meanwhile: the next round
				// sees the current state.
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// requestURIs returns the URI SANs of a CertificateRequest's CSR.
func requestURIs(cr *unstructured.Unstructured) ([]string, error) {
	b64, _, _ := unstructured.NestedString(cr.Object, "spec", "request")
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("spec.request: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, errors.New("spec.request: no PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("spec.request: %w", err)
	}
	var out []string
	for _, u := range csr.URIs {
		out = append(out, u.String())
	}
	return out, nil
}

// newCAPair returns a CA certificate and its key as PEM, and the certificate.
func newCAPair(t *testing.T, cn string, now time.Time) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	cert, key, err := certmanagertest.NewCA(cn, now)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), cert
}

func indent(b []byte) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}
