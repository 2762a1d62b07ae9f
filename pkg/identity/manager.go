package identity

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/leader"
	"meshca/pkg/resources"
	"meshca/pkg/store"
)

// DefaultWorkers is Options.Workers' default. A worker holds its slot until
// the certificate's record is committed, so the workers must cover the
// signing and the commit: on a shared database a commit of the identity
// writer's batch waits milliseconds for other instances' commits, and 64
// workers left the leader issuing a second behind 3,000 registrations a
// second, where 256 kept up (BENCHMARKS.md §12). Signing in process is
// CPU-bound whatever the count; external backends bound their own request
// rate.
const DefaultWorkers = 256

// Options configure a Manager.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Rand is the source of key material (crypto/rand when nil).
	Rand interface{ Read([]byte) (int, error) }
	// Jitter returns a uniform sample of [-1, 1) (math/rand when nil).
	Jitter func() float64
	// Workers bounds concurrent issuances (default DefaultWorkers).
	// External backends bound their own request rate below this.
	Workers int
	// RetryBase and RetryMax shape the backoff after a failed issuance.
	RetryBase, RetryMax time.Duration
	// Registerer receives the metrics (none when nil).
	Registerer prometheus.Registerer
	// Leader says when this instance may issue (leader.Static when nil:
	// alone on its store, it always does). Followers load identities and
	// follow the leader's writes to them.
	Leader *leader.Elector
	// NoProvision is set on a zone control plane: CA state kept in the store
	// (the builtin root) comes from the global control plane and is never
	// created here; until it has been synced, issuance waits and says so.
	NoProvision bool
	// MeshesWrittenElsewhere is set when Meshes reach the store without
	// their CA state (kubectl on Kubernetes writes them, not the API's
	// provisioner): the loop creating it is then the normal path, logged
	// at Info, not the repair of a deleted root it is elsewhere.
	MeshesWrittenElsewhere bool
	// FailoverBudget is how long the instances may be without a leader
	// (two lease periods): a certificate is renewed at least that long
	// before it expires, if that is after half its lifetime (0: no bound).
	FailoverBudget time.Duration
}

type dpKey struct{ mesh, name string }

// current is the certificate in service for one data plane. Only the PEM
// forms are kept (a parsed certificate costs several KiB per data plane);
// insights parse on demand.
type current struct {
	rec    record
	serial string // hex, for logs
}

// issued reports whether c holds a certificate (not only a pending request).
func (c *current) issued() bool { return c != nil && c.rec.CertPEM != "" }

type dpState struct {
	dp  *api.Dataplane
	cur *current

	due       time.Time
	scheduled bool
	inFlight  bool
	again     bool
	// stale marks a certificate that does not chain to the enabled
	// backend's current roots: it is re-issued at once.
	stale bool

	attempts    int
	lastErr     string
	lastErrAt   time.Time
	lastRotated time.Time

	subs []*subscriber // usually one: the data plane's SDS stream
	// idVersion is the store version of the identity record cur came
	// from, when followed from the leader's writes.
	idVersion int64

	history []Rotation // see overview.go
}

// subscriber is one Subscribe call's callback.
type subscriber struct{ notify func() }

type meshState struct {
	mesh    *api.Mesh
	enabled api.MTLSBackend
	mtls    bool
	backend ca.Backend
	bundles map[string][]byte // backend name -> its trust bundle
	// bundlesEpoch counts resets of bundles, so a refresh that fetched
	// before a reset does not put back what it fetched.
	bundlesEpoch uint64
	bundle       []byte // what peers must trust now
	// bundleRetry is the backoff of the next retry of a bundle that could
	// not be fetched; bundleRetryPending, that one is scheduled (bundle.go).
	bundleRetry        time.Duration
	bundleRetryPending bool
	inUse              map[string]int // backend name -> data planes holding its certificate
	version            int64
	lastErr            string
	// enabledRoots is the enabled backend's bundle last seen; rootGen counts
	// its changes, so an issuance that straddles one (signed by a root
	// replaced meanwhile) is known to be stale when it settles.
	enabledRoots []byte
	rootGen      uint64
}

// Manager runs the issuance and rotation loop for every data plane.
type Manager struct {
	// stableJitter: rotation jitter comes from each certificate (rotateAt).
	stableJitter bool
	store        store.Store
	cas          *ca.Registry
	opts         Options
	logger       *slog.Logger
	m            *metrics

	mu     sync.Mutex
	dps    map[dpKey]*dpState
	meshes map[string]*meshState
	queue  dueQueue
	wake   chan struct{}
	work   chan dpKey
	ready  chan struct{}
	// bundleCerts caches parsed trust bundles by content (few distinct values).
	bundleMu    sync.Mutex
	bundleCerts map[string][]*x509.Certificate
	// writes feeds the group-commit writer; nil until Run starts it.
	writes chan writeReq

	elector *leader.Elector
	static  bool // elector is leader.Static: no terms, no followers
	// term is the leader term the loop issues and writes under; nil while
	// following (see leader.go).
	term atomic.Pointer[leader.Term]
}

