package httpcache

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// polNow is the clock of the policy tests.
var polNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// polHeader builds a header list from name, value pairs (names lower-cased).
func polHeader(kv ...string) header.List {
	h := make(header.List, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		h = append(h, header.Field{Name: strings.ToLower(kv[i]), Value: kv[i+1]})
	}
	return h
}

// polDate is an HTTP-date offset from polNow.
func polDate(offset time.Duration) string { return formatHTTPDate(polNow.Add(offset)) }

// polRoute is an enabled route without TTL cap, heuristics off.
func polRoute() Policy {
	return Policy{Enabled: true, MaxObjectBytes: 1 << 20, HeuristicFraction: 0.1, HeuristicMax: 24 * time.Hour}
}

func polGet(h ...string) Request {
	return Request{Method: "GET", Scheme: "https", Authority: "api.example.com", Path: "/r", Tenant: "acme", Header: polHeader(h...)}
}

func TestCheckRequest(t *testing.T) {
	tests := []struct {
		name                string
		req                 Request
		lookup, store       bool
		reason, fwd         string
		noCache, onlyCached bool
	}{
		{name: "§4 GET looks up and stores", req: polGet(), lookup: true, store: true},
		{name: "§4 HEAD looks up the GET entry but is not stored", req: Request{Method: "HEAD"}, lookup: true},
		{name: "§4 POST bypasses", req: Request{Method: "POST"}, reason: "method", fwd: FwdMethod},
		{name: "§4 lower-case method is another method", req: Request{Method: "get"}, reason: "method", fwd: FwdMethod},
		{name: "§5.2.1.5 request no-store: lookup, no store", req: polGet("cache-control", "no-store"), lookup: true, reason: ReasonRequestNoStore},
		{name: "§5.2.1.4 request no-cache", req: polGet("cache-control", "no-cache"), lookup: true, store: true, noCache: true},
		{name: "§5.4 Pragma no-cache without Cache-Control", req: polGet("pragma", "no-cache"), lookup: true, store: true, noCache: true},
		{name: "§5.4 Pragma no-cache in a list", req: polGet("pragma", "x, No-Cache"), lookup: true, store: true, noCache: true},
		{name: "§5.4 Pragma ignored with Cache-Control", req: polGet("pragma", "no-cache", "cache-control", "max-stale"), lookup: true, store: true},
		{name: "§5.4 Pragma extension ignored", req: polGet("pragma", "unrecognised-extension"), lookup: true, store: true},
		{name: "§5.2.1.7 only-if-cached", req: polGet("cache-control", "only-if-cached"), lookup: true, store: true, onlyCached: true},
		{name: "RFC 9110 §9.3.1 GET with a body: neither looked up nor stored", req: Request{Method: "GET", HasBody: true}, reason: ReasonRequestBody, fwd: FwdBypass},
		{name: "RFC 9110 §9.3.2 HEAD with a body: neither looked up nor stored", req: Request{Method: "HEAD", HasBody: true}, reason: ReasonRequestBody, fwd: FwdBypass},
		{name: "X-Forwarded-Ssl: answered from the cache, not stored", req: polGet("x-forwarded-ssl", "on"), lookup: true, reason: ReasonUnkeyedField},
		{name: "Front-End-Https: not stored", req: polGet("front-end-https", "on"), lookup: true, reason: ReasonUnkeyedField},
		{name: "X-Original-Host: not stored", req: polGet("x-original-host", "evil.example"), lookup: true, reason: ReasonUnkeyedField},
		{name: "X-Forwarded-Uri: not stored", req: polGet("x-forwarded-uri", "/admin"), lookup: true, reason: ReasonUnkeyedField},
		{name: "RFC 9110 §14.2 Range is looked up (a stored 200 answers it)", req: polGet("range", "bytes=0-1"), lookup: true, store: true},
		{name: "RFC 9110 §13.1.5 If-Range is looked up", req: polGet("range", "bytes=0-1", "if-range", `"x"`), lookup: true, store: true},
		{name: "RFC 9110 §13.1.1 If-Match bypasses", req: polGet("if-match", `"x"`), store: true, reason: "precondition", fwd: FwdBypass},
		{name: "RFC 9110 §13.1.4 If-Unmodified-Since bypasses", req: polGet("if-unmodified-since", polDate(0)), store: true, reason: "precondition", fwd: FwdBypass},
		{name: "oversized Cache-Control bypasses", req: polGet("cache-control", strings.Repeat("x,", maxCacheControlBytes)), reason: ReasonCacheControl, fwd: FwdBypass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := CheckRequest(tt.req)
			if p.Lookup != tt.lookup || p.Store != tt.store || p.Reason != tt.reason || p.Fwd != tt.fwd ||
				p.CacheControl.NoCache != tt.noCache || p.CacheControl.OnlyIfCached != tt.onlyCached {
				t.Errorf("CheckRequest = %+v", p)
			}
		})
	}
}

