package controlplane

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"meshca/internal/kubetest"
	"meshca/pkg/identity"
	"meshca/pkg/resources"
	"meshca/pkg/store"
)

func TestCheckEnvironment(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string // "" for no error
	}{
		{Config{}, ""},
		{Config{Environment: "kubernetes"}, ""},
		{Config{Environment: "kubernetes", Store: "sqlite"}, `--store "sqlite": not with --environment kubernetes`},
		{Config{Environment: "kubernetes", StoreDSN: "postgres://x"}, "--store-dsn: not with --environment kubernetes"},
		{Config{Environment: "openshift"}, `--environment "openshift": must be universal or kubernetes`},
		{Config{SystemNamespace: "other"}, "--system-namespace is for --environment kubernetes"},
	} {
		err := tc.cfg.checkEnvironment()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("checkEnvironment(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestKubernetesReadOnly: on Kubernetes the API refuses writes of what
// kubectl manages, pointing at kubectl, and lets meshca's own records and
// the mode's guard through.
func TestKubernetesReadOnly(t *testing.T) {
	modeGuard := errors.New("mode guard")
	guard := kubernetesReadOnly(Config{Environment: "kubernetes"}, func(_ context.Context, k store.Key) error {
		if k.Type == "Zone" {
			return modeGuard
		}
		return nil
	})
	for _, key := range []store.Key{{Type: "Mesh", Name: "m"}, {Type: "Dataplane", Mesh: "m", Name: "d.demo"}, {Type: "Secret", Mesh: "m", Name: "s"}, {Type: "AccessRole", Name: "r"}} {
		err := guard(t.Context(), key)
		if !errors.Is(err, resources.ErrReadOnly) || !strings.Contains(err.Error(), "kubectl") {
			t.Errorf("%s: %v, want read-only pointing at kubectl", key, err)
		}
	}
	if err := guard(t.Context(), store.Key{Type: identity.TypeDataplaneIdentity, Mesh: "m", Name: "d"}); err != nil {
		t.Errorf("own record refused: %v", err)
	}
	if err := guard(t.Context(), store.Key{Type: "Zone", Name: "z"}); !errors.Is(err, modeGuard) {
		t.Errorf("the mode's guard was not asked: %v", err)
	}
	if kubernetesReadOnly(Config{}, nil) != nil {
		t.Error("universal: a guard was added")
	}
}

// TestEnsureCRDs against a real API server: without the right to create
// CRDs and without them installed, the error says how to install them; an
// admin's start registers them; after that a restricted one starts.
func TestEnsureCRDs(t *testing.T) {
	srv := kubetest.Start(t)
	ctx := t.Context()
	if err := kubetest.Apply(ctx, srv.Config, []byte(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: crd-reader}
rules:
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: crd-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: crd-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: reader}
`)); err != nil {
		t.Fatal(err)
	}
	reader := rest.CopyConfig(srv.Config)
	reader.Impersonate = rest.ImpersonationConfig{UserName: "reader"}
	logger := slog.New(slog.DiscardHandler)
	// The API server's authorizer learns the binding from its own cache.
	dyn, err := dynamic.NewForConfig(reader)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, err := dyn.Resource(crdGVR).Get(ctx, "meshes.kuma.io", metav1.GetOptions{}); apierrors.IsForbidden(err); _, err = dyn.Resource(crdGVR).Get(ctx, "meshes.kuma.io", metav1.GetOptions{}) {
		if time.Now().After(deadline) {
			t.Fatal("the reader's ClusterRoleBinding never took effect")
		}
		time.Sleep(50 * time.Millisecond)
	}

	err = ensureCRDs(ctx, reader, logger)
	if err == nil || !strings.Contains(err.Error(), "meshctl install crds") {
		t.Fatalf("restricted start without CRDs: %v, want the way to install them", err)
	}
	if err := ensureCRDs(ctx, srv.Config, logger); err != nil {
		t.Fatalf("admin start: %v", err)
	}
	if err := ensureCRDs(ctx, reader, logger); err != nil {
		t.Fatalf("restricted start with the CRDs installed: %v", err)
	}
}
