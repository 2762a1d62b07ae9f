package identity

import (
	"crypto/x509"
	"encoding/hex"
	"strings"
	"time"

	"meshca/pkg/ca"
)

// Insight is the mTLS state of one data plane, as Kuma's DataplaneInsight
// shows it plus the certificate's details.
type Insight struct {
	Mesh      string       `json:"mesh"`
	Dataplane string       `json:"dataplane"`
	MTLS      *MTLSInsight `json:"mTLS,omitempty"`
}

// MTLSInsight follows Kuma's DataplaneInsight.mTLS field names.
type MTLSInsight struct {
	IssuedBackend               string    `json:"issuedBackend,omitempty"`
	IssuedBackendType           string    `json:"issuedBackendType,omitempty"`
	SupportedBackends           []string  `json:"supportedBackends,omitempty"`
	CertificateExpirationTime   time.Time `json:"certificateExpirationTime,omitzero"`
	LastCertificateRegeneration time.Time `json:"lastCertificateRegeneration,omitzero"`
	CertificateRegenerations    int64     `json:"certificateRegenerations"`
	NextRotation                time.Time `json:"nextRotation,omitzero"`
	LastError                   string    `json:"lastError,omitempty"`
	LastErrorTime               time.Time `json:"lastErrorTime,omitzero"`
	FailedAttempts              int       `json:"failedAttempts,omitempty"`

	Subject   string    `json:"subject,omitempty"`
	Issuer    string    `json:"issuer,omitempty"`
	Serial    string    `json:"serial,omitempty"`
	URISANs   []string  `json:"uriSANs,omitempty"`
	DNSSANs   []string  `json:"dnsSANs,omitempty"`
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	// CertificateRef identifies the certificate at its CA (an ACM certificate ARN).
	CertificateRef string `json:"certificateRef,omitempty"`
	// History is the issuance history since the control plane started,
	// oldest first (a meshca extension).
	History []Rotation `json:"rotationHistory,omitempty"`
}

// Insight returns the mTLS state of a data plane; ok=false if it is unknown.
func (m *Manager) Insight(mesh, name string) (Insight, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.dps[dpKey{mesh, name}]
	if st == nil || st.dp == nil {
		return Insight{}, false
	}
	in := Insight{Mesh: mesh, Dataplane: name}
	mi := &MTLSInsight{LastError: st.lastErr, LastErrorTime: st.lastErrAt, FailedAttempts: st.attempts,
		History: historyView(st.history)}
	if ms := m.meshes[mesh]; ms != nil && ms.mesh != nil && ms.mesh.MTLS != nil {
		for _, b := range ms.mesh.MTLS.Backends {
			mi.SupportedBackends = append(mi.SupportedBackends, b.Name)
		}
	}
	if st.scheduled {
		mi.NextRotation = st.due
	}
	if c := st.cur; c.issued() {
		mi.IssuedBackend, mi.IssuedBackendType = c.rec.Backend, c.rec.BackendType
		mi.CertificateExpirationTime = c.rec.NotAfter
		mi.LastCertificateRegeneration = c.rec.IssuedAt
		mi.CertificateRegenerations = c.rec.Rotations
		mi.CertificateRef = c.rec.Ref
		if certs, err := ca.ParseCertificates([]byte(c.rec.CertPEM)); err == nil {
			describe(mi, certs[0])
		}
	}
	in.MTLS = mi
	return in, true
}

func describe(mi *MTLSInsight, c *x509.Certificate) {
	mi.Subject = c.Subject.String()
	mi.Issuer = c.Issuer.String()
	mi.Serial = strings.ToUpper(hex.EncodeToString(c.SerialNumber.Bytes()))
	for _, u := range c.URIs {
		mi.URISANs = append(mi.URISANs, u.String())
	}
	mi.DNSSANs = c.DNSNames
	mi.NotBefore, mi.NotAfter = c.NotBefore, c.NotAfter
}