// New returns a Manager; call Run to start it.
func New(s store.Store, reg *ca.Registry, opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	// Without a given source, a certificate's rotation jitter is drawn from
	// the certificate itself (see rotateAt).
	stableJitter := opts.Jitter == nil
	if opts.Jitter == nil {
		opts.Jitter = func() float64 { return mrand.Float64()*2 - 1 }
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Minute
	}
	mg := &Manager{
		stableJitter: stableJitter,
		store:        s,
		cas:          reg,
		opts:         opts,
		logger:       opts.Logger,
		dps:          map[dpKey]*dpState{},
		meshes:       map[string]*meshState{},
		wake:         make(chan struct{}, 1),
		work:         make(chan dpKey),
		ready:        make(chan struct{}),
	}
	mg.m = newMetrics(mg, opts.Registerer)
	mg.elector = opts.Leader
	if mg.elector == nil {
		mg.elector = leader.Static(leader.Options{})
	}
	if t := mg.elector.Current(); t != nil && t.Number == 0 {
		// Alone on its store: the single process leads for good.
		mg.static = true
		mg.term.Store(t)
	}
	return mg
}

// Ready is closed once persisted state is loaded and every data plane is
// scheduled.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Run loads persisted identities, watches the store and issues and rotates
// certificates until ctx is done.
func (m *Manager) Run(ctx context.Context) error {
	// Not its own DataplaneIdentity records when alone on the store: they
	// are most of the commits while certificates are issued, and each event
	// is a copy. Followers need them: the leader's rotations arrive so.
	types := []string{api.TypeMesh, api.TypeDataplane, api.TypeSecret}
	if !m.static {
		types = append(types, TypeDataplaneIdentity)
	}
	events := m.store.Watch(ctx, types...)
	if err := m.load(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	m.writes = make(chan writeReq)
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.writeBatches(ctx, m.writes)
	}()
	close(m.ready)
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.lead(ctx)
	}()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case ev, ok := <-events:
			if !ok {
				wg.Wait()
				return nil
			}
			m.handle(ctx, ev)
		}
	}
}

func (m *Manager) load(ctx context.Context) error {
	meshes, err := m.store.List(ctx, api.TypeMesh, "")
	if err != nil {
		return err
	}
	recs, err := m.store.List(ctx, TypeDataplaneIdentity, "")
	if err != nil {
		return err
	}
	saved := map[dpKey]record{}
	for _, r := range recs {
		var rec record
		if err := json.Unmarshal(r.Spec, &rec); err != nil {
			m.logger.Warn("ignoring unreadable stored identity", "mesh", r.Mesh, "dataplane", r.Name, "error", err)
			continue
		}
		saved[dpKey{r.Mesh, r.Name}] = rec
	}
	dps, err := m.store.List(ctx, api.TypeDataplane, "")
	if err != nil {
		return err
	}
	m.mu.Lock()
	for _, rec := range meshes {
		res, err := resources.FromRecord(rec)
		if err != nil {
			m.mu.Unlock()
			return err
		}
		m.setMeshLocked(ctx, res.(*api.Mesh), rec.Version)
	}
	for _, rec := range dps {
		res, err := resources.FromRecord(rec)
		if err != nil {
			m.mu.Unlock()
			return err
		}
		dp := res.(*api.Dataplane)
		k := dpKey{dp.Mesh, dp.Name}
		st := &dpState{dp: dp}
		m.dps[k] = st
		if r, ok := saved[k]; ok {
			m.restoreLocked(st, r, true)
		}
		m.considerLocked(k, st)
	}
	m.mu.Unlock()
	for _, rec := range meshes {
		m.refreshBundle(ctx, rec.Name)
	}
	return nil
}

// restoreLocked makes a stored record the data plane's current one and
// counts its backend in use. With parse, the certificate is parsed in full
// (what a process reads from the store at start, or a new leader at the
// start of its term, is checked before it is scheduled); without, only its
// serial is read: a follower taking the leader's writes into service needs
// nothing else of it, and does so for every certificate the leader issues.
func (m *Manager) restoreLocked(st *dpState, r record, parse bool) {
	if r.CertPEM == "" {
		// Only a pending request was persisted: keep it for the retry.
		st.cur = &current{rec: r}
		return
	}
	var serial string
	var err error
	if parse {
		var certs []*x509.Certificate
		if certs, err = ca.ParseCertificates([]byte(r.CertPEM)); err == nil {
			serial = certs[0].SerialNumber.Text(16)
		}
	} else {
		serial, err = pemSerial([]byte(r.CertPEM))
	}
	if err != nil {
		m.logger.Warn("ignoring unreadable stored certificate", "mesh", st.dp.Mesh, "dataplane", st.dp.Name, "error", err)
		st.cur = &current{rec: record{Generation: r.Generation, Rotations: r.Rotations, Pending: r.Pending}}
		return
	}
	st.cur = &current{rec: r, serial: serial}
	if ms := m.meshes[st.dp.Mesh]; ms != nil {
		ms.inUse[r.Backend]++
	}
}
