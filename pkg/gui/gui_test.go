package gui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/identity"
)

// fakeSource is a mesh of n data planes with varied certificate states.
type fakeSource struct {
	now  time.Time
	sums []identity.DataplaneSummary
}

func newFake(n int, now time.Time) *fakeSource {
	f := &fakeSource{now: now}
	for i := 0; i < n; i++ {
		s := identity.DataplaneSummary{Mesh: "default", Name: fmt.Sprintf("dp-%05d", i), Backend: "ca-1", BackendType: "builtin",
			Dataplane: &api.Dataplane{Meta: api.Meta{Type: api.TypeDataplane, Mesh: "default", Name: fmt.Sprintf("dp-%05d", i)},
				DataplaneSpec: api.DataplaneSpec{Networking: api.Networking{Inbound: []api.Inbound{{Tags: map[string]string{"kuma.io/service": fmt.Sprintf("svc-%d", i%7)}}}}}}}
		switch i % 5 {
		case 0, 1: // valid: 50 of 60 minutes left
			s.Serial, s.IssuedAt, s.NotAfter = fmt.Sprintf("%04x", i), now.Add(-10*time.Minute), now.Add(50*time.Minute)
		case 2: // expiring: 5 of 60 minutes left
			s.Serial, s.IssuedAt, s.NotAfter = fmt.Sprintf("%04x", i), now.Add(-55*time.Minute), now.Add(5*time.Minute)
		case 3: // failing with a valid certificate
			s.Serial, s.IssuedAt, s.NotAfter = fmt.Sprintf("%04x", i), now.Add(-10*time.Minute), now.Add(50*time.Minute)
			s.LastError = "backend down"
		case 4: // nothing yet
		}
		s.NextRotation = s.IssuedAt.Add(48 * time.Minute)
		f.sums = append(f.sums, s)
	}
	return f
}

func (f *fakeSource) MeshStates() []identity.MeshState {
	b := api.MTLSBackend{Name: "ca-1", Type: "builtin", DpCert: &api.DpCert{Rotation: &api.Rotation{Expiration: "1h"}}}
	return []identity.MeshState{{Name: "default", Enabled: b, MTLS: true, InUse: map[string]int{"ca-1": len(f.sums)}}}
}
func (f *fakeSource) Summaries(string) []identity.DataplaneSummary {
	return append([]identity.DataplaneSummary(nil), f.sums...)
}
func (f *fakeSource) Summary(mesh, name string) (identity.DataplaneSummary, bool) {
	for _, s := range f.sums {
		if s.Name == name {
			return s, true
		}
	}
	return identity.DataplaneSummary{}, false
}
func (f *fakeSource) Insight(mesh, name string) (identity.Insight, bool) {
	return identity.Insight{}, false
}
func (f *fakeSource) Certificates(mesh, name string) ([]byte, []byte, bool) { return nil, nil, false }

func serve(t *testing.T, h *Handler, url string, out any) int {
	t.Helper()
	mux := http.NewServeMux()
	for p, hd := range h.Routes() {
		mux.Handle(p, hd)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, url, nil))
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s: %v: %s", url, err, rec.Body.String())
		}
	}
	return rec.Code
}

func TestStates(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	h := New(Options{Source: newFake(10, now), Now: func() time.Time { return now }})
	var v MeshesView
	serve(t, h, "/gui/api/meshes", &v)
	got := v.Meshes[0].States
	want := map[string]int{StateValid: 4, StateExpiring: 2, StateFailing: 2, StateNone: 2, StateExpired: 0}
	for s, n := range want {
		if got[s] != n {
			t.Errorf("%s: %d, want %d (all: %v)", s, got[s], n, got)
		}
	}
	if len(v.Meshes[0].Errors) != 1 || v.Meshes[0].Errors[0].Dataplanes != 2 || v.Meshes[0].Errors[0].Error != "backend down" {
		t.Errorf("errors %+v", v.Meshes[0].Errors)
	}
}

// TestPageOf10000 filters, sorts and pages 10,000 data planes server-side.
func TestPageOf10000(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	h := New(Options{Source: newFake(10000, now), Now: func() time.Time { return now }})
	var p Page
	serve(t, h, "/gui/api/meshes/default/dataplanes?state=expiring&sort=name&dir=desc&offset=10&limit=25", &p)
	if p.Total != 10000 || p.Matched != 2000 || len(p.Items) != 25 {
		t.Fatalf("total %d matched %d items %d", p.Total, p.Matched, len(p.Items))
	}
	if p.Items[0].Name != "dp-09947" || p.Items[0].State != StateExpiring {
		t.Errorf("first row %+v, want dp-09947 (the 11th expiring one from the end)", p.Items[0])
	}
	serve(t, h, "/gui/api/meshes/default/dataplanes?q=SVC-3&sort=timeLeft&limit=500", &p)
	if p.Matched != 1429 {
		t.Errorf("filter svc-3 matched %d, want 1429", p.Matched)
	}
	for i := 1; i < len(p.Items); i++ {
		a, b := p.Items[i-1], p.Items[i]
		if !b.NotAfter.IsZero() && (a.NotAfter.IsZero() || a.NotAfter.After(b.NotAfter)) {
			t.Fatalf("rows %d and %d out of order by time left: %v %v", i-1, i, a.NotAfter, b.NotAfter)
		}
	}
}

