package gui

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/ca"
	"meshca/pkg/identity"
)

// ZoneTag is the tag naming a data plane's zone.
const ZoneTag = "kuma.io/zone"

// Row is one data plane in the table.
type Row struct {
	Name         string    `json:"name"`
	Zone         string    `json:"zone,omitempty"`
	Services     []string  `json:"services"`
	Backend      string    `json:"backend,omitempty"`
	BackendType  string    `json:"backendType,omitempty"`
	Serial       string    `json:"serial,omitempty"`
	NotAfter     time.Time `json:"notAfter,omitzero"`
	TimeLeft     float64   `json:"timeLeftSeconds"`
	State        string    `json:"state"`
	Rotations    int64     `json:"rotations"`
	LastRotation time.Time `json:"lastRotation,omitzero"`
	NextRotation time.Time `json:"nextRotation,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
	LastErrorAt  time.Time `json:"lastErrorTime,omitzero"`
}

// Page is the answer of GET /gui/api/meshes/{mesh}/dataplanes.
type Page struct {
	Now time.Time `json:"now"`
	// Total is every data plane of the mesh; Matched those the filter keeps.
	Total   int    `json:"total"`
	Matched int    `json:"matched"`
	Offset  int    `json:"offset"`
	Limit   int    `json:"limit"`
	Sort    string `json:"sort"`
	Dir     string `json:"dir"`
	Items   []Row  `json:"items"`
}

// Sortable columns.
var sortKeys = []string{"name", "zone", "services", "backend", "serial", "notAfter", "timeLeft", "state", "rotations", "lastRotation", "lastError"}

// MaxLimit bounds a page.
const MaxLimit = 500

type listQuery struct {
	q, state, sort, dir string
	offset, limit       int
}

func parseListQuery(r *http.Request) (listQuery, error) {
	qs := r.URL.Query()
	lq := listQuery{q: strings.ToLower(strings.TrimSpace(qs.Get("q"))), state: qs.Get("state"), sort: qs.Get("sort"), dir: qs.Get("dir"), limit: 50}
	v := &api.ValidationError{}
	if lq.sort == "" {
		lq.sort = "name"
	} else if !slices.Contains(sortKeys, lq.sort) {
		v.Addf("sort", "unknown column %q: must be one of %s", lq.sort, strings.Join(sortKeys, ", "))
	}
	switch lq.dir {
	case "":
		lq.dir = "asc"
	case "asc", "desc":
	default:
		v.Addf("dir", "must be asc or desc, got %q", lq.dir)
	}
	if lq.state != "" && !slices.Contains(States, lq.state) {
		v.Addf("state", "unknown state %q: must be one of %s", lq.state, strings.Join(States, ", "))
	}
	if s := qs.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			v.Addf("offset", "must be a whole number ≥ 0, got %q", s)
		}
		lq.offset = n
	}
	if s := qs.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			v.Addf("limit", "must be a whole number from 1 to %d, got %q", MaxLimit, s)
		}
		lq.limit = n
	}
	return lq, v.OrNil()
}

// entry is a summary with what sorting and filtering need, computed once.
type entry struct {
	s        *identity.DataplaneSummary
	state    string
	zone     string
	services string
}

func (h *Handler) dataplanes(w http.ResponseWriter, r *http.Request) {
	lq, err := parseListQuery(r)
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
	sums := h.opts.Source.Summaries(ms.Name)
	es := make([]entry, 0, len(sums))
	for i := range sums {
		s := &sums[i]
		e := entry{s: s, state: stateOf(s, now)}
		if lq.state != "" && e.state != lq.state {
			continue
		}
		// Zone and services are read only when the filter or the sort needs
		// them (they were most of the cost of a 10,000-row list).
		if lq.q != "" || lq.sort == "zone" {
			e.zone = zoneOf(s.Dataplane)
		}
		if s.Dataplane != nil && (lq.q != "" || lq.sort == "services") {
			e.services = strings.Join(s.Dataplane.Services(), ", ")
		}
		if lq.q != "" && !matches(&e, lq.q) {
			continue
		}
		es = append(es, e)
	}
	// Sorted by pointer: comparing copies would move them to the heap.
	sorted := make([]*entry, len(es))
	for i := range es {
		sorted[i] = &es[i]
	}
	less := comparator(lq.sort)
	slices.SortFunc(sorted, func(a, b *entry) int {
		c := less(a, b)
		if c == 0 {
			c = strings.Compare(a.s.Name, b.s.Name)
		}
		if lq.dir == "desc" {
			c = -c
		}
		return c
	})
	page := Page{Now: now.UTC(), Total: len(sums), Matched: len(es), Offset: lq.offset, Limit: lq.limit, Sort: lq.sort, Dir: lq.dir, Items: []Row{}}
	end := min(lq.offset+lq.limit, len(sorted))
	for i := lq.offset; i < end; i++ {
		page.Items = append(page.Items, row(sorted[i], now))
	}
	apiserver.WriteJSON(w, http.StatusOK, page)
}

func matches(e *entry, q string) bool {
	// q is lower case, as Serial is.
	for _, f := range []string{e.s.Name, e.zone, e.services, e.s.Backend, e.s.Serial, e.s.LastError, e.state} {
		if strings.Contains(strings.ToLower(f), q) {
			return true
		}
	}
	return false
}

func zoneOf(dp *api.Dataplane) string {
	if dp == nil {
		return ""
	}
	for _, in := range dp.Networking.Inbound {
		if z := in.Tags[ZoneTag]; z != "" {
			return z
		}
	}
	if g := dp.Networking.Gateway; g != nil {
		return g.Tags[ZoneTag]
	}
	return ""
}

// stateRank orders states from most to least urgent.
var stateRank = map[string]int{StateExpired: 0, StateFailing: 1, StateExpiring: 2, StateNone: 3, StateValid: 4}

func comparator(key string) func(a, b *entry) int {
	// Data planes without a certificate sort after those with one.
	byTime := func(f func(*identity.DataplaneSummary) time.Time) func(a, b *entry) int {
		return func(a, b *entry) int {
			ta, tb := f(a.s), f(b.s)
			switch {
			case ta.IsZero() && tb.IsZero():
				return 0
			case ta.IsZero():
				return 1
			case tb.IsZero():
				return -1
			}
			return ta.Compare(tb)
		}
	}
	switch key {
	case "zone":
		return func(a, b *entry) int { return strings.Compare(a.zone, b.zone) }
	case "services":
		return func(a, b *entry) int { return strings.Compare(a.services, b.services) }
	case "backend":
		return func(a, b *entry) int { return strings.Compare(a.s.Backend, b.s.Backend) }
	case "serial":
		return func(a, b *entry) int { return strings.Compare(a.s.Serial, b.s.Serial) }
	case "notAfter", "timeLeft":
		return byTime(func(s *identity.DataplaneSummary) time.Time { return s.NotAfter })
	case "lastRotation":
		return byTime(func(s *identity.DataplaneSummary) time.Time { return s.IssuedAt })
	case "state":
		return func(a, b *entry) int { return cmp.Compare(stateRank[a.state], stateRank[b.state]) }
	case "rotations":
		return func(a, b *entry) int { return cmp.Compare(a.s.Rotations, b.s.Rotations) }
	case "lastError":
		return func(a, b *entry) int { return strings.Compare(a.s.LastError, b.s.LastError) }
	default:
		return func(a, b *entry) int { return 0 } // name: the tie-break
	}
}

func row(e *entry, now time.Time) Row {
	s := e.s
	r := Row{Name: s.Name, Zone: zoneOf(s.Dataplane), Services: []string{}, Backend: s.Backend, BackendType: s.BackendType, Serial: identity.DisplaySerial(s.Serial),
		State: e.state, Rotations: s.Rotations, LastError: s.LastError}
	if s.Dataplane != nil {
		r.Services = s.Dataplane.Services()
	}
	if !s.NotAfter.IsZero() {
		r.NotAfter = s.NotAfter.UTC()
		r.TimeLeft = s.NotAfter.Sub(now).Seconds()
		r.LastRotation = s.IssuedAt.UTC()
	}
	if !s.NextRotation.IsZero() {
		r.NextRotation = s.NextRotation.UTC()
	}
	if !s.LastErrorTime.IsZero() {
		r.LastErrorAt = s.LastErrorTime.UTC()
	}
	return r
}

// Detail is the answer of GET /gui/api/meshes/{mesh}/dataplanes/{name}.
type Detail struct {
	Now       time.Time           `json:"now"`
	Mesh      string              `json:"mesh"`
	Name      string              `json:"name"`
	State     string              `json:"state"`
	Dataplane *api.Dataplane      `json:"dataplane"`
	Insight   identity.Insight    `json:"insight"`
	Chain     []CertView          `json:"chain"`
	History   []identity.Rotation `json:"history"`
}

func (h *Handler) dataplane(w http.ResponseWriter, r *http.Request) {
	ms, err := h.meshState(r.PathValue("mesh"))
	if err != nil {
		apiserver.WriteError(w, h.opts.Logger, err)
		return
	}
	name := r.PathValue("name")
	now := h.opts.Now()
	sum, found := h.opts.Source.Summary(ms.Name, name)
	in, ok := h.opts.Source.Insight(ms.Name, name)
	if !found || !ok {
		apiserver.WriteError(w, h.opts.Logger, &apiserver.Error{Status: http.StatusNotFound, Title: "Not found",
			Detail: fmt.Sprintf("data plane %q does not exist in mesh %q", name, ms.Name)})
		return
	}
	in.Mesh, in.Dataplane = ms.Name, name
	d := Detail{Now: now.UTC(), Mesh: ms.Name, Name: name, State: stateOf(&sum, now), Dataplane: sum.Dataplane, Insight: in, Chain: []CertView{}, History: []identity.Rotation{}}
	if in.MTLS != nil && in.MTLS.History != nil {
		d.History = in.MTLS.History
	}
	if chain, bundle, ok := h.opts.Source.Certificates(ms.Name, name); ok {
		d.Chain = chainViews(chain, bundle)
	}
	apiserver.WriteJSON(w, http.StatusOK, d)
}

// chainViews decodes the leaf and intermediates, then appends the trust
// bundle root that issued the last of them.
func chainViews(chainPEM, bundlePEM []byte) []CertView {
	certs, err := ca.ParseCertificates(chainPEM)
	if err != nil || len(certs) == 0 {
		return []CertView{}
	}
	out := make([]CertView, 0, len(certs)+1)
	for _, c := range certs {
		out = append(out, certView(c))
	}
	last := certs[len(certs)-1]
	if roots, err := ca.ParseCertificates(bundlePEM); err == nil {
		for _, root := range roots {
			if bytes.Equal(last.RawIssuer, root.RawSubject) && last.CheckSignatureFrom(root) == nil {
				if !bytes.Equal(root.Raw, last.Raw) {
					out = append(out, certView(root))
				}
				break
			}
		}
	}
	return out
}

func keyType(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return c.PublicKeyAlgorithm.String()
	}
}
