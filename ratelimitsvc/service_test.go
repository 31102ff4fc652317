package ratelimitsvc_test

import (
	"context"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

const testRules = `
domain: api
descriptors:
  - key: tier
    value: free
    descriptors:
      - key: tenant_id
        rate_limit: {unit: hour, requests_per_unit: 3}
  - key: tier
    value: pro
    descriptors:
      - key: tenant_id
        rate_limits:
          - {name: pro_burst, unit: hour, requests_per_unit: 5}
          - {name: pro_daily, unit: day, requests_per_unit: 7}
  - key: shadowed
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: internal
    rate_limit: {unlimited: true}
  - key: path
    value: /login
    rate_limit: {name: login, unit: hour, requests_per_unit: 2}
  - key: path
    value: /login-vip
    rate_limit:
      unit: hour
      requests_per_unit: 100
      replaces: [{name: login}]
  - key: fixed
    rate_limit: {unit: hour, requests_per_unit: 2, algorithm: fixed_window}
---
`

const closedDomain = `
domain: strict
failure_mode_deny: true
descriptors:
  - key: k
    rate_limit: {unit: hour, requests_per_unit: 10}
`

type harness struct {
	client rlsv3.RateLimitServiceClient
	svc    *ratelimitsvc.Service
	reg    *metricstest.Registry
}

func newHarness(t *testing.T, rdb redis.UniversalClient, cfg ratelimitsvc.Config, rules ...string) *harness {
	t.Helper()
	reg := metricstest.NewRegistry()
	lim, err := limiter.New(rdb, cfg.WithDefaults().LimiterConfig(), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lim.Close() })
	svc, err := ratelimitsvc.New(cfg, lim, redistest.Prefix(t), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var files []ratelimitsvc.File
	for i, r := range rules {
		files = append(files, ratelimitsvc.File{Name: "rules" + string(rune('a'+i)) + ".yaml", Data: []byte(r)})
	}
	parsed, err := ratelimitsvc.ParseRules(files)
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRules(parsed)

	g := grpc.NewServer()
	svc.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &harness{client: rlsv3.NewRateLimitServiceClient(conn), svc: svc, reg: reg}
}

func desc(kv ...string) *commonrl.RateLimitDescriptor {
	d := &commonrl.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &commonrl.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func (h *harness) call(t *testing.T, domain string, ds ...*commonrl.RateLimitDescriptor) *rlsv3.RateLimitResponse {
	t.Helper()
	resp, err := h.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: domain, Descriptors: ds})
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	if len(resp.Statuses) != len(ds) {
		t.Fatalf("got %d statuses for %d descriptors", len(resp.Statuses), len(ds))
	}
	return resp
}

func header(resp *rlsv3.RateLimitResponse, name string) string {
	for _, h := range resp.ResponseHeadersToAdd {
		if h.Key == name {
			return h.Value
		}
	}
	return ""
}

func TestSequenceUntilOverLimit(t *testing.T) {
	h := newHarness(t, redistest.Client(t), ratelimitsvc.Config{}, testRules)
	d := desc("tier", "free", "tenant_id", "acme")
	for i := 1; i <= 3; i++ {
		resp := h.call(t, "api", d)
		st := resp.Statuses[0]
		if resp.OverallCode != rlsv3.RateLimitResponse_OK || st.Code != rlsv3.RateLimitResponse_OK {
			t.Fatalf("call %d: got %v, want OK", i, resp.OverallCode)
		}
		if got, want := st.LimitRemaining, uint32(3-i); got != want {
			t.Errorf("call %d: limit_remaining = %d, want %d", i, got, want)
		}
		if st.CurrentLimit.GetRequestsPerUnit() != 3 || st.CurrentLimit.GetUnit() != rlsv3.RateLimitResponse_RateLimit_HOUR {
			t.Errorf("call %d: current_limit = %v", i, st.CurrentLimit)
		}
		if d := st.DurationUntilReset.AsDuration(); d <= 0 || d > time.Hour {
			t.Errorf("call %d: duration_until_reset = %v", i, d)
		}
		if got := header(resp, "ratelimit"); !strings.Contains(got, ";r="+string(rune('0'+3-i))+";") {
			t.Errorf("call %d: RateLimit header = %q", i, got)
		}
	}
	resp := h.call(t, "api", d)
	if resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || resp.Statuses[0].Code != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("4th call: got %v, want OVER_LIMIT", resp.OverallCode)
	}
	if resp.Statuses[0].LimitRemaining != 0 {
		t.Errorf("over limit remaining = %d", resp.Statuses[0].LimitRemaining)
	}
	if ra := header(resp, "retry-after"); ra == "" || ra == "0" {
		t.Errorf("retry-after = %q, want positive seconds", ra)
	}
	// Another tenant of the same tier has its own counter.
	if got := h.call(t, "api", desc("tier", "free", "tenant_id", "globex")).OverallCode; got != rlsv3.RateLimitResponse_OK {
		t.Errorf("other tenant: %v, want OK", got)
	}
	over := counterSum(t, h.reg, "sluice_ratelimit_decisions_total", prometheus.Labels{"domain": "api", "code": "over_limit"})
	if over != 1 {
		t.Errorf("over_limit decisions = %v, want 1", over)
	}
}

