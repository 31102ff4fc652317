package cachefilter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/header"
)

// codecSampleEntry is a realistic entry: every field set.
func codecSampleEntry() *httpcache.Entry {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	return &httpcache.Entry{
		Status: 200,
		Header: header.List{
			{Name: "content-type", Value: "application/json"},
			{Name: "etag", Value: `"v1"`},
			{Name: "set-cookie", Value: "a=1"},
			{Name: "set-cookie", Value: "b=2"},
		},
		Body:                 []byte(`{"contacts":[{"id":1,"name":"Ada"}]}`),
		RequestTime:          t0.Add(-30 * time.Millisecond),
		ResponseTime:         t0,
		InitialAge:           3 * time.Second,
		Lifetime:             time.Minute,
		StaleWhileRevalidate: 30 * time.Second,
		StaleIfError:         time.Hour,
		MustRevalidate:       true,
		Vary:                 []string{"accept-encoding", "accept-language"},
		Tags:                 []string{"contacts", "tenant-acme"},
		ETag:                 `"v1"`,
		LastModified:         "Sun, 01 Mar 2026 11:00:00 GMT",
	}
}

// codecRandomEntry returns an entry with random fields, including edge values: zero and extreme
// times, negative and huge durations, empty and binary strings.
func codecRandomEntry(r *rand.Rand) *httpcache.Entry {
	str := func() string {
		switch r.IntN(4) {
		case 0:
			return ""
		case 1:
			return string([]byte{0, 0xff, '\n', ','})
		}
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		return string(b)
	}
	strs := func(limit int) []string {
		n := r.IntN(limit + 1)
		if n == 0 {
			return nil
		}
		ss := make([]string, n)
		for i := range ss {
			ss[i] = str()
		}
		return ss
	}
	tm := func() time.Time {
		switch r.IntN(4) {
		case 0:
			return time.Time{}
		case 1:
			return time.Unix(math.MinInt64/2, 999_999_999).UTC()
		}
		return time.Unix(r.Int64N(1<<40)-1<<39, r.Int64N(1e9)).UTC()
	}
	dur := func() time.Duration {
		switch r.IntN(4) {
		case 0:
			return 0
		case 1:
			return time.Duration(math.MinInt64)
		case 2:
			return time.Duration(math.MaxInt64)
		}
		return time.Duration(r.Int64N(1<<50) - 1<<49)
	}
	e := &httpcache.Entry{
		Status:               100 + r.IntN(900),
		RequestTime:          tm(),
		ResponseTime:         tm(),
		InitialAge:           dur(),
		Lifetime:             dur(),
		StaleWhileRevalidate: dur(),
		StaleIfError:         dur(),
		MustRevalidate:       r.IntN(2) == 0,
		NoCache:              r.IntN(2) == 0,
		Vary:                 strs(8),
		Tags:                 strs(8),
		ETag:                 str(),
		LastModified:         str(),
	}
	if n := r.IntN(6); n > 0 {
		e.Header = make(header.List, n)
		for i := range e.Header {
			e.Header[i] = header.Field{Name: str(), Value: str()}
		}
	}
	if n := r.IntN(3000); n > 0 {
		e.Body = make([]byte, n)
		for i := range e.Body {
			e.Body[i] = byte(r.UintN(256))
		}
	}
	return e
}

// codecEqual compares entries field by field, times by instant.
func codecEqual(a, b *httpcache.Entry) bool {
	return a.Status == b.Status && reflect.DeepEqual(a.Header, b.Header) && bytes.Equal(a.Body, b.Body) &&
		a.RequestTime.Equal(b.RequestTime) && a.ResponseTime.Equal(b.ResponseTime) &&
		a.InitialAge == b.InitialAge && a.Lifetime == b.Lifetime &&
		a.StaleWhileRevalidate == b.StaleWhileRevalidate && a.StaleIfError == b.StaleIfError &&
		a.MustRevalidate == b.MustRevalidate && a.NoCache == b.NoCache &&
		reflect.DeepEqual(a.Vary, b.Vary) && reflect.DeepEqual(a.Tags, b.Tags) &&
		a.ETag == b.ETag && a.LastModified == b.LastModified
}

// TestCodecRoundTrip is a property test: decode(encode(e)) equals e for random entries, and
// every strict prefix of an encoding fails to decode.
func TestCodecRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	entries := []*httpcache.Entry{codecSampleEntry(), {Status: 204}}
	for range 2000 {
		entries = append(entries, codecRandomEntry(r))
	}
	for i, e := range entries {
		b := appendEntry(nil, e)
		got, err := decodeEntry(b)
		if err != nil {
			t.Fatalf("entry %d: decode: %v", i, err)
		}
		if !codecEqual(e, got) {
			t.Fatalf("entry %d: round trip changed it:\n got %+v\nwant %+v", i, got, e)
		}
		if i < 200 {
			for n := range len(b) {
				if _, err := decodeEntry(b[:n]); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("entry %d: prefix of %d/%d bytes: got %v, want ErrCorrupt", i, n, len(b), err)
				}
			}
		}
	}
}

