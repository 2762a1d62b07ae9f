package identity

import (
	"maps"
	"strings"
	"time"

	"meshca/pkg/api"
)

// Read-only views of the manager's state for dashboards (pkg/gui). They read
// what is already in memory and parse no certificate, so a list of 10,000
// data planes costs a copy, not 10,000 parses.

// DataplaneSummary is what a list shows of one data plane.
type DataplaneSummary struct {
	Mesh string
	Name string
	// Dataplane is the resource as last seen; shared, never to be modified.
	Dataplane   *api.Dataplane
	Backend     string
	BackendType string
	// Serial is the certificate's serial as big.Int.Text(16) (lower case,
	// no padding): cheap to copy; DisplaySerial formats it as Insight does.
	Serial         string
	IssuedAt       time.Time
	NotAfter       time.Time
	Rotations      int64
	NextRotation   time.Time
	LastError      string
	LastErrorTime  time.Time
	FailedAttempts int
}

// Summaries returns every registered data plane of a mesh, in no order.
func (m *Manager) Summaries(mesh string) []DataplaneSummary {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]DataplaneSummary, 0, 64)
	for k, st := range m.dps {
		if k.mesh != mesh || st.dp == nil {
			continue
		}
		out = append(out, summaryLocked(k, st))
	}
	return out
}

// Summary returns one registered data plane; ok=false if it is not.
func (m *Manager) Summary(mesh, name string) (DataplaneSummary, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := dpKey{mesh, name}
	st := m.dps[k]
	if st == nil || st.dp == nil {
		return DataplaneSummary{}, false
	}
	return summaryLocked(k, st), true
}

func summaryLocked(k dpKey, st *dpState) DataplaneSummary {
	s := DataplaneSummary{Mesh: k.mesh, Name: k.name, Dataplane: st.dp,
		LastError: st.lastErr, LastErrorTime: st.lastErrAt, FailedAttempts: st.attempts}
	if st.scheduled {
		s.NextRotation = st.due
	}
	if c := st.cur; c.issued() {
		s.Backend, s.BackendType = c.rec.Backend, c.rec.BackendType
		s.Serial = c.serial
		s.IssuedAt, s.NotAfter, s.Rotations = c.rec.IssuedAt, c.rec.NotAfter, c.rec.Rotations
	}
	return s
}

// Certificates returns a data plane's certificate chain (leaf first) and
// its mesh's trust bundle, for display: unlike Current, never the key.
func (m *Manager) Certificates(mesh, name string) (chainPEM, bundlePEM []byte, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.dps[dpKey{mesh, name}]
	ms := m.meshes[mesh]
	if st == nil || !st.cur.issued() || ms == nil {
		return nil, nil, false
	}
	return []byte(st.cur.rec.CertPEM + st.cur.rec.ChainPEM), ms.bundle, true
}

// DisplaySerial turns big.Int.Text(16) into Insight's form (the bytes in
// upper-case hex, so an even number of digits).
func DisplaySerial(hexText string) string {
	s := strings.ToUpper(hexText)
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}

// MeshState is the CA side of one mesh.
type MeshState struct {
	Name string
	// Mesh is the resource as last seen; shared, never to be modified.
	Mesh *api.Mesh
	// Enabled is the enabled backend; MTLS is false when none is.
	Enabled api.MTLSBackend
	MTLS    bool
	// TrustBundlePEM is what the mesh's data planes trust now (the enabled
	// backend's roots plus those of backends still holding certificates).
	TrustBundlePEM []byte
	// InUse counts data planes holding a certificate, by backend name: more
	// than one entry means a CA switch is under way.
	InUse map[string]int
	// Error is why the enabled backend cannot be used at all (unknown type).
	Error string
}

// MeshStates returns every mesh the manager knows, in no order.
func (m *Manager) MeshStates() []MeshState {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]MeshState, 0, len(m.meshes))
	for name, ms := range m.meshes {
		if ms.mesh == nil {
			continue
		}
		inUse := maps.Clone(ms.inUse)
		maps.DeleteFunc(inUse, func(_ string, n int) bool { return n <= 0 })
		out = append(out, MeshState{Name: name, Mesh: ms.mesh, Enabled: ms.enabled, MTLS: ms.mtls,
			TrustBundlePEM: ms.bundle, InUse: inUse, Error: ms.lastErr})
	}
	return out
}

// Rotation is one entry of a data plane's issuance history: a certificate
// obtained, or a run of failed attempts with the same error.
type Rotation struct {
	At       time.Time `json:"at"`
	Backend  string    `json:"backend,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"notAfter,omitzero"`
	Error    string    `json:"error,omitempty"`
	// Attempts counts the failed attempts an error entry stands for.
	Attempts int `json:"attempts,omitempty"`
}

// historyLen bounds the history kept per data plane (memory: an entry is
// 104 bytes, its strings shared with the certificate record or the error;
// 10,000 data planes keep at most 80,000 entries, 8 MiB, and 1 MiB for
// each round of rotations before that).
const historyLen = 8

// recordHistoryLocked appends the outcome of one issuance to a data
// plane's in-memory history. Repeated identical failures fold into one
// entry so a long outage does not push the last good certificates out.
func recordHistoryLocked(st *dpState, b api.MTLSBackend, c *current, err error, now time.Time) {
	if err != nil {
		msg := err.Error()
		if n := len(st.history); n > 0 && st.history[n-1].Error == msg {
			st.history[n-1].At = now
			st.history[n-1].Attempts++
			return
		}
		st.history = appendBounded(st.history, Rotation{At: now, Backend: b.Name, Error: msg, Attempts: 1})
		return
	}
	// The serial is kept as the current certificate holds it (shared, not
	// copied) and formatted when read.
	st.history = appendBounded(st.history, Rotation{At: now, Backend: c.rec.Backend, Serial: c.serial, NotAfter: c.rec.NotAfter})
}

// historyView copies a history for readers, serials formatted as Insight's.
func historyView(h []Rotation) []Rotation {
	if len(h) == 0 {
		return nil
	}
	out := make([]Rotation, len(h))
	for i, r := range h {
		if r.Serial != "" {
			r.Serial = DisplaySerial(r.Serial)
		}
		out[i] = r
	}
	return out
}

func appendBounded(h []Rotation, r Rotation) []Rotation {
	if len(h) >= historyLen {
		h = append(h[:0], h[len(h)-historyLen+1:]...)
	}
	return append(h, r)
}

// History returns a data plane's issuance history since the control plane
// started, oldest first (nil if unknown).
func (m *Manager) History(mesh, name string) []Rotation {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.dps[dpKey{mesh, name}]
	if st == nil {
		return nil
	}
	return historyView(st.history)
}
