package postgres

import "github.com/prometheus/client_golang/prometheus"

// metrics of the listener (how often it reconnected and how much it had to
// catch up on) and of group commit.
type metrics struct {
	bulkRetries prometheus.Counter
	reconnects  prometheus.Counter
	caughtUp    prometheus.Counter
	lastCatchUp prometheus.Gauge
	lost        prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		bulkRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshca_store_group_commit_retries_total",
			Help: "Groups of commits the PostgreSQL store did again call by call (each in a savepoint) after the database refused them as one (a concurrent create of the same record, a lock wait too long).",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshca_store_listener_reconnects_total",
			Help: "Times the PostgreSQL store's change listener reconnected after losing its connection.",
		}),
		caughtUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshca_store_listener_catchup_events_total",
			Help: "Change events the listener delivered from the changes table after reconnecting (missed while away).",
		}),
		lastCatchUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshca_store_listener_last_catchup_events",
			Help: "Change events delivered by the listener's last catch-up.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshca_store_listener_lost_commits_total",
			Help: "Commits the listener could not deliver: it was away longer than the changes table keeps them.",
		}),
	}
}

// Collectors returns the store's metrics, for the control plane's registry.
func (s *Store) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.m.bulkRetries, s.m.reconnects, s.m.caughtUp, s.m.lastCatchUp, s.m.lost}
}
