package kubetest

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.meshca.io
spec:
  group: example.meshca.io
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
---
apiVersion: example.meshca.io/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {size: 3}
`

// TestStart checks what the package promises: a ready API server over
// verified TLS, a CRD and an object of it applied in one manifest, RBAC
// enforced for other users, and a kubeconfig kubectl can use.
func TestStart(t *testing.T) {
	srv := Start(t)
	ctx := t.Context()
	if err := Apply(ctx, srv.Config, []byte(widgetCRD)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	widgets := schema.GroupVersionResource{Group: "example.meshca.io", Version: "v1", Resource: "widgets"}
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	w, err := dyn.Resource(widgets).Namespace("default").Get(ctx, "w1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get applied widget: %v", err)
	}
	if size, _, _ := unstructured.NestedInt64(w.Object, "spec", "size"); size != 3 {
		t.Errorf("spec.size = %d, want 3", size)
	}
	if err := Apply(ctx, srv.Config, []byte("apiVersion: example.meshca.io/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 0}\n")); err == nil ||
		!strings.Contains(err.Error(), "spec.size") {
		t.Errorf("a widget against its schema: error = %v, want one naming spec.size", err)
	}

	other := rest.CopyConfig(srv.Config)
	other.Impersonate = rest.ImpersonationConfig{UserName: "nobody"}
	odyn, err := dynamic.NewForConfig(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := odyn.Resource(widgets).Namespace("default").List(context.Background(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a user without RBAC listed widgets: error = %v, want forbidden", err)
	}

	out, err := exec.CommandContext(ctx, srv.Kubectl(t), "--kubeconfig", srv.Kubeconfig, "get", "widgets", "-o", "name").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "widget.example.meshca.io/w1" {
		t.Errorf("kubectl get widgets: %v\n%s", err, out)
	}
}
