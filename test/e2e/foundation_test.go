package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

const builtinMesh = `type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
    dpCert:
      rotation:
        expiration: 1d
---
type: Secret
mesh: default
name: sec-1
data: aGVsbG8=
`

// TestFoundation applies resources with the real meshctl against the real
// meshca-cp, restarts the control plane and finds everything still there.
func TestFoundation(t *testing.T) {
	t.Parallel()
	cp := startCP(t, t.TempDir())
	out := cp.apply(t, builtinMesh)
	if !strings.Contains(out, `Mesh "default" created`) || !strings.Contains(out, `Secret "sec-1" created`) {
		t.Errorf("apply said:\n%s", out)
	}
	// The builtin CA was created as secrets of the mesh.
	secrets := cp.mustMeshctl(t, "get", "secrets", "-m", "default", "-o", "json")
	if !strings.Contains(secrets, "default.ca-builtin-cert-ca-1") || !strings.Contains(secrets, "default.ca-builtin-key-ca-1") {
		t.Errorf("builtin CA secrets missing:\n%s", secrets)
	}

	// Bad input names the field and stores nothing.
	bad := "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: other\nspec:\n  mtls:\n    enabledBackend: nope\n    backends:\n    - name: ca-1\n      type: builtin\n"
	_, err := cp.meshctlIn(bad, "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "spec.mtls.enabledBackend") {
		t.Errorf("bad mesh: %v", err)
	}
	if _, err := cp.meshctl("get", "mesh", "other"); err == nil {
		t.Error("a refused mesh was stored")
	}
	// A Secret of a mesh that does not exist is refused.
	if _, err := cp.meshctlIn("type: Secret\nmesh: ghost\nname: s\ndata: aGk=\n", "apply", "-f", "-"); err == nil || !strings.Contains(err.Error(), `"ghost" does not exist`) {
		t.Errorf("secret of missing mesh: %v", err)
	}

	before := cp.mustMeshctl(t, "get", "mesh", "default", "-o", "json")
	cp.restart(t)
	after := cp.mustMeshctl(t, "get", "mesh", "default", "-o", "json")
	var b, a map[string]any
	if err := json.Unmarshal([]byte(before), &b); err != nil {
		t.Fatalf("%v: %s", err, before)
	}
	if err := json.Unmarshal([]byte(after), &a); err != nil {
		t.Fatalf("%v: %s", err, after)
	}
	if b["creationTime"] != a["creationTime"] || a["name"] != "default" {
		t.Errorf("mesh changed across restart:\n%s\n%s", before, after)
	}
	if !strings.Contains(cp.mustMeshctl(t, "get", "secrets", "-m", "default"), "sec-1") {
		t.Error("secret lost across restart")
	}
	// Deleting the mesh deletes its secrets.
	cp.mustMeshctl(t, "delete", "mesh", "default")
	if out := cp.mustMeshctl(t, "get", "secrets", "-m", "default", "-o", "json"); strings.Contains(out, "sec-1") {
		t.Errorf("secrets outlived their mesh: %s", out)
	}
}
