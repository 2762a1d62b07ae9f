package identity

// Leadership: only the leader issues, rotates and writes; followers keep
// their copies of the identities current from the store, so their SDS
// streams push the leader's rotations.

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"sync"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/leader"
	"meshca/pkg/store"
)

// ErrNotLeader is returned for a write attempted while this instance does
// not lead: the leader makes it.
var ErrNotLeader = errors.New("this control plane is not the leader; the leader makes this change")

// leading returns the term this manager issues under, or nil.
func (m *Manager) leading() *leader.Term { return m.term.Load() }

// fenced returns ops with the current term's fence, or ErrNotLeader.
func (m *Manager) fenced(ops []store.Op) ([]store.Op, error) {
	t := m.leading()
	if t == nil {
		return nil, ErrNotLeader
	}
	return append(ops[:len(ops):len(ops)], t.Fence()...), nil
}

// lead runs the issuers (workers and scheduler) for every term this
// instance leads, until ctx ends.
func (m *Manager) lead(ctx context.Context) {
	for {
		term, err := m.elector.Await(ctx)
		if err != nil {
			return
		}
		tctx, cancel := term.Context(ctx)
		stop := func() bool { return false }
		if !m.static {
			// The previous leader's last commits finished before this
			// term started (they hold the term record): read them now.
			if err := m.reload(tctx); err != nil {
				cancel()
				if ctx.Err() != nil {
					return
				}
				m.logger.Error("could not read identities at the start of a leader term; retrying", "term", term.Number, "error", err)
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
					return
				}
				continue
			}
			m.term.Store(term)
			// Stop counting on the term as soon as it ends, not once the
			// workers finished: from then on the store's events are the
			// new leader's and must be followed.
			stop = context.AfterFunc(tctx, func() { m.term.CompareAndSwap(term, nil) })
			m.logger.Info("issuing as the leader", "term", term.Number)
		}
		m.issuers(tctx)
		cancel()
		stop()
		if ctx.Err() != nil {
			return
		}
		m.logger.Warn("leader term ended; following the new leader", "term", term.Number)
	}
}

// issuers runs the workers and the scheduler until ctx ends.
func (m *Manager) issuers(ctx context.Context) {
	var wg sync.WaitGroup
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
	wg.Wait()
}

// reload reads every identity from the store and schedules every data
// plane afresh, at the start of a term. Identity records whose Dataplane is
// gone (its deletion came while nobody led) are deleted.
func (m *Manager) reload(ctx context.Context) error {
	recs, err := m.store.List(ctx, TypeDataplaneIdentity, "")
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.queue = m.queue[:0]
	var orphans []store.Key
	seen := map[dpKey]bool{}
	for _, r := range recs {
		k := dpKey{r.Mesh, r.Name}
		seen[k] = true
		st := m.dps[k]
		if st == nil || st.dp == nil {
			orphans = append(orphans, r.Key)
			continue
		}
		m.applyLocked(k, st, r, true)
	}
	for k, st := range m.dps {
		st.scheduled, st.inFlight, st.again = false, false, false
		if !seen[k] && st.cur != nil && st.dp != nil {
			m.dropLocked(k, st)
		}
		m.considerLocked(k, st)
	}
	m.mu.Unlock()
	term := m.elector.Current()
	for _, key := range orphans {
		if term == nil {
			break
		}
		ops := append([]store.Op{{Kind: store.OpDelete, Record: store.Record{Key: key}}}, term.Fence()...)
		if err := m.store.Commit(ctx, ops...); err != nil && !errors.Is(err, store.ErrNotFound) {
			m.logger.Warn("could not delete identity of a deleted dataplane", "mesh", key.Mesh, "dataplane", key.Name, "error", err)
		}
	}
	return nil
}

