package meshctl_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"meshca/pkg/api"
	"meshca/pkg/tokens"
)

// withTokens serves POST /tokens/dataplane from the real token generator
// over the harness's store, as meshca-cp does.
func withTokens(h *harness) *tokens.Tokens {
	toks := tokens.New(h.env.Store, nil)
	h.env.API.Handle("POST /tokens/dataplane", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Mesh, Name string }
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		tok, err := toks.Generate(r.Context(), req.Mesh, req.Name, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, tok)
	}))
	return toks
}

func TestGenerateTokenWarnsForAMissingDataplane(t *testing.T) {
	h := newHarness(t)
	withTokens(h)
	h.run("apply", "-f", writeFile(t, "m.yaml", "type: Mesh\nname: default\n---\ntype: Dataplane\nmesh: default\nname: backend-1\nnetworking: {address: 10.0.0.1, inbound: [{port: 1, tags: {kuma.io/service: b}}]}\n")).ok(t)

	r := h.run("generate", "dataplane-token", "--name", "ghost").ok(t)
	if len(strings.Split(strings.TrimSpace(r.stdout), ".")) != 3 {
		t.Errorf("stdout is not the token alone: %q", r.stdout)
	}
	if !strings.Contains(r.stderr, `Warning: Dataplane "ghost" does not exist in mesh "default"`) {
		t.Errorf("no warning on stderr: %q", r.stderr)
	}
	if r := h.run("generate", "dataplane-token", "--name", "backend-1").ok(t); r.stderr != "" {
		t.Errorf("warning for an existing Dataplane: %q", r.stderr)
	}
}

func TestRevokeDataplaneToken(t *testing.T) {
	h := newHarness(t)
	toks := withTokens(h)
	h.run("apply", "-f", writeFile(t, "m.yaml", "type: Mesh\nname: default\n")).ok(t)
	tok := strings.TrimSpace(h.run("generate", "dataplane-token", "--name", "web-1").ok(t).stdout)
	claims, err := toks.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}

	// The token on stdin: its ID is revoked, and the token no longer verifies.
	h.stdin = tok + "\n"
	r := h.run("revoke", "dataplane-token", "-").ok(t)
	if want := `dataplane token ` + claims.ID + ` revoked in mesh "default" (Secret dataplane-token-revocations-default)`; strings.TrimSpace(r.stdout) != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	if strings.Contains(r.stdout+r.stderr, tok) {
		t.Error("the token is printed")
	}
	if _, err := toks.Verify(t.Context(), tok); !errors.Is(err, tokens.ErrInvalid) {
		t.Errorf("revoked token verifies: %v", err)
	}

	// By ID: again is a no-op; another ID is added beside it.
	h.stdin = ""
	if r := h.run("revoke", "dataplane-token", claims.ID).ok(t); !strings.Contains(r.stdout, "was already revoked") {
		t.Errorf("second revocation: %q", r.stdout)
	}
	h.run("revoke", "dataplane-token", "other-id").ok(t)
	sec, err := h.env.Manager.Get(t.Context(), api.TypeSecret, "default", tokens.RevocationsName("default"))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := base64.StdEncoding.DecodeString(sec.(*api.Secret).Data)
	if got := strings.Fields(string(data)); len(got) != 2 || got[0] != claims.ID || got[1] != "other-id" {
		t.Errorf("revocation list %q", data)
	}

	// A token of another mesh than --mesh, and garbage, are refused.
	if r := h.run("revoke", "dataplane-token", "--mesh", "other", tok).fails(t); !strings.Contains(r.stderr, `the token is for mesh "default", not --mesh "other"`) {
		t.Errorf("stderr %q", r.stderr)
	}
	if r := h.run("revoke", "dataplane-token", "a.b!.c").fails(t); !strings.Contains(r.stderr, "not a meshca token") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestRevokeUserToken(t *testing.T) {
	h := newHarness(t)
	withTokens(h)
	h.run("apply", "-f", writeFile(t, "m.yaml", "type: Mesh\nname: default\n")).ok(t)
	enc := base64.RawURLEncoding.EncodeToString
	userTok := enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"Name":"alice","Groups":["ops"],"iss":"meshca","jti":"u-1"}`)) + ".sig"

	h.stdin = userTok + "\n"
	if r := h.run("revoke", "user-token", "-").ok(t); strings.TrimSpace(r.stdout) != "user token u-1 revoked (GlobalSecret user-token-revocations)" {
		t.Errorf("stdout %q", r.stdout)
	}
	h.stdin = ""
	h.run("revoke", "user-token", "u-2").ok(t)
	sec, err := h.env.Manager.Get(t.Context(), api.TypeGlobalSecret, "", tokens.UserRevocationsName)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := base64.StdEncoding.DecodeString(sec.(*api.GlobalSecret).Data)
	if got := strings.Fields(string(data)); len(got) != 2 || got[0] != "u-1" || got[1] != "u-2" {
		t.Errorf("user revocation list %q", data)
	}

	// Each command refuses the other kind of token.
	if r := h.run("revoke", "dataplane-token", userTok).fails(t); !strings.Contains(r.stderr, "this is a user token: use meshctl revoke user-token") {
		t.Errorf("stderr %q", r.stderr)
	}
	dpTok := strings.TrimSpace(h.run("generate", "dataplane-token", "--name", "web-1").ok(t).stdout)
	if r := h.run("revoke", "user-token", dpTok).fails(t); !strings.Contains(r.stderr, "this is a dataplane token: use meshctl revoke dataplane-token") {
		t.Errorf("stderr %q", r.stderr)
	}
}
