package kubetest

import (
	"testing"

	"meshca/pkg/kube/crd"
)

// Prepare readies the server for a meshca control plane, as
// `meshctl install crds` and an operator would: it applies meshca's CRDs
// and creates the namespaces given (the system namespace first, as a rule).
func (s *Server) Prepare(t testing.TB, namespaces ...string) {
	t.Helper()
	manifest, err := crd.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(t.Context(), s.Config, manifest); err != nil {
		t.Fatalf("apply meshca's CRDs: %v", err)
	}
	for _, ns := range namespaces {
		if err := CreateNamespace(t.Context(), s.Config, ns); err != nil {
			t.Fatal(err)
		}
	}
}
