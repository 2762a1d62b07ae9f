package tokens_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"meshca/pkg/api"
	"meshca/pkg/store"
	"meshca/pkg/tokens"
)

// userSigningKey reads the user-token signing key with serial from the store.
func userSigningKey(t *testing.T, st store.Store, serial int) *rsa.PrivateKey {
	t.Helper()
	rec, err := st.Get(context.Background(), store.Key{Type: api.TypeGlobalSecret, Name: tokens.UserSigningKeyName(serial)})
	if err != nil {
		t.Fatal(err)
	}
	var s api.GlobalSecret
	if err := json.Unmarshal(rec.Spec, &s); err != nil {
		t.Fatal(err)
	}
	data, err := base64.StdEncoding.DecodeString(s.Data)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestUserTokens(t *testing.T) {
	tk, st, c := setup(t, "default")
	ctx := context.Background()
	tok, err := tk.GenerateUser(ctx, "alice", []string{"team-a", "ops"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := tk.VerifyUser(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Name != "alice" || !slices.Equal(cl.Groups, []string{"team-a", "ops"}) || cl.ID == "" || !cl.ExpiresAt.Equal(c.Now().Add(24*time.Hour)) {
		t.Fatalf("claims %+v", cl)
	}
	if _, err := st.Get(ctx, store.Key{Type: api.TypeGlobalSecret, Name: "user-token-signing-key-1"}); err != nil {
		t.Fatalf("signing key not a GlobalSecret: %v", err)
	}

	// A dataplane token is not a user token, nor the reverse.
	dpTok, err := tk.Generate(ctx, "default", "web-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.VerifyUser(ctx, dpTok); !errors.Is(err, tokens.ErrInvalid) {
		t.Errorf("dataplane token accepted as a user token: %v", err)
	}
	if _, err := tk.Verify(ctx, tok); !errors.Is(err, tokens.ErrInvalid) {
		t.Errorf("user token accepted as a dataplane token: %v", err)
	}

	if _, err := tk.GenerateUser(ctx, "", nil, time.Hour); err == nil {
		t.Error("token without a name generated")
	}
	if _, err := tk.GenerateUser(ctx, "bob", nil, 0); err == nil {
		t.Error("token without a validity generated")
	}
}

func TestUserTokenRefusals(t *testing.T) {
	tk, st, c := setup(t)
	ctx := context.Background()
	good, err := tk.GenerateUser(ctx, "alice", []string{"team-a"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key := userSigningKey(t, st, 1)
	forge := func(method jwt.SigningMethod, signKey any, mod func(jwt.MapClaims)) string {
		claims := jwt.MapClaims{"Name": "alice", "Groups": []string{"mesh-system:admin"}, "jti": "x1", "iss": tokens.UserTokenIssuer,
			"iat": c.Now().Unix(), "exp": c.Now().Add(time.Hour).Unix()}
		if mod != nil {
			mod(claims)
		}
		tok := jwt.NewWithClaims(method, claims)
		tok.Header["kid"] = "1"
		s, err := tok.SignedString(signKey)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "team-a", "mesh-system:admin", 1))) + "." + parts[2]

	cases := map[string]string{
		"alg none":              forge(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil),
		"HS256 with public key": forge(jwt.SigningMethodHS256, pubPEM, nil),
		"wrong issuer":          forge(jwt.SigningMethodRS256, key, func(m jwt.MapClaims) { m["iss"] = "someone-else" }),
		"no issuer":             forge(jwt.SigningMethodRS256, key, func(m jwt.MapClaims) { delete(m, "iss") }),
		"no expiry":             forge(jwt.SigningMethodRS256, key, func(m jwt.MapClaims) { delete(m, "exp") }),
		"no name":               forge(jwt.SigningMethodRS256, key, func(m jwt.MapClaims) { delete(m, "Name") }),
		"tampered":              tampered,
		"garbage":               "a.b.c",
	}
	for name, bad := range cases {
		_, err := tk.VerifyUser(ctx, bad)
		if !errors.Is(err, tokens.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		} else if strings.Contains(err.Error(), bad) {
			t.Errorf("%s: error contains the token", name)
		}
	}
	// The forging helper itself makes acceptable tokens: the cases above fail for their flaw alone.
	if _, err := tk.VerifyUser(ctx, forge(jwt.SigningMethodRS256, key, nil)); err != nil {
		t.Fatalf("well-formed forged token refused: %v", err)
	}

	// Revocation by ID, read at every verification.
	cl, err := tk.VerifyUser(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := api.MarshalSpec(&api.GlobalSecret{Data: base64.StdEncoding.EncodeToString([]byte("other\n" + cl.ID))})
	if err := store.Upsert(ctx, st, store.Record{Key: store.Key{Type: api.TypeGlobalSecret, Name: tokens.UserRevocationsName}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.VerifyUser(ctx, good); !errors.Is(err, tokens.ErrInvalid) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked token: %v", err)
	}

	// Expiry.
	other, err := tk.GenerateUser(ctx, "bob", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.VerifyUser(ctx, other); err != nil { // now remembered as verified
		t.Fatal(err)
	}
	c.Advance(time.Hour + time.Second)
	if _, err := tk.VerifyUser(ctx, other); !errors.Is(err, tokens.ErrInvalid) {
		t.Errorf("expired token: %v", err)
	}
}

func TestUserSigningKeyRotation(t *testing.T) {
	tk, st, _ := setup(t)
	ctx := context.Background()
	old, err := tk.GenerateUser(ctx, "alice", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if serial, err := tk.RotateUserSigningKey(ctx); err != nil || serial != 2 {
		t.Fatalf("rotate: %d %v", serial, err)
	}
	fresh, err := tk.GenerateUser(ctx, "alice", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(header(t, fresh), `"kid":"2"`) {
		t.Fatalf("new token not signed by key 2: %s", header(t, fresh))
	}
	if _, err := tk.VerifyUser(ctx, old); err != nil {
		t.Fatalf("old token refused while its key exists: %v", err)
	}
	if err := store.Delete(ctx, st, store.Key{Type: api.TypeGlobalSecret, Name: tokens.UserSigningKeyName(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.VerifyUser(ctx, old); !errors.Is(err, tokens.ErrInvalid) {
		t.Fatalf("token of a removed key: %v", err)
	}
	if _, err := tk.VerifyUser(ctx, fresh); err != nil {
		t.Fatalf("token of the current key: %v", err)
	}
}

// TestUserTokenCacheFollowsRevocation: with Run watching the store, a
// verified token is served from the cache, and a revocation or the removal
// of its key is still seen.
func TestUserTokenCacheFollowsRevocation(t *testing.T) {
	tk, st, _ := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = tk.Run(ctx) }()
	a, err := tk.GenerateUser(ctx, "alice", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tk.GenerateUser(ctx, "bob", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tk.VerifyUser(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := tk.VerifyUser(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	refusedSoon := func(tok, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := tk.VerifyUser(ctx, tok); errors.Is(err, tokens.ErrInvalid) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never seen", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	spec, _ := api.MarshalSpec(&api.GlobalSecret{Data: base64.StdEncoding.EncodeToString([]byte(ca.ID))})
	if err := store.Upsert(ctx, st, store.Record{Key: store.Key{Type: api.TypeGlobalSecret, Name: tokens.UserRevocationsName}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	refusedSoon(a, "the revocation")
	if _, err := tk.VerifyUser(ctx, b); err != nil {
		t.Fatalf("another token refused: %v", err)
	}
	if err := store.Delete(ctx, st, store.Key{Type: api.TypeGlobalSecret, Name: tokens.UserSigningKeyName(1)}); err != nil {
		t.Fatal(err)
	}
	refusedSoon(b, "the removal of the signing key")
}
