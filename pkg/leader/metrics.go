package leader

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	leader  prometheus.Gauge
	term    prometheus.Gauge
	changes prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshca_leader",
			Help: "1 while this instance is the leader (issues and rotates certificates), else 0.",
		}),
		term: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshca_leader_term",
			Help: "The last leader term this instance started (0 when alone on its store).",
		}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshca_leader_changes_total",
			Help: "Times this instance became or stopped being the leader.",
		}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.leader, m.term, m.changes}
}
