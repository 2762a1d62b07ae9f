package api_test

import (
	"slices"
	"testing"

	"meshca/pkg/api"
)

func TestAccessResourcesDecodeAndValidate(t *testing.T) {
	universal := `type: AccessRole
name: team-a-dataplanes
rules:
- types: ["Dataplane"]
  mesh: team-a
  names: ["web-1"]
  access: ["CREATE", "UPDATE", "DELETE", "GET", "GENERATE_DATAPLANE_TOKEN"]
---
type: AccessRoleBinding
name: team-a
subjects:
- type: Group
  name: team-a
- type: User
  name: alice
roles: ["team-a-dataplanes"]
`
	kube := `apiVersion: kuma.io/v1alpha1
kind: AccessRole
metadata:
  name: team-a-dataplanes
spec:
  rules:
  - types: ["Dataplane"]
    mesh: team-a
    names: ["web-1"]
    access: ["CREATE", "UPDATE", "DELETE", "GET", "GENERATE_DATAPLANE_TOKEN"]
---
apiVersion: kuma.io/v1alpha1
kind: AccessRoleBinding
metadata:
  name: team-a
spec:
  subjects:
  - type: Group
    name: team-a
  - type: User
    name: alice
  roles: ["team-a-dataplanes"]
`
	for form, text := range map[string]string{"universal": universal, "kubernetes": kube} {
		docs, err := api.DecodeDocuments([]byte(text))
		if err != nil {
			t.Fatalf("%s: %v", form, err)
		}
		role, ok := docs[0].Resource.(*api.AccessRole)
		if !ok || role.Name != "team-a-dataplanes" || role.Rules[0].Mesh != "team-a" || len(role.Rules[0].Access) != 5 {
			t.Fatalf("%s: role %+v", form, docs[0].Resource)
		}
		b, ok := docs[1].Resource.(*api.AccessRoleBinding)
		if !ok || len(b.Subjects) != 2 || b.Subjects[1] != (api.Subject{Type: "User", Name: "alice"}) || b.Roles[0] != "team-a-dataplanes" {
			t.Fatalf("%s: binding %+v", form, docs[1].Resource)
		}
		for _, d := range docs {
			if err := d.Resource.Validate(); err != nil {
				t.Fatalf("%s: %v", form, err)
			}
		}
	}
}

func TestAccessResourcesInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		fields    []string
	}{
		{"no rules", "type: AccessRole\nname: r\nrules: []\n", []string{"rules"}},
		{"bad access and type", "type: AccessRole\nname: r\nrules:\n- types: [Dataplane, Nope]\n  access: [GET, FLY]\n",
			[]string{"rules[0].types[1]", "rules[0].access[1]"}},
		{"no access", "type: AccessRole\nname: r\nrules:\n- mesh: 'bad mesh'\n", []string{"rules[0].mesh", "rules[0].access"}},
		{"mesh on a global role", "type: AccessRole\nname: r\nmesh: m\nrules:\n- access: [GET]\n", []string{"mesh"}},
		{"bad subject", "type: AccessRoleBinding\nname: b\nsubjects:\n- type: Team\n  name: ''\nroles: [r]\n",
			[]string{"subjects[0].type", "subjects[0].name"}},
		{"no roles", "type: AccessRoleBinding\nname: b\nsubjects:\n- {type: User, name: alice}\nroles: []\n", []string{"roles"}},
	} {
		res, _, err := api.DecodeOne([]byte(tc.doc))
		if err == nil {
			err = res.Validate()
		}
		if got := api.Fields(err); !slices.Equal(got, tc.fields) {
			t.Errorf("%s: fields %q, want %q (err %v)", tc.name, got, tc.fields, err)
		}
	}
	if _, _, err := api.DecodeOne([]byte("type: AccessRole\nname: r\nrules:\n- acess: [GET]\n")); !slices.Equal(api.Fields(err), []string{"rules[0].acess"}) {
		t.Errorf("unknown field: %v (fields %q)", err, api.Fields(err))
	}
}
