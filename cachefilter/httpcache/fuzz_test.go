package httpcache

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// fuzzHeaders reads "name: value" lines (names lower-cased, as Envoy sends
// them); a line without ": " is a name with an empty value.
func fuzzHeaders(s string) header.List {
	var hs header.List
	for _, line := range strings.Split(s, "\n") {
		if line == "" {
			continue
		}
		name, value, _ := strings.Cut(line, ": ")
		hs = append(hs, header.Field{Name: strings.ToLower(name), Value: value})
	}
	return hs
}

// cookieKept reports whether a Set-Cookie field of header would be part of
// the stored response but for the Set-Cookie rule.
func cookieKept(hdr header.List, cc CacheControl) bool {
	dropped := append(append(ConnectionFields(hdr), cc.PrivateFields...), cc.NoCacheFields...)
	for _, name := range []string{"set-cookie", "set-cookie2"} {
		if hdr.Has(name) && !containsString(dropped, name) {
			return true
		}
	}
	return false
}

// FuzzStorable runs a response an origin (or anyone able to influence one)
// controls through the shared cache's storage decision, with a request
// whose headers a client controls, then through the lookup
// decision and the headers served from the entry. It checks the promises a
// shared cache makes about hostile responses (RFC 9111 §3, §3.5, §5.2.2):
// nothing private, no-store, Vary: * or (by default) Set-Cookie is stored;
// an Authorization request's response only with public, s-maxage or
// must-revalidate; nothing answering a request with a field the key lacks
// but applications act on (X-Forwarded-Host, X-Original-URL, method
// overrides: web cache poisoning); a stored entry holds no Set-Cookie, x-sluice-*,
// x-envoy-*, rate-limit, hop-by-hop or Age field, and is served with header
// values Envoy accepts. (cachefilter's FuzzStoredEntryCodec stores such
// entries through the codec.)
//
// Seeds: testdata/fuzz/FuzzStorable, plus the exchanges below.
func FuzzStorable(f *testing.F) {
	for _, s := range [][2]string{
		{"", "cache-control: max-age=60\netag: \"v1\""},
		{"authorization: Bearer x", "cache-control: max-age=60"},
		{"authorization: Bearer x", "cache-control: public, max-age=60\nset-cookie: a=b"},
		{"x-forwarded-host: evil.example", "cache-control: max-age=60\nvary: X-Forwarded-Host"},
		{"", "cache-control: max-age=60\nvary: *"},
		{"", "cache-control: private, max-age=60"},
		{"", "cache-control: max-age=60, private=\"set-cookie\"\nset-cookie: s=1"},
		{"", "cache-control: no-store, must-understand, max-age=60"},
		{"cache-control: no-cache\nif-none-match: \"v1\", W/\"v2\"", "cache-control: s-maxage=10, stale-while-revalidate=30\nlast-modified: Wed, 21 Oct 2015 07:28:00 GMT"},
		{"", "expires: Thu, 01 Jan 1970 00:00:00 GMT\ndate: Sun, 06 Nov 1994 08:49:37 GMT"},
		{"", "connection: x-secret\nx-secret: 1\nx-sluice-tenant: victim\nx-envoy-upstream-service-time: 1\nratelimit: \"x\";r=1\nage: 99999999999999999999\ncache-control: max-age=60"},
	} {
		f.Add(200, s[0], s[1], false)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, reqHeader, respHeader string, storeSetCookie bool) {
		// cachefilter's defaults (Config{}.WithDefaults().Route).
		route := Policy{
			Enabled: true, MaxTTL: time.Hour, MaxObjectBytes: 1 << 20, HeuristicFraction: 0.1,
			HeuristicMax: 24 * time.Hour, StoreSetCookie: storeSetCookie, Targets: DefaultTargets,
		}
		req := Request{
			Method: "GET", Scheme: "http", Authority: "api.example.com", Path: "/api/v1/x?a=1",
			Header: fuzzHeaders(reqHeader), Tenant: "acme", Time: now.Add(-time.Second),
		}
		hdr := fuzzHeaders(respHeader)
		e, ok, reason := Storable(req, status, hdr, now, route)
		if !ok {
			if reason == "" {
				t.Fatal("refused without a reason")
			}
			return
		}
		cc, _ := responseDirectives(hdr, route.Targets) // Cache-Control, or CDN-Cache-Control
		_, varyStar, _ := ParseVary(hdr)
		switch {
		case cc.Private:
			t.Fatal("stored a private response")
		case cc.NoStore && !cc.MustUnderstand:
			t.Fatal("stored a no-store response")
		case varyStar:
			t.Fatal("stored a Vary: * response")
		case req.Header.Has("authorization") && !cc.Public && !cc.SMaxAge.Present && !cc.MustRevalidate:
			t.Fatal("stored the response to an Authorization request")
		case hasListedField(req.Header, unkeyedFields) || hasListedField(req.Header, methodOverrideFields):
			t.Fatal("stored the response to a request with an unkeyed field")
		case cookieKept(hdr, cc) && !storeSetCookie:
			// (A cookie the response itself names in private= or
			// no-cache=, or in Connection, is dropped, and the rest may be
			// stored: RFC 9111 §5.2.2.4, §5.2.2.7.)
			t.Fatal("stored a Set-Cookie response")
		case e.Lifetime < 0 || e.InitialAge < 0 || e.StaleWhileRevalidate < 0 || e.StaleIfError < 0:
			t.Fatalf("negative durations: %+v", e)
		case route.MaxTTL > 0 && (e.Lifetime-e.InitialAge > route.MaxTTL || e.StaleWhileRevalidate > route.MaxTTL || e.StaleIfError > route.MaxTTL):
			t.Fatalf("lifetimes over the route's cap %v: %+v", route.MaxTTL, e)
		}
		for _, h := range e.Header {
			n := h.Name
			if n == "set-cookie" || n == "set-cookie2" || n == "age" || !storedField(n) || containsString(ConnectionFields(hdr), n) {
				t.Fatalf("stored field %q: %q", n, h.Value)
			}
		}

		e.Body = []byte("body")
		got := &e
		d := Evaluate(req, got, now.Add(time.Second))
		if d.Serves() {
			for _, h := range ServeHeaders(got, now.Add(time.Second), d.Status, CacheStatus{Hit: true}, XCacheHit) {
				if strings.ContainsAny(h.Value, "\x00\r\n") && !strings.ContainsAny(respHeader, "\x00\r") {
					t.Fatalf("served field %s: %q", h.Name, h.Value)
				}
			}
		}
	})
}

