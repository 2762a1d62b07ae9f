package gui

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"meshca/pkg/apiserver"
	"meshca/pkg/ca/acmpca"
	"meshca/pkg/identity"
)

// DefaultPricePerCertificate is the price in USD of one certificate issued
// by an AWS Private CA in short-lived certificate mode, the mode meant for
// certificates of 7 days or less such as data-plane certificates (source:
// https://aws.amazon.com/private-ca/pricing/, "Private certificates",
// short-lived certificate mode; it varies by region and over time: check
// it and pass pricePerCertificate). The CA's own monthly fee ($50 per CA
// in that mode, same page) is not included in the projection.
const DefaultPricePerCertificate = 0.058

// DefaultAccountQuota is ACM PCA's default IssueCertificate quota per
// account and region, in requests per second (Service Quotas may raise it).
const DefaultAccountQuota = 25.0

// RotateFraction is when a data plane's certificate is renewed on average,
// as a share of its lifetime (identity.RotateAt: 80 % ± 5 % uniform jitter).
const RotateFraction = 0.80

// Month is the month of the projection: 30 days.
const Month = 30 * 24 * time.Hour

// BudgetView is the External CA budget of one acmpca mesh.
type BudgetView struct {
	Backend string `json:"backend"`
	Arn     string `json:"arn,omitempty"`
	// Counting is false until the backend made its first request since
	// the control plane started (the counters below are then zero).
	Counting             bool      `json:"counting"`
	Since                time.Time `json:"since,omitzero"`
	MaxRequestsPerSecond float64   `json:"maxRequestsPerSecond"`
	CurrentLimit         float64   `json:"currentLimit"`
	RequestsPerSecond    float64   `json:"requestsPerSecond"`
	AccountQuota         float64   `json:"accountQuota"`
	Requests             int64     `json:"requests"`
	Throttles            int64     `json:"throttles"`
	// IssuedToday and IssuedThisMonth (UTC) are billable certificates:
	// those counted since the control plane started, or, when more, those
	// still held that were issued today / this month (Held*).
	IssuedToday         int64 `json:"issuedToday"`
	IssuedThisMonth     int64 `json:"issuedThisMonth"`
	HeldIssuedToday     int64 `json:"heldIssuedToday"`
	HeldIssuedThisMonth int64 `json:"heldIssuedThisMonth"`

	// The projection: Dataplanes × Month ÷ (RotateFraction × Lifetime)
	// certificates a month, each at PricePerCertificate.
	Dataplanes           int     `json:"dataplanes"`
	LifetimeSeconds      float64 `json:"lifetimeSeconds"`
	RotateFraction       float64 `json:"rotateFraction"`
	MonthSeconds         float64 `json:"monthSeconds"`
	CertsPerMonth        float64 `json:"projectedCertificatesPerMonth"`
	PricePerCertificate  float64 `json:"pricePerCertificate"`
	ProjectedMonthlyCost float64 `json:"projectedMonthlyCost"`
	Formula              string  `json:"formula"`
}

// Project computes the monthly certificate count and cost of a mesh of n
// data planes whose certificates live for lifetime.
func Project(n int, lifetime time.Duration, price float64) (certs, cost float64) {
	if n <= 0 || lifetime <= 0 {
		return 0, 0
	}
	certs = float64(n) * Month.Seconds() / (RotateFraction * lifetime.Seconds())
	return certs, certs * price
}

func (h *Handler) budgetView(ms identity.MeshState, sums []identity.DataplaneSummary, price float64) BudgetView {
	b := ms.Enabled
	life := b.CertExpiration()
	dataplanes := len(sums)
	v := BudgetView{Backend: b.Name, AccountQuota: DefaultAccountQuota, Dataplanes: dataplanes,
		LifetimeSeconds: life.Seconds(), RotateFraction: RotateFraction, MonthSeconds: Month.Seconds(), PricePerCertificate: price}
	var conf struct {
		Arn                  string   `json:"arn"`
		MaxRequestsPerSecond *float64 `json:"maxRequestsPerSecond"`
	}
	if json.Unmarshal(b.Conf, &conf) == nil {
		v.Arn = conf.Arn
	}
	v.MaxRequestsPerSecond = acmpca.DefaultMaxRequestsPerSecond
	if conf.MaxRequestsPerSecond != nil {
		v.MaxRequestsPerSecond = *conf.MaxRequestsPerSecond
	}
	v.CurrentLimit = v.MaxRequestsPerSecond
	if h.opts.Backends != nil {
		if be, err := h.opts.Backends.Get(b.Type); err == nil {
			if ur, ok := be.(acmpca.UsageReporter); ok {
				if u, ok := ur.Usage(ms.Name, b.Name); ok {
					v.Counting, v.Since = true, u.Since.UTC()
					v.MaxRequestsPerSecond, v.CurrentLimit, v.RequestsPerSecond = u.MaxRequestsPerSecond, u.CurrentLimit, u.RequestsPerSecond
					v.Requests, v.Throttles, v.IssuedToday, v.IssuedThisMonth = u.Requests, u.Throttles, u.IssuedToday, u.IssuedThisMonth
				}
			}
		}
	}
	// The counters live in memory since the control plane started; the
	// certificates still held were persisted. Those issued today or this
	// month are a floor the counts never go under, across restarts too.
	now := h.opts.Now().UTC()
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	for i := range sums {
		s := &sums[i]
		if s.Backend != b.Name || s.Serial == "" {
			continue
		}
		if !s.IssuedAt.Before(month) {
			v.HeldIssuedThisMonth++
			if !s.IssuedAt.Before(day) {
				v.HeldIssuedToday++
			}
		}
	}
	v.IssuedToday = max(v.IssuedToday, v.HeldIssuedToday)
	v.IssuedThisMonth = max(v.IssuedThisMonth, v.HeldIssuedThisMonth)
	v.CertsPerMonth, v.ProjectedMonthlyCost = Project(len(sums), life, price)
	v.Formula = fmt.Sprintf("%d data planes × %.0f s ÷ (%.2f × %.0f s) = %.1f certificates a month; × $%s = $%.2f",
		dataplanes, Month.Seconds(), RotateFraction, life.Seconds(), v.CertsPerMonth, formatPrice(price), v.ProjectedMonthlyCost)
	return v
}

func formatPrice(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) }

// priceParam reads ?pricePerCertificate= (USD), def when absent.
func priceParam(r *http.Request, def float64) (float64, error) {
	s := r.URL.Query().Get("pricePerCertificate")
	if s == "" {
		return def, nil
	}
	p, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(p) || math.IsInf(p, 0) || p < 0 || p > 1000 {
		return 0, apiserver.BadRequest("pricePerCertificate", fmt.Sprintf("must be a price in USD between 0 and 1000, got %q", s))
	}
	return p, nil
}

// BudgetAnswer is the answer of GET /gui/api/meshes/{mesh}/budget.
type BudgetAnswer struct {
	Now    time.Time   `json:"now"`
	Mesh   string      `json:"mesh"`
	Type   string      `json:"backendType"`
	Budget *BudgetView `json:"budget"`
}

func (h *Handler) budget(w http.ResponseWriter, r *http.Request) {
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
	out := BudgetAnswer{Now: h.opts.Now().UTC(), Mesh: ms.Name}
	if ms.MTLS {
		out.Type = ms.Enabled.Type
		if ms.Enabled.Type == acmpca.Type {
			b := h.budgetView(ms, h.opts.Source.Summaries(ms.Name), price)
			out.Budget = &b
		}
	}
	apiserver.WriteJSON(w, http.StatusOK, out)
}
