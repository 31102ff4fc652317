package httpcache

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseCacheControl(t *testing.T) {
	d := func(s int64) Delta { return Delta{Present: true, Seconds: s} }
	invalid := Delta{Present: true, Invalid: true}
	tests := []struct {
		name   string
		values []string
		want   CacheControl
	}{
		{name: "empty", values: nil, want: CacheControl{}},
		{name: "empty line", values: []string{""}, want: CacheControl{}},
		{name: "§5.2.2.1 max-age", values: []string{"max-age=3600"}, want: CacheControl{MaxAge: d(3600)}},
		{name: "§5.2 names are case-insensitive (cc-freshness MaX-AgE)", values: []string{"MaX-aGe=3600, No-StOrE"}, want: CacheControl{MaxAge: d(3600), NoStore: true}},
		{name: "§5.2 quoted argument accepted (cc-parse max-age-quoted)", values: []string{`max-age="3600"`}, want: CacheControl{MaxAge: d(3600)}},
		{name: "§1.2.2 leading zeros (cc-parse leading-zero)", values: []string{"max-age=003600"}, want: CacheControl{MaxAge: d(3600)}},
		{name: "§1.2.2 2^31-1 kept", values: []string{"max-age=2147483647"}, want: CacheControl{MaxAge: d(2147483647)}},
		{name: "§1.2.2 2^31 kept", values: []string{"max-age=2147483648"}, want: CacheControl{MaxAge: d(MaxDeltaSeconds)}},
		{name: "§1.2.2 2^31+1 capped", values: []string{"max-age=2147483649"}, want: CacheControl{MaxAge: d(MaxDeltaSeconds)}},
		{name: "§1.2.2 huge capped", values: []string{"max-age=99999999999999999999999999999999"}, want: CacheControl{MaxAge: d(MaxDeltaSeconds)}},
		{name: "§4.2.1 negative is invalid (cc-freshness max-age-negative)", values: []string{"max-age=-3600"}, want: CacheControl{MaxAge: invalid}},
		{name: "§4.2.1 alphabetic is invalid", values: []string{"max-age=abc"}, want: CacheControl{MaxAge: invalid}},
		{name: "§4.2.1 leading alpha is invalid (cc-parse a100)", values: []string{"max-age=a3600"}, want: CacheControl{MaxAge: invalid}},
		{name: "§4.2.1 trailing alpha is invalid (cc-parse 100a)", values: []string{"max-age=3600a"}, want: CacheControl{MaxAge: invalid}},
		{name: "§4.2.1 decimal is invalid (cc-parse decimal-zero)", values: []string{"max-age=3600.0"}, want: CacheControl{MaxAge: invalid}},
		{name: "§4.2.1 decimal five is invalid", values: []string{"max-age=3600.5"}, want: CacheControl{MaxAge: invalid}},
		{name: "§5.2 single quotes are not quotes (cc-parse single-quoted)", values: []string{"max-age='3600'"}, want: CacheControl{MaxAge: invalid}},
		{name: "§5.2 space before = is malformed (cc-parse space-before-equals)", values: []string{"max-age =3600"}, want: CacheControl{MaxAge: invalid}},
		{name: "§5.2 space after = is malformed (cc-parse space-after-equals)", values: []string{"max-age= 3600"}, want: CacheControl{MaxAge: invalid}},
		{name: "§5.2 missing argument is invalid", values: []string{"max-age"}, want: CacheControl{MaxAge: invalid}},
		{name: "§5.2 empty quoted argument is invalid", values: []string{`max-age=""`}, want: CacheControl{MaxAge: invalid}},
		{name: "§4.2.1 duplicate different values same line (cc-parse two-fresh-stale) is stale", values: []string{"max-age=1800, max-age=1"}, want: CacheControl{MaxAge: invalid}},
		{name: "§4.2.1 duplicate different values separate lines", values: []string{"max-age=1", "max-age=1800"}, want: CacheControl{MaxAge: invalid}},
		{name: "§4.2.1 duplicate equal values are fine", values: []string{"max-age=60", "MAX-AGE=60"}, want: CacheControl{MaxAge: d(60)}},
		{name: "§4.2.1 invalid then valid stays invalid", values: []string{"max-age=x, max-age=60"}, want: CacheControl{MaxAge: invalid}},
		{name: "§5.2.3 quoted max-age in an extension is ignored (cc-parse ignore-quoted)", values: []string{`extension="max-age=3600", max-age=1`}, want: CacheControl{MaxAge: d(1)}},
		{name: "§5.2.3 quoted max-age in an extension after (cc-parse ignore-quoted-rev)", values: []string{`max-age=1, extension="max-age=3600"`}, want: CacheControl{MaxAge: d(1)}},
		{name: "§5.2.3 unknown extensions ignored (cc-freshness max-age-extension)", values: []string{"foobar, max-age=3600, community=\"UCI\""}, want: CacheControl{MaxAge: d(3600)}},
		{name: "RFC 9110 §5.6.4 escaped quote inside quoted string", values: []string{`ext="a\",max-age=5", no-store`}, want: CacheControl{NoStore: true}},
		{name: "RFC 9110 §5.6.1 empty list elements", values: []string{" , ,no-store,, ,"}, want: CacheControl{NoStore: true}},
		{name: "RFC 9110 §5.6.1 OWS around commas and tabs", values: []string{"\tpublic ,\tmax-age=5 "}, want: CacheControl{Public: true, MaxAge: d(5)}},
		{name: "§5.2.2.10 s-maxage", values: []string{"s-maxage=3600, max-age=1"}, want: CacheControl{SMaxAge: d(3600), MaxAge: d(1)}},
		{name: "§5.2.2.4 unqualified no-cache", values: []string{"no-cache"}, want: CacheControl{NoCache: true}},
		{name: "§5.2.2.4 qualified no-cache", values: []string{`no-cache="Set-Cookie, X-Foo"`}, want: CacheControl{NoCacheFields: []string{"set-cookie", "x-foo"}}},
		{name: "§5.2.2.4 qualified no-cache in token form", values: []string{`no-cache=a`}, want: CacheControl{NoCacheFields: []string{"a"}}},
		{name: "§5.2.2.4 qualified and unqualified no-cache", values: []string{`no-cache="a", no-cache`}, want: CacheControl{NoCache: true, NoCacheFields: []string{"a"}}},
		{name: "§5.2.2.4 qualified no-cache union across lines", values: []string{`no-cache="a, b"`, `no-cache="b, c"`}, want: CacheControl{NoCacheFields: []string{"a", "b", "c"}}},
		{name: "§5.2.2.4 empty field list counts as unqualified", values: []string{`no-cache=""`}, want: CacheControl{NoCache: true}},
		{name: "§5.2.2.4 invalid field list counts as unqualified", values: []string{`no-cache="a b"`}, want: CacheControl{NoCache: true}},
		{name: "§5.2.2.7 unqualified private", values: []string{"private, max-age=3600"}, want: CacheControl{Private: true, MaxAge: d(3600)}},
		{name: "§5.2.2.7 qualified private", values: []string{`private="Set-Cookie"`}, want: CacheControl{PrivateFields: []string{"set-cookie"}}},
		{name: "§5.2.2.7 malformed private counts as unqualified", values: []string{`private="a`}, want: CacheControl{Private: true}},
		{name: "§5.2.2.5 no-store with junk argument still counts", values: []string{"no-store=1"}, want: CacheControl{NoStore: true}},
		{name: "§5.2.2.5 no-store followed by junk still counts", values: []string{"no-store junk"}, want: CacheControl{NoStore: true}},
		{name: "§5.2.2.9 public with argument does not count", values: []string{"public=1"}, want: CacheControl{}},
		{name: "§5.2.2.3 must-understand with junk does not count", values: []string{"must-understand x, no-store"}, want: CacheControl{NoStore: true}},
		{name: "§5.2.2.2 §5.2.2.8 revalidate directives", values: []string{"must-revalidate, proxy-revalidate"}, want: CacheControl{MustRevalidate: true, ProxyRevalidate: true}},
		{name: "§5.2.2.6 RFC 8246 no-transform immutable", values: []string{"no-transform, immutable"}, want: CacheControl{NoTransform: true, Immutable: true}},
		{name: "RFC 5861 stale windows", values: []string{"max-age=1, stale-while-revalidate=30, stale-if-error=600"}, want: CacheControl{MaxAge: d(1), StaleWhileRevalidate: d(30), StaleIfError: d(600)}},
		{name: "§5.2.1.2 max-stale without argument is unlimited", values: []string{"max-stale"}, want: CacheControl{MaxStale: d(MaxDeltaSeconds)}},
		{name: "§5.2.1.2 max-stale with argument", values: []string{"max-stale=1000"}, want: CacheControl{MaxStale: d(1000)}},
		{name: "§5.2.1.2 max-stale malformed", values: []string{"max-stale=x"}, want: CacheControl{MaxStale: invalid}},
		{name: "§5.2.1.3 min-fresh", values: []string{"min-fresh=2000"}, want: CacheControl{MinFresh: d(2000)}},
		{name: "§5.2.1.7 only-if-cached", values: []string{"only-if-cached"}, want: CacheControl{OnlyIfCached: true}},
		{name: "unterminated quote swallows the rest of the line", values: []string{`a="x, no-store`}, want: CacheControl{}},
		{name: "element not starting with a token is skipped", values: []string{`=5, "x", no-store`}, want: CacheControl{NoStore: true}},
		{name: "control character in quoted string", values: []string{"max-age=\"1\x01\", no-cache"}, want: CacheControl{MaxAge: invalid, NoCache: true}},
		{name: "obs-text in quoted string", values: []string{"ext=\"\xff\", public"}, want: CacheControl{Public: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseCacheControl(tt.values...)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseCacheControl(%q)\n got %+v\nwant %+v", tt.values, got, tt.want)
			}
		})
	}
}

