package api

import (
	"strings"
	"testing"
)

// Names and tags that become a data plane's URI SANs are refused at apply
// time unless they form a valid SPIFFE ID (spiffe://<mesh>/<service>) and
// fit Kuma's tag character sets, each error naming its field.
func TestIdentityNamesAreValidated(t *testing.T) {
	dp := func(mesh, tags string) string {
		return "type: Dataplane\nmesh: " + mesh + "\nname: d\nnetworking:\n  address: 1.2.3.4\n  inbound:\n  - port: 80\n    tags: " + tags + "\n"
	}
	for _, tc := range []struct {
		name, in, field, msg string
	}{
		{"upper-case mesh", "type: Mesh\nname: UpperMesh\n", "name", "SPIFFE trust domain"},
		{"upper-case mesh of a dataplane", dp("UpperMesh", "{kuma.io/service: a}"), "mesh", "SPIFFE trust domain"},
		{"upper-case mesh of a secret", "type: Secret\nmesh: UpperMesh\nname: s\ndata: aGk=\n", "mesh", "SPIFFE trust domain"},
		{"kubernetes mesh", "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: Default}\nspec: {}\n", "name", "lower-case"},
		{"service with space, slash, query and fragment", dp("default", `{kuma.io/service: "Svc With Space/../x?y#z"}`), `networking.inbound[0].tags["kuma.io/service"]`, "SPIFFE ID"},
		{"service with colon", dp("default", `{kuma.io/service: "a:b"}`), `networking.inbound[0].tags["kuma.io/service"]`, "SPIFFE ID"},
		{"service dot", dp("default", `{kuma.io/service: "."}`), `networking.inbound[0].tags["kuma.io/service"]`, `"." or ".."`},
		{"service dot-dot", dp("default", `{kuma.io/service: ".."}`), `networking.inbound[0].tags["kuma.io/service"]`, `"." or ".."`},
		{"gateway service", "type: Dataplane\nmesh: default\nname: g\nnetworking:\n  address: 1.2.3.4\n  gateway: {tags: {kuma.io/service: 'a b'}}\n", `networking.gateway.tags["kuma.io/service"]`, "SPIFFE ID"},
		{"tag value with query", dp("default", `{kuma.io/service: a, version: "v1?x=y"}`), `networking.inbound[0].tags["version"]`, "tag value must consist of"},
		{"tag value with slash", dp("default", `{kuma.io/service: a, version: "v1/x"}`), `networking.inbound[0].tags["version"]`, "tag value must consist of"},
		{"tag name with hash", dp("default", `{kuma.io/service: a, "ver#sion": v1}`), `networking.inbound[0].tags["ver#sion"]`, "tag name must consist of"},
		{"tag name with space", dp("default", `{kuma.io/service: a, "my tag": v1}`), `networking.inbound[0].tags["my tag"]`, "tag name must consist of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeAndValidate(tc.in)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if f := Fields(err); len(f) == 0 || !contains(f, tc.field) {
				t.Errorf("error %q names %q, not %q", err, f, tc.field)
			}
		})
	}
	// What Kuma and its examples use stays valid.
	for _, in := range []string{
		"type: Mesh\nname: default\n",
		"type: Mesh\nname: mesh-1.prod_eu\n",
		dp("default", "{kuma.io/service: backend_default_svc_80, kuma.io/protocol: http, version: v1.2-rc_3, kuma.io/zone: zone-1, team: a:b}"),
		dp("default", "{kuma.io/service: Backend.V2}"),
		"type: Secret\nmesh: default\nname: Sec-1\ndata: aGk=\n",
	} {
		if err := decodeAndValidate(in); err != nil {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
