package cachefilter

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// This file holds the RFC 9111 decisions of a shared cache, free of I/O and
// clocks (time is passed in): which requests may use the cache
// (CheckRequest), which responses may be stored and for how long (Storable),
// how a stored response may be used (Evaluate, ServeStaleOnError), how a
// 304 updates it (Freshen) and the headers added when serving (ServeHeaders).
// Every function is safe for concurrent use and never modifies its inputs.
//
// How a stage uses it, per request (route := cfg.Route(path)):
//
//  1. CheckRequest: not Lookup → forward (Cache-Status fwd from Fwd).
//  2. Look up PrimaryKey(req, route), then the variant for
//     VariantKey(primary, storedVary, req.Header), and call Evaluate with
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
//  3. For unsafe methods, after the response: cfg.Invalidations and
//     cfg.PurgeTags.

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

// Reasons Storable and Freshen give for not storing a response. They are a
// fixed set, safe as metric label values.
const (
	ReasonDisabled          = "disabled"               // caching is off for the route
	ReasonMethod            = "method"                 // only GET responses are stored (§3)
	ReasonRequestNoStore    = "request_no_store"       // request no-store (§5.2.1.5)
	ReasonStatus            = "status"                 // not final, 304, or not understood with must-understand (§3, §5.2.2.3)
	ReasonPartial           = "partial"                // 206: Sluice does not store partial content (§3.3)
	ReasonCacheControl      = "cache_control_overflow" // Cache-Control too large to parse
	ReasonNoStore           = "no_store"               // response no-store (§5.2.2.5)
	ReasonPrivate           = "private"                // unqualified private in a shared cache (§5.2.2.7)
	ReasonAuthorization     = "authorization"          // request had Authorization, response not public/s-maxage/must-revalidate (§3.5)
	ReasonSetCookie         = "set_cookie"             // Set-Cookie and store_set_cookie is off
	ReasonVaryStar          = "vary_star"              // Vary: * (RFC 9110 §12.5.5)
	ReasonVaryInvalid       = "vary_invalid"           // a Vary member that is not a field name, or too many
	ReasonTooLarge          = "too_large"              // Content-Length above the route's max_object_bytes
	ReasonNoFreshness       = "no_freshness"           // no explicit freshness and no heuristic lifetime
	ReasonNotReusable       = "not_reusable"           // zero lifetime and no validator or stale window
	ReasonValidatorMismatch = "validator_mismatch"     // a 304 whose validators do not select the entry (§4.3.4)
	ReasonUnkeyedField      = "unkeyed_field"          // request field the key lacks but applications act on (unkeyedFields)
	ReasonRequestBody       = "request_body"           // GET or HEAD with a body (Request.HasBody)
)

// Actions Evaluate can choose.
type Action int

const (
	// ActionBypass: the request cannot use the cache (method, Range,
	// preconditions); forward it unchanged. Decision.Fwd says why.
	ActionBypass Action = iota
	// ActionMiss: no stored response; forward, and store the response if
	// Storable says so.
	ActionMiss
	// ActionHit: serve the entry (Decision.Status is its status, or 304 when
	// the client's own conditional request is satisfied).
	ActionHit
	// ActionStale: serve the stale entry as with ActionHit and refresh it
	// once in the background (max-stale §5.2.1.2, stale-while-revalidate
	// RFC 5861 §3).
	ActionStale
	// ActionValidate: forward with ConditionalHeaders(e) replacing the
	// client's If-None-Match/If-Modified-Since. On 304, Freshen the entry and
	// serve it (answering the client's own conditionals with NotModified); on
	// a storable response, store it; on an error, see ServeStaleOnError.
	ActionValidate
	// ActionGatewayTimeout: only-if-cached and no entry usable without
	// contacting the origin: answer 504 locally (§5.2.1.7).
	ActionGatewayTimeout
)

var actionNames = [...]string{"bypass", "miss", "hit", "stale", "validate", "gateway_timeout"}

func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return "unknown"
	}
	return actionNames[a]
}

// Fwd parameter values of the Cache-Status field (RFC 9211 §2.2).
const (
	FwdBypass   = "bypass"
	FwdMethod   = "method"
	FwdURIMiss  = "uri-miss"
	FwdVaryMiss = "vary-miss"
	FwdMiss     = "miss"
	FwdRequest  = "request"
	FwdStale    = "stale"
	FwdPartial  = "partial"
)

// Decision is what Evaluate chose for one request and (possibly nil) entry.
type Decision struct {
	Action Action
	// Status is the status to answer with when serving locally: the entry's
	// status, 304 (the client's conditional request is satisfied) or 504.
	Status int
	// HasEntry reports that an entry was considered; Age and TTL are set.
	HasEntry bool
	// Age is the entry's current age (§4.2.3), TTL its remaining freshness
	// (negative when stale).
	Age, TTL time.Duration
	// Fwd is the Cache-Status fwd value when the request goes upstream.
	Fwd string
	// Reason is a short, bounded explanation: fresh, max_stale,
	// stale_while_revalidate, request_no_cache, request_max_age,
	// request_min_fresh, no_cache, must_revalidate, stale, no_entry,
	// only_if_cached, or CheckRequest's reasons for bypass.
	Reason string
}

