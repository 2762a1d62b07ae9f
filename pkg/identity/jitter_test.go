package identity_test

import (
	"testing"
)

// TestRotationTimeSurvivesMeshChange: a Mesh change that does not touch a
// data plane's identity (here: a label) keeps its certificate and its next
// rotation time; two certificates issued together still rotate at
// different times.
func TestRotationTimeSurvivesMeshChange(t *testing.T) {
	f := newFixture(t)
	f.apply("type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - {name: ca-1, type: builtin}\n")
	f.apply(twoDataplanes)
	f.waitFor("both certified", func() bool {
		a, _ := f.leaf("backend-1")
		b, _ := f.leaf("web-1")
		return a != nil && b != nil
	})
	next := func(name string) string {
		in, ok := f.ids.Insight("default", name)
		if !ok || in.MTLS == nil || in.MTLS.NextRotation.IsZero() {
			t.Fatalf("%s: no next rotation in its insight", name)
		}
		return in.MTLS.NextRotation.String()
	}
	before, other := next("backend-1"), next("web-1")
	if before == other {
		t.Errorf("two certificates issued together rotate at the same instant %s", before)
	}
	leaf, _ := f.leaf("backend-1")
	for i := range 3 {
		f.apply("type: Mesh\nname: default\nlabels: {round: \"" + string(rune('a'+i)) + "\"}\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - {name: ca-1, type: builtin}\n")
	}
	// Events are handled in order: once a data plane registered after the
	// changes is certified, the changes have been seen.
	f.apply("type: Dataplane\nmesh: default\nname: late-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - {port: 9009, tags: {kuma.io/service: late}}\n")
	f.waitFor("late-1 certified", func() bool {
		c, _ := f.leaf("late-1")
		return c != nil
	})
	if got := next("backend-1"); got != before {
		t.Errorf("next rotation moved from %s to %s on a Mesh change that did not touch the certificate", before, got)
	}
	if now, _ := f.leaf("backend-1"); !now.Equal(leaf) {
		t.Errorf("certificate re-issued on a label change")
	}
}