func TestParseCacheControlBounded(t *testing.T) {
	t.Run("too many bytes sets Overflow", func(t *testing.T) {
		huge := strings.Repeat("a", maxCacheControlBytes) + ", no-store"
		if cc := ParseCacheControl("max-age=60", huge); !cc.Overflow {
			t.Fatalf("Overflow not set: %+v", cc)
		}
	})
	t.Run("too many directives sets Overflow", func(t *testing.T) {
		many := strings.Repeat("x, ", maxCacheDirectives+1)
		if cc := ParseCacheControl(many); !cc.Overflow {
			t.Fatalf("Overflow not set: %+v", cc)
		}
	})
	t.Run("too many qualified fields counts as unqualified", func(t *testing.T) {
		var names []string
		for i := range maxQualifiedFields + 1 {
			names = append(names, "f"+strconv.Itoa(i))
		}
		if cc := ParseCacheControl(`private="` + strings.Join(names, ",") + `"`); !cc.Private || cc.PrivateFields != nil {
			t.Fatalf("want unqualified private: %+v", cc)
		}
		// 3 × 32 distinct names over three directives exceed the total.
		var lines []string
		for k := range 3 {
			var names []string
			for i := range maxQualifiedFields {
				names = append(names, "f"+strconv.Itoa(k*100+i))
			}
			lines = append(lines, `no-cache="`+strings.Join(names, ",")+`"`)
		}
		cc := ParseCacheControl(lines...)
		if !cc.NoCache || len(cc.NoCacheFields) != 2*maxQualifiedFields {
			t.Fatalf("want unqualified no-cache and 64 names: %v %d", cc.NoCache, len(cc.NoCacheFields))
		}
		if again := ParseCacheControl(cc.String()); !reflect.DeepEqual(again, cc) {
			t.Fatalf("round trip of many fields differs")
		}
	})
	t.Run("pathological input stays linear", func(t *testing.T) {
		inputs := []string{
			strings.Repeat(`"`, maxCacheControlBytes),
			strings.Repeat(`a="\"`, maxCacheControlBytes/4),
			strings.Repeat(`,`, maxCacheControlBytes),
			strings.Repeat(`no-cache="a,`, maxCacheControlBytes/12),
		}
		for _, in := range inputs {
			start := time.Now()
			for range 100 {
				ParseCacheControl(in)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("100 parses of %d bytes took %v", len(in), el)
			}
		}
	})
}

