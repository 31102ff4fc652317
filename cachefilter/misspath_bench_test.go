package cachefilter_test

import (
	"context"
	"errors"
	"io"
	"strconv"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/redistest"
)

var noStore = extproctest.ResponseHeaders(200, false, "content-type", "application/json", "content-length", "512",
	"cache-control", "no-store", "date", "Sun, 06 Dec 2026 09:00:00 GMT")

// passThroughStream runs one request that goes upstream: request headers, response headers,
// half-close.
func passThroughStream(b *testing.B, c extprocv3.ExternalProcessorClient, path string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.Process(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range []*extprocv3.ProcessingRequest{
		extproctest.RequestHeaders("GET", path, true, "x-tenant-id", "acme", "accept", "application/json",
			"user-agent", "curl/8.5.0", "accept-encoding", "gzip, br", "x-request-id", "5f2b8c1e-7a4d-4e0b-9d7e-2c1f3a6b8e90"),
		noStore,
	} {
		if err := s.Send(m); err != nil {
			b.Fatal(err)
		}
		if r, err := s.Recv(); err != nil || r.GetImmediateResponse() != nil {
			b.Fatalf("reply %v, %v", r, err)
		}
	}
	_ = s.CloseSend()
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		b.Fatalf("stream end: %v", err)
	}
}

// BenchmarkMissPath compares an uncacheable request through the default stages (identity,
// cache, metrics) with a CONTINUE-only server, over real gRPC on loopback, interleaved in the
// same run: a new URL each time (the presence filter answers the lookup), and one URL answered
// no-store again and again (hit-for-pass). Allocations are the client's and both servers'.
//
//	go test -run '^$' -bench MissPath -benchmem ./cachefilter/
func BenchmarkMissPath(b *testing.B) {
	baseConn := extproctest.Serve(b, func(g grpc.ServiceRegistrar) {
		extprocv3.RegisterExternalProcessorServer(g, extproctest.Continue{})
	})
	base := extprocv3.NewExternalProcessorClient(baseConn)
	rdb := redistest.Client(b)
	store, err := cachefilter.NewStore(cachefilter.StoreConfig{}, cachefilter.StoreOptions{Redis: rdb, KeyPrefix: redistest.Prefix(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	runUntrusted(b, store)
	waitFor(b, 20*time.Second, "the presence filter", store.PresenceReady)
	stage, err := cachefilter.NewStage(cachefilter.Config{}, store, cachefilter.StageOptions{})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := extproc.New(extproc.Config{}, nil, nil, nil, extproc.WithStages(stage))
	if err != nil {
		b.Fatal(err)
	}
	sl := extprocv3.NewExternalProcessorClient(extproctest.Serve(b, srv.Register))
	for _, shape := range []struct {
		name string
		path func(i int) string
	}{
		{"new-url", func(i int) string { return "/items/" + strconv.Itoa(i) }},
		{"hit-for-pass", func(int) string { return "/items/hot" }},
	} {
		b.Run(shape.name, func(b *testing.B) {
			passThroughStream(b, sl, shape.path(-1))
			var tb, ts time.Duration
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				passThroughStream(b, base, shape.path(n))
				t1 := time.Now()
				passThroughStream(b, sl, shape.path(n))
				tb += t1.Sub(t0)
				ts += time.Since(t1)
				n++
			}
			b.ReportMetric(float64(tb.Nanoseconds())/float64(n), "baseline-ns/req")
			b.ReportMetric(float64(ts.Nanoseconds())/float64(n), "sluice-ns/req")
			b.ReportMetric(float64(ts)/float64(tb), "ratio")
		})
	}
}
