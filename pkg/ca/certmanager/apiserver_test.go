package certmanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"meshca/internal/kubetest"
	"meshca/pkg/ca"
	"meshca/pkg/ca/certmanager/certmanagertest"
	"meshca/pkg/datasource"
	"meshca/pkg/store/memory"
)

// TestRealAPIServer runs the backend against a real kube-apiserver with
// cert-manager's own CRDs installed, so that what the backend creates must
// pass the CertificateRequest schema, names come from the server's
// generateName, and the watch, status subresource and deletion are the real
// ones. The backend acts as a service account that holds only the verbs it
// needs. The signing side is certmanagertest.Signer, which can also deny
// (cert-manager's built-in approver never does; a denial takes a policy
// approver such as approver-policy); TestRealCertManager has cert-manager's
// own controllers sign.
func TestRealAPIServer(t *testing.T) {
	srv := kubetest.Start(t)
	crds, err := filepath.Glob(filepath.Join(srv.Assets, "crds", "cert-manager", "cert-manager.io_*.yaml"))
	if err != nil || len(crds) == 0 {
		t.Fatalf("no cert-manager CRDs under %s/crds/cert-manager: build the assets with scripts/build-kube.sh", srv.Assets)
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
	admin, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}

	// setup gives each case a namespace of its own, the backend's RBAC in
	// it, and a signer watching it.
	setup := func(t *testing.T, ns string, behavior certmanagertest.Behavior, message string) (*Backend, *certmanagertest.Signer) {
		t.Helper()
		if err := kubetest.Apply(t.Context(), srv.Config, []byte(fmt.Sprintf(rbacManifest, ns))); err != nil {
			t.Fatal(err)
		}
		client, err := dynamic.NewForConfig(impersonate(srv, ns))
		if err != nil {
			t.Fatal(err)
		}
		st := memory.New()
		deps := ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now, Settings: map[string]string{SettingNamespace: ns}}
		b := NewWithClient(deps, client).(*Backend)
		b.pollInterval = time.Hour // the watch alone must see the outcome

		signer, err := certmanagertest.NewSigner(admin, ns, certmanagertest.WithBehavior(behavior))
		if err != nil {
			t.Fatal(err)
		}
		signer.SetBehavior(behavior, message)
		ctx, cancel := context.WithCancel(context.Background())
		if err := signer.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cancel()
			signer.Wait()
			if errs := signer.Errors(); len(errs) > 0 {
				t.Errorf("signer errors: %v", errs)
			}
		})
		return b, signer
	}
	left := func(t *testing.T, ns string) []string {
		t.Helper()
		list, err := admin.Resource(CertificateRequestResource()).Namespace(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range list.Items {
			names = append(names, o.GetName())
		}
		return names
	}

	t.Run("issued", func(t *testing.T) {
		const ns = "cm-issued"
		b, signer := setup(t, ns, certmanagertest.Issue, "")
		mb := mtlsBackend(t, issuerConf, "20s")
		bundle, err := b.TrustBundle(t.Context(), testMesh, mb)
		if err != nil {
			t.Fatalf("TrustBundle: %v", err)
		}
		if string(bundle) != string(signer.CAPEM()) {
			t.Fatalf("trust bundle is not the issuer's status.ca:\n%s", bundle)
		}
		req := issueRequest(t, "backend-1", "backend")
		iss, err := b.Issue(t.Context(), testMesh, mb, req)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		verifyBackendLeaf(t, iss, bundle, req)
		reqs := signer.Requests()
		if len(reqs) != 2 {
			t.Fatalf("signer saw %d requests, want the CA probe and the data plane's", len(reqs))
		}
		// The API server kept every field the backend set (an unknown or
		// misspelt field would have been pruned by the CRD's schema).
		got := reqs[1]
		if !regexp.MustCompile(`^meshca-default-backend-1-[a-z0-9]{5}$`).MatchString(got.Name) || iss.Ref != ns+"/"+got.Name {
			t.Errorf("name = %q, ref = %q", got.Name, iss.Ref)
		}
		if got.Duration != "6h0m0s" || got.IssuerRef["name"] != "ca-issuer" || len(got.Usages) != 4 || got.CSR == nil ||
			got.Labels[LabelDataplane] != "backend-1" {
			t.Errorf("request as stored: %+v", got)
		}
		if l := left(t, ns); len(l) != 0 {
			t.Errorf("certificate requests left behind: %v", l)
		}
	})

	t.Run("denied", func(t *testing.T) {
		const ns = "cm-denied"
		b, _ := setup(t, ns, certmanagertest.Deny, "no policy approved this request")
		_, err := b.Issue(t.Context(), testMesh, mtlsBackend(t, issuerConf, "20s"), issueRequest(t, "backend-1", "backend"))
		want := regexp.MustCompile(`^certificate request meshca-default-backend-1-[a-z0-9]{5} denied by policy.cert-manager.io: no policy approved this request$`)
		if err == nil || !want.MatchString(err.Error()) {
			t.Fatalf("error = %v, want %s", err, want)
		}
		if l := left(t, ns); len(l) != 0 {
			t.Errorf("certificate requests left behind: %v", l)
		}
	})

	t.Run("pending past requestTimeout", func(t *testing.T) {
		const ns = "cm-pending"
		b, signer := setup(t, ns, certmanagertest.Ignore, "")
		_, err := b.Issue(t.Context(), testMesh, mtlsBackend(t, issuerConf, "1s"), issueRequest(t, "backend-1", "backend"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error = %v, want a deadline error", err)
		}
		if !strings.Contains(err.Error(), "not issued within 1s") || !strings.Contains(err.Error(), "no approver approved or denied it") {
			t.Errorf("error = %v", err)
		}
		if l := left(t, ns); len(l) != 0 {
			t.Errorf("certificate requests left behind: %v", l)
		}
		if n := len(signer.Requests()); n != 1 {
			t.Errorf("signer saw %d requests, want 1", n)
		}
	})

	t.Run("no RBAC in the namespace", func(t *testing.T) {
		// A namespace where the control plane's service account was granted
		// nothing: the API's refusal reaches the caller, naming the namespace.
		client, err := dynamic.NewForConfig(impersonate(srv, "cm-issued"))
		if err != nil {
			t.Fatal(err)
		}
		if err := kubetest.CreateNamespace(t.Context(), srv.Config, "cm-forbidden"); err != nil {
			t.Fatal(err)
		}
		st := memory.New()
		b := NewWithClient(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now,
			Settings: map[string]string{SettingNamespace: "cm-forbidden"}}, client).(*Backend)
		_, err = b.Issue(t.Context(), testMesh, mtlsBackend(t, issuerConf, "5s"), issueRequest(t, "backend-1", "backend"))
		if err == nil || !strings.Contains(err.Error(), "create CertificateRequest in namespace cm-forbidden") ||
			!strings.Contains(err.Error(), "forbidden") {
			t.Fatalf("error = %v, want the API's forbidden", err)
		}
	})
}

// impersonate returns srv's configuration acting as the meshca-cp service
// account of namespace ns, which rbacManifest grants the backend's verbs.
func impersonate(srv *kubetest.Server, ns string) *rest.Config {
	cfg := rest.CopyConfig(srv.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":meshca-cp"}
	return cfg
}

// rbacManifest is the namespace (%[1]s) and the Role the certmanager backend
// needs there: exactly the verbs it uses on CertificateRequests, and `get` on
// Issuers and ClusterIssuers to explain a request left pending.
const rbacManifest = `apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: meshca-certmanager
  namespace: %[1]s
rules:
- apiGroups: [cert-manager.io]
  resources: [certificaterequests]
  verbs: [create, get, watch, delete]
- apiGroups: [cert-manager.io]
  resources: [issuers]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: meshca-certmanager
  namespace: %[1]s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: meshca-certmanager
subjects:
- kind: ServiceAccount
  name: meshca-cp
  namespace: %[1]s
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: meshca-certmanager-%[1]s
rules:
- apiGroups: [cert-manager.io]
  resources: [clusterissuers]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: meshca-certmanager-%[1]s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: meshca-certmanager-%[1]s
subjects:
- kind: ServiceAccount
  name: meshca-cp
  namespace: %[1]s
`
