package crd_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"meshca/internal/kubetest"
	"meshca/pkg/kube/crd"
	"meshca/pkg/meshctl"
)

// TestManifestOnAPIServer applies the CRDs `meshctl install crds` prints to a
// real API server, then the
// seed's Kubernetes Mesh (examples/acmpca/mesh-kubernetes.yaml) with
// kubectl, and reads it back with kubectl and the API.
func TestManifestOnAPIServer(t *testing.T) {
	srv := kubetest.Start(t)
	var out, errb bytes.Buffer
	if code := meshctl.Main(t.Context(), meshctl.Config{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }},
		[]string{"install", "crds"}); code != 0 {
		t.Fatalf("meshctl install crds: exit %d: %s", code, errb.String())
	}
	manifest := out.Bytes()
	if err := kubetest.Apply(t.Context(), srv.Config, manifest); err != nil {
		t.Fatalf("apply CRDs: %v", err)
	}
	kubectl := srv.Kubectl(t)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), kubectl, append([]string{"--kubeconfig", srv.Kubeconfig}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	seed := filepath.Join("..", "..", "..", "examples", "acmpca", "mesh-kubernetes.yaml")
	if out := run("apply", "-f", seed); strings.TrimSpace(out) != "mesh.kuma.io/default created" {
		t.Errorf("kubectl apply: %q", out)
	}
	if out := run("get", "meshes", "-o", "name"); strings.TrimSpace(out) != "mesh.kuma.io/default" {
		t.Errorf("kubectl get meshes: %q", out)
	}

	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := dyn.Resource(schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "meshes"}).
		Get(t.Context(), "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The spec is kept whole (no pruning), down to the backend's conf.
	backends, _, _ := unstructured.NestedSlice(mesh.Object, "spec", "mtls", "backends")
	if len(backends) != 1 {
		t.Fatalf("spec.mtls.backends = %v", backends)
	}
	secret, _, _ := unstructured.NestedString(backends[0].(map[string]any), "conf", "caCert", "secret")
	if secret != "sec-1" {
		t.Errorf("spec.mtls.backends[0].conf.caCert.secret = %q, want sec-1 (pruned?)", secret)
	}

	// A Dataplane is namespaced and carries its mesh beside spec, as Kuma's.
	dp := "apiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmetadata: {name: web-1, namespace: default}\nmesh: default\n" +
		"spec: {networking: {address: 10.0.0.1, inbound: [{port: 8080, tags: {kuma.io/service: web}}]}}\n"
	if err := kubetest.Apply(t.Context(), srv.Config, []byte(dp)); err != nil {
		t.Fatalf("apply Dataplane: %v", err)
	}
	if out := run("get", "dataplanes", "-n", "default"); !strings.Contains(out, "web-1") || !strings.Contains(out, "default") {
		t.Errorf("kubectl get dataplanes:\n%s", out)
	}
}

func TestResourcesCoverAPITypes(t *testing.T) {
	names := map[string]bool{}
	for _, r := range crd.Resources() {
		if r.Name() != r.Plural+".kuma.io" || names[r.Kind] {
			t.Errorf("resource %+v", r)
		}
		names[r.Kind] = true
	}
	for _, k := range []string{"Mesh", "Dataplane", "AccessRole", "AccessRoleBinding"} {
		if !names[k] {
			t.Errorf("no CRD for %s", k)
		}
	}
}
