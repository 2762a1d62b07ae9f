package identity

import (
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
	id, err := BuildIdentity(dp, `{{ tag "kuma.io/service" }}.mesh`)
	if err != nil {
		t.Fatal(err)
	}
	if id.CommonName != "backend.mesh" {
		t.Errorf("CN = %q", id.CommonName)
	}
	var uris []string
	for _, u := range id.URIs {
		uris = append(uris, u.String())
	}
	got := strings.Join(uris, " ")
	want := "spiffe://default/backend kuma://kuma.io/service/backend kuma://version/v1"
	if got != want {
		t.Errorf("URIs = %s, want %s", got, want)
	}
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
		_, err := BuildIdentity(tc.dp, tc.tmpl)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.tmpl, err, tc.want)
		}
	}
	// Two services and no template: both get SPIFFE IDs.
	id, err := BuildIdentity(two, "")
	if err != nil || len(id.Services) != 2 || id.URIs[0].String() != "spiffe://default/a" || id.URIs[1].String() != "spiffe://default/b" {
		t.Errorf("two services: %+v %v", id, err)
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
