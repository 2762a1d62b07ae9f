package identity

import (
	"bytes"
	"container/heap"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/resources"
	"meshca/pkg/store"
)

// Options configure a Manager.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Rand is the source of key material (crypto/rand when nil).
	Rand interface{ Read([]byte) (int, error) }
	// Jitter returns a uniform sample of [-1, 1) (math/rand when nil).
	Jitter func() float64
	// Workers bounds concurrent issuances (default 64). External backends
	// bound their own request rate below this.
	Workers int
	// RetryBase and RetryMax shape the backoff after a failed issuance.
	RetryBase, RetryMax time.Duration
	// Registerer receives the metrics (none when nil).
	Registerer prometheus.Registerer
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

	attempts    int
	lastErr     string
	lastErrAt   time.Time
	lastRotated time.Time

	subs []*subscriber // usually one: the data plane's SDS stream
}

// subscriber is one Subscribe call's callback.
type subscriber struct{ notify func() }

type meshState struct {
	mesh    *api.Mesh
	enabled api.MTLSBackend
	mtls    bool
	backend ca.Backend
	bundles map[string][]byte // backend name -> its trust bundle
	bundle  []byte            // what peers must trust now
	inUse   map[string]int    // backend name -> data planes holding its certificate
	version int64
	lastErr string
}

// Manager runs the issuance and rotation loop for every data plane.
type Manager struct {
	store  store.Store
	cas    *ca.Registry
	opts   Options
	logger *slog.Logger
	m      *metrics

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
	if opts.Jitter == nil {
		opts.Jitter = func() float64 { return mrand.Float64()*2 - 1 }
	}
	if opts.Workers <= 0 {
		opts.Workers = 64
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Minute
	}
	mg := &Manager{
		store:  s,
		cas:    reg,
		opts:   opts,
		logger: opts.Logger,
		dps:    map[dpKey]*dpState{},
		meshes: map[string]*meshState{},
		wake:   make(chan struct{}, 1),
		work:   make(chan dpKey),
		ready:  make(chan struct{}),
	}
	mg.m = newMetrics(mg, opts.Registerer)
	return mg
}

// Ready is closed once persisted state is loaded and every data plane is
// scheduled.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Run loads persisted identities, watches the store and issues and rotates
// certificates until ctx is done.
func (m *Manager) Run(ctx context.Context) error {
	// Not its own DataplaneIdentity records: they are most of the commits
	// while certificates are issued, and each event is a copy.
	events := m.store.Watch(ctx, api.TypeMesh, api.TypeDataplane, api.TypeSecret)
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
	for i := 0; i < m.opts.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case k := <-m.work:
					m.issue(ctx, k)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.schedule(ctx)
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
			m.restoreLocked(st, r)
		}
		m.considerLocked(k, st)
	}
	m.mu.Unlock()
	for _, rec := range meshes {
		m.refreshBundle(ctx, rec.Name)
	}
	return nil
}

func (m *Manager) restoreLocked(st *dpState, r record) {
	if r.CertPEM == "" {
		// Only a pending request was persisted: keep it for the retry.
		st.cur = &current{rec: r}
		return
	}
	certs, err := ca.ParseCertificates([]byte(r.CertPEM))
	if err != nil {
		m.logger.Warn("ignoring unreadable stored certificate", "mesh", st.dp.Mesh, "dataplane", st.dp.Name, "error", err)
		st.cur = &current{rec: record{Generation: r.Generation, Rotations: r.Rotations, Pending: r.Pending}}
		return
	}
	st.cur = &current{rec: r, serial: certs[0].SerialNumber.Text(16)}
	if ms := m.meshes[st.dp.Mesh]; ms != nil {
		ms.inUse[r.Backend]++
	}
}

// considerLocked schedules a data plane: now if it has no valid certificate
// for the current identity and backend, else at its rotation time.
func (m *Manager) considerLocked(k dpKey, st *dpState) {
	ms := m.meshes[k.mesh]
	if ms == nil || !ms.mtls || ms.backend == nil || st.dp == nil {
		return
	}
	now := m.opts.Now()
	cnTmpl := cnTemplate(ms.backend, ms.enabled)
	id, err := BuildIdentity(st.dp, cnTmpl)
	if err != nil {
		st.lastErr, st.lastErrAt = err.Error(), now
		return
	}
	fp := fingerprint(id, ms.enabled)
	c := st.cur
	switch {
	case !c.issued(), c.rec.Pending != nil, c.rec.Fingerprint != fp, !now.Before(c.rec.NotAfter):
		m.enqueueLocked(k, st, now)
	default:
		m.enqueueLocked(k, st, RotateAt(c.rec.IssuedAt, c.rec.NotAfter, m.opts.Jitter()))
	}
}

