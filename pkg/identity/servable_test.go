package identity_test

import (
	"errors"
	"strings"
	"testing"

	"meshca/pkg/identity"
)

// Servable says why a data plane would wait for ever: it is not registered,
// or its mesh issues no certificates. A data plane holding a certificate is
// servable whatever happened to its mesh since.
func TestServable(t *testing.T) {
	f := newFixture(t)
	check := func(name string, wantNotFound bool, parts ...string) {
		t.Helper()
		err := f.ids.Servable("default", name)
		if len(parts) == 0 {
			if err != nil {
				t.Fatalf("Servable(%s) = %v, want nil", name, err)
			}
			return
		}
		if err == nil {
			t.Fatalf("Servable(%s) = nil, want an error containing %q", name, parts)
		}
		if errors.Is(err, identity.ErrDataplaneNotFound) != wantNotFound {
			t.Fatalf("Servable(%s) = %v: ErrDataplaneNotFound is %v, want %v", name, err, !wantNotFound, wantNotFound)
		}
		for _, p := range parts {
			if !strings.Contains(err.Error(), p) {
				t.Fatalf("Servable(%s) = %q, want it to contain %q", name, err, p)
			}
		}
	}
	check("backend-1", true, `dataplane "backend-1"`, `mesh "default" does not exist`)

	f.apply("type: Mesh\nname: default\n")
	f.waitFor("mesh known", func() bool {
		return !strings.Contains(f.ids.Servable("default", "backend-1").Error(), "does not exist")
	})
	check("backend-1", true, `dataplane "backend-1" not found in mesh "default"`)
	// A stream waiting for it does not make it exist.
	cancel := f.ids.Subscribe("default", "backend-1", func() {})
	check("backend-1", true, "not found")
	cancel()

	f.apply(twoDataplanes)
	f.waitFor("backend-1 known", func() bool { return !errors.Is(f.ids.Servable("default", "backend-1"), identity.ErrDataplaneNotFound) })
	check("backend-1", false, `mesh "default" has no mTLS backend enabled`, "mtls.enabledBackend")

	f.apply("type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - {name: ca-1, type: builtin}\n")
	f.waitFor("mTLS enabled", func() bool { return f.ids.Servable("default", "backend-1") == nil })
	f.waitFor("backend-1 certified", func() bool { l, _ := f.leaf("backend-1"); return l != nil })

	// mTLS turned off after issuance: the certificate held is still served.
	f.apply("type: Mesh\nname: default\n")
	f.apply("type: Dataplane\nmesh: default\nname: web-2\nnetworking: {address: 127.0.0.1, inbound: [{port: 9003, tags: {kuma.io/service: web}}]}\n")
	f.waitFor("web-2 known without mTLS", func() bool {
		err := f.ids.Servable("default", "web-2")
		return err != nil && strings.Contains(err.Error(), "no mTLS backend enabled")
	})
	check("backend-1", false)
	check("no-such", true, `dataplane "no-such" not found in mesh "default"`)
}