// Serves reports whether the decision answers from the entry.
func (d Decision) Serves() bool { return d.Action == ActionHit || d.Action == ActionStale }

// CacheStatus returns the Cache-Status member for the decision as it
// stands before any upstream response, and false for a locally generated
// 504 (RFC 9211 §2: no member on responses the cache generates that are not
// based on a stored response). After validation, the stage sets FwdStatus,
// Stored and the new TTL itself.
func (d Decision) CacheStatus() (CacheStatus, bool) {
	switch d.Action {
	case ActionGatewayTimeout:
		return CacheStatus{}, false
	case ActionHit, ActionStale:
		return CacheStatus{Hit: true, TTL: d.TTL, HasTTL: true}, true
	}
	return CacheStatus{Fwd: d.Fwd, TTL: d.TTL, HasTTL: d.HasEntry}, true
}

// XCache returns the x-cache result for the decision (without layer): HIT,
// STALE, MISS (miss, validate before its outcome, 504) or BYPASS. After a
// successful validation the stage uses XCacheRevalidated.
func (d Decision) XCache() string {
	switch d.Action {
	case ActionHit:
		return XCacheHit
	case ActionStale:
		return XCacheStale
	case ActionBypass:
		return XCacheBypass
	}
	return XCacheMiss
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
	if hasAnyField(req.Header, methodOverrideFields) {
		p.Reason, p.Fwd = ReasonUnkeyedField, FwdBypass
		return p
	}
	p.Store = req.Method == "GET" && !p.CacheControl.NoStore && !hasAnyField(req.Header, unkeyedFields)
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
var methodOverrideFields = []string{"x-http-method-override", "x-http-method", "x-method-override"}

func hasAnyField(h header.List, names []string) bool {
	for _, f := range h {
		if containsString(names, f.Name) {
			return true
		}
	}
	return false
}

func pragmaNoCache(h header.List) bool {
	for _, v := range h.Values("pragma") {
		for _, m := range splitList(v) {
			if strings.EqualFold(m, "no-cache") {
				return true
			}
		}
	}
	return false
}

// Evaluate decides how to use entry e (nil when none was found for the
// request's key and variant) for req at now, per RFC 9111 §4 and RFC 5861:
//
//   - request no-cache (or Pragma: no-cache), response no-cache, request
//     max-age exceeded (max-age=0 always), request min-fresh not met:
//     validate, even when fresh;
//   - fresh: hit;
//   - stale and must-revalidate / proxy-revalidate / s-maxage: validate
//     (§4.2.4: nothing may allow serving it stale);
//   - stale within the request's max-stale, or within the response's
//     stale-while-revalidate window: serve stale and refresh;
//   - otherwise validate.
//
// An Invalid request max-age or min-fresh counts as max-age=0 (validate);
// an Invalid max-stale is ignored. With only-if-cached, anything but a
// serve becomes a 504. When serving, the client's If-None-Match /
// If-Modified-Since are evaluated against e (NotModified) and Status is 304
// when they are satisfied.
func Evaluate(req Request, e *Entry, now time.Time) Decision {
	rp := CheckRequest(req)
	if !rp.Lookup {
		return Decision{Action: ActionBypass, Fwd: rp.Fwd, Reason: rp.Reason}
	}
	cc := rp.CacheControl
	if e == nil {
		if cc.OnlyIfCached {
			return Decision{Action: ActionGatewayTimeout, Status: 504, Reason: "only_if_cached"}
		}
		return Decision{Action: ActionMiss, Fwd: FwdURIMiss, Reason: "no_entry"}
	}
	age := e.Age(now)
	d := Decision{Status: e.Status, HasEntry: true, Age: age, TTL: e.Lifetime - age}
	validate := func(fwd, reason string) {
		d.Action, d.Fwd, d.Reason = ActionValidate, fwd, reason
	}
	switch {
	case cc.NoCache:
		validate(FwdRequest, "request_no_cache")
	case e.NoCache:
		validate(FwdStale, "no_cache")
	case cc.MaxAge.Present && (!cc.MaxAge.Valid() || cc.MaxAge.Seconds == 0 || age > cc.MaxAge.Duration()):
		validate(FwdRequest, "request_max_age")
	case cc.MinFresh.Present && (!cc.MinFresh.Valid() || d.TTL < cc.MinFresh.Duration()):
		validate(FwdRequest, "request_min_fresh")
	case d.TTL > 0:
		d.Action, d.Reason = ActionHit, "fresh"
	case e.MustRevalidate:
		validate(FwdStale, "must_revalidate")
	case cc.MaxStale.Valid() && -d.TTL <= cc.MaxStale.Duration():
		d.Action, d.Reason = ActionStale, "max_stale"
	case e.StaleWhileRevalidate > 0 && -d.TTL <= e.StaleWhileRevalidate:
		d.Action, d.Reason = ActionStale, "stale_while_revalidate"
	default:
		validate(FwdStale, "stale")
	}
	if cc.OnlyIfCached && !d.Serves() {
		return Decision{Action: ActionGatewayTimeout, Status: 504, HasEntry: true, Age: d.Age, TTL: d.TTL, Reason: "only_if_cached"}
	}
	if d.Serves() && NotModified(req, e, now) {
		d.Status = 304
	}
	return d
}

// ServeStaleOnError reports whether e may be served, stale, when forwarding
// req failed: upstreamStatus 500, 502, 503 or 504, or 0 for no response
// (RFC 5861 §4). It is allowed within the response's stale-if-error window
// or the request's stale-if-error, never for must-revalidate /
// proxy-revalidate / s-maxage or no-cache entries (§4.2.4), and never when
// the client itself asked for validation (request no-cache, max-age,
// min-fresh): then the error is the honest answer.
func ServeStaleOnError(req Request, e *Entry, now time.Time, upstreamStatus int) bool {
	switch upstreamStatus {
	case 0, 500, 502, 503, 504:
	default:
		return false
	}
	rp := CheckRequest(req)
	cc := rp.CacheControl
	if e == nil || !rp.Lookup || e.MustRevalidate || e.NoCache || cc.NoCache || cc.MaxAge.Present || cc.MinFresh.Present {
		return false
	}
	staleness := e.Staleness(now)
	return staleness <= e.StaleIfError || cc.StaleIfError.Valid() && staleness <= cc.StaleIfError.Duration()
}

// Storable applies RFC 9111 §3 for a shared cache to the response (status,
// header) to req, received at now, under the route's policy. When ok, e is
// the entry to store, Body excepted (the caller adds it, and checks its
// length against route.MaxObjectBytes); when not, reason is one of the
// Reason constants. The rules, in order:
//
//   - caching enabled for the route; GET only (a HEAD is served from the
//     GET entry but never stored); no request no-store;
//   - final status, not 304; 206 not stored; with must-understand, only
//     understood statuses, and then no-store is ignored (§5.2.2.3);
//   - no no-store, no unqualified private; private="f" and no-cache="f"
//     fields are removed from what is stored;
//   - request Authorization only with public, s-maxage or must-revalidate
//     (§3.5);
//   - Set-Cookie (and Set-Cookie2) only with route.StoreSetCookie, and then
//     removed from the stored header: a shared cache must never hand one
//     caller's cookie to another;
//   - Vary: * never; Vary members must be field names (at most 16);
//   - Content-Length within route.MaxObjectBytes;
//   - freshness: s-maxage, else max-age, else Expires − Date (§4.2.1); an
//     Invalid governing directive, conflicting Expires lines or an invalid
//     Expires (§5.3: "already expired") mean lifetime 0. Without explicit
//     freshness, a heuristic lifetime (§4.2.2: fraction of Date −
//     Last-Modified, at most route.HeuristicMax) only when route.Heuristic
//     and the status is heuristically cacheable or the response is public.
//     Otherwise nothing is stored, except an unqualified no-cache response
//     with a validator, which is stored with lifetime 0 (it is never used
//     without validation, so no freshness is invented). The freshness left
//     on arrival (Lifetime − InitialAge) and the stale windows are capped at
//     route.MaxTTL;
//   - something must make the entry reusable: a positive lifetime, a
//     validator, or a stale window.
//
// The stored header drops pseudo-headers, hop-by-hop fields (RFC 9110
// §7.6.1, and the fields Connection lists), Age (replaced by InitialAge),
// x-cache, Surrogate-Key/Surrogate-Control (read into Tags), x-sluice-*,
// x-envoy-* and rate-limit fields (RateLimit*, X-RateLimit-*). A Date is added when missing (RFC 9110 §6.6.1).
func Storable(req Request, status int, hdr header.List, now time.Time, route RoutePolicy) (e Entry, ok bool, reason string) {
	switch {
	case !route.Enabled:
		return Entry{}, false, ReasonDisabled
	case req.Method != "GET":
		return Entry{}, false, ReasonMethod
	}
	rp := CheckRequest(req)
	if rp.CacheControl.NoStore || rp.CacheControl.Overflow {
		return Entry{}, false, ReasonRequestNoStore
	}
	if !rp.Store {
		return Entry{}, false, rp.Reason
	}
	return assess(req, status, hdr, now, route)
}

// Freshen applies a 304 (Not Modified) response's header to the stored
// entry e (RFC 9111 §4.3.4, §3.2) and returns the updated entry, which
// shares e's body. Sluice sends conditional requests built from e alone
// (ConditionalHeaders), so a 304 selects e when its strong ETag equals e's
// (strong comparison), its weak ETag matches weakly, or, without ETag, its
// Last-Modified equals e's; a 304 without any validator answers Sluice's own
// request about e and also selects it. Otherwise Freshen returns nil and
// ReasonValidatorMismatch: the 304 must not update e (the stage answers
// from e as it is).
//
// Every field of the 304 replaces the stored field of that name, except
// the fields never stored (hop-by-hop ones, those its Connection lists,
// Age, Sluice's), Content-Length, Content-Encoding, Content-Range and
// Transfer-Encoding (they describe the stored body), Vary (the entry's key
// depends on it) and Set-Cookie (state for the current client only: the
// stage may pass it on to that client). A 304 without Date gets one at now.
// Lifetime, InitialAge, flags and windows are recomputed from the merged
// header as Storable would (so the route's caps apply); when that says the
// result must not be stored (the 304 now says no-store, say, or the route
// is disabled), the returned entry may still answer the current request
// but store is false and reason says why.
func Freshen(req Request, e *Entry, hdr header.List, now time.Time, route RoutePolicy) (fresh *Entry, store bool, reason string) {
	if e == nil || !validatorsSelect(e, hdr) {
		return nil, false, ReasonValidatorMismatch
	}
	// The 304's hop-by-hop fields describe its own connection, not the
	// stored response: drop them before merging.
	hop := connectionFields(hdr)
	update := make(header.List, 0, len(hdr))
	for _, h := range hdr {
		if updatable(h.Name) && storedField(h.Name) && !containsString(hop, h.Name) {
			update = append(update, h)
		}
	}
	merged := make(header.List, 0, len(e.Header)+len(update)+1)
	for _, h := range e.Header {
		if !update.Has(h.Name) {
			merged = append(merged, h)
		}
	}
	merged = append(merged, update...)
	for _, h := range hdr {
		if h.Name == "age" || h.Name == "surrogate-key" {
			merged = append(merged, h) // read for InitialAge and Tags, not stored
		}
	}
	if _, ok := httpDateField(hdr, "date", now); !ok {
		// Every Date line goes (an invalid one included) and the new one is
		// appended last.
		merged.Del("date")
		merged = append(merged, header.Field{Name: "date", Value: formatHTTPDate(now)})
	}
	ne, ok, reason := assess(req, e.Status, merged, now, route)
	ne.Body = e.Body
	ne.Vary = e.Vary
	if !hdr.Has("surrogate-key") {
		ne.Tags = e.Tags
	}
	switch {
	case !ok:
	case !route.Enabled:
		ok, reason = false, ReasonDisabled
	case CheckRequest(req).CacheControl.NoStore:
		ok, reason = false, ReasonRequestNoStore
	case hasAnyField(req.Header, unkeyedFields) || hasAnyField(req.Header, methodOverrideFields):
		ok, reason = false, ReasonUnkeyedField
	}
	return &ne, ok, reason
}

// updatable reports whether a 304's field replaces the stored one.
// Set-Cookie on a 304 is state for the client at hand, not part of the
// stored representation.
func updatable(name string) bool {
	switch name {
	case "content-length", "content-encoding", "content-range", "transfer-encoding", "vary",
		"set-cookie", "set-cookie2":
		return false
	}
	return true
}

// validatorsSelect reports whether a 304 with header selects e (§4.3.4).
func validatorsSelect(e *Entry, hdr header.List) bool {
	if v, ok := hdr.Lookup("etag"); ok {
		got, stored := parseEntityTag(v), parseEntityTag(e.ETag)
		if e.ETag == "" {
			return false
		}
		if !got.weak {
			return !stored.weak && got.opaque == stored.opaque
		}
		return got.opaque == stored.opaque
	}
	if v, ok := hdr.Lookup("last-modified"); ok {
		t1, ok1 := parseHTTPDate(v, e.ResponseTime)
		t2, ok2 := parseHTTPDate(e.LastModified, e.ResponseTime)
		return ok1 && ok2 && t1.Equal(t2)
	}
	return true
}

// maxVaryFields bounds the Vary members of a stored response.
const maxVaryFields = 16

// Tag bounds: at most maxEntryTags per entry, each 1..maxTagLen of visible
// ASCII without braces (tags become Redis key parts, and braces are Redis
// Cluster hash tags).
const (
	maxEntryTags = 64
	maxTagLen    = 256
)

// assess is Storable's response half, shared with Freshen. It fills e as
// far as it can even when it refuses, so Freshen can serve the result once.
func assess(req Request, status int, hdr header.List, now time.Time, route RoutePolicy) (Entry, bool, string) {
	// Cache-Control, or the targeted field that replaces it and Expires (targeted.go).
	cc, targeted := responseDirectives(hdr, route.Targets)
	reqTime := req.Time
	if reqTime.IsZero() || reqTime.After(now) {
		reqTime = now
	}
	dateValue, hasDate := httpDateField(hdr, "date", now)
	if !hasDate {
		dateValue = now
	}
	e := Entry{
		Status:       status,
		RequestTime:  reqTime,
		ResponseTime: now,
		InitialAge:   initialAge(hdr, dateValue, reqTime, now),
		NoCache:      cc.NoCache,
		// s-maxage incorporates proxy-revalidate (§5.2.2.10), and a shared
		// cache honours proxy-revalidate as must-revalidate (§5.2.2.8).
		MustRevalidate: cc.MustRevalidate || cc.ProxyRevalidate || cc.SMaxAge.Present,
	}
	if v, ok := hdr.Lookup("etag"); ok {
		e.ETag = strings.Trim(v, " \t")
	}
	if v, ok := hdr.Lookup("last-modified"); ok {
		e.LastModified = strings.Trim(v, " \t")
	}
	vary, varyStar, varyOK := parseVary(hdr)
	e.Vary = vary

	// The stored header section.
	drop := connectionFields(hdr)
	drop = append(drop, cc.PrivateFields...)
	drop = append(drop, cc.NoCacheFields...)
	stored := make(header.List, 0, len(hdr)+1)
	setCookie := false
	for _, h := range hdr {
		if !storedField(h.Name) || containsString(drop, h.Name) {
			continue
		}
		if h.Name == "set-cookie" || h.Name == "set-cookie2" {
			setCookie = true
			continue
		}
		stored = append(stored, h)
	}
	if !hasDate && !hdr.Has("date") {
		stored = append(stored, header.Field{Name: "date", Value: formatHTTPDate(now)})
	}
	e.Header = stored
	e.Tags = entryTags(req.Tenant, route.Tags, hdr)

	// Freshness (§4.2.1, §4.2.2).
	expiresFrom := hdr
	if targeted {
		expiresFrom = nil
	}
	lifetime, explicit := explicitLifetime(cc, expiresFrom, dateValue, now)
	heuristic := false
	if !explicit && route.Heuristic && (heuristicStatus(status) || cc.Public) {
		if lm, ok := httpDateField(hdr, "last-modified", now); ok && !lm.After(dateValue) {
			lifetime = time.Duration(float64(dateValue.Sub(lm)) * route.HeuristicFraction).Truncate(time.Second)
			if route.HeuristicMax > 0 && lifetime > route.HeuristicMax {
				lifetime = route.HeuristicMax
			}
			heuristic = lifetime > 0
		}
	}
	capTTL := func(d time.Duration) time.Duration {
		if route.MaxTTL > 0 && d > route.MaxTTL {
			return route.MaxTTL
		}
		return d
	}
	// max_ttl bounds how long Sluice uses the response without validation,
	// i.e. the freshness it has left on arrival (Cache-Status ttl), not the
	// lifetime the origin gave it: capping the lifetime itself would make a
	// response that arrives with an Age (from a cache in front of the origin)
	// stale at once although it is fresh (§4.2: lifetime > current_age).
	e.Lifetime = lifetime
	if route.MaxTTL > 0 && lifetime-e.InitialAge > route.MaxTTL {
		e.Lifetime = e.InitialAge + route.MaxTTL
	}
	if !e.MustRevalidate && !e.NoCache {
		e.StaleWhileRevalidate = capTTL(cc.StaleWhileRevalidate.Duration())
		e.StaleIfError = capTTL(cc.StaleIfError.Duration())
	}
	validator := e.ETag != "" || e.LastModified != ""

	understood := understoodStatus(status)
	switch {
	case status < 200 || status > 999 || status == 304:
		return e, false, ReasonStatus
	case status == 206:
		return e, false, ReasonPartial
	case cc.Overflow:
		return e, false, ReasonCacheControl
	case cc.MustUnderstand && !understood:
		return e, false, ReasonStatus
	case cc.NoStore && !(cc.MustUnderstand && understood):
		return e, false, ReasonNoStore
	case cc.Private:
		return e, false, ReasonPrivate
	case req.Header.Has("authorization") && !cc.Public && !cc.SMaxAge.Present && !cc.MustRevalidate:
		return e, false, ReasonAuthorization
	case setCookie && !route.StoreSetCookie:
		return e, false, ReasonSetCookie
	case varyStar:
		return e, false, ReasonVaryStar
	case !varyOK:
		return e, false, ReasonVaryInvalid
	case route.MaxObjectBytes > 0 && contentLength(hdr) > int64(route.MaxObjectBytes):
		return e, false, ReasonTooLarge
	case !explicit && !heuristic && !(cc.NoCache && validator):
		return e, false, ReasonNoFreshness
	case e.Lifetime <= 0 && !validator && e.StaleWhileRevalidate <= 0 && e.StaleIfError <= 0:
		return e, false, ReasonNotReusable
	}
	return e, true, ""
}

// explicitLifetime returns the explicit freshness lifetime (§4.2.1) and
// whether the response has explicit freshness information at all.
func explicitLifetime(cc CacheControl, hdr header.List, dateValue, now time.Time) (time.Duration, bool) {
	governing := cc.SMaxAge // shared cache: s-maxage first
	if !governing.Present {
		governing = cc.MaxAge
	}
	if governing.Present {
		return governing.Duration(), true // Invalid → 0: stale (§4.2.1)
	}
	values := hdr.Values("expires")
	if len(values) == 0 {
		return 0, false
	}
	for _, v := range values[1:] {
		if strings.Trim(v, " \t") != strings.Trim(values[0], " \t") {
			return 0, true // conflicting lines: stale (§4.2.1)
		}
	}
	exp, ok := parseHTTPDate(values[0], now)
	if !ok || !exp.After(dateValue) {
		return 0, true // invalid means already expired (§5.3)
	}
	d := exp.Sub(dateValue)
	if d > MaxDeltaSeconds*time.Second {
		d = MaxDeltaSeconds * time.Second
	}
	return d, true
}

// initialAge is corrected_initial_age (§4.2.3).
func initialAge(hdr header.List, dateValue, requestTime, responseTime time.Time) time.Duration {
	apparent := max(responseTime.Sub(dateValue), 0)
	delay := max(responseTime.Sub(requestTime), 0)
	corrected := ageValue(hdr) + delay
	return min(max(apparent, corrected), MaxDeltaSeconds*time.Second)
}

// ageValue reads Age (§5.1): the first member of the first line; a value
// that is not a non-negative integer is ignored.
func ageValue(hdr header.List) time.Duration {
	v, ok := hdr.Lookup("age")
	if !ok {
		return 0
	}
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	secs, ok := parseDeltaSeconds(strings.Trim(v, " \t"))
	if !ok {
		return 0
	}
	return time.Duration(secs) * time.Second
}

// contentLength returns the Content-Length value, or -1 when absent or
// invalid.
func contentLength(hdr header.List) int64 {
	v, ok := hdr.Lookup("content-length")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(strings.Trim(v, " \t"), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// parseVary returns the lower-case, sorted, de-duplicated Vary members,
// whether "*" is among them, and whether all members are field names.
func parseVary(hdr header.List) (names []string, star, ok bool) {
	ok = true
	for _, v := range hdr.Values("vary") {
		for _, m := range splitList(v) {
			switch {
			case m == "*":
				star = true
			case !isToken(m):
				ok = false
			default:
				names = appendUnique(names, strings.ToLower(m))
			}
		}
	}
	if len(names) > maxVaryFields {
		ok = false
	}
	slices.Sort(names)
	return names, star, ok
}

// heuristicStatus reports the status codes RFC 9110 §15.1 defines as
// heuristically cacheable.
func heuristicStatus(status int) bool {
	switch status {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// understoodStatus reports the status codes whose caching requirements
// Sluice implements, for must-understand (§5.2.2.3): those RFC 9110 §15
// defines, except 206 (Sluice does not store partial content) and 304.
func understoodStatus(status int) bool {
	switch {
	case status >= 200 && status <= 205, status == 300, status == 301, status == 302, status == 303,
		status == 305, status == 307, status == 308,
		status >= 400 && status <= 417, status == 421, status == 422, status == 426,
		status >= 500 && status <= 505:
		return true
	}
	return false
}

// storedField reports whether a field may be part of a stored response.
func storedField(name string) bool {
	if name == "" || name[0] == ':' || strings.HasPrefix(name, "x-sluice-") || strings.HasPrefix(name, "x-envoy-") ||
		strings.HasPrefix(name, "x-ratelimit-") || strings.HasPrefix(name, "ratelimit") {
		// Rate-limit headers (RateLimit, RateLimit-Policy, the older
		// RateLimit-*, X-RateLimit-*) describe the caller's quota when the
		// response passed the ratelimit filter; replayed to another caller
		// from the cache they would be wrong.
		return false
	}
	switch name {
	case "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer",
		"proxy-authenticate", "proxy-authentication-info", "proxy-authorization",
		"age", "x-cache", "surrogate-key", "surrogate-control":
		return false
	}
	return true
}

// connectionFields returns the lower-case field names the Connection field
// lists (RFC 9110 §7.6.1): hop-by-hop, never stored.
func connectionFields(hdr header.List) []string {
	var names []string
	for _, v := range hdr.Values("connection") {
		for _, m := range splitList(v) {
			if isToken(m) {
				names = append(names, strings.ToLower(m))
			}
		}
	}
	return names
}

// entryTags returns the configured tags (with {tenant} substituted) and the
// Surrogate-Key members, de-duplicated and bounded.
func entryTags(tenant string, templates []string, hdr header.List) []string {
	var tags []string
	add := func(t string) {
		if len(tags) < maxEntryTags && validTag(t) {
			tags = appendUnique(tags, t)
		}
	}
	for _, t := range templates {
		add(strings.ReplaceAll(t, tenantPlaceholder, tenant))
	}
	for _, v := range hdr.Values("surrogate-key") {
		for t := range strings.FieldsSeq(v) {
			add(t)
		}
	}
	return tags
}

func validTag(t string) bool {
	if t == "" || len(t) > maxTagLen {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c >= 0x7f || c == '{' || c == '}' {
			return false
		}
	}
	return true
}

// ---- Serving -------------------------------------------------------------

// CacheStatusName is Sluice's cache name in Cache-Status members.
const CacheStatusName = "sluice"

// x-cache results (operator-facing; see XCacheValue for the layer).
const (
	XCacheHit         = "HIT"
	XCacheMiss        = "MISS"
	XCacheStale       = "STALE"
	XCacheRevalidated = "REVALIDATED"
	XCacheBypass      = "BYPASS"
)

// XCacheValue returns an x-cache value: the result, and the layer that
// answered when there is one ("HIT-L1", "STALE-L2", "MISS").
func XCacheValue(result, layer string) string {
	if layer == "" {
		return result
	}
	return result + "-" + layer
}

// CacheStatus is one Cache-Status member (RFC 9211 §2). The zero value is
// a bare "sluice" member.
type CacheStatus struct {
	// Hit: the response was served from the cache without going upstream.
	Hit bool
	// Fwd is why the request went upstream (Fwd* constants), empty if not.
	Fwd string
	// FwdStatus is the upstream response status, 0 to omit.
	FwdStatus int
	// TTL is the remaining freshness (negative when stale), sent as whole
	// seconds (floor) when HasTTL.
	TTL    time.Duration
	HasTTL bool
	// Stored: the upstream response was stored (or a stored one freshened).
	Stored bool
	// Collapsed: the request was collapsed with another one.
	Collapsed bool
	// Key and Detail are optional free text, sent as sf-strings (printable
	// ASCII only; others are dropped).
	Key, Detail string
}

// String formats the member, e.g. `sluice; hit; ttl=12`,
// `sluice; fwd=stale; fwd-status=304; stored; ttl=60`,
// `sluice; fwd=uri-miss; stored`.
func (cs CacheStatus) String() string {
	var b strings.Builder
	b.WriteString(CacheStatusName)
	if cs.Hit {
		b.WriteString("; hit")
	}
	if cs.Fwd != "" && isToken(cs.Fwd) {
		b.WriteString("; fwd=")
		b.WriteString(cs.Fwd)
	}
	if cs.FwdStatus > 0 {
		b.WriteString("; fwd-status=")
		b.WriteString(strconv.Itoa(cs.FwdStatus))
	}
	if cs.Stored {
		b.WriteString("; stored")
	}
	if cs.Collapsed {
		b.WriteString("; collapsed")
	}
	if cs.HasTTL {
		secs := math.Floor(cs.TTL.Seconds())
		secs = max(min(secs, MaxDeltaSeconds), -MaxDeltaSeconds)
		b.WriteString("; ttl=")
		b.WriteString(strconv.FormatInt(int64(secs), 10))
	}
	if cs.Key != "" {
		b.WriteString("; key=")
		writeSFString(&b, cs.Key)
	}
	if cs.Detail != "" {
		b.WriteString("; detail=")
		writeSFString(&b, cs.Detail)
	}
	return b.String()
}

// writeSFString writes an RFC 8941 sf-string.
func writeSFString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// AppendCacheStatus appends member to an upstream Cache-Status value (the
// upstream lines joined with ", "), as RFC 9211 §2 asks: members are
// ordered from the origin towards the client, and existing ones are kept.
func AppendCacheStatus(existing string, member CacheStatus) string {
	existing = strings.Trim(existing, " \t,")
	if existing == "" {
		return member.String()
	}
	return existing + ", " + member.String()
}

// AgeValue formats an Age field value (RFC 9111 §5.1): whole seconds,
// never negative, at most MaxDeltaSeconds.
func AgeValue(age time.Duration) string {
	secs := int64(age / time.Second)
	return strconv.FormatInt(min(max(secs, 0), MaxDeltaSeconds), 10)
}

// ServeHeaders returns the header section to answer with from e at now:
// the stored fields, then Age (§5.1), Cache-Status (the stored upstream
// members with cs appended, RFC 9211) and x-cache (omitted when xcache is
// ""). With status 304 only the fields RFC 9110 §15.4.5 requires are kept
// (Cache-Control, Content-Location, Date, ETag, Expires, Vary, and
// Last-Modified when there is no ETag); the caller sends no body. For a
// HEAD request the caller likewise sends no body.
func ServeHeaders(e *Entry, now time.Time, status int, cs CacheStatus, xcache string) header.List {
	out := make(header.List, 0, len(e.Header)+3)
	var upstream []string
	for _, h := range e.Header {
		switch {
		case h.Name == "cache-status":
			upstream = append(upstream, h.Value)
			continue
		case h.Name == "age" || h.Name == "x-cache":
			continue
		case status == 304 && !notModifiedField(h.Name, e.ETag != ""):
			continue
		}
		out = append(out, h)
	}
	out = append(out,
		header.Field{Name: "age", Value: AgeValue(e.Age(now))},
		header.Field{Name: "cache-status", Value: AppendCacheStatus(strings.Join(upstream, ", "), cs)})
	if xcache != "" {
		out = append(out, header.Field{Name: "x-cache", Value: xcache})
	}
	return out
}

// notModifiedField reports the fields a 304 carries (RFC 9110 §15.4.5).
func notModifiedField(name string, hasETag bool) bool {
	switch name {
	case "cache-control", "content-location", "date", "etag", "expires", "vary":
		return true
	case "last-modified":
		return !hasETag
	}
	return false
}

// UsableUntil is when e stops being servable without validation under any
// request directive but max-stale: the end of its freshness lifetime plus
// the longer of its stale-while-revalidate and stale-if-error windows. A
// store may expire it then, or keep it longer when it has validators
// (ETag, LastModified) so it can still be revalidated.
func (e *Entry) UsableUntil() time.Time {
	return e.ResponseTime.Add(e.Lifetime - e.InitialAge + max(e.StaleWhileRevalidate, e.StaleIfError))
}

// ---- Header and date helpers ---------------------------------------------

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// splitList splits a list-based field value (RFC 9110 §5.6.1) at commas
// outside quoted-strings, trims OWS and drops empty members.
func splitList(v string) []string {
	var out []string
	add := func(m string) {
		if m = strings.Trim(m, " \t"); m != "" {
			out = append(out, m)
		}
	}
	start, inQuote := 0, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case inQuote && c == '\\':
			i++ // quoted-pair
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == ',':
			add(v[start:i])
			start = i + 1
		}
	}
	add(v[start:])
	return out
}

// httpDateField parses the single value of a date field; more than one
// differing line makes it invalid.
func httpDateField(h header.List, name string, now time.Time) (time.Time, bool) {
	values := h.Values(name)
	if len(values) == 0 {
		return time.Time{}, false
	}
	for _, v := range values[1:] {
		if v != values[0] {
			return time.Time{}, false
		}
	}
	return parseHTTPDate(values[0], now)
}

const httpDateLayout = "Mon, 02 Jan 2006 15:04:05 GMT"

func formatHTTPDate(t time.Time) string { return t.UTC().Format(httpDateLayout) }

var (
	dayNames     = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
	longDayNames = []string{"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
	monthNames   = []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
)

// parseHTTPDate parses an HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, or the
// obsolete rfc850-date and asctime-date. Names are matched
// case-insensitively; everything else is strict (two-digit hours, single
// spaces, "GMT" only). now resolves rfc850's two-digit years: a year more
// than 50 years ahead is taken as the most recent past year with those
// digits.
func parseHTTPDate(s string, now time.Time) (time.Time, bool) {
	s = strings.Trim(s, " \t")
	if len(s) > 64 {
		return time.Time{}, false
	}
	d := dateScanner{s: strings.ToLower(s)}
	switch {
	case len(s) == 29: // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
		if d.name(dayNames) >= 0 && d.lit(", ") {
			day := d.num(2)
			mon := d.litThen(" ", func() int { return d.name(monthNames) })
			year := d.litThen(" ", func() int { return d.num(4) })
			if d.lit(" ") {
				if t, ok := d.clock(year, mon, day); ok && d.lit(" gmt") && d.end() {
					return t, true
				}
			}
		}
	case strings.IndexByte(s, '-') > 0: // rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
		if d.name(longDayNames) >= 0 && d.lit(", ") {
			day := d.num(2)
			mon := d.litThen("-", func() int { return d.name(monthNames) })
			yy := d.litThen("-", func() int { return d.num(2) })
			if yy >= 0 && d.lit(" ") {
				ref := now.UTC().Year()
				year := ref - ref%100 + yy
				if year > ref+50 {
					year -= 100
				}
				if t, ok := d.clock(year, mon, day); ok && d.lit(" gmt") && d.end() {
					return t, true
				}
			}
		}
	case len(s) == 24: // asctime-date: Sun Nov  6 08:49:37 1994
		if d.name(dayNames) >= 0 && d.lit(" ") {
			mon := d.name(monthNames)
			day := -1
			if d.lit(" ") {
				if strings.HasPrefix(d.s[d.i:], " ") {
					d.i++
					day = d.num(1)
				} else {
					day = d.num(2)
				}
			}
			if d.lit(" ") {
				hh, mm, ss := d.hms()
				if d.lit(" ") {
					year := d.num(4)
					if d.end() {
						return civil(year, mon, day, hh, mm, ss)
					}
				}
			}
		}
	}
	return time.Time{}, false
}

// dateScanner reads a lower-cased date; methods return -1 (or false) on a
// mismatch and then keep failing.
type dateScanner struct {
	s   string
	i   int
	bad bool
}

func (d *dateScanner) lit(l string) bool {
	if d.bad || !strings.HasPrefix(d.s[d.i:], l) {
		d.bad = true
		return false
	}
	d.i += len(l)
	return true
}

func (d *dateScanner) litThen(l string, f func() int) int {
	if !d.lit(l) {
		return -1
	}
	return f()
}

func (d *dateScanner) name(names []string) int {
	if d.bad {
		return -1
	}
	for i, n := range names {
		if strings.HasPrefix(d.s[d.i:], n) {
			d.i += len(n)
			return i
		}
	}
	d.bad = true
	return -1
}

func (d *dateScanner) num(digits int) int {
	if d.bad || len(d.s)-d.i < digits {
		d.bad = true
		return -1
	}
	v := 0
	for k := 0; k < digits; k++ {
		c := d.s[d.i+k]
		if c < '0' || c > '9' {
			d.bad = true
			return -1
		}
		v = v*10 + int(c-'0')
	}
	d.i += digits
	return v
}

func (d *dateScanner) hms() (int, int, int) {
	hh := d.num(2)
	mm := d.litThen(":", func() int { return d.num(2) })
	ss := d.litThen(":", func() int { return d.num(2) })
	return hh, mm, ss
}

func (d *dateScanner) clock(year, mon, day int) (time.Time, bool) {
	hh, mm, ss := d.hms()
	if d.bad {
		return time.Time{}, false
	}
	return civil(year, mon, day, hh, mm, ss)
}

func (d *dateScanner) end() bool { return !d.bad && d.i == len(d.s) }

// civil builds a UTC time, rejecting out-of-range fields (a leap second 60
// is accepted as 59).
func civil(year, mon, day, hh, mm, ss int) (time.Time, bool) {
	if year < 0 || mon < 0 || day < 1 || hh < 0 || hh > 23 || mm < 0 || mm > 59 || ss < 0 || ss > 60 {
		return time.Time{}, false
	}
	ss = min(ss, 59)
	t := time.Date(year, time.Month(mon+1), day, hh, mm, ss, 0, time.UTC)
	if t.Day() != day {
		return time.Time{}, false // 31 Feb and friends
	}
	return t, true
}
