package identity

import (
	"net/url"
	"strings"
	"testing"

	"meshca/pkg/api"
)

func dataplane(tags ...map[string]string) *api.Dataplane {
	dp := &api.Dataplane{Meta: api.Meta{Type: api.TypeDataplane, Mesh: "default", Name: "backend-1"}}
	dp.Networking.Address = "127.0.0.1"
	for i, t := range tags {
		dp.Networking.Inbound = append(dp.Networking.Inbound, api.Inbound{Port: uint32(8080 + i), Tags: t})
	}
	return dp
}

func TestBuildIdentity(t *testing.T) {
	dp := dataplane(map[string]string{"kuma.io/service": "backend", "version": "v1"})
	for format, want := range map[string]string{
		api.SVIDFormatKuma:   "spiffe://default/backend kuma://kuma.io/service/backend kuma://version/v1",
		api.SVIDFormatSPIFFE: "spiffe://default/backend",
	} {
		id, err := BuildIdentity(dp, `{{ tag "kuma.io/service" }}.mesh`, format)
		if err != nil {
			t.Fatal(err)
		}
		if id.CommonName != "backend.mesh" {
			t.Errorf("%s: CN = %q", format, id.CommonName)
		}
		if got := uriList(id.URIs); got != want {
			t.Errorf("%s: URIs = %s, want %s", format, got, want)
		}
	}
}

func uriList(us []*url.URL) string {
	var out []string
	for _, u := range us {
		out = append(out, u.String())
	}
	return strings.Join(out, " ")
}

func TestCommonNameErrors(t *testing.T) {
	two := dataplane(map[string]string{"kuma.io/service": "a"}, map[string]string{"kuma.io/service": "b"})
	for _, tc := range []struct {
		dp   *api.Dataplane
		tmpl string
		want string
	}{
		{two, `{{ tag "kuma.io/service" }}.mesh`, "several values (a, b)"},
		{dataplane(map[string]string{"kuma.io/service": "a"}), `{{ tag "team" }}`, `tag "team" is not set`},
		{dataplane(map[string]string{"kuma.io/service": "a"}), `{{ tag "x" `, "commonName template"},
		{dataplane(map[string]string{"kuma.io/service": strings.Repeat("a", 70)}), `{{ tag "kuma.io/service" }}`, "more than the 64"},
	} {
		_, err := BuildIdentity(tc.dp, tc.tmpl, api.SVIDFormatKuma)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.tmpl, err, tc.want)
		}
	}
	// Two services and no template: both get SPIFFE IDs in the Kuma form;
	// the SPIFFE form holds one, the first service's.
	id, err := BuildIdentity(two, "", api.SVIDFormatKuma)
	if err != nil || len(id.Services) != 2 || id.URIs[0].String() != "spiffe://default/a" || id.URIs[1].String() != "spiffe://default/b" {
		t.Errorf("two services: %+v %v", id, err)
	}
	id, err = BuildIdentity(two, "", api.SVIDFormatSPIFFE)
	if err != nil || len(id.Services) != 2 || uriList(id.URIs) != "spiffe://default/a" {
		t.Errorf("two services, SPIFFE form: %+v %v", id, err)
	}
}

func TestIdempotencyKeyIsStableAndShort(t *testing.T) {
	a := IdempotencyKey("default", "backend-1", 3)
	if a != IdempotencyKey("default", "backend-1", 3) || len(a) > 36 {
		t.Errorf("key %q", a)
	}
	if a == IdempotencyKey("default", "backend-1", 4) || a == IdempotencyKey("default", "backend-2", 3) {
		t.Error("keys collide")
	}
}

// Every kuma:// SAN parses back to the tag it was made from: a tag that
// cannot (a query, a fragment, a port-like host, spaces) gets no SAN rather
// than a URI that names something else.
func TestKumaURIRoundTrip(t *testing.T) {
	tags := []string{"kuma.io/service", "version", "team", "a:1", "a:b", "x?y", "x#y", "with space", "/lead", "k8s.io/ns", "%41", "a@b", ""}
	values := []string{"backend", "v1.2-rc_3", "a:b", "x?y=z", "x#z", "..", ".", "with space", "a/b", "%2F", "é", ""}
	for _, tag := range tags {
		for _, value := range values {
			u, err := KumaURI(tag, value)
			if err != nil {
				continue
			}
			s := u.String()
			if strings.ContainsAny(s, "?# ") {
				t.Errorf("KumaURI(%q, %q) = %q carries a raw '?', '#' or space", tag, value, s)
			}
			back, err := url.Parse(s)
			if err != nil {
				t.Errorf("KumaURI(%q, %q) = %q does not parse: %v", tag, value, s, err)
				continue
			}
			if got := back.Host + back.Path; back.Scheme != "kuma" || got != tag+"/"+value || back.RawQuery != "" || back.Fragment != "" || back.User != nil {
				t.Errorf("KumaURI(%q, %q) = %q parses back to %q, not the tag", tag, value, s, got)
			}
		}
	}
	if u, err := KumaURI("kuma.io/service", "backend_default_svc_80"); err != nil || u.String() != "kuma://kuma.io/service/backend_default_svc_80" {
		t.Errorf("Kuma service tag: %v %v", u, err)
	}
}

// A data plane stored before names were validated does not get a
// certificate whose SPIFFE ID is not one: its issuance fails, saying why.
func TestBuildIdentityRefusesNonSPIFFENames(t *testing.T) {
	bad := dataplane(map[string]string{"kuma.io/service": "Svc With Space/../x?y#z"})
	if _, err := BuildIdentity(bad, "", api.SVIDFormatSPIFFE); err == nil || !strings.Contains(err.Error(), "SPIFFE") {
		t.Errorf("service with space, slash and query: %v, want a SPIFFE error", err)
	}
	upper := dataplane(map[string]string{"kuma.io/service": "backend"})
	upper.Mesh = "UpperMesh"
	if _, err := BuildIdentity(upper, "", api.SVIDFormatKuma); err == nil || !strings.Contains(err.Error(), "trust domain") {
		t.Errorf("upper-case mesh: %v, want a trust domain error", err)
	}
	ok := dataplane(map[string]string{"kuma.io/service": "backend_default_svc_80"})
	id, err := BuildIdentity(ok, "", api.SVIDFormatSPIFFE)
	if err != nil || id.URIs[0].String() != "spiffe://default/backend_default_svc_80" {
		t.Errorf("Kuma service name: %v %v", id.URIs, err)
	}
}
