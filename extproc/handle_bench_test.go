package extproc

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	xt "github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/tier"
)

// BenchmarkHandle is the pipeline alone, without gRPC: one pass-through
// request's request headers and response headers through identity and
// metrics, Done hooks included. It shows what Sluice adds per request on top
// of the gRPC transport measured by BenchmarkPassThrough.
func BenchmarkHandle(b *testing.B) {
	cfg := Config{Metrics: MetricsConfig{Routes: []Route{
		{Name: "users", Prefix: "/v1/users"},
		{Name: "orders", Prefix: "/v1/orders"},
	}}}
	s, err := New(cfg, tier.Static{"acme": "pro"}, prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	req := xt.RequestHeaders("GET", "/v1/users/42?fields=name", true,
		"user-agent", "curl/8.5.0", "accept", "application/json", "accept-encoding", "gzip, br",
		"x-forwarded-proto", "https", "x-request-id", "5f2b8c1e-7a4d-4e0b-9d7e-2c1f3a6b8e90",
		"x-tenant-id", "acme", "x-user-id", "u-1001", "authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x")
	resp := xt.ResponseHeaders(200, false, "content-type", "application/json", "content-length", "512")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		st := s.newStream(ctx)
		if _, err := st.handle(req); err != nil {
			b.Fatal(err)
		}
		if _, err := st.handle(resp); err != nil {
			b.Fatal(err)
		}
		st.done()
		_ = s.finish(st, nil)
	}
}
