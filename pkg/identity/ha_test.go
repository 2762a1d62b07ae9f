package identity_test

import (
	"context"
	"crypto/x509"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"meshca/internal/pgtest"
	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/datasource"
	"meshca/pkg/identity"
	"meshca/pkg/leader"
	"meshca/pkg/resources"
	"meshca/pkg/store/postgres"
)

// instance is one control plane of an HA test: its own store connection,
// elector and identity loop on the shared database.
type instance struct {
	st   *postgres.Store
	el   *leader.Elector
	ids  *identity.Manager
	res  *resources.Manager
	stop func()
}

func startInstance(t *testing.T, dsn, id string) *instance {
	t.Helper()
	st, err := postgres.Open(t.Context(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now},
		map[string]ca.Constructor{api.BackendBuiltin: builtin.New})
	if err != nil {
		t.Fatal(err)
	}
	el, err := leader.New(t.Context(), dsn, st, leader.Options{ID: id, LeaseDuration: 600 * time.Millisecond, RenewInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{st: st, el: el,
		ids: identity.New(st, reg, identity.Options{Leader: el, RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond}),
		res: resources.NewManager(st, reg, resources.Options{OwnedTypes: []string{identity.TypeDataplaneIdentity}})}
	ctx, cancel := context.WithCancel(context.Background())
	elDone, idsDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(elDone); _ = el.Run(ctx) }()
	go func() { defer close(idsDone); _ = in.ids.Run(ctx) }()
	var once atomic.Bool
	in.stop = func() {
		if once.Swap(true) {
			return
		}
		cancel()
		<-elDone
		<-idsDone
		el.Close()
		_ = st.Close()
	}
	t.Cleanup(in.stop)
	<-in.ids.Ready()
	return in
}

func (in *instance) apply(t *testing.T, yaml string) {
	t.Helper()
	docs, err := api.DecodeDocuments([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if _, err := in.res.Apply(context.Background(), d.Resource, resources.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func (in *instance) serial(t *testing.T, name string) string {
	t.Helper()
	sec, ok := in.ids.Current("default", name)
	if !ok {
		return ""
	}
	certs, err := ca.ParseCertificates(sec.CertChainPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0].SerialNumber.Text(16)
}

func emptyDatabase(t *testing.T) string {
	t.Helper()
	dsn := pgtest.DSN(t, "meshca_test_identity")
	// Migrate, then empty what earlier tests left.
	st, err := postgres.Open(t.Context(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `TRUNCATE resources, changes, leader_lease, control_planes`); err != nil {
		t.Fatal(err)
	}
	return dsn
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// Two instances on one database: only the leader issues; the follower
// serves the same certificate and pushes the leader's re-issue to its
// subscriber; when the leader stops, the follower takes over without
// re-issuing what is valid, and issues what comes next.
func TestFollowerServesLeaderIssues(t *testing.T) {
	dsn := emptyDatabase(t)
	a := startInstance(t, dsn, "a")
	waitUntil(t, "a leads", func() bool { return a.el.Current() != nil })
	b := startInstance(t, dsn, "b")

	a.apply(t, "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - {name: ca-1, type: builtin}\n")
	a.apply(t, "type: Dataplane\nmesh: default\nname: web-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 9002, tags: {kuma.io/service: web}}]}\n")
	var first string
	waitUntil(t, "both instances serve web-1's certificate", func() bool {
		first = a.serial(t, "web-1")
		return first != "" && b.serial(t, "web-1") == first
	})

	var pushes atomic.Int32
	cancel := b.ids.Subscribe("default", "web-1", func() { pushes.Add(1) })
	defer cancel()
	// A new service: the leader re-issues; the follower's subscriber hears it.
	b.apply(t, "type: Dataplane\nmesh: default\nname: web-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 9002, tags: {kuma.io/service: web2}}]}\n")
	var second string
	waitUntil(t, "the follower serves the re-issued certificate", func() bool {
		second = b.serial(t, "web-1")
		return second != "" && second != first && a.serial(t, "web-1") == second
	})
	if pushes.Load() == 0 {
		t.Error("the follower's subscriber was not told of the leader's re-issue")
	}
	sec, _ := b.ids.Current("default", "web-1")
	certs, _ := ca.ParseCertificates(sec.CertChainPEM)
	if !hasURI(certs[0], "spiffe://default/web2") {
		t.Errorf("follower serves a certificate without the new service: %v", certs[0].URIs)
	}

	if h := b.ids.History("default", "web-1"); len(h) != 2 || h[1].Serial != identity.DisplaySerial(second) {
		t.Errorf("follower's history of web-1 = %+v, want the two certificates the leader issued", h)
	}

	a.stop()
	waitUntil(t, "b leads", func() bool { return b.el.Current() != nil })
	b.apply(t, "type: Dataplane\nmesh: default\nname: web-2\nnetworking: {address: 127.0.0.1, inbound: [{port: 9003, tags: {kuma.io/service: web}}]}\n")
	waitUntil(t, "the new leader certifies web-2", func() bool { return b.serial(t, "web-2") != "" })
	if got := b.serial(t, "web-1"); got != second {
		t.Errorf("web-1 re-issued on failover: serial %s, want %s kept", got, second)
	}
}

func hasURI(c *x509.Certificate, uri string) bool {
	for _, u := range c.URIs {
		if u.String() == uri {
			return true
		}
	}
	return false
}