func TestBadQueries(t *testing.T) {
	h := New(Options{Source: newFake(3, time.Now())})
	for url, field := range map[string]string{
		"/gui/api/meshes/default/dataplanes?sort=colour":        "sort",
		"/gui/api/meshes/default/dataplanes?limit=0":            "limit",
		"/gui/api/meshes/default/dataplanes?state=green":        "state",
		"/gui/api/meshes/default/budget?pricePerCertificate=-1": "pricePerCertificate",
		"/gui/api/meshes/default/timeline?buckets=x":            "buckets",
	} {
		var body struct {
			Causes []api.FieldError `json:"causes"`
		}
		if code := serve(t, h, url, &body); code != http.StatusBadRequest || len(body.Causes) != 1 || body.Causes[0].Field != field {
			t.Errorf("%s: %d %+v, want 400 naming %s", url, code, body.Causes, field)
		}
	}
	if code := serve(t, h, "/gui/api/meshes/nope/dataplanes", nil); code != http.StatusNotFound {
		t.Errorf("unknown mesh: %d", code)
	}
}

func TestProject(t *testing.T) {
	certs, cost := Project(3, time.Hour, 0.1)
	if certs != 2700 || fmt.Sprintf("%.2f", cost) != "270.00" {
		t.Errorf("Project(3, 1h, 0.1) = %v, %v", certs, cost)
	}
	if c, _ := Project(0, time.Hour, 0.1); c != 0 {
		t.Errorf("empty mesh projects %v", c)
	}
}

func TestAssets(t *testing.T) {
	h := New(Options{Source: newFake(1, time.Now())})
	mux := http.NewServeMux()
	for p, hd := range h.Routes() {
		mux.Handle(p, hd)
	}
	for path, want := range map[string]string{"/gui/": "<title>meshca</title>", "/gui/app.js": "use strict", "/gui/meshes/x": "<title>meshca</title>"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), want) || rec.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("%s: %d, CSP %q, body has %q: %v", path, rec.Code, rec.Header().Get("Content-Security-Policy"), want, strings.Contains(rec.Body.String(), want))
		}
	}
}

// BenchmarkFirstPage10000 is the server side of the Data planes page's
// first request with 10,000 data planes (sorted by name, 50 rows).
func BenchmarkFirstPage10000(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	h := New(Options{Source: newFake(10000, now), Now: func() time.Time { return now }})
	mux := http.NewServeMux()
	for p, hd := range h.Routes() {
		mux.Handle(p, hd)
	}
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/gui/api/meshes/default/dataplanes?sort=name&limit=50", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// switchSource is a mesh half-way through a switch from ca-1 to ca-2.
type switchSource struct{ *fakeSource }

func (s switchSource) MeshStates() []identity.MeshState {
	ms := s.fakeSource.MeshStates()
	ms[0].Enabled = api.MTLSBackend{Name: "ca-2", Type: "provided"}
	ms[0].InUse = map[string]int{"ca-1": 6, "ca-2": 2}
	return ms
}

func TestSwitchProgress(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	h := New(Options{Source: switchSource{newFake(10, now)}, Now: func() time.Time { return now }})
	var v OverviewView
	serve(t, h, "/meshes/default/_overview", &v)
	sw := v.Switch
	if sw == nil || sw.To != "ca-2" || sw.Done != 2 || sw.Of != 8 || sw.Percent != 25 || sw.From["ca-1"] != 6 {
		t.Fatalf("switch %+v, want 2 of 8 (25%%) on ca-2, 6 on ca-1", sw)
	}
}

// acmpcaSource is an acmpca mesh whose certificates were issued before the
// control plane started (no usage counted yet).
type acmpcaSource struct{ *fakeSource }

func (s acmpcaSource) MeshStates() []identity.MeshState {
	ms := s.fakeSource.MeshStates()
	ms[0].Enabled = api.MTLSBackend{Name: "ca-1", Type: "acmpca", DpCert: &api.DpCert{Rotation: &api.Rotation{Expiration: "2h"}},
		Conf: []byte(`{"arn":"arn:aws:acm-pca:us-east-1:1:certificate-authority/x","maxRequestsPerSecond":7}`)}
	return ms
}

func TestBudgetFloorFromHeldCertificates(t *testing.T) {
	now := time.Date(2026, 11, 29, 0, 5, 0, 0, time.UTC) // 5 minutes into the day
	h := New(Options{Source: acmpcaSource{newFake(10, now)}, Now: func() time.Time { return now }})
	var a BudgetAnswer
	serve(t, h, "/gui/api/meshes/default/budget?pricePerCertificate=0.2", &a)
	b := a.Budget
	if b == nil {
		t.Fatal("no budget for an acmpca mesh")
	}
	// 8 certificates are held, issued 10 or 55 minutes before 00:05: this
	// month, but yesterday.
	if b.HeldIssuedThisMonth != 8 || b.IssuedThisMonth != 8 || b.HeldIssuedToday != 0 {
		t.Errorf("held this month %d (counted %d), today %d; want 8, 8, 0", b.HeldIssuedThisMonth, b.IssuedThisMonth, b.HeldIssuedToday)
	}
	if b.MaxRequestsPerSecond != 7 || b.Arn == "" {
		t.Errorf("conf not read: %+v", b)
	}
	wantCerts, wantCost := Project(10, 2*time.Hour, 0.2)
	if b.CertsPerMonth != wantCerts || b.ProjectedMonthlyCost != wantCost || b.Dataplanes != 10 {
		t.Errorf("projection %v $%v for %d, want %v $%v for 10", b.CertsPerMonth, b.ProjectedMonthlyCost, b.Dataplanes, wantCerts, wantCost)
	}
}