func TestCacheControlString(t *testing.T) {
	in := `Private="A", no-cache, max-age=5, s-maxage=x, MAX-STALE, public, stale-if-error=7`
	const want = `no-cache, private="a", public, max-age=5, s-maxage=invalid, max-stale=2147483648, stale-if-error=7`
	cc := ParseCacheControl(in)
	if got := cc.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if again := ParseCacheControl(cc.String()); !reflect.DeepEqual(again, cc) {
		t.Fatalf("round trip: %+v != %+v", again, cc)
	}
}

// FuzzParseCacheControl checks that the parser never panics, stays within
// its bounds, and that its canonical String form parses back to the same
// value. Seeds: testdata/fuzz/FuzzParseCacheControl plus those below.
func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{
		"max-age=3600", `no-cache="set-cookie", private="a, b"`, `ext="a\",b", max-age=1`,
		"max-age=1, max-age=2", "MAX-STALE", "s-maxage=99999999999999999999", `"`, `a="\`,
		"no-store, must-understand", "stale-while-revalidate=30, stale-if-error=600",
	} {
		f.Add(s, "")
	}
	f.Add("max-age=1", "max-age=2")
	f.Fuzz(func(t *testing.T, a, b string) {
		cc := ParseCacheControl(a, b)
		if cc.Overflow {
			if len(a)+len(b) <= maxCacheControlBytes && strings.Count(a+","+b, ",") < maxCacheDirectives-1 {
				// Overflow below the byte bound needs many directives,
				// hence many separators.
				t.Fatalf("Overflow on small input %q %q", a, b)
			}
			return
		}
		for _, d := range []Delta{cc.MaxAge, cc.SMaxAge, cc.MaxStale, cc.MinFresh, cc.StaleWhileRevalidate, cc.StaleIfError} {
			if d.Seconds < 0 || d.Seconds > MaxDeltaSeconds || d.Invalid && (d.Seconds != 0 || !d.Present) || !d.Present && d != (Delta{}) {
				t.Fatalf("bad delta %+v from %q %q", d, a, b)
			}
		}
		if len(cc.NoCacheFields) > maxFieldsPerKind || len(cc.PrivateFields) > maxFieldsPerKind {
			t.Fatalf("unbounded field lists")
		}
		canon := cc.String()
		if len(canon) > maxCacheControlBytes {
			return // canonical form may be longer than the input
		}
		again := ParseCacheControl(canon)
		if !reflect.DeepEqual(again, cc) {
			t.Fatalf("canonical form %q of %q %q parses to %+v, want %+v", canon, a, b, again, cc)
		}
	})
}
