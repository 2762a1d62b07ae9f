package insights_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/identity"
	"meshca/pkg/insights"
)

// listStore serves a fixed list of Dataplanes.
type listStore struct {
	mesh *api.Mesh
	dps  []api.Resource
}

func (s listStore) Get(_ context.Context, typ, _, _ string) (api.Resource, error) {
	if typ == api.TypeMesh {
		return s.mesh, nil
	}
	return nil, fmt.Errorf("not used")
}

func (s listStore) List(_ context.Context, typ, _ string) ([]api.Resource, error) {
	if typ != api.TypeDataplane {
		return nil, nil
	}
	return s.dps, nil
}

// tenThousand is a mesh of 10,000 connected, certified data planes,
// served by the insight endpoints.
func tenThousand(b *testing.B) http.Handler {
	const n = 10000
	st := listStore{mesh: &api.Mesh{Meta: api.Meta{Type: api.TypeMesh, Name: "default"}}}
	certs := ids{}
	conns := insights.NewConnections("cp", nil)
	exp := time.Now().Add(24 * time.Hour)
	for i := range n {
		name := fmt.Sprintf("dp-%05d", i)
		dp := &api.Dataplane{Meta: api.Meta{Type: api.TypeDataplane, Mesh: "default", Name: name}}
		dp.Networking.Address = "10.0.0.1"
		dp.Networking.Inbound = []api.Inbound{{Port: 8080, Tags: map[string]string{"kuma.io/service": fmt.Sprintf("svc-%d", i%100)}}}
		st.dps = append(st.dps, dp)
		certs["default/"+name] = identity.Insight{MTLS: &identity.MTLSInsight{IssuedBackend: "ca-1", SupportedBackends: []string{"ca-1"}, CertificateExpirationTime: exp}}
		conns.Open("default", name)
	}
	mux := http.NewServeMux()
	for p, h := range insights.New(st, certs, conns).Handlers(nil) {
		mux.Handle(p, h)
	}
	return mux
}

func benchGet(b *testing.B, path string) {
	h := tenThousand(b)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
	}
}

// What kumactl inspect dataplanes asks for (Kuma's default page of 100)
// and what inspect meshes asks for, in a mesh of 10,000 data planes.
func BenchmarkOverviewPage10k(b *testing.B) { benchGet(b, "/meshes/default/dataplanes/_overview") }
func BenchmarkMeshInsight10k(b *testing.B)  { benchGet(b, "/mesh-insights/default") }

// BenchmarkConnectionsOpen is what recording one SDS stream costs.
func BenchmarkConnectionsOpen(b *testing.B) {
	conns := insights.NewConnections("cp", nil)
	names := make([]string, 1<<16)
	for i := range names {
		names[i] = fmt.Sprintf("dp-%05d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		conns.Open("default", names[i%len(names)])
		i++
	}
}
