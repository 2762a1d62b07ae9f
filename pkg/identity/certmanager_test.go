package identity_test

import (
	"context"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/certmanager"
	"meshca/pkg/ca/certmanager/certmanagertest"
	"meshca/pkg/datasource"
	"meshca/pkg/identity"
	"meshca/pkg/resources"
	"meshca/pkg/store/memory"
)

// TestCertManagerThroughTheIdentityLoop drives the certmanager backend the
// way the control plane does (resource manager, identity loop) against a
// fake Kubernetes API and a signer acting as cert-manager's CA issuer: both
// data planes get certificates that verify against the bundle they receive.
func TestCertManagerThroughTheIdentityLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := certmanagertest.NewFakeClient()
	signer, err := certmanagertest.NewSigner(client, certmanager.DefaultNamespace)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = signer.Start(ctx) }()

	st := memory.New()
	deps := ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now, Settings: map[string]string{}}
	reg, err := ca.NewRegistry(deps, map[string]ca.Constructor{
		api.BackendCertManager: func(d ca.Deps) (ca.Backend, error) { return certmanager.NewWithClient(d, client), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	res := resources.NewManager(st, reg, resources.Options{})
	ids := identity.New(st, reg, identity.Options{})
	done := make(chan struct{})
	go func() { defer close(done); _ = ids.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-ids.Ready()

	f := &fixture{t: t, st: st, res: res, ids: ids}
	f.apply("type: Mesh\nname: default\nmtls:\n  enabledBackend: cm\n  backends:\n  - name: cm\n    type: certmanager\n    dpCert: {rotation: {expiration: 2h}}\n    conf:\n      issuerRef: {name: mesh-ca}\n      commonName: '{{ tag \"kuma.io/service\" }}.mesh'\n")
	f.apply(twoDataplanes)
	f.waitFor("both certified by cert-manager", func() bool {
		a, _ := f.leaf("backend-1")
		b, _ := f.leaf("web-1")
		return a != nil && b != nil
	})
	for _, name := range []string{"backend-1", "web-1"} {
		leaf, sec := f.leaf(name)
		if err := verify(t, leaf, sec.TrustBundlePEM); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 2*time.Hour-2*time.Minute || got > 2*time.Hour+2*time.Minute {
			t.Errorf("%s: lifetime %v, want 2h", name, got)
		}
	}
	if leaf, _ := f.leaf("web-1"); leaf.Subject.CommonName != "web.mesh" || leaf.URIs[0].String() != "spiffe://default/web" {
		t.Errorf("web-1: CN %q URIs %v", leaf.Subject.CommonName, leaf.URIs)
	}
}
