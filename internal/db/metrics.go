package db

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	queries   *prometheus.CounterVec // by pool: primary, replica
	lag       prometheus.Gauge
	healthy   prometheus.Gauge
	fallbacks prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_db_queries_total",
			Help: "Queries sent to PostgreSQL, by pool (primary or replica).",
		}, []string{"pool"}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_db_replica_lag_seconds",
			Help: "Replay lag of the read replica at the last check (0 when caught up or not a standby).",
		}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_db_replica_in_use",
			Help: "1 when reads go to the replica, 0 when they fall back to the primary.",
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_db_replica_fallbacks_total",
			Help: "Reads that failed on the replica and were served by the primary.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.queries, m.lag, m.healthy, m.fallbacks} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// queryCounter is a pgx.QueryTracer that counts every Query, QueryRow and Exec
// of one pool.
type queryCounter struct{ c prometheus.Counter }

func (q queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	q.c.Inc()
	return ctx
}

func (queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
