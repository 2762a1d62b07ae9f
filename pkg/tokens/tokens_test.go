package tokens_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
	"meshca/pkg/tokens"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func setup(t testing.TB, meshes ...string) (*tokens.Tokens, store.Store, *clock) {
	t.Helper()
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	ctx := context.Background()
	for _, m := range meshes {
		spec, err := api.MarshalSpec(&api.Mesh{})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Create(ctx, st, store.Record{Key: store.Key{Type: api.TypeMesh, Name: m}, Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	c := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	return tokens.New(st, c.Now), st, c
}

func putSecret(t *testing.T, st store.Store, mesh, name, data string) {
	t.Helper()
	spec, err := api.MarshalSpec(&api.Secret{Data: base64.StdEncoding.EncodeToString([]byte(data))})
	if err != nil {
		t.Fatal(err)
	}
	err = store.Upsert(context.Background(), st, store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: mesh, Name: name}, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
}

func TestGenerateVerify(t *testing.T) {
	tk, st, c := setup(t, "default", "other")
	ctx := context.Background()

	tok, err := tk.Generate(ctx, "default", "web-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := tk.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Mesh != "default" || cl.Name != "web-1" || cl.ID == "" {
		t.Fatalf("claims = %+v", cl)
	}
	if want := c.Now().Add(tokens.DefaultValidity); !cl.ExpiresAt.Equal(want) {
		t.Fatalf("expires %v, want %v", cl.ExpiresAt, want)
	}
	// The first signing key was created with serial 1.
	if _, err := st.Get(ctx, store.Key{Type: api.TypeSecret, Mesh: "default", Name: "dataplane-token-signing-key-default-1"}); err != nil {
		t.Fatalf("signing key: %v", err)
	}
	// A second token gets a distinct ID.
	tok2, err := tk.Generate(ctx, "default", "web-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cl2, err := tk.Verify(ctx, tok2)
	if err != nil {
		t.Fatal(err)
	}
	if cl2.ID == cl.ID {
		t.Fatal("token IDs are not unique")
	}

	// Unknown mesh: refused.
	if _, err := tk.Generate(ctx, "nope", "web-1", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("generate for missing mesh: %v", err)
	}
}

func TestConcurrentFirstKey(t *testing.T) {
	tk, st, _ := setup(t, "default")
	ctx := context.Background()
	var wg sync.WaitGroup
	toks := make([]string, 4)
	errs := make([]error, 4)
	for i := range toks {
		wg.Go(func() { toks[i], errs[i] = tk.Generate(ctx, "default", "web", 0) })
	}
	wg.Wait()
	for i := range toks {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if _, err := tk.Verify(ctx, toks[i]); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := st.List(ctx, api.TypeSecret, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d secrets after concurrent first generation, want 1", len(recs))
	}
}

func TestWrongMesh(t *testing.T) {
	tk, _, _ := setup(t, "default", "other")
	ctx := context.Background()
	tok, err := tk.Generate(ctx, "default", "web-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Generate(ctx, "other", "web-1", 0); err != nil {
		t.Fatal(err)
	}
	// Re-sign the claims as if they were for mesh "other": the payload is
	// altered, so the other mesh's key (serial 1 too) must not accept it.
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(payload), `"Mesh":"default"`, `"Mesh":"other"`, 1)
	if forged == string(payload) {
		t.Fatal("could not find Mesh claim in payload")
	}
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(forged))
	_, err = tk.Verify(ctx, strings.Join(parts, "."))
	if !errors.Is(err, tokens.ErrInvalid) {
		t.Fatalf("token moved to another mesh: err = %v", err)
	}
}

func TestExpired(t *testing.T) {
	tk, _, c := setup(t, "default")
	ctx := context.Background()
	tok, err := tk.Generate(ctx, "default", "web-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(59 * time.Minute)
	if _, err := tk.Verify(ctx, tok); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	c.Advance(2 * time.Minute)
	_, err = tk.Verify(ctx, tok)
	if !errors.Is(err, tokens.ErrInvalid) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("after expiry: %v", err)
	}
	if strings.Contains(err.Error(), tok) {
		t.Fatal("error contains the token")
	}
}

func TestRevoked(t *testing.T) {
	tk, st, _ := setup(t, "default")
	ctx := context.Background()
	tok, err := tk.Generate(ctx, "default", "web-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	keep, err := tk.Generate(ctx, "default", "web-2", 0)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := tk.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	putSecret(t, st, "default", "dataplane-token-revocations-default", "abc,\n"+cl.ID+"\n")
	_, err = tk.Verify(ctx, tok)
	if !errors.Is(err, tokens.ErrInvalid) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked token: %v", err)
	}
	if _, err := tk.Verify(ctx, keep); err != nil {
		t.Fatalf("unrevoked token: %v", err)
	}
	// Un-revoking works at once too.
	putSecret(t, st, "default", "dataplane-token-revocations-default", "abc")
	if _, err := tk.Verify(ctx, tok); err != nil {
		t.Fatalf("after un-revoking: %v", err)
	}
}

func TestRotation(t *testing.T) {
	tk, st, _ := setup(t, "default", "other")
	ctx := context.Background()
	old, err := tk.Generate(ctx, "default", "web-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := tk.RotateSigningKey(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	if serial != 2 {
		t.Fatalf("serial = %d, want 2", serial)
	}
	fresh, err := tk.Generate(ctx, "default", "web-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if header(t, fresh) == header(t, old) {
		t.Fatal("new token not signed with the new key")
	}
	for _, tok := range []string{old, fresh} {
		if _, err := tk.Verify(ctx, tok); err != nil {
			t.Fatalf("before removing old key: %v", err)
		}
	}
	if err := store.Delete(ctx, st, store.Key{Type: api.TypeSecret, Mesh: "default", Name: tokens.SigningKeyName("default", 1)}); err != nil {
		t.Fatal(err)
	}
	_, err = tk.Verify(ctx, old)
	if !errors.Is(err, tokens.ErrInvalid) || !strings.Contains(err.Error(), `signing key 1 of mesh "default" does not exist (it was rotated out?)`) {
		t.Fatalf("old token after key removal: %v", err)
	}
	if _, err := tk.Verify(ctx, fresh); err != nil {
		t.Fatalf("new token after key removal: %v", err)
	}

	// A different key re-created under the removed name (its store version
	// restarts at 1) must not be confused with the cached one.
	if _, err := tk.Generate(ctx, "other", "x", 0); err != nil {
		t.Fatal(err)
	}
	otherKey, err := st.Get(ctx, store.Key{Type: api.TypeSecret, Mesh: "other", Name: tokens.SigningKeyName("other", 1)})
	if err != nil {
		t.Fatal(err)
	}
	err = store.Create(ctx, st, store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: "default", Name: tokens.SigningKeyName("default", 1)}, Spec: otherKey.Spec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Verify(ctx, old); !errors.Is(err, tokens.ErrInvalid) {
		t.Fatalf("old token verified with a re-created key: %v", err)
	}
}

func TestTampered(t *testing.T) {
	tk, _, _ := setup(t, "default")
	ctx := context.Background()
	tok, err := tk.Generate(ctx, "default", "web-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "web-1", "web-2", 1)))
	cases := map[string]string{
		"payload":   strings.Join(parts, "."),
		"signature": tok[:len(tok)-4] + "AAAA",
		"garbage":   "not-a-token",
		"empty":     "",
	}
	for name, bad := range cases {
		_, err := tk.Verify(ctx, bad)
		if !errors.Is(err, tokens.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
		if bad != "" && err != nil && strings.Contains(err.Error(), bad) {
			t.Errorf("%s: error contains the token", name)
		}
	}
}

func header(t *testing.T, tok string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}