func cnTemplate(be ca.Backend, b api.MTLSBackend) string {
	if cn, ok := be.(ca.CommonNamer); ok {
		return cn.CommonNameTemplate(b)
	}
	return ""
}

func (m *Manager) enqueueLocked(k dpKey, st *dpState, at time.Time) {
	if st.inFlight {
		if !at.After(m.opts.Now()) {
			st.again = true
		}
		return
	}
	if st.scheduled && !st.due.After(at) {
		return
	}
	st.due, st.scheduled = at, true
	heap.Push(&m.queue, dueItem{at: at, key: k})
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// schedule hands due data planes to the workers.
func (m *Manager) schedule(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		m.mu.Lock()
		var next time.Duration = time.Hour
		var due []dpKey
		now := m.opts.Now()
		for m.queue.Len() > 0 {
			it := m.queue[0]
			st := m.dps[it.key]
			if st == nil || !st.scheduled || !st.due.Equal(it.at) {
				heap.Pop(&m.queue) // stale entry
				continue
			}
			if it.at.After(now) {
				next = it.at.Sub(now)
				break
			}
			heap.Pop(&m.queue)
			st.scheduled, st.inFlight = false, true
			due = append(due, it.key)
			if len(due) >= 256 {
				next = 0
				break
			}
		}
		m.mu.Unlock()
		for _, k := range due {
			select {
			case m.work <- k:
			case <-ctx.Done():
				return
			}
		}
		if next == 0 {
			continue
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		}
	}
}

// issue obtains a certificate for one data plane from its mesh's enabled backend.
func (m *Manager) issue(ctx context.Context, k dpKey) {
	m.mu.Lock()
	st := m.dps[k]
	ms := m.meshes[k.mesh]
	if st == nil || ms == nil || !ms.mtls || ms.backend == nil || st.dp == nil {
		if st != nil {
			st.inFlight = false
		}
		m.mu.Unlock()
		return
	}
	dp, b, be := st.dp, ms.enabled, ms.backend
	var prev record
	if st.cur != nil {
		prev = st.cur.rec
	}
	m.mu.Unlock()

	start := m.opts.Now()
	c, err := m.obtain(ctx, dp, b, be, prev)
	elapsed := m.opts.Now().Sub(start)
	m.m.observe(b.Type, err, elapsed)

	if m.settle(ctx, k, st, ms, b, c, err, elapsed) {
		// The set of backends in use changed: the bundle may shrink now.
		m.refreshBundle(ctx, k.mesh)
	}
}

// settle records the outcome of one issuance; it reports whether the mesh's
// trust bundle must be recomputed.
func (m *Manager) settle(ctx context.Context, k dpKey, st *dpState, ms *meshState, b api.MTLSBackend, c *current, err error, elapsed time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	st.inFlight = false
	if m.dps[k] != st {
		return false // deleted meanwhile
	}
	now := m.opts.Now()
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		st.attempts++
		st.lastErr, st.lastErrAt = err.Error(), now
		wait := Backoff(st.attempts, m.opts.RetryBase, m.opts.RetryMax, m.opts.Jitter())
		m.logger.Warn("certificate issuance failed; the current certificate stays in service",
			"mesh", k.mesh, "dataplane", k.name, "backend", b.Name, "attempt", st.attempts, "retryIn", wait.Round(time.Millisecond), "error", err)
		if c != nil { // a pending request was persisted: keep it for the retry
			if st.cur == nil {
				st.cur = &current{}
			}
			st.cur.rec.Pending = c.rec.Pending
			st.cur.rec.Generation = c.rec.Generation
		}
		m.enqueueLocked(k, st, now.Add(wait))
		return false
	}
	old := st.cur
	if old.issued() {
		ms.inUse[old.rec.Backend]--
	}
	ms.inUse[c.rec.Backend]++
	st.cur = c
	st.attempts, st.lastErr, st.lastErrAt = 0, "", time.Time{}
	st.lastRotated = now
	m.logger.Info("certificate issued", "mesh", k.mesh, "dataplane", k.name, "backend", b.Name,
		"serial", c.serial, "notAfter", c.rec.NotAfter, "duration", elapsed.Round(time.Microsecond))
	if st.again {
		st.again = false
		m.considerLocked(k, st)
	} else {
		m.enqueueLocked(k, st, RotateAt(c.rec.IssuedAt, c.rec.NotAfter, m.opts.Jitter()))
	}
	notify(st)
	return old == nil || old.rec.Backend != c.rec.Backend
}

