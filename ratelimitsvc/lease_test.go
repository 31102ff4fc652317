package ratelimitsvc_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// TestLeaseRules checks how `algorithm: sliding_window_lease` and `on_hot_key` set a limit's
// mode, at the domain and at the limit, and the files they make invalid.
func TestLeaseRules(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    limiter.Mode
		wantErr string
	}{
		{name: "default exact", yaml: "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100}\n", want: limiter.Exact},
		{name: "lease on the limit", yaml: "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100, algorithm: sliding_window_lease}\n", want: limiter.Lease},
		{name: "lease on the domain", yaml: "domain: d\nalgorithm: sliding_window_lease\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100}\n", want: limiter.Lease},
		{name: "limit overrides the domain", yaml: "domain: d\nalgorithm: sliding_window_lease\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100, algorithm: sliding_window}\n", want: limiter.Exact},
		{name: "hot keys lease, domain", yaml: "domain: d\non_hot_key: lease\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100}\n", want: limiter.LeaseWhenHot},
		{name: "hot keys lease, limit", yaml: "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100, on_hot_key: Lease}\n", want: limiter.LeaseWhenHot},
		{name: "hot keys exact on the limit", yaml: "domain: d\non_hot_key: lease\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100, on_hot_key: exact}\n", want: limiter.Exact},
		{name: "lease stays lease", yaml: "domain: d\non_hot_key: lease\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100, algorithm: sliding_window_lease}\n", want: limiter.Lease},
		{name: "fixed window exempt from the domain's lease", yaml: "domain: d\nalgorithm: sliding_window_lease\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100, algorithm: fixed_window}\n", want: limiter.Exact},
		{name: "hot keys lease on a fixed window", yaml: "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100, algorithm: fixed_window, on_hot_key: lease}\n",
			wantErr: "r.yaml:4: on_hot_key: lease needs the sliding_window algorithm, not fixed_window"},
		{name: "bad on_hot_key", yaml: "domain: d\non_hot_key: sometimes\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100}\n",
			wantErr: `r.yaml:2: on_hot_key "sometimes": want exact or lease`},
		{name: "unlimited with on_hot_key", yaml: "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, on_hot_key: lease}\n",
			wantErr: "r.yaml:4: on_hot_key cannot be set on an unlimited rate limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := ratelimitsvc.ParseRules([]ratelimitsvc.File{{Name: "r.yaml", Data: []byte(tc.yaml)}})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseRules: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m, ok := rules.Match("d", []ratelimitsvc.Entry{{Key: "k", Value: "v"}})
			if !ok {
				t.Fatal("no match")
			}
			if got := m.Limits[0].Mode; got != tc.want {
				t.Errorf("mode %v, want %v", got, tc.want)
			}
		})
	}
}

// leaseService is a service over a real limiter on the test Redis, called directly, with its
// log captured.
type leaseService struct {
	svc *ratelimitsvc.Service
	reg *metricstest.Registry
	log *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newLeaseService(t *testing.T, lcfg limiter.Config, rules string) *leaseService {
	t.Helper()
	rdb := redistest.Client(t)
	reg := metricstest.NewRegistry()
	if lcfg.Timeout == 0 {
		lcfg.Timeout = 5 * time.Second
	}
	lim, err := limiter.New(rdb, lcfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lim.Close() })
	var buf syncBuffer
	svc, err := ratelimitsvc.New(ratelimitsvc.Config{}, lim, redistest.Prefix(t), reg, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ratelimitsvc.ParseRules([]ratelimitsvc.File{{Name: "rules.yaml", Data: []byte(rules)}})
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRules(parsed)
	return &leaseService{svc: svc, reg: reg, log: &buf}
}

func (s *leaseService) call(t *testing.T, kv ...string) *rlsv3.RateLimitResponse {
	t.Helper()
	d := &commonrl.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &commonrl.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	resp, err := s.svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "api", Descriptors: []*commonrl.RateLimitDescriptor{d}})
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	return resp
}

// TestServiceLeaseMode runs a sliding_window_lease rule through the service: decisions come
// from leases (one lease call waited for, the first), statuses count down as in exact mode, and
// the limit holds.
func TestServiceLeaseMode(t *testing.T) {
	clk := time.UnixMilli(1_800_000_000_000)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clk }
	s := newLeaseService(t, limiter.Config{Now: now, Lease: limiter.LeaseConfig{MaxOvershoot: 0.1}}, `
domain: api
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 500, algorithm: sliding_window_lease}
`)
	ok := 0
	for i := range 1000 {
		mu.Lock()
		clk = clk.Add(10 * time.Millisecond)
		mu.Unlock()
		resp := s.call(t, "tenant", "acme")
		st := resp.Statuses[0]
		if resp.OverallCode == rlsv3.RateLimitResponse_OK {
			ok++
			if st.LimitRemaining > uint32(500-ok) {
				t.Fatalf("decision %d: %d remaining after %d admitted", i, st.LimitRemaining, ok)
			}
		}
		if st.CurrentLimit.GetRequestsPerUnit() != 500 {
			t.Fatalf("decision %d: current limit %v", i, st.CurrentLimit)
		}
	}
	need := leaseCalls(t, s.reg, "need")
	t.Logf("1000 decisions in 10s for a limit of 500 a minute: %d admitted; %v decisions waited for a lease", ok, need)
	if ok < 500 || ok > 550 {
		t.Errorf("admitted %d, want the limit of 500 (at most 10%% more, the lease cap)", ok)
	}
	if need > 20 {
		t.Errorf("%v decisions waited for a lease, want few", need)
	}
}

// TestServiceHotKeyLog drives one descriptor past the hot-key threshold: the service logs it
// once, with its domain, rule and descriptor, and moves it to lease mode (on_hot_key: lease).
func TestServiceHotKeyLog(t *testing.T) {
	clk := time.UnixMilli(1_800_000_000_000)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clk }
	s := newLeaseService(t, limiter.Config{Now: now, HotKeyThreshold: 50}, `
domain: api
on_hot_key: lease
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 1000000}
`)
	for range 3000 { // a second and a half at 2000 a second: sampled one in eight, well past 50
		mu.Lock()
		clk = clk.Add(500 * time.Microsecond)
		mu.Unlock()
		if resp := s.call(t, "tenant", "acme"); resp.OverallCode != rlsv3.RateLimitResponse_OK {
			t.Fatalf("denied: %v", resp)
		}
	}
	logged := s.log.String()
	if n := strings.Count(logged, "hot key"); n != 1 {
		t.Fatalf("%d hot key log lines, want 1:\n%s", n, logged)
	}
	for _, want := range []string{"domain=api", "rule=tenant#0", `descriptor="tenant=acme"`, "mode=\"lease (on_hot_key: lease)\""} {
		if !strings.Contains(logged, want) {
			t.Errorf("log line lacks %s:\n%s", want, logged)
		}
	}
	if n := leaseCalls(t, s.reg, "need") + leaseCalls(t, s.reg, "renew"); n == 0 {
		t.Error("no lease call: the hot key did not move to lease mode")
	}
}

// leaseCalls returns sluice_ratelimit_lease_calls_total{reason} as registered on reg.
func leaseCalls(t *testing.T, reg *metricstest.Registry, reason string) float64 {
	t.Helper()
	return reg.Value(t, "sluice_ratelimit_lease_calls_total", prometheus.Labels{"reason": reason})
}
