package cachefilter

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	sluicemetrics "github.com/sluicehq/sluice/internal/metrics"
)

// Values of the op label of sluice_cache_redis_errors_total and
// sluice_cache_redis_duration_seconds.
const (
	opLookup    = "lookup"    // Lookup's reads
	opPut       = "put"       // Put's write
	opPurge     = "purge"     // the Redis side of an invalidation or purge
	opPublish   = "publish"   // publishing an invalidation
	opAck       = "ack"       // acknowledging another replica's invalidation
	opRegistry  = "registry"  // the replica registry (heartbeats, purges reading it)
	opSubscribe = "subscribe" // the pub/sub connection
	opHot       = "hot"       // hot-key counting and HotKeys
	opDecode    = "decode"    // a value read from Redis did not decode (ErrCorrupt)
)

var allOps = []string{opLookup, opPut, opPurge, opPublish, opAck, opRegistry, opSubscribe, opHot, opDecode}

// Values of the kind label of sluice_cache_invalidations_total.
const (
	kindKeyLabel    = "key"
	kindTagLabel    = "tag"
	kindPrefixLabel = "prefix"
	kindTenantLabel = "tenant"
)

// Values of the result label of sluice_cache_invalidations_total.
const (
	resultOK          = "ok"          // done in Redis and acknowledged by every replica
	resultUnconfirmed = "unconfirmed" // done in Redis; some replica did not acknowledge in time
	resultError       = "error"       // Redis failed: not done yet (the local L1 was invalidated; kept for retry)
	resultRetried     = "retried"     // a pending invalidation done in Redis by a later retry
	resultDropped     = "dropped"     // Redis failed and no room was left to keep it for retry
	resultApplied     = "applied"     // received from another replica and applied to this L1
)

// Values of the result label of sluice_cache_collapsed_total.
const (
	collapseServed   = "served"   // a follower got the entry its leader stored
	collapseReleased = "released" // a follower was released to go upstream itself
)

// metrics are a Store's collectors. They exist (and count) even when no registry is given.
type metrics struct {
	requests      *prometheus.CounterVec
	byLayer       [3]prometheus.Counter // requests by Layer, resolved once
	racedPuts     prometheus.Counter
	l1Bytes       prometheus.GaugeFunc
	l1Entries     prometheus.GaugeFunc
	l1Trusted     prometheus.GaugeFunc
	evictions     prometheus.Counter
	redisErrors   *prometheus.CounterVec
	redisDuration *prometheus.HistogramVec
	breakerOpen   prometheus.Gauge
	invalidations *prometheus.CounterVec
	collapsed     *prometheus.CounterVec

	registration *sluicemetrics.Registration
}

func newMetrics(reg prometheus.Registerer, l1Bytes, l1Entries, l1Trusted func() float64) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_cache_requests_total",
			Help: "Cache lookups by the layer that answered: l1, l2, or miss.",
		}, []string{"layer"}),
		racedPuts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_cache_raced_puts_total",
			Help: "Responses not stored because an invalidation covering them (key, tag, path prefix or tenant) arrived while they were fetched.",
		}),
		l1Bytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_cache_l1_bytes",
			Help: "Weighed bytes held by the in-process cache (entry sizes plus per-item bookkeeping).",
		}, l1Bytes),
		l1Entries: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_cache_l1_entries",
			Help: "Items (entries and Vary records) held by the in-process cache.",
		}, l1Entries),
		l1Trusted: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_cache_l1_trusted",
			Help: "1 while the invalidation subscription is proven live and the in-process cache is served, else 0.",
		}, l1Trusted),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_cache_evictions_total",
			Help: "Items evicted from the in-process cache to stay within its byte bound.",
		}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_cache_redis_errors_total",
			Help: "Cache operations that got no usable answer from Redis (including calls skipped while the circuit breaker is open), by operation.",
		}, []string{"op"}),
		redisDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_cache_redis_duration_seconds",
			Help: "Time of one cache round trip to Redis, by operation.",
			// A local Redis answers in well under 1ms; Lookup and Put give up at 20ms by default.
			Buckets:                        []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .02, .05, .1, .5},
			NativeHistogramBucketFactor:    1.1,
			NativeHistogramMaxBucketNumber: 100,
		}, []string{"op"}),
		breakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_cache_breaker_open",
			Help: "1 while the circuit breaker in front of the cache's Redis is open, else 0.",
		}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_cache_invalidations_total",
			Help: "Invalidations and purges by kind (key, tag, prefix, tenant) and result (ok, unconfirmed, error; applied: received from another replica).",
		}, []string{"kind", "result"}),
		collapsed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_cache_collapsed_total",
			Help: "Requests that waited for another request's upstream fetch of the same key instead of fetching, by result: served (got its entry) or released (went upstream after all).",
		}, []string{"result"}),
	}
	// Export zeros, so that rate() works from the first event.
	for _, l := range []Layer{Miss, L1, L2} {
		m.byLayer[l] = m.requests.WithLabelValues(l.String())
	}
	for _, op := range allOps {
		m.redisErrors.WithLabelValues(op)
	}
	for _, k := range []string{kindKeyLabel, kindTagLabel, kindPrefixLabel, kindTenantLabel} {
		for _, r := range []string{resultOK, resultUnconfirmed, resultError, resultRetried, resultDropped, resultApplied} {
			m.invalidations.WithLabelValues(k, r)
		}
	}
	m.collapsed.WithLabelValues(collapseServed)
	m.collapsed.WithLabelValues(collapseReleased)
	r, err := sluicemetrics.RegisterAll(reg, m.requests, m.racedPuts, m.l1Bytes, m.l1Entries, m.l1Trusted, m.evictions,
		m.redisErrors, m.redisDuration, m.breakerOpen, m.invalidations, m.collapsed)
	if err != nil {
		return nil, fmt.Errorf("cachefilter: register metrics: %w", err)
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
