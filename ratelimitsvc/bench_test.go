package ratelimitsvc_test

import (
	"context"
	"testing"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/sluicehq/sluice/ratelimitsvc"
)

// BenchmarkDecide measures the service's own cost per ShouldRateLimit
// (matching, keys, statuses, headers, metrics) without gRPC or Redis.
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(map[int]string{1: "1desc", 3: "3desc"}[n], func(b *testing.B) {
			svc, err := ratelimitsvc.New(ratelimitsvc.Config{}, noLimiter{}, "bench:", nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			rules, err := ratelimitsvc.ParseRules([]ratelimitsvc.File{{Name: "r.yaml", Data: []byte(testRules)}})
			if err != nil {
				b.Fatal(err)
			}
			svc.SetRules(rules)
			req := &rlsv3.RateLimitRequest{Domain: "api"}
			for i := 0; i < n; i++ {
				req.Descriptors = append(req.Descriptors, desc("tier", "pro", "tenant_id", "acme"))
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := svc.ShouldRateLimit(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
