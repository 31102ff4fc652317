package httpcache

import (
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// TestParseSFDictionary: the Dictionary grammar of RFC 8941 §3.2, as targeted fields use it.
// A value the grammar refuses anywhere fails as a whole.
func TestParseSFDictionary(t *testing.T) {
	tests := []struct {
		in   string
		want []sfMember // nil with ok false
		ok   bool
	}{
		{in: "max-age=60", want: []sfMember{{"max-age", sfItem{kind: sfInteger, i: 60}}}, ok: true},
		{in: "  no-store", want: []sfMember{{"no-store", sfItem{kind: sfBoolean, b: true}}}, ok: true},
		{in: "a, b=?0 ,c=?1", want: []sfMember{{"a", sfItem{kind: sfBoolean, b: true}}, {"b", sfItem{kind: sfBoolean}}, {"c", sfItem{kind: sfBoolean, b: true}}}, ok: true},
		{in: `private="set-cookie", x=tok/en:1, y=-12, z=1.250, w=:aGk=:`, ok: true, want: []sfMember{
			{"private", sfItem{kind: sfString, s: "set-cookie"}}, {"x", sfItem{kind: sfToken, s: "tok/en:1"}},
			{"y", sfItem{kind: sfInteger, i: -12}}, {"z", sfItem{kind: sfDecimal, s: "1.250"}}, {"w", sfItem{kind: sfBytes, s: ":aGk=:"}}}},
		{in: `no-cache=("a" b);p=1, m=5;q;r=?1`, ok: true, want: []sfMember{
			{"no-cache", sfItem{kind: sfInnerList, list: []sfItem{{kind: sfString, s: "a"}, {kind: sfToken, s: "b"}}}},
			{"m", sfItem{kind: sfInteger, i: 5}}}},
		{in: "max-age=1, max-age=2", want: []sfMember{{"max-age", sfItem{kind: sfInteger, i: 2}}}, ok: true},
		{in: `s="a\"b\\c"`, want: []sfMember{{"s", sfItem{kind: sfString, s: `a"b\c`}}}, ok: true},
		{in: "", ok: true},
		{in: "Max-Age=60"},         // keys are lower-case
		{in: "max-age =60"},        // nothing between key and "="
		{in: "max-age= 60"},        // nor after it
		{in: "max-age=60,"},        // trailing comma
		{in: "max-age=60, &&&"},    // not a key
		{in: "a=1234567890123456"}, // 16 digits
		{in: "a=1234567890123.1"},  // 13 integer digits in a decimal
		{in: "a=1.1234"},           // 4 fraction digits
		{in: "a=1."},               // no fraction digit
		{in: `a="unterminated`},    // no closing quote
		{in: `a="\n"`},             // escape of another character
		{in: "a=(1 2"},             // unclosed inner list
		{in: "a=(1,2)"},            // inner list items are space separated
		{in: "a=?2"},               // boolean is ?0 or ?1
		{in: "a=:aGk"},             // unterminated byte sequence
		{in: "a;=1"},               // parameter without key
		{in: "a=1 b=2"},            // members are comma separated
		{in: "a=\"\x7f\""},         // not printable
		{in: "a=1\tb"},             // tab only around commas
		{in: "a=1,\t"},             // trailing comma after OWS
		{in: "a=-"},                // no digits
		{in: "a=--1"},              // no digits after the sign
		{in: "\tmax-age=1"},        // leading whitespace is SP only
		{in: "max-age=60 , x", ok: true, want: []sfMember{{"max-age", sfItem{kind: sfInteger, i: 60}}, {"x", sfItem{kind: sfBoolean, b: true}}}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := parseSFDictionary(tt.in)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseSFDictionary(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestTargetedCacheControl: with CDN-Cache-Control on the target list (the default), a valid,
// non-empty CDN-Cache-Control decides whether and how long Sluice keeps a response, and
// Cache-Control and Expires are ignored for that (RFC 9213 §2.1); an invalid or empty one is
// ignored as if absent.
func TestTargetedCacheControl(t *testing.T) {
	req := polGet()
	route := polRoute()
	route.Targets = DefaultTargets
	tests := []struct {
		name     string
		hdr      header.List
		stored   bool
		lifetime time.Duration
		reason   string
	}{
		{name: "its max-age alone", hdr: polHeader("cdn-cache-control", "max-age=3600"), stored: true, lifetime: time.Hour},
		{name: "over Cache-Control no-store", hdr: polHeader("cache-control", "no-store", "cdn-cache-control", "max-age=600"), stored: true, lifetime: 10 * time.Minute},
		{name: "over a longer Cache-Control", hdr: polHeader("cache-control", "max-age=3600", "cdn-cache-control", "max-age=1"), stored: true, lifetime: time.Second},
		{name: "over an expired Expires", hdr: polHeader("cdn-cache-control", "max-age=60", "expires", polDate(-time.Hour), "date", polDate(0)), stored: true, lifetime: time.Minute},
		{name: "max-age=0 over a future Expires", hdr: polHeader("cdn-cache-control", "max-age=0", "expires", polDate(time.Hour), "date", polDate(0)), reason: ReasonNotReusable},
		{name: "its no-store", hdr: polHeader("cache-control", "max-age=600", "cdn-cache-control", "no-store"), reason: ReasonNoStore},
		{name: "its private", hdr: polHeader("cache-control", "max-age=600", "cdn-cache-control", "private"), reason: ReasonPrivate},
		{name: "its no-cache, without validator", hdr: polHeader("cache-control", "max-age=600", "cdn-cache-control", "no-cache"), reason: ReasonNoFreshness},
		{name: "an extension beside max-age", hdr: polHeader("cdn-cache-control", "foobar, max-age=60"), stored: true, lifetime: time.Minute},
		{name: "max-age beyond 2^31 is capped", hdr: polHeader("cdn-cache-control", "max-age=99999999999"), stored: true, lifetime: MaxDeltaSeconds * time.Second},
		{name: "wrong type: the directive is ignored", hdr: polHeader("cache-control", "max-age=600", "cdn-cache-control", `max-age="60"`), reason: ReasonNoFreshness},
		{name: "unparsable: Cache-Control decides", hdr: polHeader("cache-control", "no-store", "cdn-cache-control", "max-age=60, &&&"), reason: ReasonNoStore},
		{name: "space before =: Cache-Control decides", hdr: polHeader("cache-control", "max-age=1", "cdn-cache-control", "max-age =100"), stored: true, lifetime: time.Second},
		{name: "empty: Cache-Control decides", hdr: polHeader("cache-control", "max-age=5", "cdn-cache-control", ""), stored: true, lifetime: 5 * time.Second},
		{name: "two lines are one dictionary", hdr: polHeader("cdn-cache-control", "max-age=60", "cdn-cache-control", "must-revalidate"), stored: true, lifetime: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok, reason := Storable(req, 200, tt.hdr, polNow, route)
			if ok != tt.stored || reason != tt.reason {
				t.Fatalf("Storable = %v, %q; want %v, %q", ok, reason, tt.stored, tt.reason)
			}
			if ok && e.Lifetime != tt.lifetime {
				t.Errorf("lifetime %v, want %v", e.Lifetime, tt.lifetime)
			}
		})
	}
	t.Run("not on the target list", func(t *testing.T) {
		r := polRoute()
		r.Targets = []string{}
		if _, ok, reason := Storable(req, 200, polHeader("cache-control", "no-store", "cdn-cache-control", "max-age=60"), polNow, r); ok || reason != ReasonNoStore {
			t.Errorf("Storable = %v, %q; want Cache-Control's no-store to decide", ok, reason)
		}
	})
	t.Run("the field reaches the client", func(t *testing.T) {
		e, ok, _ := Storable(req, 200, polHeader("cdn-cache-control", "max-age=60"), polNow, route)
		if !ok || !e.Header.Has("cdn-cache-control") {
			t.Errorf("stored header %v lacks CDN-Cache-Control", e.Header)
		}
	})
}
