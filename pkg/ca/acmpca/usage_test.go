package acmpca

import (
	"testing"
	"time"
)

// TestUsageCounts checks the request rate over the window, throttles, and
// billable counts that restart with each UTC day and month.
func TestUsageCounts(t *testing.T) {
	now := time.Date(2026, 1, 31, 23, 59, 40, 0, time.UTC)
	u := newUsage(func() time.Time { return now })
	for i := 0; i < 10; i++ { // 3 issue attempts a second for 10 s, one throttled each second
		for j := 0; j < 3; j++ {
			u.request(opIssue, j == 0)
		}
		u.request("GetCertificate", false)
		u.issued()
		now = now.Add(time.Second)
	}
	got := u.snapshot()
	if got.RequestsPerSecond != 3 {
		t.Errorf("requests/s = %v, want 3 (IssueCertificate only)", got.RequestsPerSecond)
	}
	if got.Requests != 40 || got.Throttles != 10 {
		t.Errorf("requests %d throttles %d, want 40 and 10", got.Requests, got.Throttles)
	}
	if got.IssuedToday != 10 || got.IssuedThisMonth != 10 {
		t.Errorf("issued today %d month %d, want 10 and 10", got.IssuedToday, got.IssuedThisMonth)
	}
	now = now.Add(10 * time.Second) // midnight UTC, 1 February: a new day and a new month
	u.issued()
	got = u.snapshot()
	if got.IssuedToday != 1 || got.IssuedThisMonth != 1 {
		t.Errorf("after the month turned: today %d month %d, want 1 and 1", got.IssuedToday, got.IssuedThisMonth)
	}
	now = now.Add(time.Minute)
	if got := u.snapshot(); got.RequestsPerSecond != 0 {
		t.Errorf("a minute later: %v/s, want 0", got.RequestsPerSecond)
	}
}
