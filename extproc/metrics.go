package extproc

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics. Every label is bounded: route names come from the config, methods
// from a fixed list, status classes are 1xx-5xx or "none", and at most
// metrics.max_tiers tier values are reported (later ones as "other").
//
// Latency percentiles come from the histograms (native histograms where
// the scraper supports them, classic buckets otherwise):
//
//	# p95 per route, native histogram
//	histogram_quantile(0.95, sum by (route) (rate(sluice_http_request_duration_seconds[5m])))
//	# p99 per route, classic buckets
//	histogram_quantile(0.99, sum by (route, le) (rate(sluice_http_request_duration_seconds_bucket[5m])))
//	# p50 upstream time per tier
//	histogram_quantile(0.5, sum by (tier, le) (rate(sluice_http_upstream_duration_seconds_bucket[5m])))
//
// There is no separate error counter: the error rate is derived from
// status_class (5xx are errors; "none" are requests whose stream ended
// before a response, such as client disconnects):
//
//	sum by (route) (rate(sluice_http_requests_total{status_class="5xx"}[5m]))
//	  / sum by (route) (rate(sluice_http_requests_total[5m]))
type httpMetrics struct {
	requests *prometheus.CounterVec   // route, method, status_class, tier
	duration *prometheus.HistogramVec // route, method, status_class, tier
	upstream *prometheus.HistogramVec // route, tier
	slow     *prometheus.CounterVec   // route
}

// serverMetrics are about streams rather than requests.
type serverMetrics struct {
	// streams counts ended streams by result: ok, immediate_response,
	// response_only, cancelled, protocol_error, body_too_large,
	// message_too_large, stage_error.
	streams  *prometheus.CounterVec
	children sync.Map // result → prometheus.Counter of streams, looked up once
}

// ended counts a stream that ended with result (one of the few listed on streams).
func (sm *serverMetrics) ended(result string) {
	if c, ok := sm.children.Load(result); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c, _ := sm.children.LoadOrStore(result, sm.streams.WithLabelValues(result))
	c.(prometheus.Counter).Inc()
}

// Buckets for the classic histograms: from 1 ms to 30 s.
var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newMetrics(reg prometheus.Registerer, active func() float64) (*serverMetrics, *httpMetrics, error) {
	hist := func(name, help string, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            name,
			Help:                            help,
			Buckets:                         durationBuckets,
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  100,
			NativeHistogramMinResetDuration: time.Hour,
		}, labels)
	}
	sm := &serverMetrics{
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_extproc_streams_total",
			Help: "Ended ext_proc streams by result: ok, immediate_response, response_only, cancelled, protocol_error, body_too_large, message_too_large, stage_error, overloaded (refused: max_streams open).",
		}, []string{"result"}),
	}
	hm := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_http_requests_total",
			Help: "HTTP requests seen by ext_proc, by configured route, method, status class (none: no response seen) and tier.",
		}, []string{"route", "method", "status_class", "tier"}),
		duration: hist("sluice_http_request_duration_seconds",
			"From the request headers to the last response message ext_proc sees (response headers, or the last body chunk when the body is processed) or the immediate response.",
			"route", "method", "status_class", "tier"),
		upstream: hist("sluice_http_upstream_duration_seconds",
			"From the request headers to the response headers, as ext_proc sees them: the filters after ext_proc, the upstream and the request body transfer.",
			"route", "tier"),
		slow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_http_slow_requests_total",
			Help: "Requests slower than metrics.slow_threshold.",
		}, []string{"route"}),
	}
	if reg == nil {
		return sm, hm, nil
	}
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_extproc_streams_open",
		Help: "ext_proc streams open now (bounded by extproc.max_streams).",
	}, active)
	for _, c := range []prometheus.Collector{sm.streams, open, hm.requests, hm.duration, hm.upstream, hm.slow} {
		if err := reg.Register(c); err != nil {
			return nil, nil, errors.Join(errors.New("extproc: register metrics"), err)
		}
	}
	return sm, hm, nil
}

// metricsStage records one request's metrics when its stream ends. It is
// the last stage, so it sees the final status (including a cache hit's
// immediate response) and identity.
type metricsStage struct {
	m       *httpMetrics
	series  sync.Map // seriesKey → *requestSeries: the vectors' children, looked up once
	log     *slog.Logger
	now     func() time.Time
	slow    time.Duration // <= 0 disables
	tiers   *boundedLabels
	slowLog *rateGate
}

var (
	_ DoneHook = (*metricsStage)(nil)
	_ Stage    = (*metricsStage)(nil)
)

func newMetricsStage(cfg MetricsConfig, m *httpMetrics, log *slog.Logger, now func() time.Time) *metricsStage {
	return &metricsStage{
		m:       m,
		log:     log,
		now:     now,
		slow:    cfg.SlowThreshold,
		tiers:   newBoundedLabels(cfg.MaxTiers),
		slowLog: newRateGate(cfg.SlowLogPerSecond, now),
	}
}

func (*metricsStage) Name() string { return "metrics" }

