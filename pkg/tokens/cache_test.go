package tokens_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/store"
	"meshca/pkg/tokens"
)

// countingStore counts List calls.
type countingStore struct {
	store.Store
	lists atomic.Int64
}

func (s *countingStore) List(ctx context.Context, typ, mesh string) ([]store.Record, error) {
	s.lists.Add(1)
	return s.Store.List(ctx, typ, mesh)
}

func kid(t *testing.T, tok string) int {
	t.Helper()
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal([]byte(header(t, tok)), &h); err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(h.Kid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func copyKey(t *testing.T, st store.Store, fromSerial, toSerial int) {
	t.Helper()
	ctx := context.Background()
	rec, err := st.Get(ctx, store.Key{Type: api.TypeSecret, Mesh: "default", Name: tokens.SigningKeyName("default", fromSerial)})
	if err != nil {
		t.Fatal(err)
	}
	err = store.Create(ctx, st, store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: "default", Name: tokens.SigningKeyName("default", toSerial)}, Spec: rec.Spec})
	if err != nil {
		t.Fatal(err)
	}
}

// Without Run, Generate lists the mesh's Secrets once, then follows
// rotations (also by others) and key removals with single reads.
func TestGenerateCachesNewestSerial(t *testing.T) {
	_, inner, _ := setup(t, "default")
	st := &countingStore{Store: inner}
	tk := tokens.New(st, nil)
	ctx := context.Background()
	for i := range 20 {
		putSecret(t, inner, "default", "unrelated-"+strconv.Itoa(i), "x")
	}
	for range 20 {
		tok, err := tk.Generate(ctx, "default", "web", 0)
		if err != nil {
			t.Fatal(err)
		}
		if kid(t, tok) != 1 {
			t.Fatalf("kid %d, want 1", kid(t, tok))
		}
	}
	if n := st.lists.Load(); n > 2 {
		t.Fatalf("%d Lists for 20 tokens", n)
	}
	if _, err := tk.RotateSigningKey(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	lists := st.lists.Load()
	tok, err := tk.Generate(ctx, "default", "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	if kid(t, tok) != 2 || st.lists.Load() != lists {
		t.Fatalf("after rotation: kid %d, %d more Lists", kid(t, tok), st.lists.Load()-lists)
	}
	// Another control plane rotates: seen by the next Generate.
	copyKey(t, inner, 2, 3)
	if tok, err = tk.Generate(ctx, "default", "web", 0); err != nil {
		t.Fatal(err)
	}
	if kid(t, tok) != 3 {
		t.Fatalf("after another's rotation: kid %d, want 3", kid(t, tok))
	}
	// The newest key is removed: the next newest signs.
	if err := store.Delete(ctx, inner, store.Key{Type: api.TypeSecret, Mesh: "default", Name: tokens.SigningKeyName("default", 3)}); err != nil {
		t.Fatal(err)
	}
	if tok, err = tk.Generate(ctx, "default", "web", 0); err != nil {
		t.Fatal(err)
	}
	if kid(t, tok) != 2 {
		t.Fatalf("after removing key 3: kid %d, want 2", kid(t, tok))
	}
	if _, err := tk.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
}

func TestRunGeneration(t *testing.T) {
	_, inner, _ := setup(t, "default", "other")
	st := &countingStore{Store: inner}
	tk := tokens.New(st, nil)
	ctx := context.Background()
	if _, ok := tk.Generation("default"); ok {
		t.Fatal("Generation ok without Run")
	}
	tok, err := tk.Generate(ctx, "default", "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Generate(ctx, "other", "web", 0); err != nil {
		t.Fatal(err)
	}

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tk.Run(rctx) }()
	waitFor(t, "watch", func() bool { _, ok := tk.Generation("default"); return ok })
	g0, _ := tk.Generation("default")
	o0, _ := tk.Generation("other")
	all0, _ := tk.Generation("")
	if all0 < g0 || all0 < o0 {
		t.Fatalf("Generation(\"\") = %d < mesh generations %d, %d", all0, g0, o0)
	}

	// Unrelated Secrets do not change generations.
	putSecret(t, inner, "default", "unrelated", "x")
	cl, err := tk.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	putSecret(t, inner, "default", tokens.RevocationsName("default"), cl.ID)
	waitFor(t, "revocation generation", func() bool { g, _ := tk.Generation("default"); return g > g0 })
	if g, _ := tk.Generation("other"); g != o0 {
		t.Fatalf("other mesh's generation changed: %d -> %d", o0, g)
	}
	if all, _ := tk.Generation(""); all <= all0 {
		t.Fatalf("Generation(\"\") did not grow: %d -> %d", all0, all)
	}

	// A key created by another control plane is seen through the watch:
	// no List, and the generation changes.
	g1, _ := tk.Generation("default")
	copyKey(t, inner, 1, 2)
	waitFor(t, "key generation", func() bool { g, _ := tk.Generation("default"); return g > g1 })
	lists := st.lists.Load()
	fresh, err := tk.Generate(ctx, "default", "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	if kid(t, fresh) != 2 || st.lists.Load() != lists {
		t.Fatalf("kid %d, %d more Lists", kid(t, fresh), st.lists.Load()-lists)
	}
	// Key removal: generation changes, cache follows.
	g2, _ := tk.Generation("default")
	if err := store.Delete(ctx, inner, store.Key{Type: api.TypeSecret, Mesh: "default", Name: tokens.SigningKeyName("default", 2)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "key removal generation", func() bool { g, _ := tk.Generation("default"); return g > g2 })
	if fresh, err = tk.Generate(ctx, "default", "web", 0); err != nil {
		t.Fatal(err)
	}
	if kid(t, fresh) != 1 {
		t.Fatalf("kid %d after removing key 2, want 1", kid(t, fresh))
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok := tk.Generation("default"); ok {
		t.Fatal("Generation ok after Run ended")
	}
}
