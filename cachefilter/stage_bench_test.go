package cachefilter_test

import (
	"context"
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

var benchBody = []byte(`{"id":42,"name":"Ada Lovelace","email":"ada@example.com","tags":["math","engines"],"notes":"first programmer"}`)

// one sends the request headers of GET /items/42 and returns the reply.
func one(b *testing.B, c extprocv3.ExternalProcessorClient) *extprocv3.ProcessingResponse {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.Process(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Send(extproctest.RequestHeaders("GET", "/items/42", true, "x-tenant-id", "acme", "accept", "application/json")); err != nil {
		b.Fatal(err)
	}
	var r *extprocv3.ProcessingResponse
	for {
		if r, err = s.Recv(); err != nil {
			b.Fatal(err)
		}
		if r.GetOverrideMessageTimeout() == nil {
			break
		}
	}
	_ = s.CloseSend()
	for {
		if _, err := s.Recv(); err != nil {
			break
		}
	}
	return r
}

// BenchmarkHit compares serving a cached response (an ImmediateResponse from
// L1, or from L2 with the L1 off) with the minimal CONTINUE server, per
// request over real gRPC on loopback, interleaved in the same run. Target for
// L1: <= 1.5x.
func BenchmarkHit(b *testing.B) {
	baseConn := extproctest.Serve(b, func(g grpc.ServiceRegistrar) {
		extprocv3.RegisterExternalProcessorServer(g, extproctest.Continue{})
	})
	base := extprocv3.NewExternalProcessorClient(baseConn)
	rdb := redistest.Client(b)
	for _, layer := range []struct {
		name string
		l1   int64
		want string
	}{{"L1", 0, "HIT-L1"}, {"L2", -1, "HIT-L2"}} {
		b.Run(layer.name, func(b *testing.B) {
			store, err := cachefilter.NewStore(cachefilter.StoreConfig{L1MaxBytes: layer.l1, RedisTimeout: time.Second}, cachefilter.StoreOptions{Redis: rdb, KeyPrefix: redistest.Prefix(b)})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { store.Close() })
			runUntrusted(b, store)
			if layer.l1 >= 0 {
				waitFor(b, 10*time.Second, "the store to trust its L1", store.Trusted)
			}
			stage, err := cachefilter.NewStage(cachefilter.Config{}, store, cachefilter.StageOptions{})
			if err != nil {
				b.Fatal(err)
			}
			srv, err := extproc.New(extproc.Config{}, nil, nil, nil, extproc.WithStages(stage))
			if err != nil {
				b.Fatal(err)
			}
			conn := extproctest.Serve(b, srv.Register)
			sl := extprocv3.NewExternalProcessorClient(conn)

			// A miss that stores the entry, as Envoy would drive it.
			s := extproctest.Open(b, conn)
			for _, m := range []*extprocv3.ProcessingRequest{
				extproctest.RequestHeaders("GET", "/items/42", true, "x-tenant-id", "acme", "accept", "application/json"),
				extproctest.ResponseHeaders(200, false, "content-type", "application/json", "cache-control", "max-age=3600",
					"content-length", strconv.Itoa(len(benchBody)), "etag", `"v1"`),
				extproctest.ResponseBody(benchBody, true),
			} {
				if _, err := s.Do(m); err != nil {
					b.Fatal(err)
				}
			}
			_ = s.Finish()
			if r := one(b, sl); r.GetImmediateResponse() == nil {
				b.Fatalf("second request not served from cache: %v", r)
			}

			var tb, ts time.Duration
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				one(b, base)
				t1 := time.Now()
				if one(b, sl).GetImmediateResponse() == nil {
					b.Fatal("miss")
				}
				tb += t1.Sub(t0)
				ts += time.Since(t1)
				n++
			}
			b.ReportMetric(float64(tb.Nanoseconds())/float64(n), "baseline-ns/req")
			b.ReportMetric(float64(ts.Nanoseconds())/float64(n), "hit-ns/req")
			b.ReportMetric(float64(ts)/float64(tb), "ratio")
		})
	}
}
