package dpagent_test

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshca/internal/syncbuf"
	"meshca/pkg/dpagent"
	"meshca/pkg/sds"
	"meshca/pkg/sds/sdstest"
)

// A data plane the control plane cannot serve yet (not registered, mesh
// without mTLS) keeps retrying, since the operator may fix it; it logs the
// reason once per change, not once per retry, and gets its certificate as
// soon as the operator has acted.
func TestNotServedIsRetriedAndReportedOncePerReason(t *testing.T) {
	cp := newControlPlane(t)
	notFound := `dataplane "web-1" not found in mesh "default"`
	noMTLS := `mesh "default" has no mTLS backend enabled`
	cp.src.Refuse("default", "web-1", errors.Join(sds.ErrDataplaneNotFound, errors.New(notFound)))

	var logs syncbuf.Buffer
	out := filepath.Join(t.TempDir(), "out")
	ra := startAgent(t, cp, dpagent.Config{OutDir: out, MaxNotServedBackoff: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	awaitCalls := func(n int) {
		t.Helper()
		deadline := time.Now().Add(wait)
		for cp.src.ServableCalls("default", "web-1") < n {
			select {
			case <-ra.done:
				t.Fatalf("agent gave up: %v", ra.err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent tried %d times, want %d", cp.src.ServableCalls("default", "web-1"), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	count := func(reason string) int {
		return strings.Count(logs.String(), strings.ReplaceAll(reason, `"`, `\"`))
	}
	awaitCalls(4)
	if n := count(notFound); n != 1 {
		t.Fatalf("reason logged %d times over several retries, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "NotFound") {
		t.Fatalf("the log does not give the status code:\n%s", logs.String())
	}

	calls := cp.src.ServableCalls("default", "web-1")
	cp.src.Refuse("default", "web-1", errors.New(noMTLS))
	awaitCalls(calls + 3)
	if n := count(noMTLS); n != 1 {
		t.Fatalf("new reason logged %d times, want once:\n%s", n, logs.String())
	}

	s1 := sdstest.NewSecrets(t, "default", "web-1", 1, time.Now())
	cp.src.Set("default", "web-1", s1)
	cp.src.Refuse("default", "web-1", nil)
	ra.next(t)
	checkFiles(t, out, s1)
}
