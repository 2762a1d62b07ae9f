package dpagent_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshca/pkg/dpagent"
	"meshca/pkg/sds/sdstest"
)

// An agent given two instances streams from the first; when it goes away,
// the agent moves to the second, keeps the files it holds, and gets the
// next rotation from there. The second instance is reached through a name
// with two DNS records.
func TestFailoverToAnotherInstance(t *testing.T) {
	cp1 := newControlPlane(t)
	// A second instance of the same deployment: same secrets, tokens and CA.
	cp2 := &controlPlane{t: t, src: cp1.src, tokens: cp1.tokens, tlsDir: cp1.tlsDir, addr: "127.0.0.1:0"}
	cp2.start()
	t.Cleanup(cp2.stop)

	now := time.Now()
	s1 := sdstest.NewSecrets(t, "default", "web-1", 1, now)
	cp1.src.Set("default", "web-1", s1)
	out := filepath.Join(t.TempDir(), "out")
	_, port2 := splitPort(t, cp2.addr)
	_, port1 := splitPort(t, cp1.addr)
	if port1 == port2 {
		t.Fatal("both instances on one port")
	}
	ra := startAgent(t, cp1, dpagent.Config{
		OutDir: out,
		// localhost has two records here: one reaches the second
		// instance, the other nothing.
		CPAddresses: []string{cp1.addr, "localhost:" + port2},
		LookupHost: func(ctx context.Context, host string) ([]string, error) {
			return []string{"127.0.0.2", "127.0.0.1"}, nil
		},
	})
	if u := ra.next(t); u.Serial.Int64() != 1 {
		t.Fatalf("first serial %v, want 1", u.Serial)
	}
	if cp1.src.Subscribers("default", "web-1") != 1 {
		t.Fatalf("the agent does not stream from the first instance")
	}
	cp1.stop()
	if err := cp2.src.AwaitSubscribers(t.Context(), "default", "web-1", 1); err != nil {
		t.Fatalf("the agent did not move to the second instance: %v", err)
	}
	checkFiles(t, out, s1) // kept through the move
	s2 := sdstest.NewSecrets(t, "default", "web-1", 2, now)
	cp2.src.Set("default", "web-1", s2)
	if u := ra.next(t); u.Serial.Int64() != 2 {
		t.Fatalf("serial after the move %v, want 2", u.Serial)
	}
	checkFiles(t, out, s2)
}

func splitPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i], addr[i+1:]
		}
	}
	t.Fatalf("no port in %s", addr)
	return "", ""
}

func TestBadAddressRefused(t *testing.T) {
	err := dpagent.Run(t.Context(), dpagent.Config{CPAddress: "127.0.0.1:5678,cp-without-port", Mesh: "default", Name: "web-1",
		OutDir: t.TempDir(), Token: func() (string, error) { return "t", nil }, CACertPEM: []byte("x")})
	if err == nil || !strings.Contains(err.Error(), `"cp-without-port"`) {
		t.Fatalf("Run = %v, want an error naming the bad address", err)
	}
}
