package httpcache

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// Policy is what Storable and Freshen need of the route a response belongs
// to. The zero value stores nothing (Enabled is false). cachefilter builds one
// per request path from its configuration (cachefilter.Config.Route).
type Policy struct {
	// Enabled reports whether responses may be stored and served.
	Enabled bool
	// MaxTTL caps the freshness left on arrival (Entry.Lifetime −
	// Entry.InitialAge) and the stale windows; 0 means no cap.
	MaxTTL time.Duration
	// MaxObjectBytes is the largest body to store; the caller checks the
	// body, Storable checks Content-Length. 0 means no limit.
	MaxObjectBytes int
	// Heuristic enables heuristic freshness (§4.2.2): HeuristicFraction of
	// Date − Last-Modified, at most HeuristicMax (0: no cap).
	Heuristic         bool
	HeuristicFraction float64
	HeuristicMax      time.Duration
	// StoreSetCookie allows storing responses with Set-Cookie (the field
	// itself is never stored).
	StoreSetCookie bool
	// Tags are the tag templates for stored responses; TenantPlaceholder in
	// them is replaced by Request.Tenant.
	Tags []string
	// Targets are the lower-case names of the targeted Cache-Control fields
	// (RFC 9213) the cache obeys, in order of precedence.
	Targets []string
}

// TenantPlaceholder in a Policy.Tags template stands for the request's tenant.
const TenantPlaceholder = "{tenant}"

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
func Storable(req Request, status int, hdr header.List, now time.Time, route Policy) (e Entry, ok bool, reason string) {
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
	cc, targeted := responseDirectives(hdr, route.Targets)
	if reason := refusedEarly(status, cc); reason != "" {
		// Most responses that are not stored say so in their status or directives (no-store,
		// private): no entry to build for them.
		return Entry{}, false, reason
	}
	return assessDirectives(req, status, hdr, now, route, cc, targeted)
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
func Freshen(req Request, e *Entry, hdr header.List, now time.Time, route Policy) (fresh *Entry, store bool, reason string) {
	if e == nil || !validatorsSelect(e, hdr) {
		return nil, false, ReasonValidatorMismatch
	}
	// The 304's hop-by-hop fields describe its own connection, not the
	// stored response: drop them before merging.
	hop := ConnectionFields(hdr)
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
	case hasAnyField(req.Header, unkeyedSet) || hasAnyField(req.Header, methodOverrideSet):
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
	// MaxTagLen is the longest tag in bytes (ValidTag).
	MaxTagLen = 256
)

// assess is Storable's response half, shared with Freshen. It fills e as
// far as it can even when it refuses, so Freshen can serve the result once.
func assess(req Request, status int, hdr header.List, now time.Time, route Policy) (Entry, bool, string) {
	// Cache-Control, or the targeted field that replaces it and Expires (targeted.go).
	cc, targeted := responseDirectives(hdr, route.Targets)
	return assessDirectives(req, status, hdr, now, route, cc, targeted)
}

// refusedEarly returns the reason a response is not stored when its status and directives
// alone decide it, the first rules of assessDirectives in their order, or "".
func refusedEarly(status int, cc CacheControl) string {
	understood := understoodStatus(status)
	switch {
	case status < 200 || status > 999 || status == 304:
		return ReasonStatus
	case status == 206:
		return ReasonPartial
	case cc.Overflow:
		return ReasonCacheControl
	case cc.MustUnderstand && !understood:
		return ReasonStatus
	case cc.NoStore && !(cc.MustUnderstand && understood):
		return ReasonNoStore
	case cc.Private:
		return ReasonPrivate
	}
	return ""
}

// assessDirectives is assess with the response's directives (responseDirectives) parsed.
func assessDirectives(req Request, status int, hdr header.List, now time.Time, route Policy, cc CacheControl, targeted bool) (Entry, bool, string) {
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
	vary, varyStar, varyOK := ParseVary(hdr)
	e.Vary = vary

	// The stored header section.
	drop := ConnectionFields(hdr)
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

	switch reason := refusedEarly(status, cc); {
	case reason != "":
		return e, false, reason
	case req.Header.Has("authorization") && !cc.Public && !cc.SMaxAge.Present && !cc.MustRevalidate:
		return e, false, ReasonAuthorization
	case setCookie && !route.StoreSetCookie:
		return e, false, ReasonSetCookie
	case varyStar:
		return e, false, ReasonVaryStar
	case !varyOK:
		return e, false, ReasonVaryInvalid
	case route.MaxObjectBytes > 0 && ContentLength(hdr) > int64(route.MaxObjectBytes):
		return e, false, ReasonTooLarge
	case !explicit && !heuristic && !(cc.NoCache && validator):
		return e, false, ReasonNoFreshness
	case e.Lifetime <= 0 && !validator && e.StaleWhileRevalidate <= 0 && e.StaleIfError <= 0:
		return e, false, ReasonNotReusable
	}
	return e, true, ""
}

// ContentLength returns the Content-Length value, or -1 when absent or
// invalid.
func ContentLength(hdr header.List) int64 {
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

// ParseVary returns the lower-case, sorted, de-duplicated Vary members,
// whether "*" is among them, and whether all members are field names.
func ParseVary(hdr header.List) (names []string, star, ok bool) {
	ok = true
	for _, v := range hdr.Values("vary") {
		for _, m := range header.SplitList(v) {
			switch {
			case m == "*":
				star = true
			case !header.IsToken(m):
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

// ConnectionFields returns the lower-case field names the Connection field
// lists (RFC 9110 §7.6.1): hop-by-hop, never stored.
func ConnectionFields(hdr header.List) []string {
	var names []string
	for _, v := range hdr.Values("connection") {
		for _, m := range header.SplitList(v) {
			if header.IsToken(m) {
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
		if len(tags) < maxEntryTags && ValidTag(t) {
			tags = appendUnique(tags, t)
		}
	}
	for _, t := range templates {
		add(strings.ReplaceAll(t, TenantPlaceholder, tenant))
	}
	for _, v := range hdr.Values("surrogate-key") {
		for t := range strings.FieldsSeq(v) {
			add(t)
		}
	}
	return tags
}

// ValidTag reports whether t may be a tag: 1 to 256 bytes of visible ASCII
// without braces (tags become Redis key parts; braces are Redis Cluster
// hash tags).
func ValidTag(t string) bool {
	if t == "" || len(t) > MaxTagLen {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c >= 0x7f || c == '{' || c == '}' {
			return false
		}
	}
	return true
}
