package identity_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/datasource"
	"meshca/pkg/identity"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

// Servable says why a data plane would wait for ever: it is not registered,
// or its mesh issues no certificates. A data plane holding a certificate is
// servable whatever happened to its mesh since.
func TestServable(t *testing.T) {
	f := newFixture(t)
	check := func(name string, wantNotFound bool, parts ...string) {
		t.Helper()
		err := f.ids.Servable(context.Background(), "default", name)
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
		return !strings.Contains(f.ids.Servable(context.Background(), "default", "backend-1").Error(), "does not exist")
	})
	check("backend-1", true, `dataplane "backend-1" not found in mesh "default"`)
	// A stream waiting for it does not make it exist.
	cancel := f.ids.Subscribe("default", "backend-1", func() {})
	check("backend-1", true, "not found")
	cancel()

	f.apply(twoDataplanes)
	f.waitFor("backend-1 known", func() bool {
		return !errors.Is(f.ids.Servable(context.Background(), "default", "backend-1"), identity.ErrDataplaneNotFound)
	})
	check("backend-1", false, `mesh "default" has no mTLS backend enabled`, "mtls.enabledBackend")

	f.apply("type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - {name: ca-1, type: builtin}\n")
	f.waitFor("mTLS enabled", func() bool { return f.ids.Servable(context.Background(), "default", "backend-1") == nil })
	f.waitFor("backend-1 certified", func() bool { l, _ := f.leaf("backend-1"); return l != nil })

	// mTLS turned off after issuance: the certificate held is still served.
	f.apply("type: Mesh\nname: default\n")
	f.apply("type: Dataplane\nmesh: default\nname: web-2\nnetworking: {address: 127.0.0.1, inbound: [{port: 9003, tags: {kuma.io/service: web}}]}\n")
	f.waitFor("web-2 known without mTLS", func() bool {
		err := f.ids.Servable(context.Background(), "default", "web-2")
		return err != nil && strings.Contains(err.Error(), "no mTLS backend enabled")
	})
	check("backend-1", false)
	check("no-such", true, `dataplane "no-such" not found in mesh "default"`)
}

// laggingStore delivers no change events: the manager's view stays as it
// was loaded, as when it is behind the store (a busy event loop, another
// control plane's write on PostgreSQL).
type laggingStore struct{ store.Store }

func (s laggingStore) Watch(ctx context.Context, _ ...string) <-chan store.Event {
	ch := make(chan store.Event)
	context.AfterFunc(ctx, func() { close(ch) })
	return ch
}

// A data plane applied a moment ago is not refused because the manager has
// not seen it yet: before saying NotFound or FailedPrecondition, Servable
// asks the store, and only the store's verdict refuses.
func TestServableAsksTheStoreBeforeRefusing(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now}, map[string]ca.Constructor{api.BackendBuiltin: builtin.New})
	if err != nil {
		t.Fatal(err)
	}
	res := resources.NewManager(st, reg, resources.Options{OwnedTypes: []string{identity.TypeDataplaneIdentity}})
	ids := identity.New(laggingStore{st}, reg, identity.Options{})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = ids.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-ids.Ready()

	apply := func(y string) {
		t.Helper()
		docs, err := api.DecodeDocuments([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			if _, err := res.Apply(ctx, d.Resource, resources.ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply("type: Mesh\nname: default\n")
	if err := ids.Servable(ctx, "default", "backend-1"); !errors.Is(err, identity.ErrDataplaneNotFound) {
		t.Fatalf("not in the store either: %v, want ErrDataplaneNotFound", err)
	}
	apply(twoDataplanes)
	if err := ids.Servable(ctx, "default", "backend-1"); err == nil || !strings.Contains(err.Error(), "no mTLS backend enabled") {
		t.Fatalf("registered in a mesh without mTLS: %v, want the mTLS reason", err)
	}
	apply("type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - {name: ca-1, type: builtin}\n")
	if err := ids.Servable(ctx, "default", "backend-1"); err != nil {
		t.Fatalf("registered with mTLS, not yet seen by the manager: %v, want nil", err)
	}
	if err := ids.Servable(ctx, "default", "no-such"); !errors.Is(err, identity.ErrDataplaneNotFound) {
		t.Fatalf("unknown dataplane: %v, want ErrDataplaneNotFound", err)
	}
}