func TestDecisions(t *testing.T) {
	rdb := redistest.Client(t)
	type call struct {
		ds      []*commonrl.RateLimitDescriptor
		hits    uint32
		want    rlsv3.RateLimitResponse_Code
		wantRem []uint32 // per descriptor limit_remaining; nil = don't check
	}
	tests := []struct {
		name  string
		calls []call
	}{
		{
			name: "several limits on one descriptor report the tightest",
			calls: []call{
				{ds: ds(desc("tier", "pro", "tenant_id", "t1")), hits: 4, want: rlsv3.RateLimitResponse_OK, wantRem: []uint32{1}},
				{ds: ds(desc("tier", "pro", "tenant_id", "t1")), want: rlsv3.RateLimitResponse_OK, wantRem: []uint32{0}},
				// The burst limit (5) is exhausted although the daily cap (7) is not.
				{ds: ds(desc("tier", "pro", "tenant_id", "t1")), want: rlsv3.RateLimitResponse_OVER_LIMIT, wantRem: []uint32{0}},
			},
		},
		{
			name: "request hits_addend counts several hits",
			calls: []call{
				{ds: ds(desc("tier", "free", "tenant_id", "h1")), hits: 3, want: rlsv3.RateLimitResponse_OK, wantRem: []uint32{0}},
				{ds: ds(desc("tier", "free", "tenant_id", "h1")), want: rlsv3.RateLimitResponse_OVER_LIMIT},
			},
		},
		{
			name: "hits beyond the limit are refused and charge nothing",
			calls: []call{
				{ds: ds(desc("tier", "free", "tenant_id", "h2")), hits: 4, want: rlsv3.RateLimitResponse_OVER_LIMIT},
				{ds: ds(desc("tier", "free", "tenant_id", "h2")), hits: 3, want: rlsv3.RateLimitResponse_OK, wantRem: []uint32{0}},
			},
		},
		{
			name: "a denied request charges none of its descriptors",
			calls: []call{
				{ds: ds(desc("path", "/login")), hits: 2, want: rlsv3.RateLimitResponse_OK, wantRem: []uint32{0}},
				{ds: ds(desc("tier", "free", "tenant_id", "aon"), desc("path", "/login")), want: rlsv3.RateLimitResponse_OVER_LIMIT},
				{ds: ds(desc("tier", "free", "tenant_id", "aon")), want: rlsv3.RateLimitResponse_OK, wantRem: []uint32{2}},
			},
		},
		{
			name: "shadow mode reports OK while over",
			calls: []call{
				{ds: ds(desc("shadowed", "x")), want: rlsv3.RateLimitResponse_OK},
				{ds: ds(desc("shadowed", "x")), want: rlsv3.RateLimitResponse_OK},
				{ds: ds(desc("shadowed", "x")), want: rlsv3.RateLimitResponse_OK},
			},
		},
		{
			name: "unlimited",
			calls: []call{
				{ds: ds(desc("internal", "svc")), hits: 1000, want: rlsv3.RateLimitResponse_OK, wantRem: []uint32{math.MaxUint32}},
			},
		},
		{
			name: "no matching rule",
			calls: []call{
				{ds: ds(desc("nothing", "here")), want: rlsv3.RateLimitResponse_OK, wantRem: []uint32{0}},
				{ds: ds(desc("tier", "free")), want: rlsv3.RateLimitResponse_OK, wantRem: []uint32{0}}, // partial path: no limit
			},
		},
		{
			name: "replaces drops the replaced limit",
			calls: []call{
				{ds: ds(desc("path", "/login-vip"), desc("path", "/login")), hits: 5, want: rlsv3.RateLimitResponse_OK},
			},
		},
		{
			name: "fixed window algorithm",
			calls: []call{
				{ds: ds(desc("fixed", "f1")), hits: 2, want: rlsv3.RateLimitResponse_OK, wantRem: []uint32{0}},
				{ds: ds(desc("fixed", "f1")), want: rlsv3.RateLimitResponse_OVER_LIMIT},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, rdb, ratelimitsvc.Config{}, testRules)
			for i, c := range tt.calls {
				resp, err := h.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "api", Descriptors: c.ds, HitsAddend: c.hits})
				if err != nil {
					t.Fatal(err)
				}
				if resp.OverallCode != c.want {
					t.Fatalf("call %d: overall %v, want %v (%v)", i, resp.OverallCode, c.want, resp)
				}
				for j, want := range c.wantRem {
					if got := resp.Statuses[j].LimitRemaining; got != want {
						t.Errorf("call %d descriptor %d: limit_remaining %d, want %d", i, j, got, want)
					}
				}
			}
		})
	}
}

