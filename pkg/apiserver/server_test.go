package apiserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"meshca/internal/syncbuf"
	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
	"meshca/pkg/resources"
	"meshca/pkg/store"
)

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, u, contentType, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (r response) want(t *testing.T, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body: %s", r.status, status, r.body)
	}
	return r
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r response) errorBody(t *testing.T) apiserver.ErrorBody {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q, want application/json", ct)
	}
	var e apiserver.ErrorBody
	r.decode(t, &e)
	if e.Type != apiserver.ErrorType || e.Status != r.status || e.Detail != e.Details {
		t.Fatalf("malformed error body: %s", r.body)
	}
	return e
}

func causeFields(e apiserver.ErrorBody) map[string]string {
	out := map[string]string{}
	for _, c := range e.Causes {
		out[c.Field] = c.Message
	}
	return out
}

const secretData = "c2VjcmV0IQ==" // "secret!"

func start(t *testing.T) *apiservertest.Env {
	t.Helper()
	return apiservertest.Start(t, apiserver.Options{Version: "1.2.3", ClusterID: "c-1", Hostname: "cp-0"})
}

func TestIndex(t *testing.T) {
	env := start(t)
	var idx map[string]any
	do(t, "GET", env.Server.URL+"/", "", "").want(t, 200).decode(t, &idx)
	want := map[string]any{
		"hostname": "cp-0", "tagline": "meshca", "product": "Kuma", "version": "1.2.3", "basedOnKuma": "2.14.3",
		"instanceId": "cp-0", "clusterId": "c-1", "gui": "",
	}
	if len(idx) != len(want) {
		t.Errorf("index %v, want exactly %v", idx, want)
	}
	for k, v := range want {
		if idx[k] != v {
			t.Errorf("index[%q] = %v, want %v", k, idx[k], v)
		}
	}
}

func TestHealthMetricsAndFallbacks(t *testing.T) {
	ready := make(chan struct{})
	env := apiservertest.Start(t, apiserver.Options{
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "meshca_up 1\n")
		}),
		Ready: func(context.Context) error {
			select {
			case <-ready:
				return nil
			default:
				return io.ErrUnexpectedEOF
			}
		},
	})
	do(t, "GET", env.Server.URL+"/healthz", "", "").want(t, 200)
	do(t, "GET", env.Server.URL+"/readyz", "", "").want(t, 503)
	close(ready)
	do(t, "GET", env.Server.URL+"/readyz", "", "").want(t, 200)
	if got := do(t, "GET", env.Server.URL+"/metrics", "", "").want(t, 200); string(got.body) != "meshca_up 1\n" {
		t.Errorf("metrics body %q", got.body)
	}

	e := do(t, "GET", env.Server.URL+"/no/such/thing", "", "").want(t, 404).errorBody(t)
	if !strings.Contains(e.Detail, "/no/such/thing") {
		t.Errorf("404 detail %q", e.Detail)
	}
	r := do(t, "POST", env.Server.URL+"/meshes/default", "application/json", "{}").want(t, 405)
	r.errorBody(t)
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "PUT") {
		t.Errorf("Allow %q", allow)
	}
}

func TestMeshCRUD(t *testing.T) {
	env := start(t)
	u := env.Server.URL + "/meshes/default"

	var ab map[string]any
	do(t, "PUT", u, "application/json", `{"type":"Mesh","name":"default"}`).want(t, 201).decode(t, &ab)
	if len(ab) != 0 {
		t.Errorf("PUT body %v, want {}", ab)
	}
	// Update: 200. YAML without type/name: filled from the URL.
	do(t, "PUT", u, "application/yaml", "mtls:\n  backends: []\nlogging:\n  backends: []\n").want(t, 200)

	var got map[string]any
	do(t, "GET", u, "", "").want(t, 200).decode(t, &got)
	if got["type"] != "Mesh" || got["name"] != "default" || got["creationTime"] == nil || got["modificationTime"] == nil {
		t.Errorf("GET mesh = %v", got)
	}
	if _, ok := got["logging"]; !ok {
		t.Errorf("GET mesh lost spec field logging: %v", got)
	}
	if _, ok := got["mesh"]; ok {
		t.Errorf("GET mesh has a mesh field: %v", got)
	}

	do(t, "DELETE", u, "", "").want(t, 200)
	e := do(t, "GET", u, "", "").want(t, 404).errorBody(t)
	if e.Title != "Could not find a resource" || e.Detail != `Mesh "default" not found` {
		t.Errorf("404 body = %+v", e)
	}
	do(t, "DELETE", u, "", "").want(t, 404).errorBody(t)
}

