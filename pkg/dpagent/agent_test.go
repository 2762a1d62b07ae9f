package dpagent_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshca/internal/syncbuf"
	"meshca/pkg/api"
	"meshca/pkg/dpagent"
	"meshca/pkg/sds"
	"meshca/pkg/sds/sdstest"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
	"meshca/pkg/tokens"
)

const wait = 30 * time.Second

type controlPlane struct {
	t       *testing.T
	src     *sdstest.Source
	tokens  *tokens.Tokens
	tlsDir  string
	caPEM   []byte
	addr    string
	stopped chan struct{}
	cancel  context.CancelFunc
}

func newControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	spec, err := api.MarshalSpec(&api.Mesh{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Create(context.Background(), st, store.Record{Key: store.Key{Type: api.TypeMesh, Name: "default"}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{t: t, src: sdstest.NewSource(), tokens: tokens.New(st, nil), tlsDir: t.TempDir(), addr: "127.0.0.1:0"}
	cp.start()
	t.Cleanup(cp.stop)
	return cp
}

// start serves SDS (again) on the same address with the same persisted CA.
func (cp *controlPlane) start() {
	t := cp.t
	t.Helper()
	tlsConf, caPEM, err := sds.LoadOrCreateServerTLS(cp.tlsDir, "", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cp.caPEM = caPEM
	lis, err := net.Listen("tcp", cp.addr)
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = lis.Addr().String()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := sds.NewServer(cp.src, sds.TokenAuthenticator{Tokens: cp.tokens}, logger, prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := srv.Serve(ctx, lis, tlsConf); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	cp.cancel, cp.stopped = cancel, stopped
}

func (cp *controlPlane) stop() {
	cp.cancel()
	<-cp.stopped
}

func (cp *controlPlane) token(name string) string {
	cp.t.Helper()
	tok, err := cp.tokens.Generate(context.Background(), "default", name, time.Hour)
	if err != nil {
		cp.t.Fatal(err)
	}
	return tok
}

type runningAgent struct {
	updates chan dpagent.Update
	done    chan struct{} // closed when Run returned
	err     error         // Run's result, once done
	cancel  context.CancelFunc
}

func startAgent(t *testing.T, cp *controlPlane, cfg dpagent.Config) *runningAgent {
	t.Helper()
	ra := &runningAgent{updates: make(chan dpagent.Update, 16), done: make(chan struct{})}
	cfg.CPAddress = cp.addr
	if cfg.CACertPEM == nil {
		cfg.CACertPEM = cp.caPEM
	}
	cfg.Mesh = "default"
	if cfg.Name == "" {
		cfg.Name = "web-1"
	}
	if cfg.Token == nil {
		tok := cp.token(cfg.Name)
		cfg.Token = func() (string, error) { return tok, nil }
	}
	cfg.InitialBackoff, cfg.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	cfg.OnUpdate = func(u dpagent.Update) { ra.updates <- u }
	ctx, cancel := context.WithCancel(context.Background())
	ra.cancel = cancel
	go func() {
		defer close(ra.done)
		ra.err = dpagent.Run(ctx, cfg)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ra.done:
		case <-time.After(wait):
			t.Error("agent did not stop")
		}
	})
	return ra
}

func (ra *runningAgent) next(t *testing.T) dpagent.Update {
	t.Helper()
	select {
	case u := <-ra.updates:
		return u
	case <-ra.done:
		t.Fatalf("agent stopped: %v", ra.err)
	case <-time.After(wait):
		t.Fatal("no update")
	}
	return dpagent.Update{}
}

func checkFiles(t *testing.T, dir string, want sds.Secrets) {
	t.Helper()
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{dpagent.CertFile, want.CertChainPEM, 0o644},
		{dpagent.KeyFile, want.KeyPEM, 0o600},
		{dpagent.CAFile, want.TrustBundlePEM, 0o644},
	} {
		path := filepath.Join(dir, f.name)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.data) {
			t.Errorf("%s does not hold the pushed content", f.name)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != f.perm {
			t.Errorf("%s mode %v, want %v", f.name, fi.Mode().Perm(), f.perm)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestWritesFilesAndRewritesOnPush(t *testing.T) {
	cp := newControlPlane(t)
	now := time.Now()
	s1 := sdstest.NewSecrets(t, "default", "web-1", 1, now)
	cp.src.Set("default", "web-1", s1)

	out := filepath.Join(t.TempDir(), "out")
	hookLog := filepath.Join(t.TempDir(), "hook.log")
	ra := startAgent(t, cp, dpagent.Config{
		OutDir:   out,
		OnRotate: `echo "$MESHCA_DP_OUT" >> '` + hookLog + `'`,
	})

	if u := ra.next(t); u.Serial.Int64() != 1 {
		t.Fatalf("serial %v, want 1", u.Serial)
	}
	checkFiles(t, out, s1)
	if got, _ := os.ReadFile(hookLog); string(got) != out+"\n" {
		t.Fatalf("hook log %q, want one run with MESHCA_DP_OUT=%s", got, out)
	}

	s2 := sdstest.NewSecrets(t, "default", "web-1", 2, now)
	cp.src.Set("default", "web-1", s2)
	if u := ra.next(t); u.Serial.Int64() != 2 {
		t.Fatalf("serial %v, want 2", u.Serial)
	}
	checkFiles(t, out, s2)
	if got, _ := os.ReadFile(hookLog); string(got) != out+"\n"+out+"\n" {
		t.Fatalf("hook log %q, want two runs", got)
	}

	ra.cancel()
	select {
	case <-ra.done:
		if ra.err != nil {
			t.Fatalf("Run after cancel: %v", ra.err)
		}
	case <-time.After(wait):
		t.Fatal("agent did not stop")
	}
}

func TestReconnectsAfterServerRestart(t *testing.T) {
	cp := newControlPlane(t)
	now := time.Now()
	s1 := sdstest.NewSecrets(t, "default", "web-1", 1, now)
	cp.src.Set("default", "web-1", s1)
	out := t.TempDir()
	ra := startAgent(t, cp, dpagent.Config{OutDir: out})
	ra.next(t)
	checkFiles(t, out, s1)

	cp.stop()
	s2 := sdstest.NewSecrets(t, "default", "web-1", 2, now)
	cp.src.Set("default", "web-1", s2)
	cp.start()

	if u := ra.next(t); u.Serial.Int64() != 2 {
		t.Fatalf("serial %v, want 2", u.Serial)
	}
	checkFiles(t, out, s2)
}

func TestRefusedTokenIsPermanent(t *testing.T) {
	cp := newControlPlane(t)
	cp.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, time.Now()))
	other := cp.token("backend-1")
	cases := map[string]func() (string, error){
		"token of another dataplane": func() (string, error) { return other, nil },
		"garbage token":              func() (string, error) { return "garbage", nil },
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			ra := startAgent(t, cp, dpagent.Config{OutDir: out, Token: tok})
			select {
			case <-ra.done:
				if !errors.Is(ra.err, dpagent.ErrRefused) {
					t.Fatalf("Run = %v, want ErrRefused", ra.err)
				}
				if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the refused agent left %s behind (%v)", out, err)
				}
				if strings.Contains(ra.err.Error(), other) {
					t.Fatal("error contains the token")
				}
			case u := <-ra.updates:
				t.Fatalf("refused agent got an update: %+v", u)
			case <-time.After(wait):
				t.Fatal("agent kept retrying a refused token")
			}
		})
	}
}

