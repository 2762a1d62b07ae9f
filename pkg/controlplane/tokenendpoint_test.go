package controlplane

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/ca"
	"meshca/pkg/resources"
	"meshca/pkg/store/memory"
	"meshca/pkg/tokens"
)

// POST /tokens/dataplane refuses names that are not resource names and
// lifetimes beyond the maximum, naming the field, and creates nothing (not
// even the mesh's signing key) when it refuses.
func TestTokenEndpointRefusesBadNamesAndLongLifetimes(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	reg, err := ca.NewRegistry(ca.Deps{Store: st}, map[string]ca.Constructor{})
	if err != nil {
		t.Fatal(err)
	}
	mgr := resources.NewManager(st, reg, resources.Options{})
	if _, err := mgr.Apply(ctx, &api.Mesh{Meta: api.Meta{Type: api.TypeMesh, Name: "default"}}, resources.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	toks := tokens.New(st, nil)
	srv := httptest.NewServer(tokenHandler(mgr, toks, 30*24*time.Hour, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	post := func(body string) (int, []byte) {
		t.Helper()
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, c := range []struct{ name, body, field, msg string }{
		{"name with space and slash", `{"mesh":"default","name":"Svc With Space/../x"}`, "name", "not a valid name"},
		{"name with query", `{"mesh":"default","name":"web?x=1"}`, "name", "not a valid name"},
		{"upper-case mesh", `{"mesh":"Default","name":"web-1"}`, "mesh", "not a valid mesh name"},
		{"lifetime over the maximum", `{"mesh":"default","name":"web-1","validFor":"31d"}`, "validFor", "--max-token-validity"},
		{"lifetime of ten years", `{"mesh":"default","name":"web-1","validFor":"87600h"}`, "validFor", "at most 30d"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := post(c.body)
			if code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", code, body)
			}
			var e apiserver.ErrorBody
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			for _, cause := range e.Causes {
				if cause.Field == c.field && strings.Contains(cause.Message, c.msg) {
					return
				}
			}
			t.Fatalf("causes %+v do not name %s with %q", e.Causes, c.field, c.msg)
		})
	}
	if secrets, err := st.List(ctx, api.TypeSecret, "default"); err != nil || len(secrets) != 0 {
		t.Fatalf("refused requests stored %d secrets (%v)", len(secrets), err)
	}

	// Within the maximum, and by default (capped at the maximum).
	for body, want := range map[string]time.Duration{
		`{"mesh":"default","name":"backend_default_svc_80","validFor":"30d"}`: 30 * 24 * time.Hour,
		`{"mesh":"default","name":"web-1"}`:                                   30 * 24 * time.Hour,
	} {
		code, tok := post(body)
		if code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", body, code, tok)
		}
		claims, err := toks.Verify(ctx, string(tok))
		if err != nil {
			t.Fatal(err)
		}
		if left := time.Until(claims.ExpiresAt); left > want || left < want-time.Minute {
			t.Errorf("%s: token lives %s, want %s", body, left, want)
		}
	}
}
