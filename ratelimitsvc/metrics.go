package ratelimitsvc

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus series. Labels are bounded: domains
// and rules come from the loaded config, never from request values.
type metrics struct {
	decisions *prometheus.CounterVec   // domain, rule, code
	degraded  *prometheus.CounterVec   // domain, mode
	duration  *prometheus.HistogramVec // result
	reloads   *prometheus.CounterVec   // result
	lastLoad  prometheus.Gauge
	limits    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_ratelimit_decisions_total",
			Help: "Rate limit decisions per configured limit: code is ok, near_limit, over_limit, shadow, fail_open or fail_closed.",
		}, []string{"domain", "rule", "code"}),
		degraded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_ratelimit_degraded_total",
			Help: "ShouldRateLimit calls answered without Redis (mode fail_open or fail_closed).",
		}, []string{"domain", "mode"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                           "sluice_ratelimit_request_duration_seconds",
			Help:                           "Time to answer one ShouldRateLimit call.",
			Buckets:                        []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .02, .05, .1},
			NativeHistogramBucketFactor:    1.1,
			NativeHistogramMaxBucketNumber: 100,
		}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_ratelimit_config_reloads_total",
			Help: "Rate limit rule loads by result (success or error); an error keeps the previous rules.",
		}, []string{"result"}),
		lastLoad: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_ratelimit_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful rule load.",
		}),
		limits: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_ratelimit_config_domains",
			Help: "Domains in the rules in force.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.decisions, m.degraded, m.duration, m.reloads, m.lastLoad, m.limits} {
		if err := reg.Register(c); err != nil {
			return nil, errors.Join(errors.New("ratelimit: register metrics"), err)
		}
	}
	return m, nil
}

func (m *metrics) decision(domain, rule, code string) {
	m.decisions.WithLabelValues(domain, rule, code).Inc()
}

func (m *metrics) degradedCall(domain, mode string) {
	m.degraded.WithLabelValues(domain, mode).Inc()
}

func (m *metrics) observe(d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "invalid"
	}
	m.duration.WithLabelValues(result).Observe(d.Seconds())
}

func (m *metrics) reload(ok bool, domains int, now time.Time) {
	if !ok {
		m.reloads.WithLabelValues("error").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.lastLoad.Set(float64(now.UnixNano()) / 1e9)
	m.limits.Set(float64(domains))
}