// TestDecodeEntryHostile feeds crafted values: each must fail with ErrCorrupt, without a panic
// and without allocating more than a small multiple of its size.
func TestDecodeEntryHostile(t *testing.T) {
	valid := appendEntry(nil, codecSampleEntry())
	uv := func(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
	head := func() []byte { // version, status 200, no flags, four zero durations
		return []byte{codecVersion, 0xc8, 0x01, 0, 0, 0, 0, 0}
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{2}, valid[1:]...)},
		{"status 0", append([]byte{codecVersion, 0}, valid[3:]...)},
		{"status 1000", append(uv([]byte{codecVersion}, 1000), valid[3:]...)},
		{"unknown flag", func() []byte { b := bytes.Clone(valid); b[3] |= 0x80; return b }()},
		{"trailing byte", append(bytes.Clone(valid), 0)},
		{"varint overflow", append([]byte{codecVersion}, bytes.Repeat([]byte{0xff}, 11)...)},
		{"huge header count", uv(head(), 1<<40)},
		{"header count above the bytes left", append(uv(head(), 1000), 0, 0)},
		{"huge body length", uv(append(head(), 0, 0, 0, 0, 0), math.MaxUint64)},
		{"body length beyond the value", append(uv(append(head(), 0, 0, 0, 0, 0), 1<<20), "short"...)},
		{"huge tag count", uv(append(head(), 0, 0), 1<<62)},
		{"nanoseconds out of range", append([]byte{codecVersion, 0xc8, 0x01, flagRequestTime, 0}, uv(nil, 2e9)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range 100 {
				if e, err := decodeEntry(tt.in); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("got %+v, %v; want ErrCorrupt", e, err)
				}
			}
			runtime.ReadMemStats(&after)
			if per := (after.TotalAlloc - before.TotalAlloc) / 100; per > 1024+4*uint64(len(tt.in)) {
				t.Errorf("allocated %d bytes per decode of a %d-byte value", per, len(tt.in))
			}
		})
	}
}

// FuzzDecodeEntry checks that any value decodes or fails with ErrCorrupt (never a panic), that
// a decoded entry encodes to a value that decodes to the same entry, and that decoding never
// allocates much more than the value's size. Its seed corpus is testdata/fuzz/FuzzDecodeEntry
// (encodings of sample entries, truncations and mutations) plus the seeds below.
func FuzzDecodeEntry(f *testing.F) {
	f.Add(appendEntry(nil, codecSampleEntry()))
	f.Add(appendEntry(nil, &httpcache.Entry{Status: 200}))
	f.Add([]byte{codecVersion})
	r := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		f.Add(appendEntry(nil, codecRandomEntry(r)))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := decodeEntry(appendEntry(nil, e))
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if !codecEqual(e, again) {
			t.Fatalf("re-encoding changed the entry:\n got %+v\nwant %+v", again, e)
		}
		if n := entrySize(e); n > 1024+64*len(b) {
			t.Fatalf("a %d-byte value decoded to an entry of size %d", len(b), n)
		}
	})
}

// TestInvalidationMessage round-trips invalidation messages and rejects corrupt ones.
func TestInvalidationMessage(t *testing.T) {
	msgs := []*invalidation{
		{kind: kindKeys, id: "01", origin: "r", args: []string{"aaaaaaaaaaaaaaa1:00", "bbbbbbbbbbbbbbb2:11"}},
		{kind: kindTag, id: "02", origin: "r", tenant: "aaaaaaaaaaaaaaa1", args: []string{"t"}},
		{kind: kindPrefix, id: "03", origin: "r", tenant: "aaaaaaaaaaaaaaa1", args: []string{""}},
		{kind: kindTenant, id: "04", origin: "r", tenant: "aaaaaaaaaaaaaaa1"},
	}
	for _, m := range msgs {
		s := m.encode()
		got, err := decodeInvalidation(s)
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("round trip of %+v: %+v, %v", m, got, err)
		}
		for n := range len(s) {
			if _, err := decodeInvalidation(s[:n]); err == nil {
				t.Errorf("prefix %q of %+v decoded", s[:n], m)
			}
		}
	}
	bad := []string{
		string([]byte{messageVersion, 9, 0, 0, 0, 0}),                 // unknown kind
		string([]byte{messageVersion, kindTag, 0, 0, 1, 'a', 0}),      // bad tenant, no tag
		string([]byte{messageVersion, kindTenant, 0, 0, 1, '{', 0}),   // brace in the tenant
		strings.Repeat("\xff", 20),                                    // garbage
		string([]byte{messageVersion, kindKeys, 0, 0, 0, 0xff, 0xff}), // truncated count
	}
	for _, s := range bad {
		if _, err := decodeInvalidation(s); err == nil {
			t.Errorf("%q decoded", s)
		}
	}
}

// FuzzStoredEntryCodec stores what httpcache.Storable accepts from a hostile
// exchange (the inputs of httpcache's FuzzStorable, whose seeds it shares)
// and checks that the entry survives the codec unchanged.
func FuzzStoredEntryCodec(f *testing.F) {
	f.Add(200, "", "cache-control: max-age=60\netag: \"v1\"", false)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, reqHeader, respHeader string, storeSetCookie bool) {
		route := Config{}.WithDefaults().Route("/api/v1/x")
		route.StoreSetCookie = storeSetCookie
		req := httpcache.Request{
			Method: "GET", Scheme: "http", Authority: "api.example.com", Path: "/api/v1/x?a=1",
			Header: fuzzLines(reqHeader), Tenant: "acme", Time: now.Add(-time.Second),
		}
		e, ok, _ := httpcache.Storable(req, status, fuzzLines(respHeader), now, route.Policy)
		if !ok {
			return
		}
		e.Body = []byte("body")
		got, err := decodeEntry(appendEntry(nil, &e))
		if err != nil {
			t.Fatalf("stored entry does not decode: %v", err)
		}
		if !codecEqual(got, &e) {
			t.Fatalf("codec changed the entry:\n%+v\n%+v", &e, got)
		}
	})
}

// fuzzLines reads "name: value" lines (names lower-cased, as Envoy sends
// them); a line without ": " is a name with an empty value.
func fuzzLines(s string) header.List {
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
