package identity

// Delivery: what SDS reads and subscribes to.

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"meshca/pkg/api"
	"meshca/pkg/resources"
	"meshca/pkg/store"
)

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
// ok=false while none has been issued, or while the mesh's trust bundle is
// not known yet (a restarted control plane loads its certificates from the
// store before its CA backends answer): a data plane refuses secrets with
// nothing to trust, and subscribers are notified once the bundle is there.
func (m *Manager) Current(mesh, name string) (Secrets, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.dps[dpKey{mesh, name}]
	ms := m.meshes[mesh]
	if st == nil || !st.cur.issued() || ms == nil || len(ms.bundle) == 0 {
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

// ErrDataplaneNotFound is wrapped by Servable's error when the data plane is
// not registered.
var ErrDataplaneNotFound = errors.New("dataplane not found")

// Servable returns nil when a data plane holds a certificate or will get
// one by itself; otherwise why it will wait until an operator acts: an
// error wrapping ErrDataplaneNotFound (not registered, or its mesh does not
// exist), or one saying its mesh issues no certificates. Before the
// persisted state is loaded it returns nil: it cannot tell yet. The SDS
// server asks it when a stream opens, so that a data plane is told why
// instead of being kept waiting silently.
//
// A refusal is confirmed by the store, which the manager follows a moment
// behind: a data plane applied just before its agent connects, or by
// another control plane, is not refused for that.
func (m *Manager) Servable(ctx context.Context, mesh, name string) error {
	select {
	case <-m.ready:
	default:
		return nil
	}
	confirm, err := m.servableLocked(mesh, name)
	if err == nil || !confirm {
		return err
	}
	return m.servableInStore(ctx, mesh, name)
}

// servableLocked is Servable's verdict from the manager's own view, and
// (confirm) whether a refusal is one the store may contradict (the manager has not
// seen a registration or a Mesh change yet).
func (m *Manager) servableLocked(mesh, name string) (confirm bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.dps[dpKey{mesh, name}]
	ms := m.meshes[mesh]
	switch {
	case ms == nil:
		return true, notFound(fmt.Sprintf("dataplane %q cannot exist: mesh %q does not exist", name, mesh))
	case st == nil || st.dp == nil: // a placeholder kept for a waiting stream is no registration
		return true, errNotRegistered(mesh, name)
	case st.cur.issued():
		return false, nil
	case !ms.mtls:
		return true, errNoMTLS(mesh)
	case ms.backend == nil:
		return false, fmt.Errorf("mesh %q: backend %q of type %q cannot issue here: %s", mesh, ms.enabled.Name, ms.enabled.Type, ms.lastErr)
	}
	return false, nil
}

// servableInStore is Servable's verdict from the store. A read that fails
// refuses nothing: the stream then waits, as it would without the check.
func (m *Manager) servableInStore(ctx context.Context, mesh, name string) error {
	rec, err := m.store.Get(ctx, store.Key{Type: api.TypeMesh, Name: mesh})
	if errors.Is(err, store.ErrNotFound) {
		return notFound(fmt.Sprintf("dataplane %q cannot exist: mesh %q does not exist", name, mesh))
	}
	if err != nil {
		return nil
	}
	res, err := resources.FromRecord(rec)
	if err != nil {
		return nil
	}
	if _, err := m.store.Get(ctx, store.Key{Type: api.TypeDataplane, Mesh: mesh, Name: name}); errors.Is(err, store.ErrNotFound) {
		return errNotRegistered(mesh, name)
	} else if err != nil {
		return nil
	}
	if _, _, ok := res.(*api.Mesh).EnabledMTLSBackend(); !ok {
		return errNoMTLS(mesh)
	}
	return nil
}

func errNotRegistered(mesh, name string) error {
	return notFound(fmt.Sprintf("dataplane %q not found in mesh %q: register it (meshctl apply -f) or check the name the token was made for", name, mesh))
}

func errNoMTLS(mesh string) error {
	return fmt.Errorf("mesh %q has no mTLS backend enabled (mtls.enabledBackend is not set): no certificate is issued in it until one is", mesh)
}

// notFound is an error wrapping ErrDataplaneNotFound whose message is only
// the reason.
type notFound string

func (e notFound) Error() string { return string(e) }
func (e notFound) Unwrap() error { return ErrDataplaneNotFound }
