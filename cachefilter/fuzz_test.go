package cachefilter

import (
	"strings"
	"testing"
	"time"
)

// fuzzHeaders reads "name: value" lines (names lower-cased, as Envoy sends
// them); a line without ": " is a name with an empty value.
func fuzzHeaders(s string) []Header {
	var hs []Header
	for _, line := range strings.Split(s, "\n") {
		if line == "" {
			continue
		}
		name, value, _ := strings.Cut(line, ": ")
		hs = append(hs, Header{strings.ToLower(name), value})
	}
	return hs
}

// cookieKept reports whether a Set-Cookie field of header would be part of
// the stored response but for the Set-Cookie rule.
func cookieKept(header []Header, cc CacheControl) bool {
	dropped := append(append(connectionFields(header), cc.PrivateFields...), cc.NoCacheFields...)
	for _, name := range []string{"set-cookie", "set-cookie2"} {
		if hasField(header, name) && !containsString(dropped, name) {
			return true
		}
	}
	return false
}

// FuzzStorable runs a response an origin (or anyone able to influence one)
// controls through the shared cache's storage decision, with a request
// whose headers a client controls, then through the codec, the lookup
// decision and the headers served from the entry. It checks the promises a
// shared cache makes about hostile responses (RFC 9111 §3, §3.5, §5.2.2):
// nothing private, no-store, Vary: * or (by default) Set-Cookie is stored;
// an Authorization request's response only with public, s-maxage or
// must-revalidate; nothing answering a request with a field the key lacks
// but applications act on (X-Forwarded-Host, X-Original-URL, method
// overrides: web cache poisoning); a stored entry holds no Set-Cookie, x-sluice-*,
// x-envoy-*, rate-limit, hop-by-hop or Age field, survives the codec
// unchanged, and is served with header values Envoy accepts.
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
		route := Config{}.WithDefaults().Route("/api/v1/x")
		route.StoreSetCookie = storeSetCookie
		req := Request{
			Method: "GET", Scheme: "http", Authority: "api.example.com", Path: "/api/v1/x?a=1",
			Header: fuzzHeaders(reqHeader), Tenant: "acme", Time: now.Add(-time.Second),
		}
		header := fuzzHeaders(respHeader)
		e, ok, reason := Storable(req, status, header, now, route)
		if !ok {
			if reason == "" {
				t.Fatal("refused without a reason")
			}
			return
		}
		cc, _ := responseDirectives(header, route.Targets) // Cache-Control, or CDN-Cache-Control
		_, varyStar, _ := parseVary(header)
		switch {
		case cc.Private:
			t.Fatal("stored a private response")
		case cc.NoStore && !cc.MustUnderstand:
			t.Fatal("stored a no-store response")
		case varyStar:
			t.Fatal("stored a Vary: * response")
		case hasField(req.Header, "authorization") && !cc.Public && !cc.SMaxAge.Present && !cc.MustRevalidate:
			t.Fatal("stored the response to an Authorization request")
		case hasAnyField(req.Header, unkeyedFields) || hasAnyField(req.Header, methodOverrideFields):
			t.Fatal("stored the response to a request with an unkeyed field")
		case cookieKept(header, cc) && !storeSetCookie:
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
			if n == "set-cookie" || n == "set-cookie2" || n == "age" || !storedField(n) || containsString(connectionFields(header), n) {
				t.Fatalf("stored field %q: %q", n, h.Value)
			}
		}

		e.Body = []byte("body")
		got, err := decodeEntry(appendEntry(nil, &e))
		if err != nil {
			t.Fatalf("stored entry does not decode: %v", err)
		}
		if !codecEqual(got, &e) {
			t.Fatalf("codec changed the entry:\n%+v\n%+v", &e, got)
		}
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

// FuzzDecodeAnnouncements feeds presence messages (presence.go), which come from the pub/sub
// channel: decoding never panics, whatever decodes has valid keys, and it encodes back to what
// decodes to the same.
func FuzzDecodeAnnouncements(f *testing.F) {
	until := time.UnixMilli(1_800_000_000_000)
	f.Add(encodeAnnouncements("r1", []announcement{{kind: announcePresent, primary: "aaaaaaaaaaaaaaa1:00ff", until: until}}))
	f.Add(encodeAnnouncements("r2", []announcement{
		{kind: announcePass, primary: "aaaaaaaaaaaaaaa1:00ff", until: until, path: "/p?q=1", vary: []string{"x-sluice-user"}, variant: "aaaaaaaaaaaaaaa1:00ff:ab"},
		{kind: announcePass, primary: "bbbbbbbbbbbbbbb2:11", until: until, path: "/"},
	}))
	f.Add("\x01\x00")
	f.Add("\x01\x02r1p\x03a:b\x00")
	f.Fuzz(func(t *testing.T, msg string) {
		origin, as, err := decodeAnnouncements(msg)
		if err != nil {
			return
		}
		for _, a := range as {
			tenant, _, err := splitKey(a.primary)
			if err != nil {
				t.Fatalf("decoded key %q: %v", a.primary, err)
			}
			if a.variant != "" {
				if _, err := variantKey(tenant, a.variant); err != nil {
					t.Fatalf("decoded variant %q: %v", a.variant, err)
				}
			}
		}
		origin2, as2, err := decodeAnnouncements(encodeAnnouncements(origin, as))
		if err != nil || origin2 != origin || len(as2) != len(as) {
			t.Fatalf("re-encoded: %q %d announcements, %v; want %q %d", origin2, len(as2), err, origin, len(as))
		}
		for i := range as {
			if as[i].primary != as2[i].primary || !as[i].until.Equal(as2[i].until) || as[i].variant != as2[i].variant {
				t.Fatalf("announcement %d: %+v, re-decoded %+v", i, as[i], as2[i])
			}
		}
	})
}
