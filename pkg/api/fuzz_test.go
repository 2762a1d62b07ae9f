package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"meshca/pkg/api"
)

// FuzzDecodeDocuments feeds arbitrary YAML/JSON to the resource decoder:
// nothing may panic, every error must say where (a field or a document),
// and a decoded resource must validate without panicking and survive a
// round trip through its Universal JSON.
func FuzzDecodeDocuments(f *testing.F) {
	for _, s := range []string{
		"type: Mesh\nname: default\n",
		"type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n",
		"type: Secret\nmesh: default\nname: s\ndata: aGVsbG8=\n",
		"type: AccessRole\nname: r\nrules:\n- types: [Dataplane]\n  mesh: team-a\n  access: [GET]\n",
		"type: AccessRoleBinding\nname: b\nsubjects:\n- {type: Group, name: team-a}\nroles: [r]\n",
		"apiVersion: kuma.io/v1alpha1\nkind: AccessRole\nmetadata: {name: r}\nspec: {rules: [{access: [GET]}]}\n",
		"apiVersion: v1\nkind: Secret\nmetadata: {name: s, labels: {kuma.io/mesh: m}}\ntype: system.kuma.io/secret\ndata: {value: aGk=}\n",
		"type: Dataplane\nmesh: m\nname: d\nnetworking: {address: 1.2.3.4, inbound: [{port: 1, tags: {kuma.io/service: s}}]}\n",
		`{"type":"GlobalSecret","name":"g","data":"aGk="}`,
		"---\n---\n", "type: [", "&a [*a, *a]", "type: Mesh\nname: a\n---\ntype: Nope\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		docs, err := api.DecodeDocuments([]byte(in))
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		for _, d := range docs {
			_ = d.Resource.Validate()
			js, err := json.Marshal(d.Resource)
			if err != nil {
				t.Fatalf("marshal decoded %T: %v", d.Resource, err)
			}
			back, err := api.DecodeUniversal(js)
			if err != nil {
				t.Fatalf("decoded %T does not decode again from its own JSON: %v\n%s", d.Resource, err, js)
			}
			if back.GetMeta().Type != d.Resource.GetMeta().Type || back.GetMeta().Name != d.Resource.GetMeta().Name {
				t.Fatalf("round trip changed the resource: %s", js)
			}
			if strings.TrimSpace(d.Resource.GetMeta().Type) == "" {
				t.Fatalf("decoded a resource without a type: %s", js)
			}
		}
	})
}
