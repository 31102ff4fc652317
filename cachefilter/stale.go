package cachefilter

import (
	"github.com/sluicehq/sluice/internal/header"
)

// Serving stale responses when the origin cannot be reached.
//
// RFC 9111 §4.2.4 forbids a cache to generate a stale response "unless it is disconnected or
// doing so is explicitly permitted by the client or origin server". ServeStaleOnError covers the
// second case (stale-if-error, RFC 5861). ServeStaleDisconnected covers the first: the request
// went upstream and no response came back — Envoy could not connect, the connection was reset
// before the response headers, or the route timeout passed — so Envoy's router answered with a
// local reply (502, 503 or 504) that travelled the encoder filters to Sluice. Such a reply is
// told apart from an origin's own 5xx by the missing x-envoy-upstream-service-time, which the
// router adds to every response it receives from upstream (Router::Filter::onUpstreamHeaders,
// unless suppress_envoy_headers) and never to its local replies.

// EnvoyUpstreamServiceTime is the field Envoy's router adds to responses that came from upstream.
const EnvoyUpstreamServiceTime = "x-envoy-upstream-service-time"

// Disconnected reports whether a response to a forwarded request is Envoy's own answer to
// failing to get one from the origin (see above).
func Disconnected(status int, hdr header.List) bool {
	switch status {
	case 502, 503, 504:
		return !hdr.Has(EnvoyUpstreamServiceTime)
	}
	return false
}
