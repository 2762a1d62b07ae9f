package identity

// Trust bundles: the roots a mesh's peers trust, across CA switches.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/store"
)

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
	if err := m.ensure(ctx, mesh, b, be); err != nil {
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

// ensure readies a backend of a stored Mesh. CA state the backend keeps in
// the store and that is missing (an operator deleted the builtin root's
// Secrets) is created again, conditional on the Mesh at the version the loop
// saw: it can never be created for a Mesh that is gone or no longer uses it.
func (m *Manager) ensure(ctx context.Context, mesh string, b api.MTLSBackend, be ca.Backend) error {
	m.mu.Lock()
	var version int64
	if ms := m.meshes[mesh]; ms != nil {
		version = ms.version
	}
	m.mu.Unlock()
	ops, err := ca.Prepare(ctx, be, mesh, b)
	if err != nil || len(ops) == 0 {
		return err
	}
	if m.opts.NoProvision {
		return fmt.Errorf("mesh %q backend %q: its CA has not been synced from the global control plane yet", mesh, b.Name)
	}
	if version == 0 {
		return fmt.Errorf("mesh %q backend %q: CA state is missing and the mesh is not known yet", mesh, b.Name)
	}
	ops = append(ops, store.Op{Kind: store.OpRequire, Record: store.Record{Key: store.Key{Type: api.TypeMesh, Name: mesh}, Version: version}})
	// Only the leader creates it, fenced by its term.
	if ops, err = m.fenced(ops); err != nil {
		return fmt.Errorf("mesh %q backend %q: CA state is missing: %w", mesh, b.Name, err)
	}
	switch err := m.store.Commit(ctx, ops...); {
	case err == nil && m.opts.MeshesWrittenElsewhere:
		m.logger.Info("created the CA state of a mesh", "mesh", mesh, "backend", b.Name)
	case err == nil:
		m.logger.Warn("CA state of a mesh was missing; created it again", "mesh", mesh, "backend", b.Name)
	case errors.Is(err, store.ErrAlreadyExists):
		// Another writer created it meanwhile: use theirs.
	default:
		return fmt.Errorf("mesh %q backend %q: create missing CA state: %w", mesh, b.Name, err)
	}
	return be.Ensure(ctx, mesh, b)
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
	epoch := ms.bundlesEpoch
	m.mu.Unlock()

	fetched := map[string][]byte{}
	failed := false
	for _, b := range want {
		if _, ok := have[b.Name]; ok {
			continue
		}
		be, err := m.cas.Get(b.Type)
		if err != nil {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, b.RootChainRequestTimeout())
		err = m.ensure(tctx, mesh, b, be)
		var tb []byte
		if err == nil {
			tb, err = be.TrustBundle(tctx, mesh, b)
		}
		cancel()
		if err != nil {
			m.logger.Warn("trust bundle unavailable", "mesh", mesh, "backend", b.Name, "error", err)
			failed = true
			continue
		}
		fetched[b.Name] = tb
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.meshes[mesh] != ms {
		return // replaced meanwhile; its own refresh follows
	}
	m.retryBundleLocked(ctx, mesh, ms, failed)
	// What was fetched is kept unless the bundles were reset meanwhile (a
	// Secret changed: what was fetched may be the old CA's).
	if ms.bundlesEpoch == epoch {
		for k, v := range fetched {
			ms.bundles[k] = v
		}
	}
	// The bundle is computed from the state now, not from the one read at
	// the start: issuances that settled meanwhile (and their own refreshes,
	// which may have finished first) must not be undone by this one.
	var parts [][]byte
	for _, b := range ms.mesh.MTLS.Backends {
		if (ms.mtls && b.Name == ms.enabled.Name) || ms.inUse[b.Name] > 0 {
			if tb, ok := ms.bundles[b.Name]; ok {
				parts = append(parts, tb)
			} else if !slices.ContainsFunc(want, func(w api.MTLSBackend) bool { return w.Name == b.Name }) {
				// Needed since this refresh started: fetch it in another.
				go m.refreshBundle(ctx, mesh)
			}
		}
	}
	bundle := dedupePEM(parts...)
	m.rootsChangedLocked(mesh, ms)
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

// inUseFlipped reports whether moving one certificate from backend from
// (when had) to backend to (when has), its counts in ms.inUse already
// updated, changed which backends are in use, and so what the mesh's data
// planes must trust. Most moves change nothing (the 10,000th certificate of
// a backend, a rotation): the bundle is then left as it is.
func inUseFlipped(ms *meshState, had bool, from string, has bool, to string) bool {
	if had && has && from == to {
		return false
	}
	return (had && ms.inUse[from] <= 0) || (has && ms.inUse[to] == 1)
}

// Retries of a trust bundle that could not be fetched: without them, a
// control plane that restarted while its CA was unreachable would serve its
// data planes nothing until some other change of the mesh.
const (
	bundleRetryMin = 500 * time.Millisecond
	bundleRetryMax = 30 * time.Second
)

// retryBundleLocked schedules the mesh's refresh again, with a backoff that
// doubles up to bundleRetryMax, when this one failed to fetch a bundle it
// needs; one retry is pending per mesh state at a time, and a success resets
// the backoff.
func (m *Manager) retryBundleLocked(ctx context.Context, mesh string, ms *meshState, failed bool) {
	if !failed {
		ms.bundleRetry = 0
		return
	}
	if ms.bundleRetryPending || ctx.Err() != nil {
		return
	}
	ms.bundleRetry = min(max(2*ms.bundleRetry, bundleRetryMin), bundleRetryMax)
	ms.bundleRetryPending = true
	time.AfterFunc(ms.bundleRetry, func() {
		m.mu.Lock()
		ms.bundleRetryPending = false
		current := m.meshes[mesh] == ms
		m.mu.Unlock()
		if current && ctx.Err() == nil {
			m.refreshBundle(ctx, mesh)
		}
	})
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

// rootsChangedLocked notices a change of the enabled backend's roots (a
// builtin root replaced after its Mesh was deleted and created again, a
// provided CA's Secret changed): certificates of the mesh that do not chain
// to the new roots are re-issued at once, rather than served until their
// rotation to peers that no longer trust them.
func (m *Manager) rootsChangedLocked(mesh string, ms *meshState) {
	roots, ok := ms.bundles[ms.enabled.Name]
	if !ms.mtls || !ok || bytes.Equal(roots, ms.enabledRoots) {
		return
	}
	first := ms.enabledRoots == nil
	ms.enabledRoots = roots
	ms.rootGen++
	if first {
		return
	}
	for k, st := range m.dps {
		if k.mesh != mesh || !st.cur.issued() || st.inFlight || chainsTo(st.cur.rec, roots) {
			continue
		}
		m.logger.Warn("certificate does not chain to its backend's current roots; issuing again",
			"mesh", mesh, "dataplane", k.name, "backend", ms.enabled.Name)
		st.stale = true
		m.considerLocked(k, st)
	}
}

// chainsTo reports whether a record's certificate chains to roots (validity
// periods aside: this asks who signed it, not whether it is current).
func chainsTo(rec record, roots []byte) bool {
	certs, err := ca.ParseCertificates([]byte(rec.CertPEM + rec.ChainPEM))
	if err != nil || len(certs) == 0 {
		return false
	}
	pool, err := ca.ParseCertificates(roots)
	if err != nil {
		return false
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(),
		CurrentTime: certs[0].NotBefore.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	for _, r := range pool {
		opts.Roots.AddCert(r)
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err = certs[0].Verify(opts)
	return err == nil
}
