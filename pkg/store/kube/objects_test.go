package kube

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"meshca/pkg/store"
)

func TestSplitNamespaced(t *testing.T) {
	for _, tc := range []struct {
		in, name, ns string
		ok           bool
	}{
		{"web-1.demo", "web-1", "demo", true},
		{"web.v2.demo", "web.v2", "demo", true},
		{"web-1", "", "", false},
		{".demo", "", "", false},
		{"web.V2", "", "", false},     // not a namespace
		{"web_1.demo", "", "", false}, // not an object name
		{"backend_default_svc_80", "", "", false},
	} {
		name, ns, ok := splitNamespaced(tc.in)
		if name != tc.name || ns != tc.ns || ok != tc.ok {
			t.Errorf("splitNamespaced(%q) = %q, %q, %v; want %q, %q, %v", tc.in, name, ns, ok, tc.name, tc.ns, tc.ok)
		}
	}
}

// TestDerivedName: every key gets a valid Secret name, distinct keys
// distinct names, and the same key the same name.
func TestDerivedName(t *testing.T) {
	keys := []store.Key{
		{Type: "DataplaneIdentity", Mesh: "default", Name: "web-1.demo"},
		{Type: "DataplaneIdentity", Mesh: "default", Name: "web-1-demo"},
		{Type: "DataplaneIdentity", Mesh: "other", Name: "web-1.demo"},
		{Type: "LeaderTerm", Name: "term"},
		{Type: "T", Mesh: "m", Name: "Svc With Space/ünïcode"},
		{Type: "T", Name: "---"},
		{Type: "T", Name: strings.Repeat("long-name.", 60)},
	}
	seen := map[string]store.Key{}
	for _, k := range keys {
		for _, withType := range []bool{true, false} {
			n := derivedName(k, withType)
			if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
				t.Errorf("derivedName(%v, %v) = %q: %v", k, withType, n, errs)
			}
			if n != derivedName(k, withType) {
				t.Errorf("derivedName(%v) not deterministic", k)
			}
			if withType {
				if other, ok := seen[n]; ok {
					t.Errorf("%v and %v share %q", k, other, n)
				}
				seen[n] = k
			}
		}
	}
}

func TestSecretValue(t *testing.T) {
	if v, err := secretValue([]byte(`{"data":"aGVsbG8="}`)); err != nil || v == nil || *v != "aGVsbG8=" {
		t.Errorf("secretValue = %v, %v", v, err)
	}
	if v, err := secretValue([]byte(`{}`)); err != nil || v != nil {
		t.Errorf("secretValue({}) = %v, %v; want no data", v, err)
	}
	for spec, want := range map[string]string{
		`{"data":"not base64!"}`: "spec.data: not base64",
		`{"data":"aGk=","x":1}`:  `unknown field "x"`,
		`[1]`:                    "a Secret's spec must be",
	} {
		if _, err := secretValue([]byte(spec)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("secretValue(%s) = %v, want %q", spec, err, want)
		}
	}
	if _, err := specObject([]byte(`"a string"`)); err == nil || !strings.Contains(err.Error(), "must be a JSON object") {
		t.Errorf("specObject of a string = %v", err)
	}
	if m, err := specObject([]byte(`{"n":12345678901234567890}`)); err != nil || m["n"].(interface{ String() string }).String() != "12345678901234567890" {
		t.Errorf("specObject kept %v, %v; want the number exactly", m, err)
	}
}
