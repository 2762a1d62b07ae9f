package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshca/pkg/api"
	"meshca/pkg/sds"
	"meshca/pkg/sds/sdstest"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
	"meshca/pkg/tokens"
)

func TestRefusedTokenExitsNonZero(t *testing.T) {
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	spec, err := api.MarshalSpec(&api.Mesh{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Create(context.Background(), st, store.Record{Key: store.Key{Type: api.TypeMesh, Name: "default"}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	tk := tokens.New(st, nil)
	tok, err := tk.Generate(context.Background(), "default", "backend-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	src := sdstest.NewSource()
	src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, time.Now()))

	dir := t.TempDir()
	tlsConf, caPEM, err := sds.LoadOrCreateServerTLS(dir, "", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	srv := sds.NewServer(src, sds.TokenAuthenticator{Tokens: tk}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	go func() { served <- srv.Serve(ctx, lis, tlsConf) }()
	t.Cleanup(func() { cancel(); <-served })

	caFile := filepath.Join(dir, "cp-ca.pem")
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	out := filepath.Join(dir, "out")
	// kuma-dp's flag names, as a Kuma user types them.
	code := run([]string{"run", "--cp-address", lis.Addr().String(), "--ca-cert-file", caFile,
		"--dataplane-token-file", tokFile, "--mesh", "default", "--name", "web-1", "--out", out}, &stderr)
	if code != 2 {
		t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr.String())
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused token left %s behind (%v)", out, err)
	}
	if !strings.Contains(stderr.String(), "refused the dataplane token") {
		t.Fatalf("stderr does not explain the refusal:\n%s", stderr.String())
	}
	if strings.Contains(stderr.String(), tok) {
		t.Fatal("stderr contains the token")
	}

	// No token flag: the pod's ServiceAccount token is read from its
	// standard path (here the same refused token), or, without one, the
	// agent says what it needs.
	serviceAccountTokenPath = tokFile
	stderr.Reset()
	code = run([]string{"run", "--cp-address", lis.Addr().String(), "--cp-ca-cert", caFile,
		"--mesh", "default", "--name", "web-1", "--out", out}, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "ServiceAccount token") || !strings.Contains(stderr.String(), "refused the dataplane token") {
		t.Fatalf("with the token at the ServiceAccount path: exit code %d, want 2 after using it; stderr:\n%s", code, stderr.String())
	}
	serviceAccountTokenPath = filepath.Join(dir, "no-such-token")
	stderr.Reset()
	code = run([]string{"run", "--cp-address", lis.Addr().String(), "--cp-ca-cert", caFile,
		"--mesh", "default", "--name", "web-1", "--out", out}, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "a token is required: --token-file") || !strings.Contains(stderr.String(), "no-such-token") {
		t.Fatalf("without any token: exit code %d, want 1 with the fix; stderr:\n%s", code, stderr.String())
	}

	// The control plane's certificate signed by another CA than
	// --cp-ca-cert: said once, with the fix; --exit-on-permanent-error
	// gives up.
	_, otherCA, err := sds.LoadOrCreateServerTLS(t.TempDir(), "", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(dir, "other-ca.pem")
	if err := os.WriteFile(otherFile, otherCA, 0o644); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	code = run([]string{"run", "--cp-address", lis.Addr().String(), "--cp-ca-cert", otherFile, "--exit-on-permanent-error",
		"--token-file", tokFile, "--mesh", "default", "--name", "web-1", "--out", out}, &stderr)
	if code != 2 {
		t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr.String())
	}
	if n := strings.Count(stderr.String(), "check --cp-ca-cert; the control plane's CA is <data-dir>/dp-server-ca.pem"); n != 2 {
		t.Errorf("the fix is given %d times, want once in the log and once on exit:\n%s", n, stderr.String())
	}
}

func TestVersion(t *testing.T) {
	root := newRootCmd(&bytes.Buffer{})
	var stdout bytes.Buffer
	root.SetOut(&stdout)
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil || strings.TrimSpace(stdout.String()) != version {
		t.Fatalf("version: %v %q", err, stdout.String())
	}
}

func TestFlagsFromEnv(t *testing.T) {
	t.Setenv("MESHCA_DP_NAME", "from-env")
	t.Setenv("MESHCA_DP_MESH", "env-mesh")
	cmd := newRunCmd(&bytes.Buffer{})
	if err := cmd.Flags().Parse([]string{"--mesh", "flag-mesh"}); err != nil {
		t.Fatal(err)
	}
	if err := flagsFromEnv(cmd.Flags()); err != nil {
		t.Fatal(err)
	}
	if v, _ := cmd.Flags().GetString("name"); v != "from-env" {
		t.Fatalf("name = %q, want from environment", v)
	}
	if v, _ := cmd.Flags().GetString("mesh"); v != "flag-mesh" {
		t.Fatalf("mesh = %q, want the flag to win", v)
	}
}
