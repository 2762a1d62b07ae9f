package gui

import (
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"meshca/pkg/apiserver"
	"meshca/pkg/ca"
	"meshca/pkg/ca/acmpca"
	"meshca/pkg/identity"
)

// MeshView is one mesh on the Meshes page (and GET /meshes/{mesh}/_overview).
type MeshView struct {
	Name string `json:"name"`
	MTLS bool   `json:"mtls"`
	// EnabledBackend and BackendType name the CA issuing new certificates.
	EnabledBackend string        `json:"enabledBackend,omitempty"`
	BackendType    string        `json:"backendType,omitempty"`
	Backends       []BackendView `json:"backends,omitempty"`
	// Lifetime is the enabled backend's certificate lifetime, in seconds.
	Lifetime float64 `json:"lifetimeSeconds,omitempty"`
	// Roots are the certificates of the trust bundle.
	Roots []CertView `json:"roots"`
	// States counts data planes by certificate state; Total is all of them.
	States map[string]int `json:"states"`
	Total  int            `json:"total"`
	// Errors are the distinct last errors of failing data planes (a few).
	Errors []ErrorCount `json:"errors,omitempty"`
	Switch *SwitchView  `json:"switch,omitempty"`
	// Error is why the enabled backend cannot be used at all.
	Error  string      `json:"error,omitempty"`
	Budget *BudgetView `json:"budget,omitempty"`
}

// BackendView is one backend of a mesh.
type BackendView struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Enabled bool   `json:"enabled"`
	// Holding counts data planes holding a certificate of this backend.
	Holding int `json:"holding"`
}

// ErrorCount is one error text and how many data planes report it.
type ErrorCount struct {
	Error      string `json:"error"`
	Dataplanes int    `json:"dataplanes"`
	// Example is one data plane with this error.
	Example string `json:"example"`
}

// SwitchView is a CA switch in progress: data planes still hold
// certificates of a backend other than the enabled one.
type SwitchView struct {
	To string `json:"to"`
	// Done counts data planes holding the enabled backend's certificate;
	// Of is every data plane holding a certificate.
	Done    int            `json:"done"`
	Of      int            `json:"of"`
	Percent float64        `json:"percent"`
	From    map[string]int `json:"from"`
}

// CertView is a decoded certificate.
type CertView struct {
	Subject      string    `json:"subject"`
	Issuer       string    `json:"issuer"`
	Serial       string    `json:"serial"`
	NotBefore    time.Time `json:"notBefore"`
	NotAfter     time.Time `json:"notAfter"`
	KeyType      string    `json:"keyType"`
	SignatureAlg string    `json:"signatureAlgorithm"`
	IsCA         bool      `json:"isCA"`
	URISANs      []string  `json:"uriSANs,omitempty"`
	DNSSANs      []string  `json:"dnsSANs,omitempty"`
	SelfSigned   bool      `json:"selfSigned"`
}

func certView(c *x509.Certificate) CertView {
	v := CertView{
		Subject: c.Subject.String(), Issuer: c.Issuer.String(),
		Serial:    strings.ToUpper(hex.EncodeToString(c.SerialNumber.Bytes())),
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
		KeyType: keyType(c), SignatureAlg: c.SignatureAlgorithm.String(), IsCA: c.IsCA,
		DNSSANs:    c.DNSNames,
		SelfSigned: c.CheckSignatureFrom(c) == nil && string(c.RawIssuer) == string(c.RawSubject),
	}
	for _, u := range c.URIs {
		v.URISANs = append(v.URISANs, u.String())
	}
	return v
}

// maxErrors bounds the distinct error texts a mesh view lists.
const maxErrors = 5

