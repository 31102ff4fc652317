// Package httpcache holds the RFC 9111 decisions of a shared HTTP cache over
// header lists and times, free of I/O and clocks (time is passed in): which requests may use the cache
// (CheckRequest), which responses may be stored and for how long (Storable),
// how a stored response may be used (Evaluate, ServeStaleOnError), how a
// 304 updates it (Freshen) and the headers added when serving (ServeHeaders).
// Every function is safe for concurrent use and never modifies its inputs.
// The package knows nothing of storage, Redis, metrics or ext_proc: the
// cachefilter package keys, stores and serves entries and calls it for every
// decision.
//
// How a stage uses it, per request (route := cfg.Route(path), a
// cachefilter.RoutePolicy whose Policy this package reads):
//
//  1. CheckRequest: not Lookup → forward (Cache-Status fwd from Fwd).
//  2. Look up cachefilter.PrimaryKey(req, route), then the variant for
//     cachefilter.VariantKey(primary, storedVary, req.Header), and call Evaluate with
//     the entry found (or nil):
//     Hit / Stale → answer Status with ServeHeaders and the body (none for
//     HEAD or 304); Stale also refreshes once in the background.
//     Miss → forward; on the response, Storable decides, the body is
//     checked against route.MaxObjectBytes, and the entry stored.
//     Validate → forward with ConditionalHeaders(e) instead of the client's
//     ConditionalFields; on 304, Freshen and answer from the result, or
//     from e unchanged when the 304 does not select it (NotModified for the
//     client's own conditionals either way); on 5xx or no
//     response, ServeStaleOnError; otherwise as for a miss.
//     GatewayTimeout → answer 504.
//  3. For unsafe methods, after the response: cachefilter's Config.Invalidations
//     and Config.PurgeTags.
package httpcache
