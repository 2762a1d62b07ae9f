package podgen

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The informer keeps a generated Dataplane whole (it is compared and
// updated) and of a hand-made one only what tells it apart.
func TestSlimDataplane(t *testing.T) {
	mk := func(owned bool) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "kuma.io/v1alpha1", "kind": "Dataplane", "mesh": "default",
			"spec": map[string]any{"networking": map[string]any{"address": "10.0.0.1"}},
		}}
		u.SetNamespace("demo")
		u.SetName("web-1")
		u.SetUID("uid-1")
		u.SetResourceVersion("42")
		u.SetAnnotations(map[string]string{"note": "kept when generated"})
		u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "kubectl"}})
		if owned {
			u.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: "web-1", UID: "pod-uid"}})
		}
		return u
	}
	got, err := slimDataplane(mk(true))
	if err != nil {
		t.Fatal(err)
	}
	gen := got.(*unstructured.Unstructured)
	if gen.Object["spec"] == nil || gen.Object["mesh"] != "default" || gen.GetAnnotations()["note"] == "" || podOwner(gen) == nil {
		t.Errorf("a generated Dataplane lost what it is compared and updated by: %v", gen.Object)
	}
	if gen.GetManagedFields() != nil {
		t.Error("managedFields kept")
	}

	got, err = slimDataplane(mk(false))
	if err != nil {
		t.Fatal(err)
	}
	hand := got.(*unstructured.Unstructured)
	if hand.Object["spec"] != nil || hand.Object["mesh"] != nil || hand.GetAnnotations() != nil {
		t.Errorf("a hand-made Dataplane kept more than its identity: %v", hand.Object)
	}
	if hand.GetNamespace() != "demo" || hand.GetName() != "web-1" || hand.GetUID() != "uid-1" || hand.GetResourceVersion() != "42" || podOwner(hand) != nil {
		t.Errorf("a hand-made Dataplane's identity: %v", hand.Object)
	}
}
