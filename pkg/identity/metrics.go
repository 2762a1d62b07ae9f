package identity

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	issued  *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// stateCollector reports data planes by certificate state and the earliest
// expiry, computed at scrape time from the manager's state.
type stateCollector struct {
	mg       *Manager
	byState  *prometheus.Desc
	earliest *prometheus.Desc
}

func newMetrics(mg *Manager, reg prometheus.Registerer) *metrics {
	m := &metrics{
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshca_certificates_issued_total",
			Help: "Data-plane certificate issuances by backend type and result (success or error).",
		}, []string{"backend_type", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshca_certificate_issue_duration_seconds",
			Help:    "Time to obtain one data-plane certificate, key generation to persisted result.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"backend_type"}),
	}
	if reg != nil {
		reg.MustRegister(m.issued, m.latency, &stateCollector{
			mg:       mg,
			byState:  prometheus.NewDesc("meshca_dataplanes_by_cert_state", "Data planes by certificate state: valid, expired, missing, failing (last issuance failed).", []string{"state"}, nil),
			earliest: prometheus.NewDesc("meshca_cert_earliest_expiry_seconds", "Seconds until the earliest data-plane certificate expires (negative if one has).", nil, nil),
		})
	}
	return m
}

func (m *metrics) observe(backendType string, err error, d time.Duration) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.issued.WithLabelValues(backendType, result).Inc()
	m.latency.WithLabelValues(backendType).Observe(d.Seconds())
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.byState
	ch <- c.earliest
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{"valid": 0, "expired": 0, "missing": 0, "failing": 0}
	var earliest time.Time
	mg := c.mg
	now := mg.opts.Now()
	mg.mu.Lock()
	for _, st := range mg.dps {
		if st.dp == nil {
			continue
		}
		switch {
		case !st.cur.issued():
			counts["missing"]++
		case !now.Before(st.cur.rec.NotAfter):
			counts["expired"]++
		case st.lastErr != "":
			counts["failing"]++
		default:
			counts["valid"]++
		}
		if st.cur.issued() && (earliest.IsZero() || st.cur.rec.NotAfter.Before(earliest)) {
			earliest = st.cur.rec.NotAfter
		}
	}
	mg.mu.Unlock()
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.byState, prometheus.GaugeValue, float64(n), s)
	}
	if !earliest.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.earliest, prometheus.GaugeValue, earliest.Sub(now).Seconds())
	}
}
