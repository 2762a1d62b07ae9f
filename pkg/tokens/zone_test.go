package tokens_test

import (
	"context"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/store"
	"meshca/pkg/tokens"

	"github.com/golang-jwt/jwt/v5"
)

// TestZoneTokens: a zone token names its zone; a user or dataplane token is
// not a zone token (other keys, other issuer); an expired or revoked one is
// refused; its key is a GlobalSecret.
func TestZoneTokens(t *testing.T) {
	tk, st, c := setup(t, "default")
	ctx := context.Background()
	tok, err := tk.GenerateZone(ctx, "zone-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if zone, err := tk.VerifyZone(ctx, tok); err != nil || zone != "zone-1" {
		t.Fatalf("VerifyZone = %q, %v; want zone-1", zone, err)
	}
	if _, err := st.Get(ctx, store.Key{Type: api.TypeGlobalSecret, Name: tokens.ZoneSigningKeyName(1)}); err != nil {
		t.Fatalf("zone-token signing key: %v", err)
	}
	user, err := tk.GenerateUser(ctx, "alice", []string{"mesh-system:admin"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := tk.Generate(ctx, "default", "web-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, other := range map[string]string{"user token": user, "dataplane token": dp, "garbage": "a.b.c"} {
		if _, err := tk.VerifyZone(ctx, other); !errors.Is(err, tokens.ErrInvalid) {
			t.Errorf("%s accepted as a zone token (err = %v)", name, err)
		}
	}
	if _, err := tk.VerifyUser(ctx, tok); !errors.Is(err, tokens.ErrInvalid) {
		t.Errorf("zone token accepted as a user token (err = %v)", err)
	}

	// Revocation by ID.
	revoke := func(ids string) {
		spec := []byte(`{"data":"` + base64.StdEncoding.EncodeToString([]byte(ids)) + `"}`)
		if err := store.Upsert(ctx, st, store.Record{Key: store.Key{Type: api.TypeGlobalSecret, Name: tokens.ZoneRevocationsName}, Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	id := tokenID(t, tok)
	revoke(id)
	if _, err := tk.VerifyZone(ctx, tok); !errors.Is(err, tokens.ErrInvalid) {
		t.Errorf("revoked zone token accepted (err = %v)", err)
	}
	revoke("")
	c.Advance(2 * time.Hour)
	if _, err := tk.VerifyZone(ctx, tok); !errors.Is(err, tokens.ErrInvalid) {
		t.Errorf("expired zone token accepted (err = %v)", err)
	}
}

// tokenID reads a token's jti without verifying it.
func tokenID(t *testing.T, token string) string {
	t.Helper()
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil || claims.ID == "" {
		t.Fatalf("token ID: %v", err)
	}
	return claims.ID
}
