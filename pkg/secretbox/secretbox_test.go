package secretbox_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshca/pkg/secretbox"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
	"meshca/pkg/store/storetest"
)

func key(t *testing.T, b byte) secretbox.Key {
	t.Helper()
	k, err := secretbox.NewKey(bytes.Repeat([]byte{b}, secretbox.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	box := secretbox.NewBox(key(t, 1))
	plain := []byte(`{"data":"c2VjcmV0"}`)
	sealed, err := box.Seal(plain, []byte("Secret\x00m\x00a"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plain) || bytes.Contains(sealed, []byte("c2VjcmV0")) || !secretbox.IsSealed(sealed) {
		t.Fatalf("sealed value shows the plaintext: %q", sealed)
	}
	again, _ := box.Seal(plain, []byte("Secret\x00m\x00a"))
	if bytes.Equal(again, sealed) {
		t.Error("two seals of one value are equal: the nonce is not random")
	}
	got, err := box.Open(sealed, []byte("Secret\x00m\x00a"))
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %q %v", got, err)
	}
	// Bound to its record: moved to another name, it does not open.
	if _, err := box.Open(sealed, []byte("Secret\x00m\x00b")); err == nil {
		t.Error("a sealed value opened under another record's name")
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := box.Open(tampered, []byte("Secret\x00m\x00a")); err == nil {
		t.Error("a tampered value opened")
	}
	// Another key: a clear error naming key IDs, never key material.
	_, err = secretbox.NewBox(key(t, 2)).Open(sealed, []byte("Secret\x00m\x00a"))
	if !errors.Is(err, secretbox.ErrWrongKey) || !strings.Contains(err.Error(), key(t, 1).ID()) {
		t.Errorf("wrong key: %v", err)
	}
	// A rotation box opens both.
	if _, err := secretbox.NewBox(key(t, 2), key(t, 1)).Open(sealed, []byte("Secret\x00m\x00a")); err != nil {
		t.Errorf("previous key: %v", err)
	}
	// Values written before encryption pass through.
	if got, err := box.Open(plain, nil); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("plaintext: %q %v", got, err)
	}
	if _, err := secretbox.NewKey([]byte("short")); err == nil {
		t.Error("a short key was accepted")
	}
}

func TestStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := memory.New()
		t.Cleanup(func() { _ = s.Close() })
		return secretbox.WrapStore(s, secretbox.NewBox(key(t, 7)), "T", "Secret", "Dataplane", "DataplaneIdentity", "Load")
	})
}

func TestStoreSealsAndReseals(t *testing.T) {
	ctx := context.Background()
	inner := memory.New()
	t.Cleanup(func() { _ = inner.Close() })
	secret := store.Record{Key: store.Key{Type: "Secret", Mesh: "m", Name: "s"}, Spec: []byte(`{"data":"aHVudGVyMg=="}`)}
	mesh := store.Record{Key: store.Key{Type: "Mesh", Name: "m"}, Spec: []byte(`{}`)}
	// Written before encryption was enabled.
	if err := inner.Commit(ctx, store.Op{Kind: store.OpCreate, Record: secret}, store.Op{Kind: store.OpCreate, Record: mesh}); err != nil {
		t.Fatal(err)
	}
	old := secretbox.WrapStore(inner, secretbox.NewBox(key(t, 1)), "Secret")
	if err := old.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := old.Reseal(ctx); err != nil || n != 1 {
		t.Fatalf("reseal plaintext: %d %v", n, err)
	}
	raw, _ := inner.Get(ctx, secret.Key)
	if secretbox.SealedWith(raw.Spec) != key(t, 1).ID() || bytes.Contains(raw.Spec, []byte("aHVudGVyMg==")) {
		t.Fatalf("stored spec not sealed: %q", raw.Spec)
	}
	if rawMesh, _ := inner.Get(ctx, mesh.Key); string(rawMesh.Spec) != "{}" {
		t.Errorf("an unsealed type was sealed: %q", rawMesh.Spec)
	}
	// The wrong key: Check fails, nothing is read.
	if err := secretbox.WrapStore(inner, secretbox.NewBox(key(t, 2)), "Secret").Check(ctx); !errors.Is(err, secretbox.ErrWrongKey) {
		t.Fatalf("check with the wrong key: %v", err)
	}
	// Rotation: the new key with the old one as previous.
	rot := secretbox.WrapStore(inner, secretbox.NewBox(key(t, 2), key(t, 1)), "Secret")
	if got, err := rot.Get(ctx, secret.Key); err != nil || string(got.Spec) != string(secret.Spec) {
		t.Fatalf("read during rotation: %q %v", got.Spec, err)
	}
	if n, err := rot.Reseal(ctx); err != nil || n != 1 {
		t.Fatalf("reseal: %d %v", n, err)
	}
	if err := secretbox.WrapStore(inner, secretbox.NewBox(key(t, 2)), "Secret").Check(ctx); err != nil {
		t.Fatalf("new key alone after rotation: %v", err)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	material, err := secretbox.NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := secretbox.WriteKeyFile(p, material); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode().Perm())
	}
	if err := secretbox.WriteKeyFile(p, material); err == nil {
		t.Error("an existing key file was replaced")
	}
	k, err := secretbox.ReadKeyFile(p)
	want, _ := secretbox.NewKey(material)
	if err != nil || k.ID() != want.ID() {
		t.Fatalf("read key: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	_ = os.WriteFile(bad, []byte("not base64 at all!\n"), 0o600)
	if _, err := secretbox.ReadKeyFile(bad); err == nil || strings.Contains(err.Error(), "not base64 at all") {
		t.Errorf("bad key file: %v", err)
	}
}

// BenchmarkSealOpenRecord is what encryption at rest adds to writing and
// reading back one data-plane identity record (about 4 KiB of JSON: chain,
// key, metadata).
func BenchmarkSealOpenRecord(b *testing.B) {
	k, err := secretbox.NewKey(bytes.Repeat([]byte{1}, secretbox.KeySize))
	if err != nil {
		b.Fatal(err)
	}
	box := secretbox.NewBox(k)
	spec := bytes.Repeat([]byte("x"), 4096)
	aad := []byte("DataplaneIdentity\x00default\x00backend-1")
	b.ReportAllocs()
	b.SetBytes(int64(len(spec)))
	for b.Loop() {
		sealed, err := box.Seal(spec, aad)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := box.Open(sealed, aad); err != nil {
			b.Fatal(err)
		}
	}
}
