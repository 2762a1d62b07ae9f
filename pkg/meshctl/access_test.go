package meshctl_test

import (
	"strings"
	"testing"
)

func TestGetAccessResources(t *testing.T) {
	h := newHarness(t)
	h.run("apply", "-f", writeFile(t, "rbac.yaml", `type: AccessRole
name: team-a-dataplanes
rules:
- types: ["Dataplane"]
  mesh: team-a
  access: ["GET", "CREATE"]
---
type: AccessRoleBinding
name: team-a
subjects:
- type: Group
  name: team-a
- type: User
  name: alice
roles: ["team-a-dataplanes"]
`)).ok(t)
	if r := h.run("get", "access-roles").ok(t); !strings.Contains(r.stdout, "RULES") || !strings.Contains(r.stdout, "team-a-dataplanes   1") {
		t.Errorf("get access-roles:\n%s", r.stdout)
	}
	r := h.run("get", "access-role-bindings").ok(t)
	if !strings.Contains(r.stdout, "Group:team-a,User:alice") || !strings.Contains(r.stdout, "team-a-dataplanes") {
		t.Errorf("get access-role-bindings:\n%s", r.stdout)
	}
	if r := h.run("get", "access-role", "team-a-dataplanes", "-o", "yaml").ok(t); !strings.Contains(r.stdout, "mesh: team-a") {
		t.Errorf("get access-role -o yaml:\n%s", r.stdout)
	}
}
