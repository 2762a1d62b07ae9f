package identity_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/datasource"
	"meshca/pkg/identity"
	"meshca/pkg/resources"
	"meshca/pkg/store/memory"
)

// unknownBundle cannot tell its trust bundle while down is set, as a
// restarted control plane's CA backend before the Secrets it reads are
// loaded (the Kubernetes store lists Secrets apart from the Mesh) or while
// an external CA is unreachable.
type unknownBundle struct {
	ca.Backend
	down atomic.Bool
}

func (u *unknownBundle) TrustBundle(ctx context.Context, mesh string, b api.MTLSBackend) ([]byte, error) {
	if u.down.Load() {
		return nil, errors.New("CA not reachable yet")
	}
	return u.Backend.TrustBundle(ctx, mesh, b)
}

// A restarted control plane finds its data planes' certificates in the
// store; while it does not know what they must trust it serves nothing (a
// data plane refuses secrets whose trust bundle is empty), and it tells
// the subscribers once it knows.
func TestRestartServesNothingWithoutTheTrustBundle(t *testing.T) {
	// Once the CA answers, the bundle is fetched again when a Secret of the
	// mesh changes, or by the refresh's own retry when nothing happens.
	for _, secretChanges := range []bool{true, false} {
		name := "a Secret changes"
		if !secretChanges {
			name = "nothing happens"
		}
		t.Run(name, func(t *testing.T) { testRestartWithoutBundle(t, secretChanges) })
	}
}

func testRestartWithoutBundle(t *testing.T, secretChanges bool) {
	st := memory.New()
	run := func(be *unknownBundle) (*identity.Manager, *resources.Manager) {
		reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now}, map[string]ca.Constructor{
			api.BackendBuiltin: func(d ca.Deps) (ca.Backend, error) {
				b, err := builtin.New(d)
				if be == nil {
					return b, err
				}
				be.Backend = b
				return be, err
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ids := identity.New(st, reg, identity.Options{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = ids.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		<-ids.Ready()
		return ids, resources.NewManager(st, reg, resources.Options{OwnedTypes: []string{identity.TypeDataplaneIdentity}})
	}
	apply := func(res *resources.Manager, yaml string) {
		t.Helper()
		docs, err := api.DecodeDocuments([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			if _, err := res.Apply(context.Background(), d.Resource, resources.ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	first, res := run(nil)
	apply(res, "type: Mesh\nname: default\nmtls: {enabledBackend: ca-1, backends: [{name: ca-1, type: builtin}]}\n---\n"+twoDataplanes)
	var before identity.Secrets
	waitFor("backend-1 certified", func() bool {
		var ok bool
		before, ok = first.Current("default", "backend-1")
		return ok
	})

	be := &unknownBundle{}
	be.down.Store(true)
	restarted, res := run(be)
	notified := make(chan struct{}, 1)
	defer restarted.Subscribe("default", "backend-1", func() {
		select {
		case notified <- struct{}{}:
		default:
		}
	})()
	if sec, ok := restarted.Current("default", "backend-1"); ok {
		t.Fatalf("served without a trust bundle: %q", sec.TrustBundlePEM)
	}
	be.down.Store(false)
	if secretChanges {
		apply(res, "type: Secret\nmesh: default\nname: unrelated\ndata: aGVsbG8=\n")
	}
	waitFor("backend-1 served once the bundle is known", func() bool {
		_, ok := restarted.Current("default", "backend-1")
		return ok
	})
	sec, _ := restarted.Current("default", "backend-1")
	if string(sec.CertChainPEM) != string(before.CertChainPEM) || string(sec.TrustBundlePEM) != string(before.TrustBundlePEM) {
		t.Error("the restarted control plane serves another certificate or bundle than the one issued")
	}
	select {
	case <-notified:
	case <-time.After(5 * time.Second):
		t.Error("subscribers were not told when the bundle became known")
	}
}
