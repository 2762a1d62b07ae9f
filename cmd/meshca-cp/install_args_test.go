package main

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"meshca/pkg/kube/install"
)

// TestInstallArgsParse: the Deployment `meshctl install control-plane`
// prints runs meshca-cp with flags it has (no kubelet runs the pod in the
// tests, so this is where a renamed flag would show).
func TestInstallArgsParse(t *testing.T) {
	objs, err := install.Objects(install.Options{Namespace: "mesh-sys"})
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, o := range objs {
		if d, ok := o.(*appsv1.Deployment); ok {
			args = d.Spec.Template.Spec.Containers[0].Args
		}
	}
	if len(args) == 0 || args[0] != "run" {
		t.Fatalf("Deployment args %q", args)
	}
	cmd := newRunCmd()
	if err := cmd.ParseFlags(args[1:]); err != nil {
		t.Fatalf("meshca-cp %v: %v", args, err)
	}
	for flag, want := range map[string]string{
		"environment":       "kubernetes",
		"system-namespace":  "mesh-sys",
		"webhook-address":   "0.0.0.0:5443",
		"api-address":       "0.0.0.0:5681",
		"dp-server-address": "0.0.0.0:5678",
	} {
		if got := cmd.Flags().Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
}