func ds(d ...*commonrl.RateLimitDescriptor) []*commonrl.RateLimitDescriptor { return d }

func TestDescriptorHitsAddendAndOverride(t *testing.T) {
	h := newHarness(t, redistest.Client(t), ratelimitsvc.Config{}, testRules)
	check := desc("tier", "free", "tenant_id", "probe")
	check.HitsAddend = wrapperspb.UInt64(0)
	for i := 0; i < 5; i++ {
		resp := h.call(t, "api", check)
		if resp.OverallCode != rlsv3.RateLimitResponse_OK || resp.Statuses[0].LimitRemaining != 3 {
			t.Fatalf("check-only call %d charged: %v", i, resp)
		}
	}
	two := desc("tier", "free", "tenant_id", "probe")
	two.HitsAddend = wrapperspb.UInt64(2)
	// The descriptor's hits_addend overrides the request's.
	resp, err := h.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "api", Descriptors: ds(two), HitsAddend: 50})
	if err != nil || resp.Statuses[0].LimitRemaining != 1 {
		t.Fatalf("descriptor hits_addend: %v %v", resp, err)
	}
	// A refund (is_negative_hits) gives quota back.
	refund := desc("tier", "free", "tenant_id", "probe")
	refund.HitsAddend = wrapperspb.UInt64(2)
	refund.IsNegativeHits = true
	h.call(t, "api", refund)
	if got := h.call(t, "api", check).Statuses[0].LimitRemaining; got != 3 {
		t.Errorf("after refund remaining = %d, want 3", got)
	}

	// Envoy's per-descriptor limit override replaces the configured limit,
	// even for a descriptor no rule matches.
	o := desc("override_only", "x")
	o.Limit = &commonrl.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: typev3.RateLimitUnit_MINUTE}
	if got := h.call(t, "api", o); got.OverallCode != rlsv3.RateLimitResponse_OK || got.Statuses[0].CurrentLimit.GetUnit() != rlsv3.RateLimitResponse_RateLimit_MINUTE {
		t.Fatalf("override first call: %v", got)
	}
	if got := h.call(t, "api", o).OverallCode; got != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("override second call: %v, want OVER_LIMIT", got)
	}
}

