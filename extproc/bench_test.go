package extproc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/extproc"
	xt "github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/tier"
)

// Benchmarks of one pass-through request (request headers + response
// headers on one stream, then Envoy's half-close) over real gRPC on
// loopback TCP: Sluice's pipeline (identity + metrics) against a minimal
// ext_proc server that only answers CONTINUE. Both run in the same process
// and the same run.
//
//	go test -run '^$' -bench PassThrough -benchmem ./extproc/
//
// BenchmarkPassThroughRatio alternates the two servers request by request
// (so drift in machine load hits both alike) and reports the ratio itself
// as the "ratio" metric; a script can print it with
//
//	go test -run '^$' -bench PassThroughRatio -count 5 ./extproc/ |
//	  awk '/PassThroughRatio/ { for (i = 1; i < NF; i++) if ($(i+1) == "ratio") print $i }'
//
// The sub-benchmarks of BenchmarkPassThrough give each server's ns/op and
// allocs/op (client and server together, as both run here); the
// difference is Sluice's.

// benchClients returns connections to the baseline and to Sluice.
func benchClients(b *testing.B) (baseline, sluice *grpc.ClientConn) {
	b.Helper()
	baseline = xt.Serve(b, func(g grpc.ServiceRegistrar) {
		extprocv3.RegisterExternalProcessorServer(g, xt.Continue{})
	})
	cfg := extproc.Config{Metrics: extproc.MetricsConfig{Routes: []extproc.Route{
		{Name: "users", Prefix: "/v1/users"},
		{Name: "orders", Prefix: "/v1/orders"},
		{Name: "health", Path: "/healthz"},
	}}}
	srv, err := extproc.New(cfg, tier.Static{"acme": "pro"}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	sluice = xt.Serve(b, srv.Register, grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes()))
	return baseline, sluice
}

// The messages Envoy would send for a typical API GET.
var (
	benchReq = xt.RequestHeaders("GET", "/v1/users/42?fields=name", true,
		"user-agent", "curl/8.5.0", "accept", "application/json", "accept-encoding", "gzip, br",
		"x-forwarded-proto", "https", "x-request-id", "5f2b8c1e-7a4d-4e0b-9d7e-2c1f3a6b8e90",
		"x-tenant-id", "acme", "x-user-id", "u-1001", "authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x")
	benchResp = xt.ResponseHeaders(200, false,
		"content-type", "application/json", "content-length", "512", "date", "Fri, 02 Jan 2026 03:04:05 GMT",
		"cache-control", "private, max-age=0", "x-envoy-upstream-service-time", "3")
)

// passThrough runs one request's stream on conn.
func passThrough(b *testing.B, client extprocv3.ExternalProcessorClient) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := client.Process(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range []*extprocv3.ProcessingRequest{benchReq, benchResp} {
		if err := s.Send(m); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.CloseSend(); err != nil {
		b.Fatal(err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		b.Fatalf("stream end: %v", err)
	}
}

func BenchmarkPassThrough(b *testing.B) {
	baseline, sluice := benchClients(b)
	for _, c := range []struct {
		name string
		conn *grpc.ClientConn
	}{{"baseline", baseline}, {"sluice", sluice}} {
		b.Run(c.name, func(b *testing.B) {
			client := extprocv3.NewExternalProcessorClient(c.conn)
			passThrough(b, client) // warm the connection
			b.ReportAllocs()
			for b.Loop() {
				passThrough(b, client)
			}
		})
	}
}

func BenchmarkPassThroughRatio(b *testing.B) {
	baseline, sluice := benchClients(b)
	bc := extprocv3.NewExternalProcessorClient(baseline)
	sc := extprocv3.NewExternalProcessorClient(sluice)
	passThrough(b, bc)
	passThrough(b, sc)
	var tb, ts time.Duration
	n := 0
	for b.Loop() {
		t0 := time.Now()
		passThrough(b, bc)
		t1 := time.Now()
		passThrough(b, sc)
		t2 := time.Now()
		tb += t1.Sub(t0)
		ts += t2.Sub(t1)
		n++
	}
	b.ReportMetric(float64(tb.Nanoseconds())/float64(n), "baseline-ns/req")
	b.ReportMetric(float64(ts.Nanoseconds())/float64(n), "sluice-ns/req")
	b.ReportMetric(float64(ts)/float64(tb), "ratio")
}
