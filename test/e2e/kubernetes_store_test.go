package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKubernetesStore runs the real meshca-cp with --environment kubernetes
// against a real API server: it registers its CRDs, a Mesh and a Dataplane
// applied with kubectl get the builtin CA's root (a Kubernetes Secret) and
// an agent a certificate, the API refuses to write what kubectl manages,
// and a restart with an empty data directory (a new pod) issues nothing
// again: every piece of state is in the API server.
func TestKubernetesStore(t *testing.T) {
	t.Parallel()
	k := startKube(t)
	srv := k.srv
	k.must(t, "create", "namespace", "meshca-system")
	k.must(t, "create", "namespace", "demo")

	cp := &controlPlane{dataDir: t.TempDir(), api: freePort(t), dp: freePort(t), apiTLS: freePort(t),
		args: []string{"--environment", "kubernetes", "--kubeconfig", srv.Kubeconfig, "--system-namespace", "meshca-system",
			// No kubelet runs the webhook's Service here (the kubectl
			// end-to-end test serves it by URL).
			"--webhook-address", ""}}
	cp.launch(t)
	if !strings.Contains(k.must(t, "get", "crd", "-o", "name"), "meshes.kuma.io") {
		t.Fatal("meshca-cp did not register its CRDs")
	}
	if _, err := os.Stat(filepath.Join(cp.dataDir, "encryption.key")); err == nil {
		t.Error("an encryption key was created: on Kubernetes secrets are the API server's to keep, unless --encryption-key-file is given")
	}

	k.mustIn(t, `apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    enabledBackend: ca-1
    backends:
    - name: ca-1
      type: builtin
      dpCert:
        rotation:
          expiration: 1d
---
`+kubeWebDataplane, "apply", "-f", "-")

	// The builtin CA's root and key are Kuma Secrets in the system namespace.
	waitFor(t, 30*time.Second, "the builtin root Secret", func() bool {
		out, err := k.run(nil, "", "get", "secret", "-n", "meshca-system", "default.ca-builtin-cert-ca-1", "-o", "jsonpath={.type} {.metadata.labels.kuma\\.io/mesh}")
		return err == nil && out == "system.kuma.io/secret default"
	})

	a := startAgent(t, cp, "default", "web-1.demo", "web-1.demo")
	leaf := a.waitCert(t)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://default/web" {
		t.Fatalf("certificate URIs %v, want spiffe://default/web", leaf.URIs)
	}
	// The issued identity (with its private key) is a state Secret.
	if out := k.must(t, "get", "secrets", "-n", "meshca-system", "-l", "meshca.io/type=DataplaneIdentity", "-o", "jsonpath={.items[*].metadata.annotations.meshca\\.io/name}"); out != "web-1.demo" {
		t.Errorf("DataplaneIdentity Secrets name %q, want web-1.demo", out)
	}

	// Reads work through the API; writes of what kubectl manages do not.
	if out := cp.mustMeshctl(t, "get", "meshes"); !strings.Contains(out, "default") {
		t.Errorf("meshctl get meshes:\n%s", out)
	}
	_, err := cp.meshctlIn("type: Mesh\nname: other\n", "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "kubectl") {
		t.Errorf("meshctl apply of a Mesh on Kubernetes: %v, want a refusal pointing at kubectl", err)
	}
	if out, _ := k.run(nil, "", "get", "mesh", "other"); !strings.Contains(out, "NotFound") {
		t.Errorf("the refused Mesh exists: %s", out)
	}

	// A new pod: same API server, empty data directory.
	cp.proc.stop()
	cp.dataDir = t.TempDir()
	cp.launch(t)
	waitFor(t, 30*time.Second, "the agent reconnected", func() bool {
		out, err := cp.meshctl("inspect", "dataplane", "web-1.demo", "-m", "default", "-o", "json")
		if err != nil {
			return false
		}
		var in struct {
			Insight struct {
				Connected bool `json:"connected"`
			} `json:"dataplaneInsight"`
		}
		return json.Unmarshal([]byte(out), &in) == nil && in.Insight.Connected
	})
	if got := a.leaf(); !sameSerial(got, leaf) {
		t.Errorf("the agent's certificate changed across the restart: serial %v, was %v", got.SerialNumber, leaf.SerialNumber)
	}
	if n := cp.metric(t, `meshca_certificates_issued_total{backend_type="builtin",result="success"}`); n != 0 {
		t.Errorf("the restarted control plane issued %v certificates, want none", n)
	}
}
