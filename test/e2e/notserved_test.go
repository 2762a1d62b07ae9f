package e2e

import (
	"strings"
	"testing"
	"time"
)

// A meshca-dp whose token is for a dataplane that is not registered, or
// whose mesh has no mTLS, is told why by the control plane and prints it,
// once per reason, while it waits; it gets its certificate as soon as the
// operator has fixed the cause.
func TestAgentIsToldWhyItGetsNothing(t *testing.T) {
	t.Parallel()
	cp := startCP(t, t.TempDir())
	cp.apply(t, "type: Mesh\nname: default\n")

	ghost := startAgent(t, cp, "default", "ghost-1", "ghost-1")
	waitFor(t, 30*time.Second, "meshca-dp to print that the dataplane is not registered", func() bool {
		return strings.Contains(ghost.proc.out.String(), `code=NotFound reason="dataplane \"ghost-1\" not found in mesh \"default\"`)
	})
	// The agent retries (the control plane logs each refused stream once)
	// without printing the same reason again.
	waitFor(t, 30*time.Second, "the control plane to log three refused streams", func() bool {
		return strings.Contains(cp.out.String(), "SDS stream refused: nothing to serve this dataplane") &&
			strings.Count(cp.out.String(), "node=default.ghost-1 code=NotFound") >= 3
	})

	cp.apply(t, "type: Dataplane\nmesh: default\nname: ghost-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 9001, tags: {kuma.io/service: ghost}}]}\n")
	waitFor(t, 30*time.Second, "meshca-dp to print that the mesh has no mTLS", func() bool {
		return strings.Contains(ghost.proc.out.String(), `code=FailedPrecondition reason="mesh \"default\" has no mTLS backend enabled`)
	})
	if exited, err := ghost.exited(0); exited {
		t.Fatalf("meshca-dp gave up (%v) where the operator can fix the cause", err)
	}

	cp.apply(t, builtinMeshWith("1h"))
	leaf := ghost.waitCert(t)
	if got := spiffeOf(leaf); got != "spiffe://default/ghost" {
		t.Errorf("SAN %q, want spiffe://default/ghost", got)
	}
	out := ghost.proc.out.String()
	for _, reason := range []string{`not found in mesh \"default\"`, `has no mTLS backend enabled`} {
		if n := strings.Count(out, reason); n != 1 {
			t.Errorf("meshca-dp printed %q %d times, want once (once per reason, not per retry)", reason, n)
		}
	}
}