// seriesKey is the labels of one request's series.
type seriesKey struct{ route, method, class, tier string }

// requestSeries are the children of the request vectors for one seriesKey. Every label is
// bounded, so there are as many of them as series.
type requestSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
	// upstream is created with the first request that saw a response, so that
	// a route answered only from the cache shows no empty upstream series.
	upstream atomic.Pointer[prometheus.Observer]
}

// seriesFor returns the children for k: one map lookup instead of three WithLabelValues
// (each hashing and checking its label values) per request.
func (ms *metricsStage) seriesFor(k seriesKey) *requestSeries {
	if v, ok := ms.series.Load(k); ok {
		return v.(*requestSeries)
	}
	rs := &requestSeries{
		requests: ms.m.requests.WithLabelValues(k.route, k.method, k.class, k.tier),
		duration: ms.m.duration.WithLabelValues(k.route, k.method, k.class, k.tier),
	}
	v, _ := ms.series.LoadOrStore(k, rs)
	return v.(*requestSeries)
}

// upstreamFor returns the upstream child of rs, whose labels are k's route and tier.
func (ms *metricsStage) upstreamFor(rs *requestSeries, k seriesKey) prometheus.Observer {
	if o := rs.upstream.Load(); o != nil {
		return *o
	}
	o := ms.m.upstream.WithLabelValues(k.route, k.tier)
	rs.upstream.Store(&o)
	return o
}

func (ms *metricsStage) Done(ctx context.Context, x *Exchange) {
	method := methodLabel(x.Method)
	class := statusClass(x.ResponseStatus)
	t := ms.tiers.label(x.Tier)
	d := x.End.Sub(x.Start)
	k := seriesKey{x.Route, method, class, t}
	rs := ms.seriesFor(k)
	rs.requests.Inc()
	rs.duration.Observe(d.Seconds())
	var up time.Duration
	if !x.ResponseStart.IsZero() {
		up = x.ResponseStart.Sub(x.Start)
		ms.upstreamFor(rs, k).Observe(up.Seconds())
	}
	if ms.slow > 0 && d > ms.slow {
		ms.m.slow.WithLabelValues(x.Route).Inc()
		if ms.slowLog.allow() {
			attrs := []slog.Attr{
				slog.String("route", x.Route),
				slog.String("method", method),
				slog.Int("status", x.ResponseStatus),
				slog.String("tenant", x.Tenant),
				slog.String("tier", x.Tier),
				slog.Duration("duration", d),
				slog.Duration("threshold", ms.slow),
			}
			if up > 0 {
				attrs = append(attrs, slog.Duration("upstream", up))
			}
			if stage, ok := x.Responded(); ok {
				attrs = append(attrs, slog.String("responded_by", stage))
			}
			// x-request-id is generated by Envoy's HCM; a client-sent one
			// is bounded and only logged if it looks like an id.
			if id := x.RequestHeaders.Get("x-request-id"); validValue(id, 128) {
				attrs = append(attrs, slog.String("request_id", id))
			}
			ms.log.LogAttrs(ctx, slog.LevelWarn, "slow request", attrs...)
		}
	}
}

// methodLabel keeps the standard methods (RFC 9110 and PATCH) and folds
// everything else into OTHER.
func methodLabel(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		return m
	}
	return "OTHER"
}

var statusClasses = [...]string{"none", "1xx", "2xx", "3xx", "4xx", "5xx"}

func statusClass(code int) string {
	if c := code / 100; c >= 1 && c <= 5 {
		return statusClasses[c]
	}
	return statusClasses[0]
}

// boundedLabels admits up to limit distinct values and maps the rest to
// "other", so a tier store returning surprising values cannot grow the
// series without bound. Safe for concurrent use.
type boundedLabels struct {
	limit int
	seen  sync.Map   // string → struct{}; read lock-free on the hot path
	mu    sync.Mutex // guards n and insertions into seen
	n     int        // values admitted
}

func newBoundedLabels(limit int) *boundedLabels { return &boundedLabels{limit: limit} }

func (b *boundedLabels) label(v string) string {
	if v == "" {
		return "none"
	}
	if _, ok := b.seen.Load(v); ok {
		return v
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen.Load(v); ok {
		return v
	}
	if b.n >= b.limit {
		return "other"
	}
	b.n++
	b.seen.Store(v, struct{}{})
	return v
}

// rateGate allows up to perSecond events per wall-clock second, to keep a
// slow-request storm from flooding the log. Safe for concurrent use.
type rateGate struct {
	perSecond int64
	now       func() time.Time
	window    atomic.Int64 // current second (Unix)
	count     atomic.Int64 // events allowed in window
}

func newRateGate(perSecond int, now func() time.Time) *rateGate {
	return &rateGate{perSecond: int64(perSecond), now: now}
}

func (g *rateGate) allow() bool {
	if g.perSecond <= 0 {
		return false
	}
	sec := g.now().Unix()
	if w := g.window.Load(); w != sec && g.window.CompareAndSwap(w, sec) {
		g.count.Store(0)
	}
	return g.count.Add(1) <= g.perSecond
}
