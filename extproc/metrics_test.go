package extproc_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicehq/sluice/extproc"
	xt "github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/header"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/tier"
)

func TestMetrics(t *testing.T) {
	cfg := extproc.Config{Metrics: extproc.MetricsConfig{
		Routes: []extproc.Route{
			{Name: "users", Prefix: "/v1/users"},
			{Name: "health", Path: "/healthz"},
		},
		SlowThreshold: time.Second,
		MaxTiers:      2,
	}}
	tiers := tier.Static{"acme": "pro", "globex": "enterprise", "initech": "basic"}
	cache := &probe{name: "cache", requestHeaders: func(_ context.Context, x *extproc.Exchange) error {
		if x.Path == "/v1/users/cached" {
			x.Respond(200, header.List{{Name: "content-type", Value: "application/json"}}, []byte("{}"))
		}
		return nil
	}}
	h := newHarness(t, cfg, harnessOpts{tiers: tiers, stages: []extproc.Stage{cache}})

	type step struct {
		method, path, tenant string
		wait                 time.Duration // before the response headers (or the cancel)
		status               int           // 0: cancel instead of a response
	}
	steps := []step{
		{method: "GET", path: "/v1/users/7?expand=1", tenant: "acme", wait: 150 * time.Millisecond, status: 200},
		{method: "PROPFIND", path: "/healthz", tenant: "globex", wait: 2 * time.Second, status: 503},
		{method: "GET", path: "/elsewhere", tenant: "initech", wait: 10 * time.Millisecond, status: 0},
	}
	for i, st := range steps {
		s := h.open(t)
		if _, err := s.Do(xt.RequestHeaders(st.method, st.path, true, "x-tenant-id", st.tenant, "x-request-id", "req-1")); err != nil {
			t.Fatal(err)
		}
		h.clock.Advance(st.wait)
		if st.status == 0 {
			s.Cancel()
			h.waitStreams(t, "cancelled", 1)
			continue
		}
		if _, err := s.Do(xt.ResponseHeaders(st.status, false)); err != nil {
			t.Fatal(err)
		}
		if err := s.Finish(); err != nil {
			t.Fatal(err)
		}
		h.waitStreams(t, "ok", float64(i+1))
	}
	// A cache hit: an immediate response at request headers.
	s := h.open(t)
	if err := s.Send(xt.RequestHeaders("GET", "/v1/users/cached", true, "x-tenant-id", "acme")); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
	h.waitStreams(t, "immediate_response", 1)

	const want = `
# HELP sluice_http_requests_total HTTP requests seen by ext_proc, by configured route, method, status class (none: no response seen) and tier.
# TYPE sluice_http_requests_total counter
sluice_http_requests_total{method="GET",route="other",status_class="none",tier="other"} 1
sluice_http_requests_total{method="GET",route="users",status_class="2xx",tier="pro"} 2
sluice_http_requests_total{method="OTHER",route="health",status_class="5xx",tier="enterprise"} 1
# HELP sluice_http_slow_requests_total Requests slower than metrics.slow_threshold.
# TYPE sluice_http_slow_requests_total counter
sluice_http_slow_requests_total{route="health"} 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want),
		"sluice_http_requests_total", "sluice_http_slow_requests_total"); err != nil {
		t.Error(err)
	}

	tests := []struct {
		name      string
		metric    string
		labels    map[string]string
		wantCount uint64
		wantSum   float64
	}{
		{name: "duration users 2xx", metric: "sluice_http_request_duration_seconds",
			labels:    map[string]string{"route": "users", "method": "GET", "status_class": "2xx", "tier": "pro"},
			wantCount: 2, wantSum: 0.15},
		{name: "duration health 5xx", metric: "sluice_http_request_duration_seconds",
			labels:    map[string]string{"route": "health", "method": "OTHER", "status_class": "5xx", "tier": "enterprise"},
			wantCount: 1, wantSum: 2},
		{name: "duration cancelled", metric: "sluice_http_request_duration_seconds",
			labels:    map[string]string{"route": "other", "method": "GET", "status_class": "none", "tier": "other"},
			wantCount: 1, wantSum: 0.01},
		{name: "upstream users: the cache hit has none", metric: "sluice_http_upstream_duration_seconds",
			labels:    map[string]string{"route": "users", "tier": "pro"},
			wantCount: 1, wantSum: 0.15},
		{name: "upstream health", metric: "sluice_http_upstream_duration_seconds",
			labels:    map[string]string{"route": "health", "tier": "enterprise"},
			wantCount: 1, wantSum: 2},
		{name: "no upstream without response", metric: "sluice_http_upstream_duration_seconds",
			labels:    map[string]string{"route": "other", "tier": "other"},
			wantCount: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			count, sum, native := histogram(t, h.reg, tt.metric, tt.labels)
			if count != tt.wantCount || math.Abs(sum-tt.wantSum) > 1e-9 {
				t.Fatalf("count %d sum %v, want %d %v", count, sum, tt.wantCount, tt.wantSum)
			}
			if count > 0 && !native {
				t.Fatal("no native histogram buckets")
			}
		})
	}

	lines := h.logs.lines(t, "slow request")
	if len(lines) != 1 {
		t.Fatalf("slow request log lines: %v", lines)
	}
	l := lines[0]
	if l["route"] != "health" || l["tenant"] != "globex" || l["status"] != float64(503) || l["request_id"] != "req-1" || l["level"] != "WARN" {
		t.Fatalf("slow request line %v", l)
	}
}

// histogram returns the sample count and sum of the histogram name{labels}
// registered on reg, and whether it has native buckets.
func histogram(t testing.TB, reg *metricstest.Registry, name string, labels map[string]string) (uint64, float64, bool) {
	t.Helper()
	hh := reg.Histogram(t, name, labels)
	return hh.GetSampleCount(), hh.GetSampleSum(), len(hh.GetPositiveSpan()) > 0 || hh.GetZeroCount() > 0
}

func TestSlowLogIsRateLimited(t *testing.T) {
	cfg := extproc.Config{Metrics: extproc.MetricsConfig{SlowThreshold: 100 * time.Millisecond, SlowLogPerSecond: 2}}
	h := newHarness(t, cfg, harnessOpts{})
	for i := range 5 {
		s := h.open(t)
		if _, err := s.Do(xt.RequestHeaders("GET", "/", true)); err != nil {
			t.Fatal(err)
		}
		h.clock.Advance(200 * time.Millisecond)
		if _, err := s.Do(xt.ResponseHeaders(200, true)); err != nil {
			t.Fatal(err)
		}
		if err := s.Finish(); err != nil {
			t.Fatal(err)
		}
		h.waitStreams(t, "ok", float64(i+1))
	}
	// The clock moved 1 s over the 5 requests: at most 2 lines per second.
	if n := len(h.logs.lines(t, "slow request")); n < 2 || n > 4 {
		t.Fatalf("%d slow request lines, want 2 per simulated second", n)
	}
	if got := counter(t, h.reg, "sluice_http_slow_requests_total", map[string]string{"route": "other"}); got != 5 {
		t.Fatalf("slow_requests_total = %v, want every one counted", got)
	}
}
