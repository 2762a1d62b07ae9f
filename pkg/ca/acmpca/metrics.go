package acmpca

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are created per backend by New and exposed through
// (*Backend).Collectors; nothing is registered globally.
type metrics struct {
	requests      *prometheus.CounterVec
	throttles     *prometheus.CounterVec
	issueDuration *prometheus.HistogramVec
	budgetWait    prometheus.Histogram
	issued        prometheus.Counter
	inFlight      prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshca_acmpca_requests_total",
			Help: "ACM PCA API requests (each SDK attempt, retries included) by operation and outcome (ok or the AWS error code).",
		}, []string{"operation", "outcome"}),
		throttles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshca_acmpca_throttles_total",
			Help: "ACM PCA requests answered with a throttling error, by operation.",
		}, []string{"operation"}),
		issueDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshca_acmpca_issue_duration_seconds",
			Help:    "Time to obtain one data-plane certificate from ACM PCA (rate-limit waits included), by outcome.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60},
		}, []string{"outcome"}),
		budgetWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshca_acmpca_rate_limit_wait_seconds",
			Help:    "Time ACM PCA requests waited for the backend's client-side request budget.",
			Buckets: []float64{.001, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshca_acmpca_certificates_issued_total",
			Help: "Certificates issued by ACM PCA for this control plane (billable; idempotent replays are not counted).",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshca_acmpca_issues_in_flight",
			Help: "Issuances currently holding a conf.maxConcurrentIssues slot.",
		}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.throttles, m.issueDuration, m.budgetWait, m.issued, m.inFlight}
}
