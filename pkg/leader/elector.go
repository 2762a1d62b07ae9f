package leader

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"meshca/pkg/store"
)

// Defaults of Options.
const (
	DefaultLeaseDuration = 5 * time.Second
	DefaultRenewInterval = time.Second
)

// leaseName is the lease's row in leader_lease, or the name of the
// Kubernetes Lease.
const leaseName = "meshca-cp-leader"

// Options configure an Elector.
type Options struct {
	// ID names this instance (default: hostname and a random suffix, so
	// several instances on one host are told apart).
	ID string
	// Address is what the instance list shows (the API address).
	Address string
	Version string
	// LeaseDuration and RenewInterval shape the lease; RenewInterval must
	// be less than half of LeaseDuration.
	LeaseDuration, RenewInterval time.Duration
	Logger                       *slog.Logger
	Now                          func() time.Time
}

func (o *Options) defaults() error {
	if o.LeaseDuration == 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.RenewInterval == 0 {
		o.RenewInterval = DefaultRenewInterval
	}
	if o.LeaseDuration <= 0 || o.RenewInterval <= 0 {
		return errors.New("--leader-lease-duration and --leader-renew-interval must be positive")
	}
	if 2*o.RenewInterval >= o.LeaseDuration {
		return fmt.Errorf("--leader-renew-interval %s must be less than half of --leader-lease-duration %s (the leader steps down one renew interval before its lease expires)",
			o.RenewInterval, o.LeaseDuration)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "meshca-cp"
		}
		o.ID = host + "-" + rand.Text()[:6]
	}
	return nil
}

// Elector tells whether this instance leads, and for which term.
type Elector struct {
	opts    Options
	b       backend // nil for Static
	st      store.Store
	m       *metrics
	started time.Time

	mu      sync.Mutex
	term    *Term
	changed chan struct{}

	address atomic.Pointer[string]

	// beforeStep, when set (tests), runs before each campaign step.
	beforeStep atomic.Pointer[func()]
}

// Static returns the elector of a process that is alone on its store: it
// leads from the start, for good, unfenced.
func Static(opts Options) *Elector {
	_ = opts.defaults() // a static elector has no lease to validate
	e := &Elector{opts: opts, m: newMetrics(), changed: make(chan struct{}), started: opts.Now()}
	e.term = newTerm(0, e.started)
	e.m.leader.Set(1)
	return e
}

// New returns an elector campaigning through the PostgreSQL database at dsn,
// whose schema the postgres store migrated, and fencing through st (a
// store on the same database). Run campaigns; Close releases the connections.
func New(ctx context.Context, dsn string, st store.Store, opts Options) (*Elector, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("leader: parse dsn: %w", err)
	}
	// Renewals get connections of their own: a store pool busy with
	// commits must not delay them past the lease.
	cfg.MaxConns = 2
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("leader: %w", err)
	}
	return newElector(&pgLease{db: db, id: opts.ID, leaseDuration: opts.LeaseDuration}, st, opts), nil
}

// newElector returns an elector campaigning through b (opts defaulted).
func newElector(b backend, st store.Store, opts Options) *Elector {
	return &Elector{opts: opts, b: b, st: st, m: newMetrics(), changed: make(chan struct{}), started: opts.Now()}
}

// SetAddress changes the address the instance list shows (once the API's
// listener is bound, its port known).
func (e *Elector) SetAddress(addr string) { e.address.Store(&addr) }

func (e *Elector) addr() string {
	if a := e.address.Load(); a != nil {
		return *a
	}
	return e.opts.Address
}

// ID is this instance's id.
func (e *Elector) ID() string { return e.opts.ID }

// Collectors returns the elector's metrics.
func (e *Elector) Collectors() []prometheus.Collector { return e.m.collectors() }

// Current returns the term this instance leads, or nil.
func (e *Elector) Current() *Term {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.term
}

// Changed returns a channel closed at the next change of leadership.
func (e *Elector) Changed() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

