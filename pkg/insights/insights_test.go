package insights_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
	"meshca/pkg/identity"
	"meshca/pkg/insights"
	"meshca/pkg/resources"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// ids is certificate state keyed by "mesh/name".
type ids map[string]identity.Insight

func (m ids) Insight(mesh, name string) (identity.Insight, bool) {
	in, ok := m[mesh+"/"+name]
	return in, ok
}

type env struct {
	*apiservertest.Env
	clock *fakeClock
	conns *insights.Connections
}

func start(t *testing.T, certs ids) *env {
	t.Helper()
	e := apiservertest.Start(t, apiserver.Options{})
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	conns := insights.NewConnections("cp-1", clock.now)
	for p, h := range insights.New(e.Manager, certs, conns).Handlers(nil) {
		e.API.Handle(p, h)
	}
	return &env{Env: e, clock: clock, conns: conns}
}

func (e *env) apply(t *testing.T, doc string) {
	t.Helper()
	r, _, err := api.DecodeOne([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Manager.Apply(context.Background(), r, resources.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) get(t *testing.T, path string, wantStatus int, out any) string {
	t.Helper()
	resp, err := http.Get(e.Server.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: %d %s, want %d", path, resp.StatusCode, body, wantStatus)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
	return string(body)
}

type list[T any] struct {
	Total int     `json:"total"`
	Items []T     `json:"items"`
	Next  *string `json:"next"`
}

func TestOverviewShowsCertificateAndConnection(t *testing.T) {
	expires := time.Date(2026, 1, 3, 3, 4, 5, 0, time.UTC)
	e := start(t, ids{"demo/backend-1": {MTLS: &identity.MTLSInsight{
		IssuedBackend: "ca-1", SupportedBackends: []string{"ca-1"}, CertificateExpirationTime: expires,
		CertificateRegenerations: 2, Serial: "0A"}}})
	e.apply(t, "type: Mesh\nname: demo\n")
	e.apply(t, "type: Dataplane\nmesh: demo\nname: backend-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 9001, tags: {kuma.io/service: backend, version: v1}}]}\n")
	e.apply(t, "type: Dataplane\nmesh: demo\nname: web-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 9002, tags: {kuma.io/service: web}}]}\n")

	var l list[insights.DataplaneOverview]
	e.get(t, "/meshes/demo/dataplanes/_overview", 200, &l)
	if l.Total != 2 || len(l.Items) != 2 || l.Items[0].Name != "backend-1" || l.Items[1].Name != "web-1" {
		t.Fatalf("overview list = %+v", l)
	}
	b := l.Items[0]
	if b.Type != "DataplaneOverview" || b.Mesh != "demo" || b.DataplaneInsight.Connected || len(b.DataplaneInsight.Subscriptions) != 0 {
		t.Errorf("never-connected overview = %+v", b)
	}
	if m := b.DataplaneInsight.MTLS; m == nil || m.IssuedBackend != "ca-1" || !m.CertificateExpirationTime.Equal(expires) || m.CertificateRegenerations != 2 {
		t.Errorf("mTLS = %+v", b.DataplaneInsight.MTLS)
	}
	if !strings.Contains(string(b.Dataplane), `"networking"`) || strings.Contains(string(b.Dataplane), `"type"`) {
		t.Errorf("dataplane is not the bare spec: %s", b.Dataplane)
	}

	// A stream opens: connected now, with Kuma's subscription fields.
	connectedAt := e.clock.now()
	updated, closed := e.conns.Open("demo", "backend-1")
	e.clock.add(time.Minute)
	updated()
	var o insights.DataplaneOverview
	raw := e.get(t, "/meshes/demo/dataplanes/backend-1/_overview", 200, &o)
	if !o.DataplaneInsight.Connected || len(o.DataplaneInsight.Subscriptions) != 1 {
		t.Fatalf("connected overview = %s", raw)
	}
	s := o.DataplaneInsight.Subscriptions[0]
	if s.ControlPlaneInstanceID != "cp-1" || !s.ConnectTime.Equal(connectedAt) || s.DisconnectTime != nil ||
		!s.Status.LastUpdateTime.Equal(connectedAt.Add(time.Minute)) || s.ID == "" {
		t.Errorf("subscription = %+v", s)
	}
	if strings.Contains(raw, "disconnectTime") {
		t.Errorf("an open stream has a disconnectTime: %s", raw)
	}
	// Kuma's JSON names (dataplane_insight.proto), which kumactl reads: a
	// Kuma control plane with a connected proxy was not recorded (kuma-dp
	// needs Envoy), so they are checked here.
	for _, key := range []string{`"dataplaneInsight":{"subscriptions":[{"id":"cp-1-1","controlPlaneInstanceId":"cp-1","connectTime":"2026-01-02T03:04:05Z","status":{"lastUpdateTime":"2026-01-02T03:05:05Z","total":{}}}]`,
		`"mTLS":{"issuedBackend":"ca-1","supportedBackends":["ca-1"],"certificateExpirationTime":"2026-01-03T03:04:05Z","certificateRegenerations":2`} {
		if !strings.Contains(raw, key) {
			t.Errorf("overview lacks %s:\n%s", key, raw)
		}
	}

	// It closes (the agent stopped, or its token was revoked): offline.
	e.clock.add(time.Minute)
	closed()
	closed() // idempotent
	e.get(t, "/meshes/demo/dataplanes+insights/backend-1", 200, &o)
	if o.DataplaneInsight.Connected || o.DataplaneInsight.Subscriptions[0].DisconnectTime == nil ||
		!o.DataplaneInsight.Subscriptions[0].DisconnectTime.Equal(connectedAt.Add(2*time.Minute)) {
		t.Errorf("after close: %+v", o.DataplaneInsight)
	}

	// Filters as kumactl sends them; across meshes; paging.
	e.get(t, "/meshes/demo/dataplanes/_overview?tag=kuma.io/service:back&tag=version:v", 200, &l)
	if l.Total != 1 || l.Items[0].Name != "backend-1" {
		t.Errorf("tag filter: %+v", l)
	}
	e.get(t, "/dataplanes/_overview?name=web", 200, &l)
	if l.Total != 1 || l.Items[0].Name != "web-1" {
		t.Errorf("name filter: %+v", l)
	}
	e.get(t, "/meshes/demo/dataplanes/_overview?gateway=true", 200, &l)
	if l.Total != 0 || l.Items == nil {
		t.Errorf("gateway filter: %+v", l)
	}
	e.get(t, "/dataplanes+insights?size=1", 200, &l)
	if l.Total != 2 || len(l.Items) != 1 || l.Next == nil || !strings.Contains(*l.Next, "offset=1") {
		t.Errorf("paging: %+v", l)
	}
	if body := e.get(t, "/meshes/demo/dataplanes/_overview?gateway=maybe", 400, nil); !strings.Contains(body, "gateway") {
		t.Errorf("bad gateway filter: %s", body)
	}
	if body := e.get(t, "/meshes/demo/dataplanes/ghost/_overview", 404, nil); !strings.Contains(body, `Dataplane \"ghost\" in mesh \"demo\" not found`) {
		t.Errorf("missing dataplane: %s", body)
	}
}

func TestMeshInsights(t *testing.T) {
	e := start(t, ids{
		"demo/backend-1": {MTLS: &identity.MTLSInsight{IssuedBackend: "ca-1", SupportedBackends: []string{"ca-1", "ca-2"}}},
		"demo/web-1":     {MTLS: &identity.MTLSInsight{IssuedBackend: "ca-2", SupportedBackends: []string{"ca-1", "ca-2"}}},
	})
	e.apply(t, "type: Mesh\nname: demo\n")
	e.apply(t, "type: Mesh\nname: empty\n")
	e.apply(t, "type: Secret\nmesh: demo\nname: s1\ndata: aGVsbG8=\n")
	e.apply(t, "type: Dataplane\nmesh: demo\nname: backend-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 9001, tags: {kuma.io/service: backend}}]}\n")
	e.apply(t, "type: Dataplane\nmesh: demo\nname: web-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 9002, tags: {kuma.io/service: web}}, {port: 9003, health: {ready: false}, tags: {kuma.io/service: web-admin}}]}\n")
	e.conns.Open("demo", "backend-1")
	e.conns.Open("demo", "web-1")

	var mi insights.MeshInsight
	e.get(t, "/mesh-insights/demo", 200, &mi)
	want := insights.DataplaneStat{Total: 2, Online: 1, PartiallyDegraded: 1}
	if mi.Type != "MeshInsight" || mi.Name != "demo" || mi.Dataplanes != want || mi.DataplanesByType.Standard != want {
		t.Errorf("dataplanes = %+v", mi)
	}
	if mi.DpVersions.KumaDp["unknown"] != want || mi.DpVersions.Envoy["unknown"] != want {
		t.Errorf("dpVersions = %+v", mi.DpVersions)
	}
	if got := mi.MTLS.IssuedBackends["ca-1"]; got != (insights.DataplaneStat{Total: 1, Online: 1}) {
		t.Errorf("issuedBackends[ca-1] = %+v", got)
	}
	if got := mi.MTLS.SupportedBackends["ca-2"]; got != want {
		t.Errorf("supportedBackends[ca-2] = %+v", got)
	}
	if mi.Services.Total != 3 || mi.Resources["Secret"].Total != 1 || mi.Resources["Dataplane"].Total != 2 {
		t.Errorf("services %+v resources %+v", mi.Services, mi.Resources)
	}

	var sl list[insights.ServiceInsight]
	e.get(t, "/meshes/demo/service-insights", 200, &sl)
	if sl.Total != 3 || sl.Items[0].Name != "backend" || sl.Items[0].Status != "online" ||
		sl.Items[0].Dataplanes != (insights.ServiceDataplanes{Total: 1, Online: 1}) || sl.Items[0].IssuedBackends["ca-1"] != 1 {
		t.Errorf("service-insights = %+v", sl)
	}
	// web-1 is partially degraded (an inbound not ready): not online.
	if web := sl.Items[1]; web.Name != "web" || web.Status != "offline" || web.Dataplanes != (insights.ServiceDataplanes{Total: 1, Offline: 1}) {
		t.Errorf("web = %+v", web)
	}
	var si insights.ServiceInsight
	e.get(t, "/meshes/demo/service-insights/backend", 200, &si)
	if si.Type != "ServiceInsight" || si.Mesh != "demo" || si.ServiceType != "internal" {
		t.Errorf("one service insight = %+v", si)
	}
	e.get(t, "/meshes/demo/service-insights/ghost", 404, nil)
	e.get(t, "/meshes/ghost/service-insights", 404, nil)

	var l list[insights.MeshInsight]
	e.get(t, "/mesh-insights", 200, &l)
	if l.Total != 2 || l.Items[1].Name != "empty" || l.Items[1].Dataplanes.Total != 0 {
		t.Errorf("mesh-insights = %+v", l)
	}
	e.get(t, "/mesh-insights/ghost", 404, nil)
}

func TestZonesAreEmptyInStandalone(t *testing.T) {
	e := start(t, ids{})
	for _, p := range []string{"/zones", "/zones/_overview", "/zones+insights", "/zone-insights",
		"/zoneingresses", "/zoneingresses/_overview", "/zoneegresses", "/zoneegresses/_overview"} {
		if body := e.get(t, p, 200, nil); strings.TrimSpace(body) != `{"total":0,"items":[],"next":null}` {
			t.Errorf("GET %s = %s", p, body)
		}
	}
	e.get(t, "/zones/zone-1", 404, nil)
}
