package acmpca

import (
	"context"
	"testing"
	"time"

	"meshca/pkg/ca"
)

// TestBillingCountsSurviveRestart: billable certificates are counted in
// the store, once each (an idempotent replay is not billed), so a control
// plane started again (or another instance) shows the month's counts
// before it has asked ACM PCA anything, and goes on from them.
func TestBillingCountsSurviveRestart(t *testing.T) {
	e := newEnv(t, envOpts{})
	mb := e.seedBackend()
	ctx := context.Background()
	replayed := newRequest(t, "k-2", 2*time.Hour)
	for _, req := range []ca.IssueRequest{newRequest(t, "k-1", 2*time.Hour), replayed, replayed} {
		if _, err := e.be.Issue(ctx, mesh, mb, req); err != nil {
			t.Fatal(err)
		}
	}
	if u, ok := e.be.Usage(mesh, mb.Name); !ok || u.IssuedThisMonth != 2 || u.IssuedToday != 2 {
		t.Fatalf("usage after 2 billable certificates: %+v (ok=%v)", u, ok)
	}

	again, err := newBackend(ca.Deps{Store: e.store, Logger: quiet()}, defaultHooks())
	if err != nil {
		t.Fatal(err)
	}
	if u, ok := again.Usage(mesh, mb.Name); !ok || u.IssuedThisMonth != 2 || u.IssuedToday != 2 {
		t.Fatalf("usage after a restart, before any request: %+v (ok=%v), want 2 this month and today", u, ok)
	}
	if _, err := again.Issue(ctx, mesh, mb, newRequest(t, "k-3", 2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if u, _ := again.Usage(mesh, mb.Name); u.IssuedThisMonth != 3 {
		t.Fatalf("usage after one more: %+v, want 3 this month", u)
	}
	if n := e.emu.Stats().Issued; n != 3 {
		t.Fatalf("emulator issued %d, want 3", n)
	}
}

// TestBillingRollsOver: a new UTC day starts a new day's count, a new month
// a new month's.
func TestBillingRollsOver(t *testing.T) {
	c := billing{Day: "2026-11-30", Month: "2026-11", IssuedDay: 5, IssuedMonth: 40}
	c.roll(time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC))
	if c.IssuedDay != 5 || c.IssuedMonth != 40 {
		t.Fatalf("same day: %+v", c)
	}
	c.roll(time.Date(2026, 12, 1, 0, 0, 1, 0, time.UTC))
	if c.IssuedDay != 0 || c.IssuedMonth != 0 || c.Day != "2026-12-01" || c.Month != "2026-12" {
		t.Fatalf("next month: %+v", c)
	}
}