func TestStorable(t *testing.T) {
	h := polHeader
	d := polDate
	capped := polRoute()
	capped.MaxTTL = time.Hour
	heur := polRoute()
	heur.Heuristic = true
	cookies := polRoute()
	cookies.StoreSetCookie = true
	tagged := polRoute()
	tagged.Tags = []string{"contacts:{tenant}", "all"}
	small := polRoute()
	small.MaxObjectBytes = 10
	lastDay := d(-24 * time.Hour)

	tests := []struct {
		name     string
		req      Request
		status   int
		hdr      header.List
		route    *Policy
		reason   string // "" means stored
		lifetime time.Duration
		check    func(t *testing.T, e Entry)
	}{
		// §3 storing
		{name: "§3 200 with max-age", status: 200, hdr: h("cache-control", "max-age=3600"), lifetime: time.Hour},
		{name: "§3 HEAD responses are not stored", req: Request{Method: "HEAD"}, status: 200, hdr: h("cache-control", "max-age=60"), reason: ReasonMethod},
		{name: "§3 POST responses are not stored (cache-tests method-POST is optional)", req: Request{Method: "POST"}, status: 200, hdr: h("cache-control", "max-age=60", "content-location", "/r"), reason: ReasonMethod},
		{name: "§5.2.1.5 request no-store", req: polGet("cache-control", "no-store"), status: 200, hdr: h("cache-control", "max-age=60"), reason: ReasonRequestNoStore},
		{name: "disabled route", route: &Policy{}, status: 200, hdr: h("cache-control", "max-age=60"), reason: ReasonDisabled},
		{name: "§3 non-final status", status: 103, hdr: h("cache-control", "max-age=60"), reason: ReasonStatus},
		{name: "§4.3.4 304 is never stored", status: 304, hdr: h("cache-control", "max-age=60"), reason: ReasonStatus},
		{name: "§3.3 206 is not stored", status: 206, hdr: h("cache-control", "max-age=60", "content-range", "bytes 0-1/10"), reason: ReasonPartial},
		{name: "§3 explicit freshness makes 204 storable", status: 204, hdr: h("cache-control", "max-age=60"), lifetime: time.Minute},
		{name: "§3 explicit freshness makes 299 storable (cache-tests status-299)", status: 299, hdr: h("cache-control", "max-age=60"), lifetime: time.Minute},
		{name: "§3 explicit freshness makes 302 storable", status: 302, hdr: h("cache-control", "max-age=60", "location", "/x"), lifetime: time.Minute},
		{name: "§3 explicit freshness makes 400 storable", status: 400, hdr: h("cache-control", "max-age=60"), lifetime: time.Minute},
		{name: "§3 explicit freshness makes 499 storable", status: 499, hdr: h("cache-control", "max-age=60"), lifetime: time.Minute},
		{name: "§3 explicit freshness makes 503 storable", status: 503, hdr: h("cache-control", "max-age=60"), lifetime: time.Minute},
		{name: "§5.2.2.5 no-store", status: 200, hdr: h("cache-control", "max-age=10000, no-store", "expires", d(10000*time.Second), "date", d(0)), reason: ReasonNoStore},
		{name: "§5.2.2.5 No-StOrE is case-insensitive", status: 200, hdr: h("cache-control", "No-StOrE"), reason: ReasonNoStore},
		{name: "§5.2.2.5 no-store on its own line", status: 200, hdr: h("cache-control", "max-age=60", "cache-control", "no-store"), reason: ReasonNoStore},
		{name: "§5.2.2.3 must-understand with an understood status overrides no-store", status: 200, hdr: h("cache-control", "max-age=3600, no-store, must-understand"), lifetime: time.Hour},
		{name: "§5.2.2.3 must-understand with an unknown status is not stored", status: 599, hdr: h("cache-control", "max-age=3600, no-store, must-understand"), reason: ReasonStatus},
		{name: "§5.2.2.3 must-understand alone with an unknown status", status: 599, hdr: h("cache-control", "max-age=3600, must-understand"), reason: ReasonStatus},
		{name: "§5.2.2.7 private is not stored by a shared cache", status: 200, hdr: h("cache-control", "private, max-age=3600"), reason: ReasonPrivate},
		{name: "§5.2.2.7 qualified private strips the fields", status: 200, hdr: h("cache-control", `private="x-user", max-age=60`, "x-user", "bob", "x-other", "1"), lifetime: time.Minute,
			check: polWantFields([]string{"cache-control", "x-other", "date"}, []string{"x-user"})},
		{name: "§5.2.2.4 qualified no-cache strips one field (cache-tests headers-omit…-no-cache-single)", status: 200,
			hdr: h("cache-control", `no-cache="a"`, "a", "1", "b", "2", "cache-control", "max-age=3600", "date", d(0)), lifetime: time.Hour,
			check: polWantFields([]string{"b"}, []string{"a"})},
		{name: "§5.2.2.4 qualified no-cache strips several fields", status: 200,
			hdr: h("cache-control", `no-cache="a, b"`, "a", "1", "b", "2", "c", "3", "cache-control", "max-age=3600", "date", d(0)), lifetime: time.Hour,
			check: polWantFields([]string{"c"}, []string{"a", "b"})},
		{name: "§5.2.2.4 no-cache with a validator is stored, never fresh (cache-tests cc-resp-no-cache-revalidate)", status: 200,
			hdr: h("cache-control", "no-cache", "etag", `"abcd"`), lifetime: 0,
			check: func(t *testing.T, e Entry) { polWant(t, e.NoCache && e.ETag == `"abcd"`, "NoCache and ETag") }},
		{name: "§5.2.2.4 no-cache with freshness is stored with NoCache", status: 200,
			hdr: h("cache-control", "max-age=10000, no-cache", "expires", d(10000*time.Second), "date", d(0)), lifetime: 10000 * time.Second,
			check: func(t *testing.T, e Entry) { polWant(t, e.NoCache, "NoCache") }},
		{name: "§5.2.2.4 no-cache without freshness or validator", status: 200, hdr: h("cache-control", "no-cache"), reason: ReasonNoFreshness},
		{name: "§3.5 Authorization in the request", req: polGet("authorization", "FOO"), status: 200, hdr: h("cache-control", "max-age=3600"), reason: ReasonAuthorization},
		{name: "§3.5 Authorization with public", req: polGet("authorization", "FOO"), status: 200, hdr: h("cache-control", "max-age=3600, public"), lifetime: time.Hour},
		{name: "§3.5 Authorization with must-revalidate", req: polGet("authorization", "FOO"), status: 200, hdr: h("cache-control", "max-age=3600, must-revalidate"), lifetime: time.Hour},
		{name: "§3.5 Authorization with s-maxage", req: polGet("authorization", "FOO"), status: 200, hdr: h("cache-control", "s-maxage=3600"), lifetime: time.Hour},
		{name: "Set-Cookie is not stored by default", status: 200, hdr: h("cache-control", "max-age=60", "set-cookie", "a=b"), reason: ReasonSetCookie},
		{name: "Set-Cookie2 too", status: 200, hdr: h("cache-control", "max-age=60", "set-cookie2", "a=b"), reason: ReasonSetCookie},
		{name: "store_set_cookie stores without the cookie", route: &cookies, status: 200, hdr: h("cache-control", "max-age=60", "set-cookie", "a=b", "x", "1"), lifetime: time.Minute,
			check: polWantFields([]string{"x"}, []string{"set-cookie"})},
		{name: "§5.2.2.7 private=set-cookie makes a Set-Cookie response storable", status: 200, hdr: h("cache-control", `max-age=60, private="set-cookie"`, "set-cookie", "a=b"), lifetime: time.Minute,
			check: polWantFields(nil, []string{"set-cookie"})},
		{name: "RFC 9110 §12.5.5 Vary: * (cache-tests vary-parse)", status: 200, hdr: h("cache-control", "max-age=60", "vary", "*"), reason: ReasonVaryStar},
		{name: "RFC 9110 §12.5.5 Vary: *, *", status: 200, hdr: h("cache-control", "max-age=60", "vary", "*, *"), reason: ReasonVaryStar},
		{name: "RFC 9110 §12.5.5 Vary: , *", status: 200, hdr: h("cache-control", "max-age=60", "vary", ", *"), reason: ReasonVaryStar},
		{name: "RFC 9110 §12.5.5 Vary: * on a second line", status: 200, hdr: h("cache-control", "max-age=60", "vary", "", "vary", "*"), reason: ReasonVaryStar},
		{name: "RFC 9110 §12.5.5 Vary: Foo, *", status: 200, hdr: h("cache-control", "max-age=60", "vary", "Foo, *"), reason: ReasonVaryStar},
		{name: "RFC 9110 §12.5.5 Vary: *, Foo", status: 200, hdr: h("cache-control", "max-age=60", "vary", "*, Foo"), reason: ReasonVaryStar},
		{name: "Vary member that is not a field name", status: 200, hdr: h("cache-control", "max-age=60", "vary", "Foo Bar"), reason: ReasonVaryInvalid},
		{name: "Vary with too many members", status: 200, hdr: h("cache-control", "max-age=60", "vary", "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q"), reason: ReasonVaryInvalid},
		{name: "§4.1 Vary names lower-cased, sorted, de-duplicated", status: 200, hdr: h("cache-control", "max-age=60", "vary", "Foo, Accept-Encoding", "vary", "foo"), lifetime: time.Minute,
			check: func(t *testing.T, e Entry) {
				polWant(t, slices.Equal(e.Vary, []string{"accept-encoding", "foo"}), "Vary %v", e.Vary)
			}},
		{name: "Content-Length over max_object_bytes", route: &small, status: 200, hdr: h("cache-control", "max-age=60", "content-length", "11"), reason: ReasonTooLarge},
		{name: "Content-Length within max_object_bytes", route: &small, status: 200, hdr: h("cache-control", "max-age=60", "content-length", "10"), lifetime: time.Minute},
		{name: "Cache-Control too large", status: 200, hdr: h("cache-control", "max-age=60, "+strings.Repeat("x,", maxCacheControlBytes)), reason: ReasonCacheControl},

		// §4.2.1 freshness lifetime
		{name: "§4.2.1 shared cache prefers short s-maxage over max-age", status: 200, hdr: h("cache-control", "max-age=3600, s-maxage=1"), lifetime: time.Second},
		{name: "§4.2.1 shared cache prefers long s-maxage over max-age", status: 200, hdr: h("cache-control", "max-age=1, s-maxage=3600"), lifetime: time.Hour},
		{name: "§4.2.1 s-maxage over max-age=0 and past Expires", status: 200, hdr: h("expires", d(-10*time.Second), "cache-control", "max-age=0, s-maxage=3600"), lifetime: time.Hour,
			check: func(t *testing.T, e Entry) {
				polWant(t, e.MustRevalidate, "§5.2.2.10 s-maxage implies proxy-revalidate")
			}},
		{name: "§4.2.1 s-maxage on separate lines", status: 200, hdr: h("cache-control", "max-age=3600", "cache-control", "s-maxage=1"), lifetime: time.Second},
		{name: "§5.3 max-age overrides a past Expires", status: 200, hdr: h("cache-control", "max-age=3600", "expires", d(-2*time.Hour), "date", d(0)), lifetime: time.Hour},
		{name: "§5.3 max-age overrides an invalid Expires", status: 200, hdr: h("cache-control", "max-age=3600", "expires", "0", "date", d(0)), lifetime: time.Hour},
		{name: "§4.2.1 max-age=0 and a future Expires, no validator", status: 200, hdr: h("expires", d(time.Hour), "cache-control", "max-age=0", "date", d(0)), reason: ReasonNotReusable},
		{name: "§4.2.1 max-age=0 with a validator is stored for revalidation", status: 200, hdr: h("cache-control", "max-age=0", "etag", `"v"`), lifetime: 0},
		{name: "§4.2.1 invalid max-age is stale", status: 200, hdr: h("cache-control", "max-age=abc"), reason: ReasonNotReusable},
		{name: "§4.2.1 negative max-age is stale", status: 200, hdr: h("cache-control", "max-age=-3600", "etag", `"v"`), lifetime: 0},
		{name: "§4.2.1 conflicting max-age is stale", status: 200, hdr: h("cache-control", "max-age=1800, max-age=1"), reason: ReasonNotReusable},
		{name: "§1.2.2 max-age 2^31 kept", status: 200, hdr: h("cache-control", "max-age=99999999999"), lifetime: MaxDeltaSeconds * time.Second},
		{name: "route max_ttl caps the lifetime", route: &capped, status: 200, hdr: h("cache-control", "max-age=86400"), lifetime: time.Hour},
		{name: "§4.2.3 max_ttl caps the freshness left, not the lifetime of an aged response (cache-tests age-parse-dup-old)", route: &capped,
			status: 200, hdr: h("date", d(0), "cache-control", "max-age=10000", "age", "3600", "age", "3600"), lifetime: 2 * time.Hour,
			check: func(t *testing.T, e Entry) {
				polWant(t, e.InitialAge == time.Hour && e.Fresh(polNow), "age %v, fresh %v", e.InitialAge, e.Fresh(polNow))
			}},
		{name: "§4.2.3 an aged response within max_ttl keeps its lifetime", route: &capped, status: 200,
			hdr: h("date", d(0), "cache-control", "max-age=5400", "age", "3600"), lifetime: 5400 * time.Second},
		{name: "§5.3 future Expires", status: 200, hdr: h("expires", d(30*24*time.Hour), "date", d(0)), lifetime: 30 * 24 * time.Hour},
		{name: "§5.3 Expires is relative to Date, not the local clock", status: 200, hdr: h("expires", d(-time.Hour), "date", d(-2*time.Hour)), lifetime: time.Hour},
		{name: "§5.3 past Expires", status: 200, hdr: h("expires", d(-30*24*time.Hour), "date", d(0)), reason: ReasonNotReusable},
		{name: "§5.3 present Expires", status: 200, hdr: h("expires", d(0), "date", d(0)), reason: ReasonNotReusable},
		{name: "§5.3 Expires older than Date", status: 200, hdr: h("expires", d(300*time.Second), "date", d(400*time.Second)), reason: ReasonNotReusable},
		{name: "§5.3 invalid Expires 0 is already expired", status: 200, hdr: h("expires", "0", "date", d(0)), reason: ReasonNotReusable},
		{name: "§5.3 Expires with an invalid Date uses the receive time", status: 200, hdr: h("date", "foo", "expires", d(10*time.Second)), lifetime: 10 * time.Second},
		{name: "§4.2.1 conflicting Expires lines are stale", status: 200, hdr: h("expires", d(time.Hour), "expires", d(2*time.Hour), "date", d(0)), reason: ReasonNotReusable},
		{name: "§4.2.1 repeated equal Expires lines", status: 200, hdr: h("expires", d(time.Hour), "expires", d(time.Hour), "date", d(0)), lifetime: time.Hour},
		{name: "§5.3 Expires far in the future is capped at 2^31s", status: 200, hdr: h("expires", "Sun, 21 Nov 2286 04:46:39 GMT", "date", d(0)), lifetime: MaxDeltaSeconds * time.Second},
		{name: "§5.4 response Pragma: no-cache is ignored", status: 200, hdr: h("cache-control", "max-age=3600", "pragma", "no-cache"), lifetime: time.Hour},

		// §4.2.2 heuristics
		{name: "§4.2.2 no heuristics by default (cache-tests freshness-none)", status: 200, hdr: h("last-modified", lastDay, "date", d(0)), reason: ReasonNoFreshness},
		{name: "§4.2.2 no freshness, no validator", status: 200, hdr: h("date", d(0)), reason: ReasonNoFreshness},
		{name: "§4.2.2 heuristic 10% of Date − Last-Modified", route: &heur, status: 200, hdr: h("last-modified", lastDay, "date", d(0)), lifetime: 8640 * time.Second},
		{name: "§4.2.2 heuristic capped at heuristic_max", route: &heur, status: 200, hdr: h("last-modified", d(-100*24*time.Hour), "date", d(0)), lifetime: 24 * time.Hour},
		{name: "§4.2.2 heuristic with response Pragma no-cache", route: &heur, status: 200, hdr: h("last-modified", lastDay, "date", d(0), "pragma", "no-cache"), lifetime: 8640 * time.Second},
		{name: "§4.2.2 heuristic needs Last-Modified", route: &heur, status: 200, hdr: h("date", d(0), "etag", `"x"`), reason: ReasonNoFreshness},
		{name: "§4.2.2 Last-Modified after Date gives no heuristic", route: &heur, status: 200, hdr: h("last-modified", d(time.Hour), "date", d(0)), reason: ReasonNoFreshness},
		{name: "§4.2.2 explicit Expires wins over heuristics", route: &heur, status: 200, hdr: h("last-modified", lastDay, "date", d(0), "expires", d(time.Minute)), lifetime: time.Minute},
		{name: "RFC 9110 §15.1 heuristic 203", route: &heur, status: 203, hdr: h("last-modified", lastDay, "date", d(0)), lifetime: 8640 * time.Second},
		{name: "RFC 9110 §15.1 heuristic 204", route: &heur, status: 204, hdr: h("last-modified", lastDay, "date", d(0)), lifetime: 8640 * time.Second},
		{name: "RFC 9110 §15.1 heuristic 404", route: &heur, status: 404, hdr: h("last-modified", lastDay, "date", d(0)), lifetime: 8640 * time.Second},
		{name: "RFC 9110 §15.1 heuristic 405", route: &heur, status: 405, hdr: h("last-modified", lastDay, "date", d(0)), lifetime: 8640 * time.Second},
		{name: "RFC 9110 §15.1 heuristic 410", route: &heur, status: 410, hdr: h("last-modified", lastDay, "date", d(0)), lifetime: 8640 * time.Second},
		{name: "RFC 9110 §15.1 heuristic 414", route: &heur, status: 414, hdr: h("last-modified", lastDay, "date", d(0)), lifetime: 8640 * time.Second},
		{name: "RFC 9110 §15.1 heuristic 501", route: &heur, status: 501, hdr: h("last-modified", lastDay, "date", d(0)), lifetime: 8640 * time.Second},
		{name: "RFC 9110 §15.1 no heuristic for 201", route: &heur, status: 201, hdr: h("last-modified", lastDay, "date", d(0)), reason: ReasonNoFreshness},
		{name: "RFC 9110 §15.1 no heuristic for 202", route: &heur, status: 202, hdr: h("last-modified", lastDay, "date", d(0)), reason: ReasonNoFreshness},
		{name: "RFC 9110 §15.1 no heuristic for 403", route: &heur, status: 403, hdr: h("last-modified", lastDay, "date", d(0)), reason: ReasonNoFreshness},
		{name: "RFC 9110 §15.1 no heuristic for 502", route: &heur, status: 502, hdr: h("last-modified", lastDay, "date", d(0)), reason: ReasonNoFreshness},
		{name: "RFC 9110 §15.1 no heuristic for 503", route: &heur, status: 503, hdr: h("last-modified", lastDay, "date", d(0)), reason: ReasonNoFreshness},
		{name: "RFC 9110 §15.1 no heuristic for 504", route: &heur, status: 504, hdr: h("last-modified", lastDay, "date", d(0)), reason: ReasonNoFreshness},
		{name: "§4.2.2 no heuristic for 599", route: &heur, status: 599, hdr: h("last-modified", lastDay, "date", d(0)), reason: ReasonNoFreshness},
		{name: "§5.2.2.9 public allows heuristics for 599", route: &heur, status: 599, hdr: h("last-modified", lastDay, "date", d(0), "cache-control", "public"), lifetime: 8640 * time.Second},
		{name: "§5.2.2.9 public alone is not freshness without heuristics", status: 200, hdr: h("cache-control", "public"), reason: ReasonNoFreshness},

		// flags and windows
		{name: "§5.2.2.2 must-revalidate", status: 200, hdr: h("cache-control", "max-age=60, must-revalidate, stale-if-error=60"), lifetime: time.Minute,
			check: func(t *testing.T, e Entry) {
				polWant(t, e.MustRevalidate && e.StaleIfError == 0 && e.StaleWhileRevalidate == 0, "must-revalidate drops stale windows: %+v", e)
			}},
		{name: "§5.2.2.8 proxy-revalidate is must-revalidate in a shared cache", status: 200, hdr: h("cache-control", "max-age=60, proxy-revalidate"), lifetime: time.Minute,
			check: func(t *testing.T, e Entry) { polWant(t, e.MustRevalidate, "MustRevalidate") }},
		{name: "RFC 5861 stale windows kept", status: 200, hdr: h("cache-control", "max-age=1, stale-while-revalidate=30, stale-if-error=600"), lifetime: time.Second,
			check: func(t *testing.T, e Entry) {
				polWant(t, e.StaleWhileRevalidate == 30*time.Second && e.StaleIfError == 10*time.Minute, "windows %+v", e)
			}},
		{name: "RFC 5861 stale windows capped by max_ttl", route: &capped, status: 200, hdr: h("cache-control", "max-age=1, stale-while-revalidate=86400, stale-if-error=86400"), lifetime: time.Second,
			check: func(t *testing.T, e Entry) {
				polWant(t, e.StaleWhileRevalidate == time.Hour && e.StaleIfError == time.Hour, "windows %+v", e)
			}},
		{name: "RFC 5861 max-age=0 with stale-while-revalidate is reusable", status: 200, hdr: h("cache-control", "max-age=0, stale-while-revalidate=60"), lifetime: 0},
		{name: "RFC 5861 stale windows do not apply to no-cache", status: 200, hdr: h("cache-control", "no-cache, stale-if-error=60", "etag", `"x"`), lifetime: 0,
			check: func(t *testing.T, e Entry) { polWant(t, e.StaleIfError == 0, "no stale-if-error") }},

		// §3.1 stored fields, §4.2.3 age
		{name: "§3.1 hop-by-hop and Sluice fields are not stored", status: 200,
			hdr: h(":status", "200", "cache-control", "max-age=60", "connection", "a, B", "a", "1", "b", "2", "c", "3",
				"keep-alive", "timeout=5", "proxy-connection", "x", "te", "x", "transfer-encoding", "chunked", "upgrade", "x", "trailer", "x",
				"proxy-authenticate", "x", "proxy-authentication-info", "x", "proxy-authorization", "x", "age", "5",
				"x-sluice-tenant", "acme", "x-envoy-upstream-service-time", "3", "x-cache", "HIT", "surrogate-key", "k", "surrogate-control", "max-age=5",
				"content-type", "text/plain", "cache-status", "upstream; hit",
				"ratelimit", `"free";r=3;t=1`, "ratelimit-policy", `"free";q=10;w=1`, "x-ratelimit-remaining", "3"), lifetime: time.Minute,
			check: polWantFields([]string{"cache-control", "c", "content-type", "cache-status", "date"},
				[]string{":status", "connection", "a", "b", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer",
					"proxy-authenticate", "proxy-authentication-info", "proxy-authorization", "age", "x-sluice-tenant",
					"x-envoy-upstream-service-time", "x-cache", "surrogate-key", "surrogate-control",
					"ratelimit", "ratelimit-policy", "x-ratelimit-remaining"})},
		{name: "RFC 9110 §6.6.1 Date added when missing", status: 200, hdr: h("cache-control", "max-age=60"), lifetime: time.Minute,
			check: func(t *testing.T, e Entry) {
				v, _ := e.Header.Lookup("date")
				polWant(t, v == polDate(0), "date %q", v)
			}},
		{name: "RFC 9110 §6.6.1 existing Date kept", status: 200, hdr: h("cache-control", "max-age=60", "date", d(-time.Second)), lifetime: time.Minute,
			check: func(t *testing.T, e Entry) {
				polWant(t, len(e.Header.Values("date")) == 1 && e.InitialAge == time.Second, "date %v age %v", e.Header.Values("date"), e.InitialAge)
			}},
		{name: "§4.2.3 Age counts in the initial age", status: 200, hdr: h("cache-control", "max-age=3600", "age", "1800", "date", d(0)), lifetime: time.Hour,
			check: func(t *testing.T, e Entry) { polWant(t, e.InitialAge == 30*time.Minute, "InitialAge %v", e.InitialAge) }},
		{name: "§4.2.3 response delay counts in the initial age", req: Request{Method: "GET", Time: polNow.Add(-2 * time.Second)}, status: 200,
			hdr: h("cache-control", "max-age=3600", "age", "10", "date", d(0)), lifetime: time.Hour,
			check: func(t *testing.T, e Entry) {
				polWant(t, e.InitialAge == 12*time.Second && e.RequestTime.Equal(polNow.Add(-2*time.Second)), "InitialAge %v", e.InitialAge)
			}},
		{name: "§4.2.3 apparent age from a slow Date", status: 200, hdr: h("cache-control", "max-age=3600", "date", d(-2*time.Hour)), lifetime: time.Hour,
			check: func(t *testing.T, e Entry) {
				polWant(t, e.InitialAge == 2*time.Hour && !e.Fresh(polNow), "InitialAge %v", e.InitialAge)
			}},
		{name: "validators and tags", route: &tagged, status: 200,
			hdr: h("cache-control", "max-age=60", "etag", ` W/"x" `, "last-modified", lastDay, "surrogate-key", "a  b {bad} a", "surrogate-key", "c"), lifetime: time.Minute,
			check: func(t *testing.T, e Entry) {
				polWant(t, e.ETag == `W/"x"` && e.LastModified == lastDay, "validators %q %q", e.ETag, e.LastModified)
				polWant(t, slices.Equal(e.Tags, []string{"contacts:acme", "all", "a", "b", "c"}), "tags %q", e.Tags)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			if req.Method == "" {
				req = polGet()
			}
			if req.Tenant == "" {
				req.Tenant = "acme"
			}
			route := polRoute()
			if tt.route != nil {
				route = *tt.route
			}
			e, ok, reason := Storable(req, tt.status, tt.hdr, polNow, route)
			if ok != (tt.reason == "") || reason != tt.reason {
				t.Fatalf("Storable = ok %v reason %q, want reason %q", ok, reason, tt.reason)
			}
			if !ok {
				return
			}
			if e.Lifetime != tt.lifetime {
				t.Errorf("Lifetime = %v, want %v", e.Lifetime, tt.lifetime)
			}
			if e.Status != tt.status || !e.ResponseTime.Equal(polNow) || e.Body != nil {
				t.Errorf("entry basics: %+v", e)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
}

func polWant(t *testing.T, cond bool, format string, args ...any) {
	t.Helper()
	if !cond {
		t.Errorf("want "+format, args...)
	}
}

// polWantFields checks that the stored header has every field of present
// and none of absent.
func polWantFields(present, absent []string) func(t *testing.T, e Entry) {
	return func(t *testing.T, e Entry) {
		t.Helper()
		for _, n := range present {
			if !e.Header.Has(n) {
				t.Errorf("stored header lacks %q: %v", n, e.Header)
			}
		}
		for _, n := range absent {
			if e.Header.Has(n) {
				t.Errorf("stored header has %q: %v", n, e.Header)
			}
		}
	}
}

func TestAgeValue(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  time.Duration
	}{
		{name: "§5.1 absent", want: 0},
		{name: "§5.1 integer", lines: []string{"7200"}, want: 2 * time.Hour},
		{name: "§5.1 non-numeric ignored (cache-tests age-parse-nonnumeric)", lines: []string{"abc"}, want: 0},
		{name: "§5.1 negative ignored", lines: []string{"-7200"}, want: 0},
		{name: "§5.1 float ignored", lines: []string{"7200.0"}, want: 0},
		{name: "§1.2.2 2^31-1", lines: []string{"2147483647"}, want: 2147483647 * time.Second},
		{name: "§1.2.2 2^31", lines: []string{"2147483648"}, want: MaxDeltaSeconds * time.Second},
		{name: "§1.2.2 2^31+1 capped", lines: []string{"2147483649"}, want: MaxDeltaSeconds * time.Second},
		{name: "§5.1 first member of a list (age-parse-suffix)", lines: []string{"7200, 0"}, want: 2 * time.Hour},
		{name: "§5.1 first member of a list (age-parse-prefix)", lines: []string{"0, 7200"}, want: 0},
		{name: "§5.1 first line (age-parse-suffix-twoline)", lines: []string{"7200", "0"}, want: 2 * time.Hour},
		{name: "§5.1 first line (age-parse-prefix-twoline)", lines: []string{"0", "7200"}, want: 0},
		{name: "§5.1 parameters are invalid (age-parse-parameter)", lines: []string{"7200;foo=bar"}, want: 0},
		{name: "§5.1 OWS trimmed", lines: []string{" 60 "}, want: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h header.List
			for _, l := range tt.lines {
				h = append(h, header.Field{Name: "age", Value: l})
			}
			if got := ageValue(h); got != tt.want {
				t.Errorf("ageValue(%q) = %v, want %v", tt.lines, got, tt.want)
			}
		})
	}
}

func TestParseHTTPDate(t *testing.T) {
	want := time.Date(2050, 8, 18, 2, 1, 18, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		ok   bool
		want time.Time
	}{
		{name: "RFC 9110 §5.6.7 IMF-fixdate", in: "Thu, 18 Aug 2050 02:01:18 GMT", ok: true, want: want},
		{name: "RFC 9110 §5.6.7 OWS around the value", in: " Thu, 18 Aug 2050 02:01:18 GMT\t", ok: true, want: want},
		{name: "RFC 9110 §5.6.7 exactly 32 bits", in: "Tue, 19 Jan 2038 14:14:08 GMT", ok: true, want: time.Date(2038, 1, 19, 14, 14, 8, 0, time.UTC)},
		{name: "RFC 9110 §5.6.7 far future", in: "Sun, 21 Nov 2286 04:46:39 GMT", ok: true, want: time.Date(2286, 11, 21, 4, 46, 39, 0, time.UTC)},
		{name: "RFC 9110 §5.6.7 obsolete rfc850", in: "Thursday, 18-Aug-50 02:01:18 GMT", ok: true, want: want},
		{name: "RFC 9110 §5.6.7 rfc850 two-digit year more than 50 years ahead is in the past", in: "Sunday, 06-Nov-94 08:49:37 GMT", ok: true, want: time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC)},
		{name: "RFC 9110 §5.6.7 asctime", in: "Thu Aug 18 02:01:18 2050", ok: true, want: want},
		{name: "RFC 9110 §5.6.7 asctime single-digit day", in: "Sun Nov  6 08:49:37 1994", ok: true, want: time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC)},
		{name: "wrong case weekday accepted", in: "THU, 18 Aug 2050 02:01:18 GMT", ok: true, want: want},
		{name: "wrong case month accepted", in: "Thu, 18 aug 2050 02:01:18 GMT", ok: true, want: want},
		{name: "wrong case tz accepted", in: "Thu, 18 Aug 2050 02:01:18 gMT", ok: true, want: want},
		{name: "invalid UTC", in: "Thu, 18 Aug 2050 02:01:18 UTC"},
		{name: "invalid other tz", in: "Thu, 18 Aug 2050 02:01:18 AEST"},
		{name: "invalid two-digit year in IMF", in: "Thu, 18 Aug 50 02:01:18 GMT"},
		{name: "invalid missing comma", in: "Thu 18 Aug 2050 02:01:18 GMT"},
		{name: "invalid multiple spaces", in: "Thu,  18 Aug  2050 02:01:18 GMT"},
		{name: "invalid date dashes", in: "Thu, 18-Aug-2050 02:01:18 GMT"},
		{name: "invalid time periods", in: "Thu, 18 Aug 2050 02.01.18 GMT"},
		{name: "invalid 1-digit hour", in: "Thu, 18 Aug 2050 2:01:18 GMT"},
		{name: "invalid 0", in: "0"},
		{name: "invalid empty", in: ""},
		{name: "invalid 31 Feb", in: "Thu, 31 Feb 2050 02:01:18 GMT"},
		{name: "invalid hour 24", in: "Thu, 18 Aug 2050 24:01:18 GMT"},
		{name: "invalid trailing junk", in: "Thu, 18 Aug 2050 02:01:18 GMTx"},
		{name: "invalid unknown day name", in: "Xyz, 18 Aug 2050 02:01:18 GMT"},
		{name: "invalid rfc850 short day name", in: "Thu, 18-Aug-50 02:01:18 GMT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseHTTPDate(tt.in, polNow)
			if ok != tt.ok || ok && !got.Equal(tt.want) {
				t.Errorf("parseHTTPDate(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
	if got, ok := parseHTTPDate(formatHTTPDate(polNow), polNow); !ok || !got.Equal(polNow) {
		t.Errorf("formatHTTPDate does not round trip: %v %v", got, ok)
	}
}

// polEntry is a 200 entry received at polNow.
func polEntry(lifetime, initialAge time.Duration) *Entry {
	return &Entry{Status: 200, Header: polHeader("date", polDate(-initialAge)), RequestTime: polNow, ResponseTime: polNow, InitialAge: initialAge, Lifetime: lifetime}
}

func TestEvaluate(t *testing.T) {
	hour := time.Hour
	with := func(e *Entry, f func(e *Entry)) *Entry { f(e); return e }
	tests := []struct {
		name    string
		req     Request
		entry   *Entry
		elapsed time.Duration
		action  Action
		reason  string
		fwd     string
		status  int
	}{
		{name: "§4 no entry is a miss", req: polGet(), action: ActionMiss, fwd: FwdURIMiss, reason: "no_entry"},
		{name: "§5.2.1.7 only-if-cached without entry is 504 (cache-tests ccreq-oic)", req: polGet("cache-control", "only-if-cached"), action: ActionGatewayTimeout, status: 504, reason: "only_if_cached"},
		{name: "§4 POST bypasses", req: Request{Method: "POST"}, entry: polEntry(hour, 0), action: ActionBypass, fwd: FwdMethod, reason: "method"},
		{name: "Range: the stored response serves it", req: polGet("range", "bytes=0-1"), entry: polEntry(hour, 0), action: ActionHit, status: 200, reason: "fresh"},
		{name: "§4.2 fresh is a hit", req: polGet(), entry: polEntry(hour, 0), elapsed: 10 * time.Second, action: ActionHit, reason: "fresh", status: 200},
		{name: "§4.2 HEAD is served from the GET entry", req: Request{Method: "HEAD"}, entry: polEntry(hour, 0), action: ActionHit, reason: "fresh", status: 200},
		{name: "§4.2 stale after the lifetime (cache-tests freshness-max-age-stale)", req: polGet(), entry: polEntry(2*time.Second, 0), elapsed: 3 * time.Second, action: ActionValidate, fwd: FwdStale, reason: "stale", status: 200},
		{name: "§4.2 exactly at the lifetime is stale", req: polGet(), entry: polEntry(time.Minute, 0), elapsed: time.Minute, action: ActionValidate, fwd: FwdStale, reason: "stale", status: 200},
		{name: "§4.2.3 Age beyond max-age is stale (cache-tests freshness-max-age-age)", req: polGet(), entry: polEntry(hour, 2*hour), action: ActionValidate, fwd: FwdStale, reason: "stale", status: 200},
		{name: "§4.2 zero lifetime is always stale", req: polGet(), entry: polEntry(0, 0), action: ActionValidate, fwd: FwdStale, reason: "stale", status: 200},
		{name: "§5.2.2.4 response no-cache validates even when fresh", req: polGet(), entry: with(polEntry(hour, 0), func(e *Entry) { e.NoCache = true }), action: ActionValidate, fwd: FwdStale, reason: "no_cache", status: 200},
		{name: "§5.2.1.4 request no-cache validates (cache-tests ccreq-no-cache)", req: polGet("cache-control", "no-cache"), entry: polEntry(hour, 0), action: ActionValidate, fwd: FwdRequest, reason: "request_no_cache", status: 200},
		{name: "§5.4 request Pragma no-cache validates", req: polGet("pragma", "no-cache"), entry: polEntry(hour, 0), action: ActionValidate, fwd: FwdRequest, reason: "request_no_cache", status: 200},
		{name: "§5.4 Pragma extension is ignored (cache-tests pragma-request-extension)", req: polGet("pragma", "unrecognised-extension"), entry: polEntry(hour, 0), action: ActionHit, reason: "fresh", status: 200},
		{name: "§5.2.1.1 request max-age=0 validates (cache-tests ccreq-ma0)", req: polGet("cache-control", "max-age=0"), entry: polEntry(hour, 0), action: ActionValidate, fwd: FwdRequest, reason: "request_max_age", status: 200},
		{name: "§5.2.1.1 request max-age=1 with an older entry (ccreq-ma1)", req: polGet("cache-control", "max-age=1"), entry: polEntry(hour, 0), elapsed: 2 * time.Second, action: ActionValidate, fwd: FwdRequest, reason: "request_max_age", status: 200},
		{name: "§5.2.1.1 request max-age below Age (ccreq-magreaterage)", req: polGet("cache-control", "max-age=600"), entry: polEntry(hour, 1800*time.Second), action: ActionValidate, fwd: FwdRequest, reason: "request_max_age", status: 200},
		{name: "§5.2.1.1 request max-age satisfied", req: polGet("cache-control", "max-age=600"), entry: polEntry(hour, 0), elapsed: time.Minute, action: ActionHit, reason: "fresh", status: 200},
		{name: "§5.2.1.1 invalid request max-age validates", req: polGet("cache-control", "max-age=abc"), entry: polEntry(hour, 0), action: ActionValidate, fwd: FwdRequest, reason: "request_max_age", status: 200},
		{name: "§5.2.1.3 min-fresh not met (ccreq-min-fresh)", req: polGet("cache-control", "min-fresh=2000"), entry: polEntry(1500*time.Second, 0), action: ActionValidate, fwd: FwdRequest, reason: "request_min_fresh", status: 200},
		{name: "§5.2.1.3 min-fresh not met with Age (ccreq-min-fresh-age)", req: polGet("cache-control", "min-fresh=1000"), entry: polEntry(1500*time.Second, 1000*time.Second), action: ActionValidate, fwd: FwdRequest, reason: "request_min_fresh", status: 200},
		{name: "§5.2.1.3 min-fresh met", req: polGet("cache-control", "min-fresh=100"), entry: polEntry(1500*time.Second, 0), action: ActionHit, reason: "fresh", status: 200},
		{name: "§5.2.1.2 max-stale allows a stale entry (ccreq-max-stale)", req: polGet("cache-control", "max-stale=1000"), entry: polEntry(time.Second, 0), elapsed: 500 * time.Second, action: ActionStale, reason: "max_stale", status: 200},
		{name: "§5.2.1.2 max-stale with Age (ccreq-max-stale-age)", req: polGet("cache-control", "max-stale=1000"), entry: polEntry(1500*time.Second, 2000*time.Second), action: ActionStale, reason: "max_stale", status: 200},
		{name: "§5.2.1.2 max-stale exceeded", req: polGet("cache-control", "max-stale=1000"), entry: polEntry(time.Second, 0), elapsed: 2000 * time.Second, action: ActionValidate, fwd: FwdStale, reason: "stale", status: 200},
		{name: "§5.2.1.2 max-stale without value accepts any staleness", req: polGet("cache-control", "max-stale"), entry: polEntry(time.Second, 0), elapsed: 1000 * hour, action: ActionStale, reason: "max_stale", status: 200},
		{name: "§5.2.1.2 invalid max-stale is ignored", req: polGet("cache-control", "max-stale=x"), entry: polEntry(time.Second, 0), elapsed: time.Minute, action: ActionValidate, fwd: FwdStale, reason: "stale", status: 200},
		{name: "§5.2.2.2 must-revalidate beats max-stale (cache-tests stale-close-must-revalidate)", req: polGet("cache-control", "max-stale"), entry: with(polEntry(time.Second, 0), func(e *Entry) { e.MustRevalidate = true }), elapsed: time.Minute, action: ActionValidate, fwd: FwdStale, reason: "must_revalidate", status: 200},
		{name: "§5.2.2.4 no-cache beats max-stale", req: polGet("cache-control", "max-stale"), entry: with(polEntry(time.Second, 0), func(e *Entry) { e.NoCache = true }), elapsed: time.Minute, action: ActionValidate, fwd: FwdStale, reason: "no_cache", status: 200},
		{name: "RFC 5861 §3 within stale-while-revalidate (cache-tests stale-while-revalidate)", req: polGet(), entry: with(polEntry(time.Second, 0), func(e *Entry) { e.StaleWhileRevalidate = hour }), elapsed: 10 * time.Second, action: ActionStale, reason: "stale_while_revalidate", status: 200},
		{name: "RFC 5861 §3 after the stale-while-revalidate window", req: polGet(), entry: with(polEntry(time.Second, 0), func(e *Entry) { e.StaleWhileRevalidate = 4 * time.Second }), elapsed: 6 * time.Second, action: ActionValidate, fwd: FwdStale, reason: "stale", status: 200},
		{name: "§4.2.4 must-revalidate beats stale-while-revalidate", req: polGet(), entry: with(polEntry(time.Second, 0), func(e *Entry) { e.StaleWhileRevalidate = hour; e.MustRevalidate = true }), elapsed: 10 * time.Second, action: ActionValidate, fwd: FwdStale, reason: "must_revalidate", status: 200},
		{name: "§5.2.1.4 request no-cache beats stale-while-revalidate", req: polGet("cache-control", "no-cache"), entry: with(polEntry(time.Second, 0), func(e *Entry) { e.StaleWhileRevalidate = hour }), elapsed: 10 * time.Second, action: ActionValidate, fwd: FwdRequest, reason: "request_no_cache", status: 200},
		{name: "§5.2.1.7 only-if-cached with a fresh entry", req: polGet("cache-control", "only-if-cached"), entry: polEntry(hour, 0), action: ActionHit, reason: "fresh", status: 200},
		{name: "§5.2.1.7 only-if-cached with a stale entry is 504", req: polGet("cache-control", "only-if-cached"), entry: polEntry(time.Second, 0), elapsed: time.Minute, action: ActionGatewayTimeout, reason: "only_if_cached", status: 504},
		{name: "§5.2.1.7 only-if-cached with max-stale serves stale", req: polGet("cache-control", "only-if-cached, max-stale"), entry: polEntry(time.Second, 0), elapsed: time.Minute, action: ActionStale, reason: "max_stale", status: 200},
		{name: "§4.3.2 client If-None-Match on a hit is 304", req: polGet("if-none-match", `"v"`), entry: with(polEntry(hour, 0), func(e *Entry) { e.ETag = `"v"` }), action: ActionHit, reason: "fresh", status: 304},
		{name: "§4.3.2 client If-None-Match not matching is 200", req: polGet("if-none-match", `"w"`), entry: with(polEntry(hour, 0), func(e *Entry) { e.ETag = `"v"` }), action: ActionHit, reason: "fresh", status: 200},
		{name: "§4.3.2 client If-None-Match on a stale serve is 304", req: polGet("if-none-match", `"v"`), entry: with(polEntry(time.Second, 0), func(e *Entry) { e.ETag = `"v"`; e.StaleWhileRevalidate = hour }), elapsed: time.Minute, action: ActionStale, reason: "stale_while_revalidate", status: 304},
		{name: "§4.3.2 status of a non-200 entry", req: polGet(), entry: with(polEntry(hour, 0), func(e *Entry) { e.Status = 404 }), action: ActionHit, reason: "fresh", status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Evaluate(tt.req, tt.entry, polNow.Add(tt.elapsed))
			if d.Action != tt.action || d.Reason != tt.reason || d.Fwd != tt.fwd || d.Status != tt.status {
				t.Errorf("Evaluate = %+v (%v), want action %v reason %q fwd %q status %d", d, d.Action, tt.action, tt.reason, tt.fwd, tt.status)
			}
			if tt.entry != nil && d.Action != ActionBypass {
				age := tt.entry.Age(polNow.Add(tt.elapsed))
				if !d.HasEntry || d.Age != age || d.TTL != tt.entry.Lifetime-age {
					t.Errorf("Age %v TTL %v, want %v %v", d.Age, d.TTL, age, tt.entry.Lifetime-age)
				}
			}
		})
	}
}

func TestEvaluateEndToEnd(t *testing.T) {
	// Storable then Evaluate, with the cache-tests flows that need both.
	tests := []struct {
		name    string
		hdr     header.List
		req     Request
		elapsed time.Duration
		action  Action
	}{
		{name: "cc-resp-must-revalidate-fresh", hdr: polHeader("cache-control", "max-age=10000, must-revalidate", "etag", `"abcd"`), req: polGet(), elapsed: time.Second, action: ActionHit},
		{name: "cc-resp-must-revalidate-stale", hdr: polHeader("cache-control", "max-age=2, must-revalidate", "etag", `"abcd"`), req: polGet("cache-control", "max-stale"), elapsed: 3 * time.Second, action: ActionValidate},
		{name: "cc-resp-immutable-fresh", hdr: polHeader("cache-control", "max-age=10000, immutable", "etag", `"abcd"`), req: polGet(), elapsed: time.Second, action: ActionHit},
		{name: "cc-resp-immutable-stale", hdr: polHeader("cache-control", "max-age=2, immutable", "etag", `"abcd"`), req: polGet(), elapsed: 3 * time.Second, action: ActionValidate},
		{name: "cc-resp-no-cache-revalidate-fresh", hdr: polHeader("cache-control", "max-age=10000, no-cache", "etag", `"abcd"`), req: polGet(), elapsed: time.Second, action: ActionValidate},
		{name: "freshness-max-age-s-maxage-shared-longer", hdr: polHeader("cache-control", "max-age=3600, s-maxage=1"), req: polGet(), elapsed: 3 * time.Second, action: ActionValidate},
		{name: "freshness-max-age-date (apparent age)", hdr: polHeader("date", polDate(-2*time.Hour), "cache-control", "max-age=3600"), req: polGet(), elapsed: time.Second, action: ActionValidate},
		{name: "freshness-expires-age-slow-date", hdr: polHeader("date", polDate(-10*time.Second), "expires", polDate(10*time.Second), "age", "25"), req: polGet(), elapsed: 0, action: ActionValidate},
		{name: "freshness-expires-age-fast-date", hdr: polHeader("date", polDate(10*time.Second), "expires", polDate(20*time.Second), "age", "15"), req: polGet(), elapsed: 0, action: ActionValidate},
		{name: "age-parse-dup-old", hdr: polHeader("date", polDate(0), "cache-control", "max-age=10000", "age", "3600", "age", "3600"), req: polGet(), elapsed: time.Second, action: ActionHit},
		{name: "age-parse-large", hdr: polHeader("date", polDate(0), "cache-control", "max-age=3600", "age", "2147483648"), req: polGet(), elapsed: 0, action: ActionValidate},
		{name: "stale-while-revalidate-window", hdr: polHeader("cache-control", "max-age=1, stale-while-revalidate=4", "etag", `"abc"`), req: polGet(), elapsed: 6 * time.Second, action: ActionValidate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok, reason := Storable(polGet(), 200, tt.hdr, polNow, polRoute())
			if !ok {
				t.Fatalf("not stored: %s", reason)
			}
			if d := Evaluate(tt.req, &e, polNow.Add(tt.elapsed)); d.Action != tt.action {
				t.Errorf("Evaluate = %v (%s), want %v", d.Action, d.Reason, tt.action)
			}
		})
	}
}

func TestServeStaleOnError(t *testing.T) {
	sie := func(window time.Duration, f ...func(*Entry)) *Entry {
		e := polEntry(2*time.Second, 0)
		e.StaleIfError = window
		for _, g := range f {
			g(e)
		}
		return e
	}
	tests := []struct {
		name    string
		req     Request
		entry   *Entry
		status  int
		elapsed time.Duration
		want    bool
	}{
		{name: "RFC 5861 §4 within stale-if-error on 503 (cache-tests stale-sie-503)", req: polGet(), entry: sie(time.Minute), status: 503, elapsed: 10 * time.Second, want: true},
		{name: "RFC 5861 §4 no response at all (stale-sie-close)", req: polGet(), entry: sie(time.Minute), status: 0, elapsed: 10 * time.Second, want: true},
		{name: "RFC 5861 §4 500 502 504 count", req: polGet(), entry: sie(time.Minute), status: 504, elapsed: 10 * time.Second, want: true},
		{name: "RFC 5861 §4 404 is not an error", req: polGet(), entry: sie(time.Minute), status: 404, elapsed: 10 * time.Second},
		{name: "RFC 5861 §4 beyond the window", req: polGet(), entry: sie(time.Minute), status: 503, elapsed: 2 * time.Minute},
		{name: "§4.2.4 without stale-if-error a stale entry is not served (stale-503)", req: polGet(), entry: sie(0), status: 503, elapsed: 10 * time.Second},
		{name: "RFC 5861 §4 request stale-if-error", req: polGet("cache-control", "stale-if-error=60"), entry: sie(0), status: 503, elapsed: 10 * time.Second, want: true},
		{name: "§5.2.2.2 must-revalidate forbids (stale-close-must-revalidate)", req: polGet(), entry: sie(time.Minute, func(e *Entry) { e.MustRevalidate = true }), status: 503, elapsed: 10 * time.Second},
		{name: "§5.2.2.4 no-cache forbids (stale-close-no-cache)", req: polGet(), entry: sie(time.Minute, func(e *Entry) { e.NoCache = true }), status: 503, elapsed: 10 * time.Second},
		{name: "client asked for validation", req: polGet("cache-control", "max-age=0"), entry: sie(time.Minute), status: 503, elapsed: 10 * time.Second},
		{name: "nil entry", req: polGet(), status: 503},
		{name: "POST never", req: Request{Method: "POST"}, entry: sie(time.Minute), status: 503, elapsed: 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ServeStaleOnError(tt.req, tt.entry, polNow.Add(tt.elapsed), tt.status); got != tt.want {
				t.Errorf("ServeStaleOnError = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFreshen(t *testing.T) {
	lm := "Wed, 01 Jan 2020 00:00:00 GMT"
	stored := func(extra ...string) *Entry {
		h := append([]string{"cache-control", "max-age=2", "date", polDate(0), "etag", `"v1"`, "last-modified", lm,
			"test-header", "A", "content-length", "36", "content-encoding", "gzip", "vary", "Foo"}, extra...)
		e, ok, reason := Storable(polGet(), 200, polHeader(h...), polNow, polRoute())
		if !ok {
			t.Fatalf("setup: %s", reason)
		}
		e.Body = []byte("body")
		e.Tags = []string{"old"}
		return &e
	}
	later := polNow.Add(10 * time.Second)
	at := func(offset time.Duration) string { return formatHTTPDate(later.Add(offset)) }
	tests := []struct {
		name   string
		entry  *Entry
		hdr    header.List
		store  bool
		reason string
		check  func(t *testing.T, e *Entry)
	}{
		{name: "§4.3.4 strong ETag selects, fields replaced (cache-tests 304-etag-update-response-Test-Header)", entry: stored(),
			hdr: polHeader("etag", `"v1"`, "date", at(0), "test-header", "B", "cache-control", "max-age=3600"), store: true,
			check: func(t *testing.T, e *Entry) {
				polWant(t, e.Header.Values("test-header")[0] == "B", "updated test-header %v", e.Header)
				polWant(t, e.Lifetime == time.Hour && e.Fresh(later) && e.ResponseTime.Equal(later), "new lifetime %v", e.Lifetime)
				polWant(t, string(e.Body) == "body", "body kept")
				polWant(t, len(e.Header.Values("cache-control")) == 1, "one cache-control")
			}},
		{name: "§4.3.4 stored fields the 304 omits are kept (304-lm-use-stored-Test-Header)", entry: stored(),
			hdr: polHeader("last-modified", lm, "date", at(0)), store: true,
			check: func(t *testing.T, e *Entry) {
				polWant(t, e.Header.Values("test-header")[0] == "A", "kept test-header")
				polWant(t, e.Lifetime == 2*time.Second && e.Fresh(later), "lifetime renewed from the stored max-age")
				polWant(t, e.Header.Values("date")[0] == at(0), "date replaced")
			}},
		{name: "§3.2 Content-Length, Content-Encoding and Vary are not updated", entry: stored(),
			hdr: polHeader("etag", `"v1"`, "date", at(0), "content-length", "10", "content-encoding", "br", "vary", "Bar"), store: true,
			check: func(t *testing.T, e *Entry) {
				polWant(t, e.Header.Values("content-length")[0] == "36", "content-length kept")
				polWant(t, e.Header.Values("content-encoding")[0] == "gzip", "content-encoding kept")
				polWant(t, e.Header.Values("vary")[0] == "Foo" && slices.Equal(e.Vary, []string{"foo"}), "vary kept")
			}},
		{name: "RFC 9110 §6.6.1 a 304 without Date gets one", entry: stored(),
			hdr: polHeader("etag", `"v1"`), store: true,
			check: func(t *testing.T, e *Entry) {
				polWant(t, e.Header.Values("date")[0] == formatHTTPDate(later) && e.Fresh(later), "date %v", e.Header.Values("date"))
			}},
		{name: "§4.3.4 the 304's Age counts", entry: stored(),
			hdr: polHeader("etag", `"v1"`, "date", at(0), "age", "1", "cache-control", "max-age=60"), store: true,
			check: func(t *testing.T, e *Entry) {
				polWant(t, e.InitialAge == time.Second && !e.Header.Has("age"), "InitialAge %v", e.InitialAge)
			}},
		{name: "§4.3.4 a different strong ETag does not select", entry: stored(), hdr: polHeader("etag", `"v2"`), reason: ReasonValidatorMismatch},
		{name: "§4.3.4 a strong ETag does not select a weak one", entry: stored(), hdr: polHeader("etag", `"v1"`, "etag", `W/"v1"`),
			store: true}, // first ETag line decides; strong "v1" matches stored strong "v1"
		{name: "§4.3.4 weak ETag selects by weak comparison", entry: stored(), hdr: polHeader("etag", `W/"v1"`), store: true},
		{name: "§4.3.4 Last-Modified selects when there is no ETag", entry: stored(), hdr: polHeader("last-modified", "Wednesday, 01-Jan-20 00:00:00 GMT"), store: true},
		{name: "§4.3.4 a different Last-Modified does not select", entry: stored(), hdr: polHeader("last-modified", "Thu, 02 Jan 2020 00:00:00 GMT"), reason: ReasonValidatorMismatch},
		{name: "§4.3.4 a 304 without validators answers Sluice's own request", entry: stored(), hdr: polHeader("date", at(0)), store: true},
		{name: "§4.3.4 ETag in the 304 but none stored", entry: func() *Entry { e := stored(); e.ETag = ""; return e }(), hdr: polHeader("etag", `"v1"`), reason: ReasonValidatorMismatch},
		{name: "§4.3.4 a 304 with no-store: serve once, do not store", entry: stored(), hdr: polHeader("etag", `"v1"`, "cache-control", "no-store"), reason: ReasonNoStore,
			check: func(t *testing.T, e *Entry) { polWant(t, e != nil && string(e.Body) == "body", "entry to serve") }},
		{name: "request no-store on the validating request", entry: stored(), hdr: polHeader("etag", `"v1"`), reason: ReasonRequestNoStore},
		{name: "tags kept without Surrogate-Key", entry: stored(), hdr: polHeader("etag", `"v1"`), store: true,
			check: func(t *testing.T, e *Entry) { polWant(t, slices.Equal(e.Tags, []string{"old"}), "tags %v", e.Tags) }},
		{name: "tags replaced by a Surrogate-Key", entry: stored(), hdr: polHeader("etag", `"v1"`, "surrogate-key", "n1 n2"), store: true,
			check: func(t *testing.T, e *Entry) {
				polWant(t, slices.Equal(e.Tags, []string{"n1", "n2"}) && !e.Header.Has("surrogate-key"), "tags %v", e.Tags)
			}},
		{name: "RFC 9110 §7.6.1 the 304's hop-by-hop fields are not merged", entry: stored("x-keep", "stored"),
			hdr: polHeader("etag", `"v1"`, "connection", "x-keep", "x-keep", "hop", "keep-alive", "timeout=5"), store: true,
			check: func(t *testing.T, e *Entry) {
				polWant(t, slices.Equal(e.Header.Values("x-keep"), []string{"stored"}) && !e.Header.Has("keep-alive") && !e.Header.Has("connection"),
					"stored x-keep kept, 304 hop fields dropped: %v", e.Header)
			}},
		{name: "Set-Cookie on a 304 is not merged and does not block storing", entry: stored(),
			hdr: polHeader("etag", `"v1"`, "set-cookie", "s=1"), store: true,
			check: func(t *testing.T, e *Entry) { polWant(t, !e.Header.Has("set-cookie"), "no set-cookie") }},
		{name: "nil entry", hdr: polHeader("etag", `"v1"`), reason: ReasonValidatorMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := polGet()
			if tt.reason == ReasonRequestNoStore {
				req = polGet("cache-control", "no-store")
			}
			req.Time = later.Add(-10 * time.Millisecond)
			if tt.name == "§4.3.4 the 304's Age counts" {
				req.Time = later
			}
			before := tt.entry
			var snapshot Entry
			if before != nil {
				snapshot = *before
				snapshot.Header = slices.Clone(before.Header)
			}
			e, store, reason := Freshen(req, tt.entry, tt.hdr, later, polRoute())
			if store != tt.store || (!store && reason != tt.reason) {
				t.Fatalf("Freshen store=%v reason=%q, want store=%v reason=%q", store, reason, tt.store, tt.reason)
			}
			if tt.reason == ReasonValidatorMismatch {
				if e != nil {
					t.Fatalf("want nil entry on mismatch")
				}
				return
			}
			if before != nil && !reflect.DeepEqual(*before, snapshot) {
				t.Errorf("Freshen modified the stored entry")
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
}

func TestServeHeaders(t *testing.T) {
	e := &Entry{
		Status: 200,
		Header: polHeader("content-type", "text/plain", "cache-control", "max-age=60", "etag", `"v"`, "last-modified", polDate(-time.Hour),
			"date", polDate(0), "expires", polDate(time.Minute), "vary", "accept", "content-location", "/r", "x-other", "1",
			"cache-status", "origin-cache; hit", "content-length", "4"),
		ResponseTime: polNow, InitialAge: 2 * time.Second, Lifetime: time.Minute, ETag: `"v"`,
	}
	now := polNow.Add(10*time.Second + 900*time.Millisecond)
	cs := CacheStatus{Hit: true, TTL: e.Lifetime - e.Age(now), HasTTL: true}

	t.Run("§5.1 Age, RFC 9211 Cache-Status appended, x-cache", func(t *testing.T) {
		got := ServeHeaders(e, now, 200, cs, XCacheValue(XCacheHit, "L1"))
		n := len(got)
		if n != len(e.Header)-1+3 {
			t.Fatalf("got %d fields: %v", n, got)
		}
		wantTail := polHeader("age", "12", "cache-status", "origin-cache; hit, sluice; hit; ttl=47", "x-cache", "HIT-L1")
		if !reflect.DeepEqual(got[n-3:], wantTail) {
			t.Errorf("tail = %v, want %v", got[n-3:], wantTail)
		}
		if !got.Has("x-other") || !got.Has("content-length") {
			t.Errorf("stored fields missing: %v", got)
		}
	})
	t.Run("RFC 9110 §15.4.5 a 304 carries only the required fields", func(t *testing.T) {
		got := ServeHeaders(e, now, 304, cs, "")
		var names []string
		for _, h := range got {
			names = append(names, h.Name)
		}
		want := []string{"cache-control", "etag", "date", "expires", "vary", "content-location", "age", "cache-status"}
		if !slices.Equal(names, want) {
			t.Errorf("304 fields %v, want %v", names, want)
		}
	})
	t.Run("RFC 9110 §15.4.5 Last-Modified in a 304 without ETag", func(t *testing.T) {
		noETag := *e
		noETag.ETag = ""
		noETag.Header = slices.DeleteFunc(slices.Clone(e.Header), func(h header.Field) bool { return h.Name == "etag" })
		if got := ServeHeaders(&noETag, now, 304, cs, ""); !got.Has("last-modified") {
			t.Errorf("want last-modified: %v", got)
		}
	})
}

func TestCacheStatus(t *testing.T) {
	tests := []struct {
		name string
		cs   CacheStatus
		want string
	}{
		{name: "RFC 9211 §2 bare", cs: CacheStatus{}, want: "sluice"},
		{name: "RFC 9211 §2.1 hit with ttl", cs: CacheStatus{Hit: true, TTL: 12*time.Second + 900*time.Millisecond, HasTTL: true}, want: "sluice; hit; ttl=12"},
		{name: "RFC 9211 §2.7 stale hit has a negative ttl", cs: CacheStatus{Hit: true, TTL: -300 * time.Millisecond, HasTTL: true}, want: "sluice; hit; ttl=-1"},
		{name: "RFC 9211 §2.2 §2.5 miss stored", cs: CacheStatus{Fwd: FwdURIMiss, Stored: true}, want: "sluice; fwd=uri-miss; stored"},
		{name: "RFC 9211 §2.3 revalidated", cs: CacheStatus{Fwd: FwdStale, FwdStatus: 304, Stored: true, TTL: time.Minute, HasTTL: true}, want: "sluice; fwd=stale; fwd-status=304; stored; ttl=60"},
		{name: "RFC 9211 §2.6 §2.8 §2.9 collapsed, key and detail as sf-strings", cs: CacheStatus{Fwd: FwdMiss, Collapsed: true, Key: `a"b\c`, Detail: "l2\x01 down"}, want: `sluice; fwd=miss; collapsed; key="a\"b\\c"; detail="l2 down"`},
		{name: "invalid fwd token dropped", cs: CacheStatus{Fwd: "a b"}, want: "sluice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.cs.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
	if got := AppendCacheStatus(" , ", CacheStatus{Hit: true}); got != "sluice; hit" {
		t.Errorf("AppendCacheStatus on empty = %q", got)
	}
	if got := AppendCacheStatus("cdn; fwd=uri-miss", CacheStatus{Hit: true}); got != "cdn; fwd=uri-miss, sluice; hit" {
		t.Errorf("AppendCacheStatus = %q", got)
	}
}

func TestDecisionHeaders(t *testing.T) {
	tests := []struct {
		d      Decision
		cs     string
		ok     bool
		xcache string
	}{
		{d: Decision{Action: ActionHit, HasEntry: true, TTL: 12 * time.Second}, cs: "sluice; hit; ttl=12", ok: true, xcache: XCacheHit},
		{d: Decision{Action: ActionStale, HasEntry: true, TTL: -5 * time.Second}, cs: "sluice; hit; ttl=-5", ok: true, xcache: XCacheStale},
		{d: Decision{Action: ActionValidate, HasEntry: true, TTL: -5 * time.Second, Fwd: FwdStale}, cs: "sluice; fwd=stale; ttl=-5", ok: true, xcache: XCacheMiss},
		{d: Decision{Action: ActionMiss, Fwd: FwdURIMiss}, cs: "sluice; fwd=uri-miss", ok: true, xcache: XCacheMiss},
		{d: Decision{Action: ActionBypass, Fwd: FwdMethod}, cs: "sluice; fwd=method", ok: true, xcache: XCacheBypass},
		{d: Decision{Action: ActionGatewayTimeout, Status: 504}, ok: false, xcache: XCacheMiss},
	}
	for _, tt := range tests {
		t.Run(tt.d.Action.String(), func(t *testing.T) {
			cs, ok := tt.d.CacheStatus()
			if ok != tt.ok || ok && cs.String() != tt.cs || tt.d.XCache() != tt.xcache {
				t.Errorf("CacheStatus = %q %v, XCache %q", cs.String(), ok, tt.d.XCache())
			}
		})
	}
	if AgeValue(-time.Second) != "0" || AgeValue(1999*time.Millisecond) != "1" || AgeValue(1<<62) != "2147483648" {
		t.Errorf("AgeValue bounds")
	}
	if Action(99).String() != "unknown" {
		t.Errorf("unknown action name")
	}
}

func TestUsableUntil(t *testing.T) {
	e := polEntry(time.Minute, 10*time.Second)
	e.StaleWhileRevalidate, e.StaleIfError = 30*time.Second, 5*time.Minute
	if got, want := e.UsableUntil(), polNow.Add(50*time.Second+5*time.Minute); !got.Equal(want) {
		t.Errorf("UsableUntil = %v, want %v", got, want)
	}
}
