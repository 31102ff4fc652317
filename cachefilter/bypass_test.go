package cachefilter_test

import (
	"context"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/metadata"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/extproc/extproctest"
)

// doOff runs GET or POST path on a stream opened with Envoy's per-route grpc_initial_metadata
// x-sluice-cache: off, answered by a cacheable response; it reports whether the response was
// asked for its body or answered from the cache.
func doOff(t *testing.T, env *stageEnv, method, path string) (bodyAsked, immediate bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), cachefilter.RouteMetadataKey, cachefilter.RouteMetadataOff))
	defer cancel()
	c, err := extprocv3.NewExternalProcessorClient(env.conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range []*extprocv3.ProcessingRequest{
		extproctest.RequestHeaders(method, path, true, "x-tenant-id", "acme"),
		extproctest.ResponseHeaders(200, false, "content-type", "text/plain", "content-length", "2", "cache-control", "max-age=60"),
	} {
		if err := c.Send(m); err != nil {
			t.Fatal(err)
		}
		r, err := c.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetImmediateResponse() != nil {
			return false, true
		}
		if i == 1 {
			bodyAsked = r.GetModeOverride() != nil
		}
	}
	_ = c.CloseSend()
	for {
		if _, err := c.Recv(); err != nil {
			return bodyAsked, false
		}
	}
}

// TestRouteOff checks Envoy's per-route switch (bypass.go): a stream whose route says
// x-sluice-cache: off is neither answered from the cache nor stored, while a write on such a
// route still invalidates.
func TestRouteOff(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, env *stageEnv, o *origin)
	}{
		{"a cacheable GET is not stored", func(t *testing.T, env *stageEnv, o *origin) {
			if asked, hit := doOff(t, env, "GET", "/off"); asked || hit {
				t.Fatalf("GET on an off route: body asked %v, immediate %v", asked, hit)
			}
			if r := env.do(t, o, "GET", "/off", "x-tenant-id", "acme"); !r.upstream {
				t.Fatal("the off route's response was stored")
			}
		}},
		{"an entry stored elsewhere is not served", func(t *testing.T, env *stageEnv, o *origin) {
			env.do(t, o, "GET", "/shared", "x-tenant-id", "acme")
			if r := env.do(t, o, "GET", "/shared", "x-tenant-id", "acme"); !r.immediate {
				t.Fatal("setup: not stored")
			}
			if _, hit := doOff(t, env, "GET", "/shared"); hit {
				t.Fatal("an off route was answered from the cache")
			}
		}},
		{"a write still invalidates", func(t *testing.T, env *stageEnv, o *origin) {
			env.do(t, o, "GET", "/written", "x-tenant-id", "acme")
			if r := env.do(t, o, "GET", "/written", "x-tenant-id", "acme"); !r.immediate {
				t.Fatal("setup: not stored")
			}
			doOff(t, env, "POST", "/written")
			if r := env.do(t, o, "GET", "/written", "x-tenant-id", "acme"); r.immediate {
				t.Fatal("a write on an off route did not invalidate")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newStageEnv(t, cachefilter.Config{})
			tt.run(t, env, fixed(200, "content-type", "text/plain", "cache-control", "max-age=60"))
		})
	}
}
