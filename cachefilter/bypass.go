package cachefilter

import (
	"context"

	"google.golang.org/grpc/metadata"
)

// Per-route cache enablement on Envoy's side: a route whose responses are never stored (the
// batch endpoint, write-only endpoints) carries, in its ExtProcPerRoute,
//
//	overrides:
//	  grpc_initial_metadata: [{key: x-sluice-cache, value: "off"}]
//
// which Envoy sends as a request header of the gRPC stream of each of the route's requests
// (ExtProcOverrides.grpc_initial_metadata; merged by key from the virtual host and the route,
// the more specific level winning). The cache stage then leaves the request's safe methods
// alone: no key, no lookup, no collapse, no body asked for, the same as a route of the Sluice
// config with `enabled: false`. Unsafe methods still invalidate what they cover (RFC 9111 §4.4):
// the switch saves work, it never keeps a write from reaching the cache.

// RouteMetadataKey is the gRPC metadata key of the switch; RouteMetadataOff its value that
// turns the cache off for the stream.
const (
	RouteMetadataKey = "x-sluice-cache"
	RouteMetadataOff = "off"
)

// routeOff reports whether Envoy's route turned the cache off for the stream of ctx.
// ValueFromIncomingContext, not FromIncomingContext: that one copies the whole metadata map
// on every call (measured: the largest allocation of the stage on a miss).
func routeOff(ctx context.Context) bool {
	for _, v := range metadata.ValueFromIncomingContext(ctx, RouteMetadataKey) {
		if v == RouteMetadataOff {
			return true
		}
	}
	return false
}
