package admission

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"meshca/pkg/kube/crd"
)

var meshResource = schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "meshes"}

// LiveMeshExists is Options.MeshExists asking the API server itself.
func LiveMeshExists(client dynamic.Interface) func(ctx context.Context, name string) (bool, error) {
	return func(ctx context.Context, name string) (bool, error) {
		_, err := client.Resource(meshResource).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			return true, nil
		case apierrors.IsNotFound(err):
			return false, nil
		default:
			return false, fmt.Errorf("read Mesh %q: %w", name, err)
		}
	}
}

var selfSubjectReviews = schema.GroupVersionResource{Group: "authentication.k8s.io", Version: "v1", Resource: "selfsubjectreviews"}

// WhoAmI returns the user name the API server knows the client as (a
// SelfSubjectReview, which every authenticated user may create).
func WhoAmI(ctx context.Context, client dynamic.Interface) (string, error) {
	review := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}}
	res, err := client.Resource(selfSubjectReviews).Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("SelfSubjectReview: %w", err)
	}
	name, _, _ := unstructured.NestedString(res.Object, "status", "userInfo", "username")
	if name == "" {
		return "", fmt.Errorf("SelfSubjectReview: no user name in the answer")
	}
	return name, nil
}
