package tokenreview

import "github.com/prometheus/client_golang/prometheus"

// Results of a review, the label of meshca_sds_token_reviews_total.
const (
	resultAuthenticated = "authenticated"
	resultRefused       = "refused"
	resultError         = "error"
)

type metrics struct {
	reviews   *prometheus.CounterVec
	cacheHits prometheus.Counter
	latency   prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshca_sds_token_reviews_total",
			Help: "ServiceAccount tokens of data planes sent to the Kubernetes API server (TokenReview), by result: authenticated (a ServiceAccount; its namespace is checked after), refused (not a valid ServiceAccount token), error (the API server not reached or refusing the control plane).",
		}, []string{"result"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshca_sds_token_review_cache_hits_total",
			Help: "ServiceAccount token verifications answered from the cache of positive reviews, without asking the API server.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshca_sds_token_review_seconds",
			Help:    "Time the Kubernetes API server took to answer a TokenReview.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
	}
	for _, r := range []string{resultAuthenticated, resultRefused, resultError} {
		m.reviews.WithLabelValues(r)
	}
	return m
}

// Collectors returns the authenticator's metrics.
func (a *Authenticator) Collectors() []prometheus.Collector {
	return []prometheus.Collector{a.m.reviews, a.m.cacheHits, a.m.latency}
}