// A refused token that has been replaced since it was sent (kubelet rotated
// the pod's ServiceAccount token) is not final: the agent reconnects with
// the new one.
func TestReplacedTokenIsRetried(t *testing.T) {
	cp := newControlPlane(t)
	want := sdstest.NewSecrets(t, "default", "web-1", 1, time.Now())
	cp.src.Set("default", "web-1", want)
	good := cp.token("web-1")
	var calls atomic.Int32
	tok := func() (string, error) {
		if calls.Add(1) == 1 {
			return "expired-token", nil
		}
		return good, nil
	}
	out := filepath.Join(t.TempDir(), "out")
	ra := startAgent(t, cp, dpagent.Config{OutDir: out, Token: tok})
	if u := ra.next(t); u.Serial.Int64() != 1 {
		t.Fatalf("served serial %v, want 1", u.Serial)
	}
	checkFiles(t, out, want)
}

// An agent given the wrong CA for the control plane says so once, with the
// fix, and gives up after PermanentErrorLimit attempts.
func TestUntrustedControlPlaneIsReportedOnce(t *testing.T) {
	cp := newControlPlane(t)
	cp.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, time.Now()))
	_, otherCA, err := sds.LoadOrCreateServerTLS(t.TempDir(), "", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	out := filepath.Join(t.TempDir(), "out")
	ra := startAgent(t, cp, dpagent.Config{OutDir: out, CACertPEM: otherCA, PermanentErrorLimit: 4,
		UntrustedHint: "check --cp-ca-cert", Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	select {
	case <-ra.done:
	case u := <-ra.updates:
		t.Fatalf("agent trusting another CA got an update: %+v", u)
	case <-time.After(wait):
		t.Fatal("agent kept retrying an untrusted control plane")
	}
	if !errors.Is(ra.err, dpagent.ErrUntrusted) || !strings.Contains(ra.err.Error(), "4 attempts") {
		t.Fatalf("Run = %v, want ErrUntrusted after 4 attempts", ra.err)
	}
	if n := strings.Count(logs.String(), "check --cp-ca-cert"); n != 1 {
		t.Errorf("hint logged %d times, want once:\n%s", n, logs.String())
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind (%v)", out, err)
	}
}