// FuzzParseSFDictionary: the Structured Fields Dictionary parser of targeted cache-control
// fields never panics, accepts only keys of the grammar, and maps any value it accepts onto
// directives without widening what may be stored: a member the parser refuses makes the
// whole field count as absent.
//
// Seeds: testdata/fuzz/FuzzParseSFDictionary.
func FuzzParseSFDictionary(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		members, ok := parseSFDictionary(s)
		if !ok {
			if members != nil {
				t.Fatal("members returned with a failure")
			}
			return
		}
		if len(members) > maxSFMembers {
			t.Fatalf("%d members", len(members))
		}
		seen := map[string]bool{}
		for _, m := range members {
			if m.key == "" || seen[m.key] {
				t.Fatalf("key %q empty or repeated", m.key)
			}
			seen[m.key] = true
			for i := 0; i < len(m.key); i++ {
				if c := m.key[i]; c >= 'A' && c <= 'Z' {
					t.Fatalf("key %q has upper case", m.key)
				}
			}
		}
		cc, ok := parseTargeted([]string{s})
		if ok != (len(members) > 0) {
			t.Fatalf("parseTargeted ok %v with %d members", ok, len(members))
		}
		if cc.Public && !(seen["public"]) {
			t.Fatal("public without a public member")
		}
	})
}

// FuzzParseByteRange: the Range parser never panics, and a satisfiable range it accepts lies
// within the representation.
//
// Seeds: testdata/fuzz/FuzzParseByteRange.
func FuzzParseByteRange(f *testing.F) {
	f.Fuzz(func(t *testing.T, v string, size uint16) {
		first, last, ok := parseByteRange(v, int64(size))
		if ok && first >= 0 && (first > last || last >= int64(size)) {
			t.Fatalf("parseByteRange(%q, %d) = %d-%d", v, size, first, last)
		}
	})
}

// FuzzParseHTTPDate: the HTTP-date parser never panics, and any date it
// accepts is UTC, whole seconds, and survives formatting as an IMF-fixdate
// and parsing again (the form Sluice writes in Date).
func FuzzParseHTTPDate(f *testing.F) {
	for _, s := range []string{
		"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
		"Thu, 18 Aug 2050 02:01:60 gmt", "Thu, 31 Feb 2050 02:01:18 GMT", "Monday, 29-Feb-00 00:00:00 GMT",
		"Sun, 06 Nov 1994 08:49:37.5 GMT", "",
	} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseHTTPDate(s, now)
		if !ok {
			return
		}
		if got.Location() != time.UTC || got.Nanosecond() != 0 {
			t.Fatalf("parseHTTPDate(%q) = %v: not whole seconds in UTC", s, got)
		}
		if got.Year() < 0 || got.Year() > 9999 {
			t.Fatalf("parseHTTPDate(%q) = %v: year out of range", s, got)
		}
		again, ok := parseHTTPDate(formatHTTPDate(got), now)
		if !ok || !again.Equal(got) {
			t.Fatalf("parseHTTPDate(%q) = %v does not round trip: %v, %v", s, got, again, ok)
		}
	})
}

// hasListedField is hasAnyField over the lists themselves, apart from the sets the code uses.
func hasListedField(h header.List, names []string) bool {
	for _, f := range h {
		if slices.Contains(names, f.Name) {
			return true
		}
	}
	return false
}
