package limiter

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	sluicemetrics "github.com/sluicehq/sluice/internal/metrics"
)

// Values of the reason label of sluice_ratelimit_redis_errors_total.
const (
	reasonTimeout     = "timeout"     // Config.Timeout passed before Redis answered
	reasonUnavailable = "unavailable" // the breaker was open: Redis was not called
	reasonError       = "error"       // anything else: connection errors, error replies
)

// Values of the mode label of sluice_ratelimit_hot_keys.
const (
	modeLease = "lease" // its rule allows lease mode: decided from leases while hot
	modeExact = "exact" // decided exactly all the same
)

// Values of the reason label of sluice_ratelimit_lease_calls_total.
const (
	leaseNeed   = "need"   // a decision found no lease (a new key, or one used faster than renewed) and waited
	leaseRenew  = "renew"  // a background renewal
	leaseReturn = "return" // an idle key, or Close, gave its lease back
)

// metrics are a Limiter's collectors. They exist (and count) even when no registry is given.
type metrics struct {
	duration    prometheus.Histogram
	errors      *prometheus.CounterVec
	cacheHits   prometheus.Counter
	breakerOpen prometheus.Gauge
	hotKeys     *prometheus.GaugeVec
	leases      prometheus.Gauge
	leaseCalls  *prometheus.CounterVec

	registration *sluicemetrics.Registration
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sluice_ratelimit_redis_duration_seconds",
			Help: "Time of one rate-limit round trip to Redis (one script call, or one pipeline on a cluster).",
			// Classic buckets from 100µs to 100ms: a local Redis answers in well under 1ms, and
			// Envoy gives up at 20ms. Native buckets grow by 10%.
			Buckets:                        []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .02, .05, .1},
			NativeHistogramBucketFactor:    1.1,
			NativeHistogramMaxBucketNumber: 100,
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_ratelimit_redis_errors_total",
			Help: "Rate-limit calls that got no answer from Redis, by reason: timeout, unavailable (circuit breaker open), error.",
		}, []string{"reason"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_ratelimit_local_cache_hits_total",
			Help: "Rate-limit calls denied from the local over-limit cache without asking Redis.",
		}),
		breakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_ratelimit_breaker_open",
			Help: "1 while the circuit breaker in front of Redis is open, else 0.",
		}),
		hotKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_ratelimit_hot_keys",
			Help: "Counters this replica decides exactly at or above the hot-key threshold (decisions per second), by mode: lease (their rule allows lease mode, which decides them while hot) or exact.",
		}, []string{"mode"}),
		leases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_ratelimit_leases",
			Help: "Counters this replica keeps lease state for (lease mode).",
		}),
		leaseCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_ratelimit_lease_calls_total",
			Help: "Lease calls to Redis by reason: need (a decision waited for a lease), renew (in the background), return (an idle key gave its lease back).",
		}, []string{"reason"}),
	}
	for _, r := range []string{reasonTimeout, reasonUnavailable, reasonError} {
		m.errors.WithLabelValues(r) // export zeros, so rate() works from the first error
	}
	for _, r := range []string{leaseNeed, leaseRenew, leaseReturn} {
		m.leaseCalls.WithLabelValues(r)
	}
	for _, mode := range []string{modeLease, modeExact} {
		m.hotKeys.WithLabelValues(mode)
	}
	r, err := sluicemetrics.RegisterAll(reg, m.duration, m.errors, m.cacheHits, m.breakerOpen, m.hotKeys, m.leases, m.leaseCalls)
	if err != nil {
		return nil, fmt.Errorf("limiter: register metrics: %w", err)
	}
	m.registration = r
	return m, nil
}

// unregister removes the collectors, so a later instance may register again.
func (m *metrics) unregister() {
	if m != nil {
		m.registration.Unregister()
	}
}
