package ratelimitsvc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	examples "github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// FuzzShouldRateLimit sends arbitrary RateLimitRequests (any domain,
// descriptor entries with odd keys and values, hits_addend at both levels,
// is_negative_hits, limit overrides with any unit) through the service,
// counting in the machine's Redis under a private prefix, with each header
// format. The input is a RateLimitRequest encoding; the first byte picks the
// header format. The service must answer every request with one status per
// descriptor (or InvalidArgument for an empty domain, no descriptors, or
// too many), an overall code that is OVER_LIMIT exactly when a status is,
// response headers Envoy can send (lower-case token names, printable ASCII
// values), and must never take a request it dislikes for a Redis outage
// (sluice_ratelimit_degraded_total stays 0: Redis is up).
//
// Seeds: testdata/fuzz/FuzzShouldRateLimit, plus the requests below.
func FuzzShouldRateLimit(f *testing.F) {
	for _, r := range []*rlsv3.RateLimitRequest{
		{Domain: "sluice", Descriptors: ds(desc("tier", "free", "tenant_id", "acme"))},
		{Domain: "api", HitsAddend: 2, Descriptors: ds(desc("tier", "pro", "tenant_id", "t"), desc("path", "/login"))},
		{Domain: "api", Descriptors: ds(&commonrl.RateLimitDescriptor{
			Entries: desc("k", "v").Entries,
			Limit:   &commonrl.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: typev3.RateLimitUnit_MINUTE},
		})},
		{Domain: "sluice", Descriptors: ds(&commonrl.RateLimitDescriptor{
			Entries: desc("tier", "anonymous", "remote_address", "192.0.2.1").Entries, HitsAddend: wrapperspb.UInt64(1 << 60),
		})},
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{0}, b...))
	}

	rdb := redistest.Client(f)
	limReg := prometheus.NewRegistry()
	// A generous Redis timeout: on a loaded machine the default 20ms would
	// make a slow reply look like the outage this target must not see.
	cfg := ratelimitsvc.Config{Timeout: 5 * time.Second}
	lim, err := limiter.New(rdb, cfg.WithDefaults().LimiterConfig(), limReg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { lim.Close() })
	rules, err := ratelimitsvc.ParseRules([]ratelimitsvc.File{
		{Name: "tiers.yaml", Data: examples.RateLimitTiers},
		{Name: "test.yaml", Data: []byte(testRules)},
		{Name: "strict.yaml", Data: []byte(closedDomain)},
	})
	if err != nil {
		f.Fatal(err)
	}
	prefix := redistest.Prefix(f)
	var (
		svcs []*ratelimitsvc.Service
		regs []*metricstest.Registry
	)
	for _, h := range []string{ratelimitsvc.HeadersIETF, ratelimitsvc.HeadersIETFDraft07, ratelimitsvc.HeadersXRateLimit, ratelimitsvc.HeadersOff} {
		reg := metricstest.NewRegistry()
		cfg.Headers = h
		svc, err := ratelimitsvc.New(cfg, lim, prefix, reg, nil)
		if err != nil {
			f.Fatal(err)
		}
		svc.SetRules(rules)
		svcs, regs = append(svcs, svc), append(regs, reg)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		i := int(data[0]) % len(svcs)
		svc := svcs[i]
		req := &rlsv3.RateLimitRequest{}
		if proto.Unmarshal(data[1:], req) != nil {
			return
		}
		before := degraded(t, regs[i])
		resp, err := svc.ShouldRateLimit(context.Background(), req)
		if n := degraded(t, regs[i]); n != before {
			t.Fatalf("request taken for a Redis outage (Redis is up): %v", req)
		}
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("ShouldRateLimit: %v, want a response or InvalidArgument", err)
			}
			if req.GetDomain() != "" && len(req.GetDescriptors()) > 0 && len(req.GetDescriptors()) <= maxDescriptors {
				t.Fatalf("refused a well-formed request: %v", err)
			}
			return
		}
		if len(resp.GetStatuses()) != len(req.GetDescriptors()) {
			t.Fatalf("%d statuses for %d descriptors", len(resp.GetStatuses()), len(req.GetDescriptors()))
		}
		over := false
		for _, st := range resp.GetStatuses() {
			over = over || st.GetCode() == rlsv3.RateLimitResponse_OVER_LIMIT
			if c := st.GetCode(); c != rlsv3.RateLimitResponse_OK && c != rlsv3.RateLimitResponse_OVER_LIMIT {
				t.Fatalf("descriptor status %v", c)
			}
		}
		if want := map[bool]rlsv3.RateLimitResponse_Code{true: rlsv3.RateLimitResponse_OVER_LIMIT, false: rlsv3.RateLimitResponse_OK}[over]; resp.GetOverallCode() != want {
			t.Fatalf("overall code %v with statuses %v", resp.GetOverallCode(), resp.GetStatuses())
		}
		for _, h := range resp.GetResponseHeadersToAdd() {
			if !validName(h.GetKey()) || !validValue(h.GetValue()) || len(h.GetRawValue()) != 0 {
				t.Fatalf("response header %q: %q (raw %q)", h.GetKey(), h.GetValue(), h.GetRawValue())
			}
		}
	})
}

// maxDescriptors is Config.MaxDescriptors' default.
const maxDescriptors = 64

// degraded sums sluice_ratelimit_degraded_total in reg.
func degraded(t testing.TB, reg *metricstest.Registry) float64 {
	t.Helper()
	return reg.Sum(t, "sluice_ratelimit_degraded_total", nil)
}

func validName(s string) bool {
	if s == "" || s != strings.ToLower(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