// Await blocks until this instance leads and returns the term.
func (e *Elector) Await(ctx context.Context) (*Term, error) {
	for {
		e.mu.Lock()
		t, ch := e.term, e.changed
		e.mu.Unlock()
		if t != nil {
			select {
			case <-t.Done():
			default:
				return t, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// setTerm starts (t non-nil) or ends (nil) this instance's leadership.
func (e *Elector) setTerm(t *Term, why string) {
	e.mu.Lock()
	old := e.term
	if old == nil && t == nil {
		e.mu.Unlock()
		return
	}
	e.term = t
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
	if old != nil {
		old.cancel()
		if old.timer != nil {
			old.timer.Stop()
		}
	}
	e.m.changes.Inc()
	if t != nil {
		e.m.leader.Set(1)
		e.m.term.Set(float64(t.Number))
		e.opts.Logger.Info("this instance is now the leader", "instance", e.opts.ID, "term", t.Number)
	} else {
		e.m.leader.Set(0)
		level := slog.LevelWarn
		if why == reasonStopping {
			level = slog.LevelInfo
		}
		e.opts.Logger.Log(context.Background(), level, "this instance is no longer the leader", "instance", e.opts.ID, "term", old.Number, "reason", why)
	}
}

// Run campaigns for the lease and heartbeats until ctx ends; a leader then
// releases its lease, so another takes over without waiting for it to expire.
func (e *Elector) Run(ctx context.Context) error {
	if e.b == nil {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(e.opts.RenewInterval)
	defer tick.Stop()
	for {
		if f := e.beforeStep.Load(); f != nil {
			(*f)()
		}
		e.step(ctx)
		select {
		case <-ctx.Done():
			e.stop()
			return nil
		case <-tick.C:
		}
	}
}

// step renews or tries to take the lease, and heartbeats.
func (e *Elector) step(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, e.opts.RenewInterval)
	defer cancel()
	start := e.opts.Now()
	// The lease first: the heartbeat must not eat into its time.
	defer func() {
		hctx, hcancel := context.WithTimeout(ctx, e.opts.RenewInterval)
		defer hcancel()
		e.heartbeat(hctx)
	}()
	if e.Current() != nil {
		ok, err := e.b.renew(cctx)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				e.opts.Logger.Warn("renewing the leader lease failed", "error", err)
			}
		case !ok:
			e.setTerm(nil, "lease taken by another instance")
		default:
			e.extend(e.until(start))
		}
		return
	}
	ok, err := e.b.acquire(cctx)
	if err != nil {
		if ctx.Err() == nil {
			e.opts.Logger.Warn("campaigning for the leader lease failed", "error", err)
		}
		return
	}
	if !ok {
		return
	}
	// The lease is ours: start a new term. The update waits for the old
	// term's fenced commits still running (they hold the record), and
	// every later one of them fails.
	bctx, bcancel := context.WithTimeout(ctx, e.opts.LeaseDuration-e.opts.RenewInterval)
	defer bcancel()
	number, err := e.bump(bctx)
	if err != nil {
		if ctx.Err() == nil {
			e.opts.Logger.Warn("starting a leader term failed", "error", err)
		}
		return
	}
	// The term may start only while the lease is surely ours.
	if e.until(start) <= 0 {
		return
	}
	t := newTerm(number, e.opts.Now())
	e.setTerm(t, "")
	e.extend(e.until(start))
}

// extend lets the current term run for d more (from now) unless renewed:
// a leader that cannot renew ends its term on its own, before the lease
// can expire in the database.
func (e *Elector) extend(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.term
	if t == nil {
		return
	}
	if d <= 0 {
		go e.endTerm(t, "lease renewal took longer than the lease allows")
		return
	}
	if t.timer != nil {
		t.timer.Stop()
	}
	t.timer = time.AfterFunc(d, func() { e.endTerm(t, "lease not renewed in time") })
}

// endTerm ends t if it is still the current term.
func (e *Elector) endTerm(t *Term, why string) {
	e.mu.Lock()
	current := e.term == t
	e.mu.Unlock()
	if current {
		e.setTerm(nil, why)
	}
}

// until returns how long a lease renewed at start (this instance's clock,
// before the request) may be relied on: the lease less one renew interval.
func (e *Elector) until(start time.Time) time.Duration {
	return start.Add(e.opts.LeaseDuration - e.opts.RenewInterval).Sub(e.opts.Now())
}

// termSpec is the term record's spec, for whoever reads it.
type termSpec struct {
	Holder string `json:"holder"`
	// Nonce tells this bump's write from any other (see bump).
	Nonce string `json:"nonce,omitempty"`
}

// bump moves the term record to a new version, the new term. A store's
// versions need not grow by one (the Kubernetes store's are the API
// server's resourceVersions), so the version is read back after the write;
// the nonce makes sure it is this write's and not a later one of another
// instance.
func (e *Elector) bump(ctx context.Context) (int64, error) {
	nonce := rand.Text()
	spec, err := json.Marshal(termSpec{Holder: e.opts.ID, Nonce: nonce})
	if err != nil {
		return 0, err
	}
	cur, err := e.st.Get(ctx, TermKey)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if err := store.Create(ctx, e.st, store.Record{Key: TermKey, Spec: spec}); err != nil {
			return 0, fmt.Errorf("create term record: %w", err)
		}
	case err != nil:
		return 0, fmt.Errorf("read term record: %w", err)
	default:
		if err := store.Update(ctx, e.st, store.Record{Key: TermKey, Version: cur.Version, Spec: spec}); err != nil {
			return 0, fmt.Errorf("update term record: %w", err)
		}
	}
	got, err := e.st.Get(ctx, TermKey)
	if err != nil {
		return 0, fmt.Errorf("read term record back: %w", err)
	}
	var ts termSpec
	if err := json.Unmarshal(got.Spec, &ts); err != nil || ts.Nonce != nonce {
		return 0, fmt.Errorf("term record: written again by %q before this term started", ts.Holder)
	}
	return got.Version, nil
}

const reasonStopping = "stopping"

// stop ends the term and releases the lease and the instance's row.
func (e *Elector) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), e.opts.RenewInterval)
	defer cancel()
	if e.Current() != nil {
		e.setTerm(nil, reasonStopping)
		if err := e.b.release(ctx); err != nil {
			e.opts.Logger.Warn("releasing the leader lease failed; another instance takes over when it expires", "error", err)
		}
	}
	if err := e.b.leave(ctx); err != nil {
		e.opts.Logger.Debug("removing this instance from the list failed", "error", err)
	}
}

// Close releases the elector's connections (after Run returned).
func (e *Elector) Close() {
	if e.b != nil {
		e.b.close()
	}
}
