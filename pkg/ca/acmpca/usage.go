package acmpca

import (
	"context"
	"sync"
	"time"
)

// Usage is what one (mesh, backend) has asked of ACM PCA since the control
// plane started: the numbers an operator needs to see the request budget
// and the bill (pkg/gui, meshctl inspect mesh).
type Usage struct {
	// MaxRequestsPerSecond is conf.maxRequestsPerSecond (the ceiling).
	MaxRequestsPerSecond float64 `json:"maxRequestsPerSecond"`
	// CurrentLimit is the IssueCertificate rate allowed now: the ceiling,
	// or less for a while after ACM throttled.
	CurrentLimit float64 `json:"currentLimit"`
	// RequestsPerSecond is IssueCertificate attempts (retries included)
	// per second over the last UsageWindow.
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	// Requests and Throttles count every ACM PCA attempt and those
	// answered with a throttling error.
	Requests  int64 `json:"requests"`
	Throttles int64 `json:"throttles"`
	// IssuedToday and IssuedThisMonth count billable certificates (a new
	// certificate ARN; idempotent replays excluded), by UTC calendar day
	// and month, as kept in the store (TypeBilling) for every instance.
	IssuedToday     int64 `json:"issuedToday"`
	IssuedThisMonth int64 `json:"issuedThisMonth"`
	// Since is when counting started (the first request after start).
	Since time.Time `json:"since"`
}

// UsageWindow is the span RequestsPerSecond averages over.
const UsageWindow = 10 * time.Second

// opIssue is the billed operation, paced by maxRequestsPerSecond.
const opIssue = "IssueCertificate"

// UsageReporter is implemented by the backend New returns.
type UsageReporter interface {
	// Usage returns the counters of one mesh's backend; ok=false when it
	// has made no request since the control plane started.
	Usage(mesh, backend string) (Usage, bool)
}

var _ UsageReporter = (*backend)(nil)

// Usage implements UsageReporter.
func (b *backend) Usage(mesh, name string) (Usage, bool) {
	b.mu.Lock()
	st := b.states[stateKey{mesh, name}]
	b.mu.Unlock()
	if st == nil {
		// Nothing asked of ACM PCA since this process started: the month's
		// counts are still in the store.
		if c, ok := b.storedBilling(context.Background(), mesh, name); ok {
			return Usage{IssuedToday: c.IssuedDay, IssuedThisMonth: c.IssuedMonth}, true
		}
		return Usage{}, false
	}
	u := st.budget.use.snapshot()
	// The month's counts are the store's (every instance, across restarts)
	// whenever it has them.
	if c, ok := b.storedBilling(context.Background(), mesh, name); ok {
		u.IssuedToday, u.IssuedThisMonth = max(u.IssuedToday, c.IssuedDay), max(u.IssuedThisMonth, c.IssuedMonth)
	}
	st.budget.issue.mu.Lock()
	u.MaxRequestsPerSecond = st.budget.issue.ceiling
	u.CurrentLimit = float64(st.budget.issue.lim.Limit())
	st.budget.issue.mu.Unlock()
	return u, true
}

// usage counts one (mesh, backend)'s requests and billable issuances.
type usage struct {
	now func() time.Time

	mu        sync.Mutex
	since     time.Time
	requests  int64
	throttles int64
	// perSecond holds IssueCertificate attempts per second of the last
	// UsageWindow, indexed by unix second modulo its length.
	perSecond [int(UsageWindow/time.Second) + 1]struct {
		sec int64
		n   int64
	}
	day, month           string // "2006-01-02", "2006-01" (UTC)
	issuedDay, issuedMon int64
}

func newUsage(now func() time.Time) *usage { return &usage{now: now} }

// request counts one ACM PCA attempt.
func (u *usage) request(op string, throttled bool) {
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.start(now)
	u.requests++
	if throttled {
		u.throttles++
	}
	if op != opIssue {
		return
	}
	sec := now.Unix()
	slot := &u.perSecond[sec%int64(len(u.perSecond))]
	if slot.sec != sec {
		slot.sec, slot.n = sec, 0
	}
	slot.n++
}

// issued counts one billable certificate.
func (u *usage) issued() {
	now := u.now().UTC()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.start(now)
	u.roll(now)
	u.issuedDay++
	u.issuedMon++
}

func (u *usage) start(now time.Time) {
	if u.since.IsZero() {
		u.since = now
	}
}

// roll starts new day and month counts when the UTC calendar moved on.
func (u *usage) roll(now time.Time) {
	day, month := now.Format("2006-01-02"), now.Format("2006-01")
	if month != u.month {
		u.month, u.issuedMon = month, 0
	}
	if day != u.day {
		u.day, u.issuedDay = day, 0
	}
}

func (u *usage) snapshot() Usage {
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.roll(now.UTC())
	out := Usage{Requests: u.requests, Throttles: u.throttles, IssuedToday: u.issuedDay, IssuedThisMonth: u.issuedMon, Since: u.since}
	// The current second is partial: average the whole seconds before it.
	cur := now.Unix()
	var n int64
	for _, s := range u.perSecond {
		if s.sec < cur && s.sec >= cur-int64(UsageWindow/time.Second) {
			n += s.n
		}
	}
	out.RequestsPerSecond = float64(n) / UsageWindow.Seconds()
	return out
}