// follow applies an identity record another instance (the leader) wrote.
func (m *Manager) follow(ctx context.Context, ev store.Event) {
	if m.leading() != nil {
		return // its own write, or one the term's reload read
	}
	k := dpKey{ev.Record.Mesh, ev.Record.Name}
	m.mu.Lock()
	st := m.dps[k]
	if st == nil || st.dp == nil {
		m.mu.Unlock()
		return
	}
	var changed bool
	if ev.Kind == store.EventDeleted {
		changed = m.dropLocked(k, st)
	} else {
		changed = m.applyLocked(k, st, ev.Record, false)
	}
	m.mu.Unlock()
	if changed {
		m.refreshBundle(ctx, k.mesh)
	}
}

// applyLocked makes a stored identity record the data plane's current one
// (unless it is older than the one held) and tells its subscribers. It
// reports whether the set of backends in use changed (only then does the
// mesh's trust bundle need recomputing: not for every certificate a
// follower takes from the leader). force is the start of a term: the
// record is applied whatever its version, its certificate parsed in full.
func (m *Manager) applyLocked(k dpKey, st *dpState, r store.Record, force bool) bool {
	if !force && r.Version <= st.idVersion {
		return false
	}
	var rec record
	if err := json.Unmarshal(r.Spec, &rec); err != nil {
		m.logger.Warn("ignoring unreadable stored identity", "mesh", k.mesh, "dataplane", k.name, "error", err)
		return false
	}
	st.idVersion = r.Version
	if st.cur != nil && st.cur.rec.CertPEM == rec.CertPEM {
		st.cur.rec = rec // pending state only
		return false
	}
	oldBackend, had := "", st.cur.issued()
	ms := m.meshes[k.mesh]
	if had {
		oldBackend = st.cur.rec.Backend
		if ms != nil {
			ms.inUse[oldBackend]--
		}
	}
	m.restoreLocked(st, rec, force)
	if st.cur.issued() {
		// As the leader recorded it, so every instance shows the same.
		st.lastRotated = rec.IssuedAt
		recordHistoryLocked(st, api.MTLSBackend{Name: rec.Backend}, st.cur, nil, rec.IssuedAt)
		// A failure this instance recorded while it led (its database
		// away) is over: the leader issued since.
		st.attempts, st.lastErr, st.lastErrAt = 0, "", time.Time{}
		m.logger.Debug("certificate issued by the leader", "mesh", k.mesh, "dataplane", k.name, "serial", st.cur.serial)
	}
	notify(st)
	return ms != nil && inUseFlipped(ms, had, oldBackend, st.cur.issued(), st.cur.rec.Backend)
}

// dropLocked forgets a data plane's certificate (its record was deleted).
func (m *Manager) dropLocked(k dpKey, st *dpState) bool {
	if !st.cur.issued() {
		st.cur = nil
		return false
	}
	backend := st.cur.rec.Backend
	ms := m.meshes[k.mesh]
	if ms != nil {
		ms.inUse[backend]--
	}
	st.cur, st.idVersion = nil, 0
	notify(st)
	return ms != nil && inUseFlipped(ms, true, backend, false, "")
}

// rotateAt is when a certificate is renewed: RotateAt, brought forward for
// a short-lived certificate when instances share the store, so that a
// failover (Options.FailoverBudget without a leader) fits between its
// rotation and its expiry — but never before half its lifetime.
//
// The jitter is drawn from certPEM (unless Options.Jitter was given or
// certPEM is empty): certificates issued together still spread, while a
// data plane reconsidered (every one of a mesh on a Mesh change, every one
// after a restart or a failover) keeps the rotation time it was given, and
// its insight does not change for nothing.
func (m *Manager) rotateAt(issuedAt, notAfter time.Time, certPEM string) time.Time {
	jitter := m.opts.Jitter
	if m.stableJitter && certPEM != "" {
		h := fnv.New64a()
		h.Write([]byte(certPEM))
		sum := h.Sum64()
		jitter = func() float64 { return float64(sum%(1<<20))/(1<<19) - 1 }
	}
	at := RotateAt(issuedAt, notAfter, jitter())
	if m.opts.FailoverBudget <= 0 {
		return at
	}
	latest := notAfter.Add(-m.opts.FailoverBudget)
	if half := issuedAt.Add(notAfter.Sub(issuedAt) / 2); latest.Before(half) {
		latest = half
	}
	if latest.Before(at) {
		return latest
	}
	return at
}
