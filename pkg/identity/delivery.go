package identity

// Delivery: what SDS reads and subscribes to.

import (
	"errors"
	"fmt"
	"slices"
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
func (m *Manager) Servable(mesh, name string) error {
	select {
	case <-m.ready:
	default:
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.dps[dpKey{mesh, name}]
	ms := m.meshes[mesh]
	switch {
	case ms == nil:
		return notFound(fmt.Sprintf("dataplane %q cannot exist: mesh %q does not exist", name, mesh))
	case st == nil || st.dp == nil: // a placeholder kept for a waiting stream is no registration
		return notFound(fmt.Sprintf("dataplane %q not found in mesh %q: register it (meshctl apply -f) or check the name the token was made for", name, mesh))
	case st.cur.issued():
		return nil
	case !ms.mtls:
		return fmt.Errorf("mesh %q has no mTLS backend enabled (mtls.enabledBackend is not set): no certificate is issued in it until one is", mesh)
	case ms.backend == nil:
		return fmt.Errorf("mesh %q: backend %q of type %q cannot issue here: %s", mesh, ms.enabled.Name, ms.enabled.Type, ms.lastErr)
	}
	return nil
}

// notFound is an error wrapping ErrDataplaneNotFound whose message is only
// the reason.
type notFound string

func (e notFound) Error() string { return string(e) }
func (e notFound) Unwrap() error { return ErrDataplaneNotFound }