func (h *Handler) meshView(ms identity.MeshState, now time.Time, price float64) MeshView {
	v := MeshView{Name: ms.Name, MTLS: ms.MTLS, States: map[string]int{}, Roots: []CertView{}, Error: ms.Error}
	for _, s := range States {
		v.States[s] = 0
	}
	if ms.MTLS {
		v.EnabledBackend, v.BackendType = ms.Enabled.Name, ms.Enabled.Type
		v.Lifetime = ms.Enabled.CertExpiration().Seconds()
	}
	if ms.Mesh != nil && ms.Mesh.MTLS != nil {
		for _, b := range ms.Mesh.MTLS.Backends {
			v.Backends = append(v.Backends, BackendView{Name: b.Name, Type: b.Type, Enabled: ms.MTLS && b.Name == ms.Enabled.Name, Holding: ms.InUse[b.Name]})
		}
	}
	if certs, err := ca.ParseCertificates(ms.TrustBundlePEM); err == nil {
		for _, c := range certs {
			v.Roots = append(v.Roots, certView(c))
		}
	}
	sums := h.opts.Source.Summaries(ms.Name)
	errs := map[string]*ErrorCount{}
	for i := range sums {
		s := &sums[i]
		v.States[stateOf(s, now)]++
		if s.LastError != "" {
			e := errs[s.LastError]
			if e == nil {
				e = &ErrorCount{Error: s.LastError, Example: s.Name}
				errs[s.LastError] = e
			} else if s.Name < e.Example {
				e.Example = s.Name
			}
			e.Dataplanes++
		}
	}
	v.Total = len(sums)
	for _, e := range errs {
		v.Errors = append(v.Errors, *e)
	}
	sort.Slice(v.Errors, func(i, j int) bool {
		if v.Errors[i].Dataplanes != v.Errors[j].Dataplanes {
			return v.Errors[i].Dataplanes > v.Errors[j].Dataplanes
		}
		return v.Errors[i].Error < v.Errors[j].Error
	})
	if len(v.Errors) > maxErrors {
		v.Errors = v.Errors[:maxErrors]
	}
	if ms.MTLS {
		held := 0
		from := map[string]int{}
		for b, n := range ms.InUse {
			held += n
			if b != ms.Enabled.Name {
				from[b] = n
			}
		}
		if len(from) > 0 {
			done := ms.InUse[ms.Enabled.Name]
			v.Switch = &SwitchView{To: ms.Enabled.Name, Done: done, Of: held, From: from, Percent: 100 * float64(done) / float64(held)}
		}
		if ms.Enabled.Type == acmpca.Type {
			b := h.budgetView(ms, sums, price)
			v.Budget = &b
		}
	}
	return v
}

// MeshesView is the answer of GET /gui/api/meshes.
type MeshesView struct {
	Now    time.Time  `json:"now"`
	Meshes []MeshView `json:"meshes"`
	// States is the order in which states are shown.
	States []string `json:"states"`
}

func (h *Handler) meshes(w http.ResponseWriter, r *http.Request) {
	price, err := priceParam(r, h.opts.PricePerCertificate)
	if err != nil {
		apiserver.WriteError(w, h.opts.Logger, err)
		return
	}
	now := h.opts.Now()
	states := h.opts.Source.MeshStates()
	slices.SortFunc(states, func(a, b identity.MeshState) int { return strings.Compare(a.Name, b.Name) })
	out := MeshesView{Now: now.UTC(), Meshes: []MeshView{}, States: States}
	for _, ms := range states {
		out.Meshes = append(out.Meshes, h.meshView(ms, now, price))
	}
	apiserver.WriteJSON(w, http.StatusOK, out)
}

// OverviewView is the answer of GET /meshes/{mesh}/_overview.
type OverviewView struct {
	Now time.Time `json:"now"`
	MeshView
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	price, err := priceParam(r, h.opts.PricePerCertificate)
	if err != nil {
		apiserver.WriteError(w, h.opts.Logger, err)
		return
	}
	ms, err := h.meshState(r.PathValue("mesh"))
	if err != nil {
		apiserver.WriteError(w, h.opts.Logger, err)
		return
	}
	now := h.opts.Now()
	apiserver.WriteJSON(w, http.StatusOK, OverviewView{Now: now.UTC(), MeshView: h.meshView(ms, now, price)})
}
