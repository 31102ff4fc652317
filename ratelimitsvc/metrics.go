package ratelimitsvc

import (
	"errors"
	"sync"
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

	// The children decisions are counted in, per configured limit: looking
	// them up by label values costs more than the rest of a decision's
	// accounting. Emptied when the rules change (SetRules).
	byLimit     sync.Map // *Limit -> *[len(decisionCodes)]prometheus.Counter
	okDuration  prometheus.Observer
	badDuration prometheus.Observer
}

// decisionCodes are the values of the code label, in the order of byLimit's arrays.
var decisionCodes = [...]string{codeOK, codeNear, codeOver, codeShadow, codeFailOpen, codeFailClosed}

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
	m.okDuration = m.duration.WithLabelValues("ok")
	m.badDuration = m.duration.WithLabelValues("invalid")
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

// decision counts one decision of limit l (labelled rule) in domain. The
// limits of a descriptor's override are made per request: they are looked up
// by label values every time, not remembered.
func (m *metrics) decision(domain string, l *Limit, rule, code string) {
	if l.override {
		m.decisions.WithLabelValues(domain, rule, code).Inc()
		return
	}
	i := 0
	for decisionCodes[i] != code {
		i++
	}
	v, ok := m.byLimit.Load(l)
	if !ok {
		var cs [len(decisionCodes)]prometheus.Counter
		for j, c := range decisionCodes {
			cs[j] = m.decisions.WithLabelValues(domain, rule, c)
		}
		v, _ = m.byLimit.LoadOrStore(l, &cs)
	}
	v.(*[len(decisionCodes)]prometheus.Counter)[i].Inc()
}

// rulesChanged forgets the counters of the limits of the rules replaced.
func (m *metrics) rulesChanged() { m.byLimit.Clear() }

func (m *metrics) degradedCall(domain, mode string) {
	m.degraded.WithLabelValues(domain, mode).Inc()
}

func (m *metrics) observe(d time.Duration, err error) {
	if err != nil {
		m.badDuration.Observe(d.Seconds())
		return
	}
	m.okDuration.Observe(d.Seconds())
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