// obtain runs one issuance and persists the result. On error it may return
// a current with only a pending request set.
func (m *Manager) obtain(ctx context.Context, dp *api.Dataplane, b api.MTLSBackend, be ca.Backend, prev record) (*current, error) {
	id, err := BuildIdentity(dp, cnTemplate(be, b))
	if err != nil {
		return nil, err
	}
	fp := fingerprint(id, b)
	now := m.opts.Now()
	validity := b.CertExpiration()
	keyType := ""
	if b.DpCert != nil {
		keyType = b.DpCert.KeyType
	}
	bundle, err := m.backendBundle(ctx, dp.Mesh, b, be)
	if err != nil {
		return nil, fmt.Errorf("trust bundle of backend %q: %w", b.Name, err)
	}
	gen := prev.Generation + 1
	req := ca.IssueRequest{Identity: id, Validity: validity, RequestedAt: now}
	var key crypto.Signer
	var iss ca.Issued
	if ks, ok := be.(ca.KeySigner); ok {
		key, err = NewKey(m.opts.Rand, keyType)
		if err != nil {
			return nil, err
		}
		iss, err = ks.IssueForKey(ctx, dp.Mesh, b, key.Public(), req)
		if err != nil {
			return nil, err
		}
	} else {
		var pend *pending
		if p := prev.Pending; p != nil && p.Backend == b.Name && p.Fingerprint == fp && now.Sub(p.StartedAt) < pendingReuseWindow {
			pend = p // a restart or retry: send the very same request again
			gen = p.Generation
			req.RequestedAt = p.StartedAt
		}
		if pend != nil {
			key, err = ParseKey([]byte(pend.KeyPEM))
			if err != nil {
				return nil, err
			}
			req.CSRPEM = []byte(pend.CSRPEM)
			req.CSR, err = parseCSR(req.CSRPEM)
			if err != nil {
				return nil, err
			}
		} else {
			key, err = NewKey(m.opts.Rand, keyType)
			if err != nil {
				return nil, err
			}
			req.CSR, req.CSRPEM, err = NewCSR(key, id)
			if err != nil {
				return nil, err
			}
		}
		req.IdempotencyKey = IdempotencyKey(dp.Mesh, dp.Name, gen)
		var pendingCur *current
		if ii, ok := be.(ca.IdempotentIssuer); ok && ii.IdempotentIssue() && pend == nil {
			keyPEM, err := EncodeKey(key)
			if err != nil {
				return nil, err
			}
			rec := prev
			rec.Generation = gen
			rec.Pending = &pending{Generation: gen, Backend: b.Name, Fingerprint: fp, KeyPEM: string(keyPEM), CSRPEM: string(req.CSRPEM), IdempotencyKey: req.IdempotencyKey, StartedAt: now}
			if err := m.persist(ctx, dp, rec); err != nil {
				return nil, err
			}
			pendingCur = &current{rec: rec}
		} else if pend != nil {
			pendingCur = &current{rec: prev}
		}
		iss, err = be.Issue(ctx, dp.Mesh, b, req)
		if err != nil {
			return pendingCur, err
		}
	}
	var certPEM, chainPEM []byte
	var serial *big.Int
	var notAfter time.Time
	keyPEM := iss.KeyPEM
	if _, local := be.(ca.KeySigner); local && iss.Built != nil && len(keyPEM) == 0 {
		// Signed in process for our key: nothing to parse back.
		if err := m.checkLinkage(iss.Built.Issuer.RawSubject, iss.Built.Issuer.SubjectKeyId, bundle, iss.ChainPEM); err != nil {
			return nil, fmt.Errorf("backend %q: %w", b.Name, err)
		}
		certPEM, chainPEM = iss.CertPEM, chainAfterLeaf(nil, iss.ChainPEM)
		serial, notAfter = iss.Built.Serial, iss.Built.NotAfter
	} else {
		certs, err := ca.ParseCertificates(iss.CertPEM)
		if err != nil {
			return nil, fmt.Errorf("backend %q: issued certificate: %w", b.Name, err)
		}
		leaf := certs[0]
		if local {
			err = m.checkLinkage(leaf.RawIssuer, leaf.AuthorityKeyId, bundle, iss.ChainPEM)
		} else {
			_, err = ca.VerifyIssued(iss, bundle, m.opts.Now())
		}
		if err != nil {
			return nil, fmt.Errorf("backend %q: %w", b.Name, err)
		}
		if len(keyPEM) > 0 {
			if err := keyMatches(keyPEM, leaf); err != nil {
				return nil, fmt.Errorf("backend %q: %w", b.Name, err)
			}
		}
		// Re-encoded rather than kept as received: ACM returns PEM without
		// a final newline, which would fuse with the chain appended to it.
		certPEM, chainPEM = ca.EncodeCertificates(leaf), chainAfterLeaf(certs[1:], iss.ChainPEM)
		serial, notAfter = leaf.SerialNumber, leaf.NotAfter
	}
	if len(keyPEM) == 0 {
		if keyPEM, err = EncodeKey(key); err != nil {
			return nil, err
		}
	}
	rec := record{
		Backend: b.Name, BackendType: b.Type,
		CertPEM: string(certPEM), ChainPEM: string(chainPEM), KeyPEM: string(keyPEM),
		Ref: iss.Ref, Generation: gen, Rotations: prev.Rotations, IssuedAt: now, NotAfter: notAfter,
		Fingerprint: fp,
	}
	if prev.CertPEM != "" {
		rec.Rotations++
	}
	if err := m.persist(ctx, dp, rec); err != nil {
		return nil, err
	}
	return &current{rec: rec, serial: serial.Text(16)}, nil
}