func TestPutRefusals(t *testing.T) {
	env := start(t)
	base := env.Server.URL
	cases := []struct {
		name, path, body string
		field            string
	}{
		{"unknown field", "/meshes/m1", `{"type":"Mesh","name":"m1","bogus":1}`, "bogus"},
		// The full path of a nested unknown field is named.
		{"unknown nested field", "/meshes/m1", `{"type":"Mesh","name":"m1","mtls":{"backend":[]}}`, "mtls.backend"},
		{"name mismatch", "/meshes/m1", `{"type":"Mesh","name":"m2"}`, "name"},
		{"type mismatch", "/meshes/m1", `{"type":"Secret","name":"m1"}`, "type"},
		{"kubernetes form", "/meshes/m1", `{"apiVersion":"kuma.io/v1alpha1","kind":"Mesh","metadata":{"name":"m1"}}`, "kind"},
		{"structural", "/meshes/m1", `{"mtls":{"enabledBackend":"x","backends":[{"name":"a","type":"nope"}]}}`, "mtls.backends[0].type"},
		{"secret in missing mesh", "/meshes/nope/secrets/s", `{"type":"Secret","data":"` + secretData + `"}`, "mesh"},
		{"bad base64", "/global-secrets/g", `{"type":"GlobalSecret","data":"%%%"}`, "data"},
		{"mesh name not a SPIFFE trust domain", "/meshes/UpperMesh", `{}`, "name"},
		// Duplicate keys are refused at any depth, naming the key's path.
		{"duplicate key", "/meshes/m1", `{"type":"Mesh","name":"m1","name":"m1"}`, "name"},
		{"duplicate key in conf", "/meshes/m1", `{"mtls":{"enabledBackend":"ca-1","backends":[{"name":"ca-1","type":"provided","conf":{"cert":{"secret":"a","secret":"b"}}}]}}`, "mtls.backends[0].conf.cert.secret"},
		{"duplicate tag", "/meshes/default/dataplanes/d1", `{"networking":{"address":"127.0.0.1","inbound":[{"port":1,"servicePort":2,"tags":{"kuma.io/service":"a","kuma.io/service":"b"}}]}}`, `networking.inbound[0].tags["kuma.io/service"]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := do(t, "PUT", base+tc.path, "application/json", tc.body).want(t, 400).errorBody(t)
			if _, ok := causeFields(e)[tc.field]; !ok {
				t.Fatalf("causes %+v lack field %q", e.Causes, tc.field)
			}
			if len(e.InvalidParameters) != len(e.Causes) || e.InvalidParameters[0].Field != e.Causes[0].Field || e.InvalidParameters[0].Reason != e.Causes[0].Message {
				t.Errorf("invalid_parameters %+v do not mirror causes %+v", e.InvalidParameters, e.Causes)
			}
		})
	}
	t.Run("validation body shape", func(t *testing.T) {
		r := do(t, "PUT", base+"/meshes/m1", "application/json", `{"mtls":{"enabledBackend":"x"}}`).want(t, 400)
		var raw map[string]any
		r.decode(t, &raw)
		for _, k := range []string{"type", "status", "title", "detail", "details", "causes", "invalid_parameters"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("error body lacks %q: %s", k, r.body)
			}
		}
		e := r.errorBody(t)
		if e.Title != "Could not process a resource" || e.Details != "Resource is not valid" {
			t.Errorf("title/details = %q/%q", e.Title, e.Details)
		}
		if msg := causeFields(e)["mtls.enabledBackend"]; !strings.Contains(msg, `"x"`) {
			t.Errorf("causes %+v", e.Causes)
		}
	})
	t.Run("empty and malformed bodies", func(t *testing.T) {
		do(t, "PUT", base+"/meshes/m1", "application/json", "").want(t, 400).errorBody(t)
		do(t, "PUT", base+"/meshes/m1", "application/json", "{not json").want(t, 400).errorBody(t)
		do(t, "PUT", base+"/meshes/m1", "application/json", "[1,2]").want(t, 400).errorBody(t)
		do(t, "PUT", base+"/meshes/m1?dryRun=maybe", "application/json", "{}").want(t, 400).errorBody(t)
	})
	t.Run("too large", func(t *testing.T) {
		big := `{"type":"GlobalSecret","data":"` + strings.Repeat("A", apiserver.DefaultMaxBodyBytes) + `"}`
		e := do(t, "PUT", base+"/global-secrets/big", "application/json", big).want(t, 413).errorBody(t)
		if !strings.Contains(e.Detail, "1 MiB") {
			t.Errorf("413 detail %q", e.Detail)
		}
	})
	// Nothing of the above was stored.
	for _, typ := range []string{api.TypeMesh, api.TypeSecret, api.TypeGlobalSecret, api.TypeDataplane} {
		if l, err := env.Store.List(t.Context(), typ, ""); err != nil || len(l) != 0 {
			t.Errorf("%s stored after refusals: %v %v", typ, l, err)
		}
	}
}

func TestDryRun(t *testing.T) {
	env := start(t)
	var ab apiserver.ApplyBody
	do(t, "PUT", env.Server.URL+"/meshes/m1?dryRun=true", "application/json", `{}`).want(t, 200).decode(t, &ab)
	if !ab.DryRun || !ab.Created {
		t.Errorf("dry run body %+v", ab)
	}
	do(t, "GET", env.Server.URL+"/meshes/m1", "", "").want(t, 404)
	do(t, "PUT", env.Server.URL+"/meshes/m1?dryRun=true", "application/json", `{"mtls":{"enabledBackend":"x"}}`).want(t, 400)
}

func TestSecretsAndDataplanes(t *testing.T) {
	env := start(t)
	base := env.Server.URL
	do(t, "PUT", base+"/meshes/default", "application/json", `{}`).want(t, 201)
	do(t, "PUT", base+"/meshes/other", "application/json", `{}`).want(t, 201)

	sec := base + "/meshes/default/secrets/ca-cert"
	do(t, "PUT", sec, "application/json", `{"type":"Secret","mesh":"default","name":"ca-cert","data":"`+secretData+`"}`).want(t, 201)
	do(t, "PUT", sec, "application/json", `{"data":"`+secretData+`"}`).want(t, 200)
	e := do(t, "PUT", sec, "application/json", `{"mesh":"other","data":"`+secretData+`"}`).want(t, 400).errorBody(t)
	if _, ok := causeFields(e)["mesh"]; !ok {
		t.Errorf("mesh mismatch causes %+v", e.Causes)
	}
	var s map[string]any
	do(t, "GET", sec, "", "").want(t, 200).decode(t, &s)
	if s["type"] != "Secret" || s["mesh"] != "default" || s["name"] != "ca-cert" || s["data"] != secretData {
		t.Errorf("GET secret = %v", s)
	}
	do(t, "GET", base+"/meshes/other/secrets/ca-cert", "", "").want(t, 404)

	do(t, "PUT", base+"/meshes/other/secrets/x", "application/json", `{"data":"`+secretData+`"}`).want(t, 201)
	do(t, "PUT", base+"/global-secrets/g1", "application/json", `{"type":"GlobalSecret","name":"g1","data":"`+secretData+`"}`).want(t, 201)
	var g map[string]any
	do(t, "GET", base+"/global-secrets/g1", "", "").want(t, 200).decode(t, &g)
	if g["type"] != "GlobalSecret" || g["data"] != secretData {
		t.Errorf("GET global secret = %v", g)
	}

	dp := `{"type":"Dataplane","mesh":"default","name":"backend-1","networking":{"address":"10.0.0.1","inbound":[{"port":8080,"tags":{"kuma.io/service":"backend"}}]}}`
	do(t, "PUT", base+"/meshes/default/dataplanes/backend-1", "application/json", dp).want(t, 201)
	do(t, "PUT", base+"/meshes/default/dataplanes/backend-1", "application/json", dp).want(t, 200)
	var d api.Dataplane
	do(t, "GET", base+"/meshes/default/dataplanes/backend-1", "", "").want(t, 200).decode(t, &d)
	if got := d.Services(); len(got) != 1 || got[0] != "backend" {
		t.Errorf("dataplane services %v", got)
	}

	// Lists across meshes and per mesh.
	listNames := func(path string) []string {
		var l apiserver.ListBody
		do(t, "GET", base+path, "", "").want(t, 200).decode(t, &l)
		var names []string
		for _, it := range l.Items {
			var m api.Meta
			if err := json.Unmarshal(it, &m); err != nil {
				t.Fatal(err)
			}
			names = append(names, m.Mesh+"/"+m.Name)
		}
		if l.Total != len(names) || l.Next != nil {
			t.Errorf("%s: total %d next %v for %d items", path, l.Total, l.Next, len(names))
		}
		return names
	}
	for path, want := range map[string]string{
		"/secrets":                   "default/ca-cert other/x",
		"/meshes/default/secrets":    "default/ca-cert",
		"/meshes/other/secrets":      "other/x",
		"/meshes/nope/secrets":       "",
		"/global-secrets":            "/g1",
		"/dataplanes":                "default/backend-1",
		"/meshes/default/dataplanes": "default/backend-1",
		"/meshes/other/dataplanes":   "",
		"/meshes":                    "/default /other",
	} {
		if got := strings.Join(listNames(path), " "); got != want {
			t.Errorf("GET %s = %q, want %q", path, got, want)
		}
	}

	// A mesh with dataplanes cannot be deleted.
	e = do(t, "DELETE", base+"/meshes/default", "", "").want(t, 400).errorBody(t)
	if !strings.Contains(e.Detail, "dataplane") || len(e.Causes) != 1 || e.Causes[0].Message != e.Detail {
		t.Errorf("in-use body %+v", e)
	}
	do(t, "DELETE", base+"/meshes/default/dataplanes/backend-1", "", "").want(t, 200)
	do(t, "DELETE", base+"/meshes/default/dataplanes/backend-1", "", "").want(t, 404)

	// A secret used by a mesh backend cannot be deleted.
	do(t, "PUT", base+"/meshes/default", "application/json",
		`{"mtls":{"enabledBackend":"ca","backends":[{"name":"ca","type":"provided","conf":{"caCert":{"secret":"ca-cert"}}}]}}`).want(t, 200)
	e = do(t, "DELETE", sec, "", "").want(t, 400).errorBody(t)
	if !strings.Contains(e.Detail, `secret "ca-cert" is used`) {
		t.Errorf("secret in use body %+v", e)
	}

	// Deleting the mesh deletes its secrets, not other meshes' ones.
	do(t, "DELETE", base+"/meshes/default", "", "").want(t, 200)
	if _, err := env.Store.Get(t.Context(), store.Key{Type: api.TypeSecret, Mesh: "default", Name: "ca-cert"}); err == nil {
		t.Error("secret of the deleted mesh still stored")
	}
	do(t, "GET", sec, "", "").want(t, 404)
	do(t, "GET", base+"/meshes/other/secrets/x", "", "").want(t, 200)
	do(t, "DELETE", base+"/global-secrets/g1", "", "").want(t, 200)
	do(t, "GET", base+"/global-secrets/g1", "", "").want(t, 404)
}

func TestBackendValidationCauses(t *testing.T) {
	env := start(t)
	base := env.Server.URL
	do(t, "PUT", base+"/meshes/default", "application/json", `{}`).want(t, 201)
	e := do(t, "PUT", base+"/meshes/default", "application/json",
		`{"mtls":{"enabledBackend":"ca","backends":[{"name":"ca","type":"provided","conf":{"caCert":{"secret":"missing"}}}]}}`).want(t, 400).errorBody(t)
	if msg := causeFields(e)["mtls.backends[0].conf.caCert.secret"]; !strings.Contains(msg, `"missing"`) {
		t.Errorf("causes %+v", e.Causes)
	}
}

func TestPaging(t *testing.T) {
	env := start(t)
	base := env.Server.URL
	var want []string
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		do(t, "PUT", base+"/meshes/"+n, "application/json", `{}`).want(t, 201)
		want = append(want, n)
	}
	var got []string
	next := base + "/meshes?size=2"
	pages := 0
	for next != "" {
		var l apiserver.ListBody
		do(t, "GET", next, "", "").want(t, 200).decode(t, &l)
		pages++
		if l.Total != 5 || len(l.Items) > 2 {
			t.Fatalf("page %d: total %d, %d items", pages, l.Total, len(l.Items))
		}
		for _, it := range l.Items {
			var m api.Meta
			_ = json.Unmarshal(it, &m)
			got = append(got, m.Name)
		}
		next = ""
		if l.Next != nil {
			next = *l.Next
			u, err := url.Parse(next)
			if err != nil || u.Query().Get("size") != "2" || !strings.HasPrefix(next, base+"/meshes?") {
				t.Fatalf("next %q", next)
			}
		}
	}
	if pages != 3 || strings.Join(got, "") != strings.Join(want, "") {
		t.Errorf("%d pages, names %v", pages, got)
	}
	e := do(t, "GET", base+"/meshes?size=0", "", "").want(t, 400).errorBody(t)
	if len(e.InvalidParameters) != 1 || e.InvalidParameters[0].Field != "size" {
		t.Errorf("size=0: %+v", e)
	}
	do(t, "GET", base+"/meshes?offset=-1", "", "").want(t, 400)
	var l apiserver.ListBody
	do(t, "GET", base+"/meshes?offset=99", "", "").want(t, 200).decode(t, &l)
	if l.Total != 5 || len(l.Items) != 0 || l.Next != nil {
		t.Errorf("past the end: %+v", l)
	}
	if r := do(t, "GET", base+"/meshes?offset=99", "", ""); !bytes.Contains(r.body, []byte(`"items":[]`)) || !bytes.Contains(r.body, []byte(`"next":null`)) {
		t.Errorf("empty page body %s", r.body)
	}
}

func TestReadOnlyAndExtensions(t *testing.T) {
	env := start(t)
	ro := resources.NewManager(env.Store, nil, resources.Options{
		Logger:   slog.New(slog.DiscardHandler),
		ReadOnly: func(context.Context, store.Key) error { return resources.ErrReadOnly },
	})
	var logs syncbuf.Buffer
	srv := apiserver.New(ro, apiserver.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Extra: map[string]http.Handler{
			"POST /tokens/dataplane": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				apiserver.WriteJSON(w, http.StatusOK, map[string]string{"token": "t0ps3cret"})
			}),
		},
	})
	srv.Handle("GET /meshes/{mesh}/dataplanes/{name}/_insight", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiserver.WriteError(w, nil, &apiserver.Error{Status: http.StatusNotFound, Title: "Could not find a resource", Detail: "no insight for " + r.PathValue("name")})
	}))
	srv.Handle("GET /boom", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiserver.WriteError(w, slog.New(slog.NewTextHandler(&logs, nil)), io.ErrClosedPipe)
	}))

	rec := func(method, path, body string) response {
		req, err := http.NewRequestWithContext(t.Context(), method, path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.RemoteAddr, req.Host = "127.0.0.1:40000", "localhost:5681"
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, req)
		return response{status: w.Code, header: w.Header(), body: w.Body.Bytes()}
	}
	e := rec("PUT", "/meshes/m1", `{}`).want(t, 403).errorBody(t)
	if e.Detail != "resource is synced from the global control plane: edit it there" {
		t.Errorf("403 detail %q", e.Detail)
	}
	if r := rec("POST", "/tokens/dataplane?token=abc", ""); r.status != 200 || !strings.Contains(string(r.body), "t0ps3cret") {
		t.Errorf("extra endpoint: %d %s", r.status, r.body)
	}
	e = rec("GET", "/meshes/default/dataplanes/dp-1/_insight", "").want(t, 404).errorBody(t)
	if e.Detail != "no insight for dp-1" {
		t.Errorf("handled endpoint detail %q", e.Detail)
	}
	e = rec("GET", "/boom", "").want(t, 500).errorBody(t)
	if strings.Contains(e.Detail, "closed pipe") {
		t.Errorf("500 leaks the error: %q", e.Detail)
	}
	out := logs.String()
	if !strings.Contains(out, "path=/tokens/dataplane") || !strings.Contains(out, "status=200") || !strings.Contains(out, "duration=") {
		t.Errorf("access log lacks fields: %s", out)
	}
	if !strings.Contains(out, "closed pipe") {
		t.Errorf("500 cause not logged: %s", out)
	}
	if strings.Contains(out, "t0ps3cret") || strings.Contains(out, "token=abc") {
		t.Errorf("log leaks a token: %s", out)
	}
}

func TestConcurrentPuts(t *testing.T) {
	env := start(t)
	base := env.Server.URL
	do(t, "PUT", base+"/meshes/default", "application/json", `{}`).want(t, 201)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			name := "s" + string(rune('a'+i))
			r := do(t, "PUT", base+"/meshes/default/secrets/"+name, "application/json", `{"data":"`+secretData+`"}`)
			if r.status != 201 {
				t.Errorf("PUT %s: %d %s", name, r.status, r.body)
			}
		})
	}
	wg.Wait()
	var l apiserver.ListBody
	do(t, "GET", base+"/meshes/default/secrets", "", "").want(t, 200).decode(t, &l)
	if l.Total != 8 {
		t.Errorf("total %d, want 8", l.Total)
	}
}
