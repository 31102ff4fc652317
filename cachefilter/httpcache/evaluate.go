package httpcache

import "time"

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

// ServeStaleDisconnected reports whether e may stand in, stale, for the response to req when the
// origin could not be reached (RFC 9111 §4.2.4 "disconnected"; how a
// disconnection is told apart is the caller's business): never for must-revalidate, proxy-revalidate or s-maxage entries
// (§5.2.2.2, §5.2.2.8, §5.2.2.10: "MUST NOT ... even when disconnected" in effect) nor no-cache
// ones (§5.2.2.4), nor when the client itself asked for validation (request no-cache, max-age,
// min-fresh): then the error is the honest answer. A fresh e is always allowed.
func ServeStaleDisconnected(req Request, e *Entry, now time.Time) bool {
	if e == nil {
		return false
	}
	rp := CheckRequest(req)
	cc := rp.CacheControl
	if !rp.Lookup || cc.NoCache || cc.MaxAge.Present || cc.MinFresh.Present {
		return false
	}
	return e.Fresh(now) || !e.MustRevalidate && !e.NoCache
}