func (m *Manager) persist(ctx context.Context, dp *api.Dataplane, rec record) error {
	spec, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return m.commit(ctx, store.Op{Kind: store.OpUpsert, Record: store.Record{Key: store.Key{Type: TypeDataplaneIdentity, Mesh: dp.Mesh, Name: dp.Name}, Spec: spec}})
}

// chainAfterLeaf returns the intermediates of an issued certificate: those
// that came after the leaf, then ChainPEM, without self-signed roots (peers
// take roots from the trust bundle).
func chainAfterLeaf(afterLeaf []*x509.Certificate, chainPEM []byte) []byte {
	all := afterLeaf
	if len(chainPEM) > 0 {
		if more, err := ca.ParseCertificates(chainPEM); err == nil {
			all = append(all[:len(all):len(all)], more...)
		}
	}
	var out []byte
	for _, c := range all {
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			continue
		}
		out = append(out, ca.EncodeCertificates(c)...)
	}
	return out
}

// checkLinkage accepts a certificate signed in-process when its issuer is a
// certificate of the chain or bundle, without repeating signature checks.
func (m *Manager) checkLinkage(rawIssuer, authorityKeyID, bundle, chainPEM []byte) error {
	issuers := m.parsedBundle(bundle)
	if len(chainPEM) > 0 {
		if more, err := ca.ParseCertificates(chainPEM); err == nil {
			issuers = append(issuers[:len(issuers):len(issuers)], more...)
		}
	}
	for _, c := range issuers {
		if bytes.Equal(rawIssuer, c.RawSubject) && (len(authorityKeyID) == 0 || bytes.Equal(authorityKeyID, c.SubjectKeyId)) {
			return nil
		}
	}
	return errors.New("issued certificate's issuer is not in the trust bundle")
}

// parsedBundle parses a trust bundle once per distinct content.
func (m *Manager) parsedBundle(bundle []byte) []*x509.Certificate {
	m.bundleMu.Lock()
	defer m.bundleMu.Unlock()
	if certs, ok := m.bundleCerts[string(bundle)]; ok { // no copy of bundle for a lookup
		return certs
	}
	certs, _ := ca.ParseCertificates(bundle)
	if m.bundleCerts == nil || len(m.bundleCerts) >= 64 {
		m.bundleCerts = map[string][]*x509.Certificate{} // CAs changed many times: start over
	}
	m.bundleCerts[string(bundle)] = certs
	return certs
}

