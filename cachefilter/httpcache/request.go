package httpcache

import (
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// Request is what the cache needs of a client request. Header names are
// lower-case (as Envoy sends them); order and repetition are preserved.
// The zero value is a request nothing can be served to.
type Request struct {
	// Method, Scheme, Authority and Path are the request's pseudo-headers;
	// Path is ":path" as sent, query included.
	Method, Scheme, Authority, Path string
	// Header is the request header section.
	Header header.List
	// Tenant is the caller's tenant as the identity stage resolved it. It is
	// part of every key: no tenant can read another's entries.
	Tenant string
	// HasBody reports that the request carries a body (Envoy's request
	// headers did not end the stream). A GET or HEAD with one is neither
	// looked up nor stored: the key does not cover the body, and an
	// application that reads it would have its answer served to requests
	// without it (RFC 9110 §9.3.1: a body on GET has no defined meaning).
	HasBody bool
	// Time is when the request was forwarded upstream (request_time of RFC
	// 9111 §4.2.3) for the response being stored or freshened. Zero means
	// the response time, i.e. no response delay is accounted for.
	Time time.Time
}

// RequestPolicy is what CheckRequest found in a request.
type RequestPolicy struct {
	// Lookup reports that the request may be answered from the cache: GET or
	// HEAD (a HEAD is served from the GET entry), without Range or
	// preconditions Sluice does not evaluate.
	Lookup bool
	// Store reports that the response may be stored (Storable decides the
	// rest): GET without request no-store.
	Store bool
	// Reason says why Lookup or Store is false (method, range, precondition,
	// cache_control_overflow, request_no_store); Fwd is the Cache-Status fwd
	// value for a bypass.
	Reason, Fwd string
	// CacheControl holds the request directives. NoCache is also set by
	// "Pragma: no-cache" when the request has no Cache-Control (§5.4).
	CacheControl CacheControl
}

// CheckRequest classifies a request (RFC 9111 §4, §5.2.1). Requests with
// If-Match or If-Unmodified-Since bypass the lookup (preconditions for the
// origin to evaluate); their complete 200 responses may still be stored.
// Range requests are looked up: a stored complete response answers them
// (ranges.go), and a 206 from the origin is never stored.
func CheckRequest(req Request) RequestPolicy {
	ccLines := req.Header.Values("cache-control")
	p := RequestPolicy{CacheControl: ParseCacheControl(ccLines...)}
	if len(ccLines) == 0 && pragmaNoCache(req.Header) {
		p.CacheControl.NoCache = true // §5.4
	}
	switch {
	case req.Method != "GET" && req.Method != "HEAD":
		p.Reason, p.Fwd = "method", FwdMethod
		return p
	case p.CacheControl.Overflow:
		p.Reason, p.Fwd = ReasonCacheControl, FwdBypass
		return p
	case req.HasBody:
		p.Reason, p.Fwd = ReasonRequestBody, FwdBypass
		return p
	}
	if hasAnyField(req.Header, methodOverrideSet) {
		p.Reason, p.Fwd = ReasonUnkeyedField, FwdBypass
		return p
	}
	p.Store = req.Method == "GET" && !p.CacheControl.NoStore && !hasAnyField(req.Header, unkeyedSet)
	switch {
	case p.Store || req.Method != "GET":
	case p.CacheControl.NoStore:
		p.Reason = ReasonRequestNoStore
	default:
		p.Reason = ReasonUnkeyedField
	}
	// Range (and If-Range) do not stop a lookup: a stored complete response
	// answers them (ranges.go).
	switch {
	case req.Header.Has("if-match"), req.Header.Has("if-unmodified-since"):
		p.Reason, p.Fwd = "precondition", FwdBypass
	default:
		p.Lookup = true
	}
	return p
}

// unkeyedFields are request fields applications commonly act on (the host,
// scheme and prefix they build absolute links from, the URL they route;
// X-Forwarded-Ssl and Front-End-Https are read as the scheme by Rails, Rack
// and Django-style stacks, X-Original-Host and X-HTTP-Host-Override as the
// host, X-Forwarded-Uri/-Path as the path) that are no part of the cache key. A response to a request carrying one
// may be shaped by it, and stored it would be served to every client of the
// tenant (web cache poisoning), so such a request is not stored; it may
// still be answered from the cache. Envoy sets X-Forwarded-Proto and -For
// itself (use_remote_address), so they are not listed.
var unkeyedFields = []string{
	"x-forwarded-host", "x-forwarded-server", "x-forwarded-scheme", "x-forwarded-port", "x-forwarded-prefix",
	"x-forwarded-uri", "x-forwarded-path", "x-forwarded-protocol", "x-forwarded-ssl", "front-end-https",
	"x-url-scheme", "x-host", "x-original-host", "x-http-host-override", "x-original-url", "x-rewrite-url", "forwarded",
}

// methodOverrideFields make applications run another method than the
// request's: such a request is neither looked up nor stored.
// UnkeyedField reports whether name (lower-case) is one of unkeyedFields: a
// request field the key lacks but applications act on.
func UnkeyedField(name string) bool { return slices.Contains(unkeyedFields, name) }

var methodOverrideFields = []string{"x-http-method-override", "x-http-method", "x-method-override"}

// The lists as sets: every request's fields are checked against both.
var (
	unkeyedSet        = nameSet(unkeyedFields)
	methodOverrideSet = nameSet(methodOverrideFields)
)

func nameSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func hasAnyField(h header.List, names map[string]bool) bool {
	for _, f := range h {
		if names[f.Name] {
			return true
		}
	}
	return false
}

func pragmaNoCache(h header.List) bool {
	for _, v := range h.Values("pragma") {
		for _, m := range header.SplitList(v) {
			if strings.EqualFold(m, "no-cache") {
				return true
			}
		}
	}
	return false
}
