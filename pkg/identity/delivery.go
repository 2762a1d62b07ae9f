package identity

// Delivery: what SDS reads and subscribes to.

import (
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