func keyMatches(keyPEM []byte, leaf *x509.Certificate) error {
	k, err := ParseKey(keyPEM)
	if err != nil {
		return fmt.Errorf("returned key: %w", err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if e, ok := k.Public().(equaler); !ok || !e.Equal(leaf.PublicKey) {
		return errors.New("returned key does not match the certificate")
	}
	return nil
}

func parseCSR(p []byte) (*x509.CertificateRequest, error) {
	blocks, err := pemBlock(p, "CERTIFICATE REQUEST")
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificateRequest(blocks)
}

// backendBundle returns (and caches) the trust bundle of one backend.
func (m *Manager) backendBundle(ctx context.Context, mesh string, b api.MTLSBackend, be ca.Backend) ([]byte, error) {
	m.mu.Lock()
	ms := m.meshes[mesh]
	if ms != nil {
		if tb, ok := ms.bundles[b.Name]; ok {
			m.mu.Unlock()
			return tb, nil
		}
	}
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, b.RootChainRequestTimeout())
	defer cancel()
	if err := be.Ensure(ctx, mesh, b); err != nil {
		return nil, err
	}
	tb, err := be.TrustBundle(ctx, mesh, b)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if ms := m.meshes[mesh]; ms != nil && ms.enabled.Name == b.Name {
		ms.bundles[b.Name] = tb
	}
	m.mu.Unlock()
	return tb, nil
}

// handle reacts to one store change.
func (m *Manager) handle(ctx context.Context, ev store.Event) {
	switch ev.Record.Type {
	case api.TypeMesh:
		if ev.Kind == store.EventDeleted {
			m.mu.Lock()
			delete(m.meshes, ev.Record.Name)
			m.mu.Unlock()
			return
		}
		res, err := resources.FromRecord(ev.Record)
		if err != nil {
			return
		}
		m.mu.Lock()
		m.setMeshLocked(ctx, res.(*api.Mesh), ev.Record.Version)
		m.mu.Unlock()
		// Peers learn a new CA's root before anyone holds its certificates.
		m.refreshBundle(ctx, ev.Record.Name)
		m.mu.Lock()
		defer m.mu.Unlock()
		for k, st := range m.dps {
			if k.mesh == ev.Record.Name {
				m.considerLocked(k, st)
			}
		}
	case api.TypeDataplane:
		k := dpKey{ev.Record.Mesh, ev.Record.Name}
		m.mu.Lock()
		defer m.mu.Unlock()
		if ev.Kind == store.EventDeleted {
			if st := m.dps[k]; st != nil {
				if ms := m.meshes[k.mesh]; ms != nil && st.cur.issued() {
					ms.inUse[st.cur.rec.Backend]--
				}
				if len(st.subs) > 0 {
					// Keep the subscribers: the data plane may come back.
					st.dp, st.cur, st.scheduled = nil, nil, false
				} else {
					delete(m.dps, k)
				}
				notify(st)
				go func() {
					if err := store.Delete(ctx, m.store, store.Key{Type: TypeDataplaneIdentity, Mesh: k.mesh, Name: k.name}); err != nil && !errors.Is(err, store.ErrNotFound) {
						m.logger.Warn("could not delete identity of a deleted dataplane", "mesh", k.mesh, "dataplane", k.name, "error", err)
					}
				}()
			}
			return
		}
		res, err := resources.FromRecord(ev.Record)
		if err != nil {
			return
		}
		st := m.dps[k]
		if st == nil {
			st = &dpState{}
			m.dps[k] = st
		}
		st.dp = res.(*api.Dataplane)
		m.considerLocked(k, st)
	case api.TypeSecret:
		// A CA's material may live in a Secret (provided CA, builtin root):
		// recompute the mesh's bundle so a change reaches every data plane.
		m.mu.Lock()
		ms := m.meshes[ev.Record.Mesh]
		if ms != nil {
			ms.bundles = map[string][]byte{}
		}
		m.mu.Unlock()
		if ms != nil {
			m.refreshBundle(ctx, ev.Record.Mesh)
		}
	}
}

func (m *Manager) setMeshLocked(ctx context.Context, mesh *api.Mesh, version int64) {
	ms := m.meshes[mesh.Name]
	if ms == nil {
		ms = &meshState{inUse: map[string]int{}, bundles: map[string][]byte{}}
		m.meshes[mesh.Name] = ms
	}
	ms.mesh, ms.version = mesh, version
	ms.bundles = map[string][]byte{}
	b, _, ok := mesh.EnabledMTLSBackend()
	ms.enabled, ms.mtls, ms.backend = b, ok, nil
	if ok {
		be, err := m.cas.Get(b.Type)
		if err != nil {
			ms.lastErr = err.Error()
			return
		}
		ms.backend = be
	}
}

// refreshBundle recomputes what a mesh's data planes must trust: the roots
// of the enabled backend and of every backend whose certificates are still in
// service, so no connection breaks while a mesh changes CA. Missing bundles
// are fetched without holding the manager's lock (an external CA may be slow).
func (m *Manager) refreshBundle(ctx context.Context, mesh string) {
	m.mu.Lock()
	ms := m.meshes[mesh]
	if ms == nil || ms.mesh == nil || ms.mesh.MTLS == nil {
		m.mu.Unlock()
		return
	}
	var want []api.MTLSBackend
	for _, b := range ms.mesh.MTLS.Backends {
		if (ms.mtls && b.Name == ms.enabled.Name) || ms.inUse[b.Name] > 0 {
			want = append(want, b)
		}
	}
	have := make(map[string][]byte, len(ms.bundles))
	for k, v := range ms.bundles {
		have[k] = v
	}
	m.mu.Unlock()

	var parts [][]byte
	fetched := map[string][]byte{}
	for _, b := range want {
		if tb, ok := have[b.Name]; ok {
			parts = append(parts, tb)
			continue
		}
		be, err := m.cas.Get(b.Type)
		if err != nil {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, b.RootChainRequestTimeout())
		err = be.Ensure(tctx, mesh, b)
		var tb []byte
		if err == nil {
			tb, err = be.TrustBundle(tctx, mesh, b)
		}
		cancel()
		if err != nil {
			m.logger.Warn("trust bundle unavailable", "mesh", mesh, "backend", b.Name, "error", err)
			continue
		}
		fetched[b.Name] = tb
		parts = append(parts, tb)
	}
	bundle := dedupePEM(parts...)

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.meshes[mesh] != ms {
		return // replaced meanwhile; its own refresh follows
	}
	for k, v := range fetched {
		ms.bundles[k] = v
	}
	if len(bundle) == 0 || bytes.Equal(bundle, ms.bundle) {
		return
	}
	ms.bundle = bundle
	for k, st := range m.dps {
		if k.mesh == mesh {
			notify(st)
		}
	}
}

func dedupePEM(parts ...[]byte) []byte {
	seen := map[[32]byte]bool{}
	var out []byte
	for _, p := range parts {
		certs, err := ca.ParseCertificates(p)
		if err != nil {
			continue
		}
		for _, c := range certs {
			h := sha256.Sum256(c.Raw)
			if seen[h] {
				continue
			}
			seen[h] = true
			out = append(out, ca.EncodeCertificates(c)...)
		}
	}
	return out
}

// notify calls the data plane's subscribers (with m.mu held).
func notify(st *dpState) {
	for _, sub := range st.subs {
		sub.notify()
	}
}

// Secrets is what one data plane receives over SDS.
type Secrets struct {
	CertChainPEM   []byte
	KeyPEM         []byte
	TrustBundlePEM []byte
}

// Current returns the certificate, key and trust bundle of a data plane;
// ok=false while none has been issued.
func (m *Manager) Current(mesh, name string) (Secrets, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.dps[dpKey{mesh, name}]
	ms := m.meshes[mesh]
	if st == nil || !st.cur.issued() || ms == nil {
		return Secrets{}, false
	}
	return Secrets{
		CertChainPEM:   []byte(st.cur.rec.CertPEM + st.cur.rec.ChainPEM),
		KeyPEM:         []byte(st.cur.rec.KeyPEM),
		TrustBundlePEM: ms.bundle,
	}, true
}

// Subscribe calls notify whenever a data plane's secrets change, until the
// returned cancel is called. notify runs with the manager's lock held: it
// must return at once and must not call the Manager. A subscription to a
// data plane not yet known is kept and starts working when it is registered.
func (m *Manager) Subscribe(mesh, name string, notify func()) (cancel func()) {
	sub := &subscriber{notify: notify}
	k := dpKey{mesh, name}
	m.mu.Lock()
	st := m.dps[k]
	if st == nil {
		st = &dpState{}
		m.dps[k] = st
	}
	st.subs = append(st.subs, sub)
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		st := m.dps[k]
		if st == nil {
			return
		}
		if i := slices.Index(st.subs, sub); i >= 0 {
			st.subs = slices.Delete(st.subs, i, i+1)
		}
		if len(st.subs) == 0 && st.dp == nil && st.cur == nil {
			delete(m.dps, k) // a deleted (or never registered) data plane kept only for its subscribers
		}
	}
}