func TestInvalidRequests(t *testing.T) {
	h := newHarness(t, redistest.Client(t), ratelimitsvc.Config{MaxDescriptors: 2}, testRules)
	tests := []struct {
		name string
		req  *rlsv3.RateLimitRequest
		want codes.Code
	}{
		{"empty domain", &rlsv3.RateLimitRequest{Descriptors: ds(desc("a", "b"))}, codes.InvalidArgument},
		{"no descriptors", &rlsv3.RateLimitRequest{Domain: "api"}, codes.InvalidArgument},
		{"too many descriptors", &rlsv3.RateLimitRequest{Domain: "api", Descriptors: ds(desc("a", "b"), desc("a", "b"), desc("a", "b"))}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.client.ShouldRateLimit(context.Background(), tt.req)
			if status.Code(err) != tt.want {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	// An unknown domain is not an error: nothing is limited.
	if got := h.call(t, "nope", desc("a", "b")).OverallCode; got != rlsv3.RateLimitResponse_OK {
		t.Errorf("unknown domain: %v", got)
	}
}

func TestHeaderFormats(t *testing.T) {
	rdb := redistest.Client(t)
	tests := []struct {
		format string
		want   map[string]string
	}{
		{ratelimitsvc.HeadersIETF, map[string]string{
			"ratelimit-policy": `"pro_burst";q=5;w=3600, "pro_daily";q=7;w=86400`,
			"ratelimit":        `"pro_burst";r=4;t=`,
		}},
		{ratelimitsvc.HeadersIETFDraft07, map[string]string{"ratelimit-limit": "5", "ratelimit-remaining": "4", "ratelimit-policy": "5;w=3600, 7;w=86400"}},
		{ratelimitsvc.HeadersXRateLimit, map[string]string{"x-ratelimit-limit": "5", "x-ratelimit-remaining": "4"}},
		{ratelimitsvc.HeadersOff, nil},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			h := newHarness(t, rdb, ratelimitsvc.Config{Headers: tt.format}, testRules)
			resp := h.call(t, "api", desc("tier", "pro", "tenant_id", "hdr"))
			if tt.want == nil && len(resp.ResponseHeadersToAdd) != 0 {
				t.Fatalf("headers off but got %v", resp.ResponseHeadersToAdd)
			}
			for k, v := range tt.want {
				if got := header(resp, k); !strings.HasPrefix(got, v) {
					t.Errorf("%s = %q, want prefix %q", k, got, v)
				}
			}
			for _, hv := range resp.ResponseHeadersToAdd {
				if hv.RawValue != nil {
					t.Errorf("header %s sets raw_value; Envoy's ratelimit client reads value", hv.Key)
				}
			}
		})
	}
}

func TestFailureModes(t *testing.T) {
	// A Redis that is not there: fail open by default, closed where configured.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 10 * time.Millisecond, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	// The breaker opens after 3 failed calls and stays open for the rest of
	// the test, so which calls reach Redis is exact.
	cfg := ratelimitsvc.Config{BreakerFailures: 3, BreakerOpenFor: time.Hour}
	h := newHarness(t, rdb, cfg, testRules, closedDomain)

	for i := 0; i < 20; i++ {
		if got := h.call(t, "api", desc("tier", "free", "tenant_id", "fo")).OverallCode; got != rlsv3.RateLimitResponse_OK {
			t.Fatalf("fail open: %v", got)
		}
	}
	// A closed port refuses at once, so how long the calls took says nothing
	// about the breaker; its state and the calls it answered do.
	const breakerOpen = `
# HELP sluice_ratelimit_breaker_open 1 while the circuit breaker in front of Redis is open, else 0.
# TYPE sluice_ratelimit_breaker_open gauge
sluice_ratelimit_breaker_open 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(breakerOpen), "sluice_ratelimit_breaker_open"); err != nil {
		t.Errorf("after 20 failed calls: %v", err)
	}
	redisErrors := func(labels map[string]string) float64 {
		return counterSum(t, h.reg, "sluice_ratelimit_redis_errors_total", labels)
	}
	if all, unavailable := redisErrors(nil), redisErrors(map[string]string{"reason": "unavailable"}); all != 20 || unavailable != 17 {
		t.Errorf("redis errors: %v in all, %v answered by the open breaker; want 20 and 17 (only the first 3 calls reach Redis)", all, unavailable)
	}
	if got := h.call(t, "strict", desc("k", "v")).OverallCode; got != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("fail closed domain: %v", got)
	}
	fo := counterSum(t, h.reg, "sluice_ratelimit_decisions_total", prometheus.Labels{"domain": "api", "code": "fail_open"})
	if fo != 20 {
		t.Errorf("fail_open decisions = %v, want 20", fo)
	}
}

// counterSum is the sum of the series of metric name whose labels include want.
func counterSum(t *testing.T, reg *metricstest.Registry, name string, want prometheus.Labels) float64 {
	t.Helper()
	return reg.Sum(t, name, want)
}

// TestResetWithoutCount: a sliding window with nothing counted (here a limit
// of 0, which refuses every hit) has no hit to age out; the reset reported in
// duration_until_reset and the headers is then the whole window, never 0,
// so that refused clients are not told to retry at once.
func TestResetWithoutCount(t *testing.T) {
	const rules = "domain: zero\ndescriptors:\n  - key: banned\n    rate_limit: {unit: minute, requests_per_unit: 0}\n"
	h := newHarness(t, redistest.Client(t), ratelimitsvc.Config{Timeout: 5 * time.Second}, rules)
	resp := h.call(t, "zero", desc("banned", "x"))
	if resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("overall %v, want OVER_LIMIT", resp.OverallCode)
	}
	if got := resp.Statuses[0].DurationUntilReset.AsDuration(); got != time.Minute {
		t.Errorf("duration_until_reset = %v, want 1m0s", got)
	}
	if got := header(resp, "retry-after"); got != "60" {
		t.Errorf("retry-after = %q, want 60", got)
	}
	if got := header(resp, "ratelimit"); !strings.HasSuffix(got, ";r=0;t=60") {
		t.Errorf("RateLimit = %q, want r=0 and t=60", got)
	}
}
