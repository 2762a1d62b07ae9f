package acmpca

import (
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestBudgetAdaptsToThrottling checks the issuing bucket halves its rate on
// a throttle, never drops below minRate, climbs back to (not past) the
// configured ceiling on successes, and leaves the read bucket alone.
func TestBudgetAdaptsToThrottling(t *testing.T) {
	b := newBudget(20)
	now := time.Unix(1000, 0)
	b.issue.now = func() time.Time { return now }
	b.throttled("IssueCertificate")
	b.throttled("IssueCertificate") // an echo of the same burst
	if got := b.limiter("IssueCertificate").Limit(); got != 10 {
		t.Fatalf("after one throttle: %v/s, want 10", got)
	}
	if got := b.limiter("GetCertificate").Limit(); got != 60 {
		t.Fatalf("reads followed issuing: %v/s", got)
	}
	for i := 0; i < 20; i++ {
		now = now.Add(cutCooldown)
		b.throttled("IssueCertificate")
	}
	if got := b.limiter("IssueCertificate").Limit(); got != rate.Limit(minRate) {
		t.Fatalf("floor: %v/s, want %v", got, minRate)
	}
	for i := 0; i < 2*recoverSteps; i++ {
		b.succeeded("IssueCertificate")
	}
	if got := b.limiter("IssueCertificate").Limit(); got != 20 {
		t.Fatalf("recovered to %v/s, want the ceiling 20", got)
	}
	b.setRate(5)
	if got := b.limiter("IssueCertificate").Limit(); got != 5 {
		t.Fatalf("new ceiling: %v/s", got)
	}
}
