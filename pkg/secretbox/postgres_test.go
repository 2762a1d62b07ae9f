package secretbox_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"os/exec"
	"testing"

	"meshca/internal/pgtest"
	"meshca/pkg/secretbox"
	"meshca/pkg/store"
	"meshca/pkg/store/postgres"
)

// TestPostgresDumpRevealsNoSecret: a dump of the PostgreSQL store (pg_dump,
// every table, the change log included) holds a sealed Secret's value in
// no encoding, while the store reads it back.
func TestPostgresDumpRevealsNoSecret(t *testing.T) {
	dsn := pgtest.DSN(t, "meshca_secretbox_dump")
	pgDump, err := exec.LookPath("pg_dump")
	if err != nil {
		t.Skip("pg_dump not installed (apt-get install postgresql-client)")
	}
	ctx := context.Background()
	inner, err := postgres.Open(ctx, dsn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	st := secretbox.WrapStore(inner, secretbox.NewBox(key(t, 3)), "Secret")
	value := []byte("pg-secret-" + rand.Text())
	key := store.Key{Type: "Secret", Mesh: "default", Name: "db-" + rand.Text()[:8]}
	spec := []byte(`{"data":"` + base64.StdEncoding.EncodeToString(value) + `"}`)
	if err := st.Commit(ctx, store.Op{Kind: store.OpCreate, Record: store.Record{Key: key, Spec: spec}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, store.Op{Kind: store.OpUpdate, Record: store.Record{Key: key, Spec: spec}}); err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(ctx, key)
	if err != nil || !bytes.Equal(got.Spec, spec) {
		t.Fatalf("read back: %q %v", got.Spec, err)
	}
	dump, err := exec.Command(pgDump, "--dbname", dsn).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	if !bytes.Contains(dump, []byte(key.Name)) {
		t.Fatal("the dump does not hold the record at all: the test would prove nothing")
	}
	for name, needle := range map[string][]byte{
		"value": value, "base64": []byte(base64.StdEncoding.EncodeToString(value)),
		"hex": []byte(hexOf(value)), "spec": spec,
		// bytea columns dump as hex, []byte in JSON payloads as base64
		"spec as bytea hex": []byte(hexOf(spec)), "base64 as bytea hex": []byte(hexOf([]byte(base64.StdEncoding.EncodeToString(value)))),
		"spec as base64": []byte(base64.StdEncoding.EncodeToString(spec)),
	} {
		if bytes.Contains(dump, needle) {
			t.Errorf("the dump holds the secret (%s)", name)
		}
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
