package admission_test

import (
	"fmt"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"meshca/internal/kubetest"
	"meshca/pkg/api"
	"meshca/pkg/kube/admission"
	"meshca/pkg/kube/crd"
	"meshca/pkg/resources"
)

const benchDataplane = `{"apiVersion":"kuma.io/v1alpha1","kind":"Dataplane","metadata":{"name":"web-1","namespace":"default"},"mesh":"default",
"spec":{"networking":{"address":"10.0.0.1","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}}}`

// BenchmarkReviewDataplane: one Dataplane's review in process (decode,
// convert, dry-run apply against a memory store).
func BenchmarkReviewDataplane(b *testing.B) {
	mgr := newManager(b)
	if _, err := mgr.Apply(b.Context(), mustDecode(b, "type: Mesh\nname: default\n"), resources.ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	h := admission.NewHandler(mgr, admission.Options{SystemNamespace: "meshca-system"})
	req := &admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Group: "kuma.io", Version: "v1alpha1", Kind: api.TypeDataplane},
		Operation: admissionv1.Create, Name: "web-1", Namespace: "default", Object: runtime.RawExtension{Raw: []byte(benchDataplane)}}
	b.ReportAllocs()
	for b.Loop() {
		if resp := h.Review(b.Context(), req); !resp.Allowed {
			b.Fatal(resp.Result.Message)
		}
	}
}

// BenchmarkCreateDataplanes: Dataplanes created one after another through a
// real API server, without and with the webhook (TLS, AdmissionReview,
// validation): what the webhook adds to each write.
func BenchmarkCreateDataplanes(b *testing.B) {
	srv := kubetest.Start(b)
	ctx := b.Context()
	srv.Prepare(b)
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		b.Fatal(err)
	}
	dps := dyn.Resource(schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "dataplanes"}).Namespace("default")
	n := 0
	create := func(b *testing.B) {
		for b.Loop() {
			n++
			obj := &unstructured.Unstructured{}
			if err := obj.UnmarshalJSON([]byte(benchDataplane)); err != nil {
				b.Fatal(err)
			}
			obj.SetName(fmt.Sprintf("web-%d", n))
			if _, err := dps.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	// Warm the API server and etcd up first: the first writes are slower.
	b.Run("warm-up", func(b *testing.B) { create(b) })
	b.Run("no-webhook", create)
	mgr := newManager(b)
	if _, err := mgr.Apply(ctx, mustDecode(b, "type: Mesh\nname: default\n"), resources.ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	url, caPEM := webhook(b, admission.NewHandler(mgr, admission.Options{SystemNamespace: "meshca-system"}))
	if err := admission.Register(ctx, dyn, admission.Configuration("meshca-system", admission.Target{URL: url}, caPEM)); err != nil {
		b.Fatal(err)
	}
	// Wait until the API server calls the webhook: a bad one is refused.
	bad := &unstructured.Unstructured{}
	_ = bad.UnmarshalJSON([]byte(benchDataplane))
	bad.SetName("bad")
	_ = unstructured.SetNestedField(bad.Object, "", "spec", "networking", "address")
	for {
		if _, err := dps.Create(ctx, bad, metav1.CreateOptions{}); err != nil {
			break
		}
		_ = dps.Delete(ctx, "bad", metav1.DeleteOptions{})
	}
	b.Run("webhook", create)
}
