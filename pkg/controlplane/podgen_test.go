package controlplane

import (
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"meshca/internal/kubetest"
)

// mayWatchPods tells a control plane installed before Dataplane generation
// existed (its ClusterRole reads no Pods) from one that may run it.
func TestMayWatchPods(t *testing.T) {
	srv := kubetest.Start(t)
	admin, err := kubernetes.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := mayWatchPods(t.Context(), admin); err != nil {
		t.Fatalf("an administrator: %v", err)
	}
	cfg := rest.CopyConfig(srv.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:meshca-system:meshca-cp"}
	old, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = mayWatchPods(t.Context(), old)
	if err == nil || !strings.Contains(err.Error(), "may not list pods") {
		t.Fatalf("a ServiceAccount without the rights: %v", err)
	}
}
