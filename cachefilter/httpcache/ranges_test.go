package httpcache

import (
	"testing"
	"time"
)

// TestParseByteRange: one byte range of RFC 9110 §14.1.2 against a 10-byte representation;
// anything else is ignored (ok false), and a range starting past the end is unsatisfiable.
func TestParseByteRange(t *testing.T) {
	tests := []struct {
		v           string
		first, last int64
		ok          bool
	}{
		{"bytes=0-1", 0, 1, true},
		{"bytes=2-", 2, 9, true},
		{"bytes=-3", 7, 9, true},
		{"bytes=-30", 0, 9, true},   // a suffix longer than the body: all of it
		{"bytes=5-100", 5, 9, true}, // last past the end: up to the end
		{"BYTES = 0-0", 0, 0, true}, // the unit is case-insensitive; OWS around the parts
		{"bytes=10-", -1, 0, true},  // starts at the end: unsatisfiable
		{"bytes=-0", -1, 0, true},   // an empty suffix: unsatisfiable
		{"bytes=0-1,3-4", 0, 0, false},
		{"bytes=3-2", 0, 0, false},
		{"items=0-1", 0, 0, false},
		{"bytes=a-1", 0, 0, false},
		{"bytes=-", 0, 0, false},
		{"bytes=1", 0, 0, false},
		{"bytes 0-1", 0, 0, false},
		{"bytes=99999999999999999999999-", -1, 0, true},
	}
	for _, tt := range tests {
		first, last, ok := parseByteRange(tt.v, 10)
		if ok != tt.ok || ok && (first != tt.first || last != tt.last) {
			t.Errorf("parseByteRange(%q) = %d, %d, %v; want %d, %d, %v", tt.v, first, last, ok, tt.first, tt.last, tt.ok)
		}
	}
}

// TestAnswerRange: how a Range request is answered from a stored complete response
// (RFC 9110 §14, §13.1.5).
func TestAnswerRange(t *testing.T) {
	lm := polDate(-time.Hour)
	e := &Entry{Status: 200, Body: []byte("0123456789"), ETag: `"v1"`, LastModified: lm}
	tests := []struct {
		name   string
		req    Request
		entry  *Entry
		status int // 0: the whole entry
		cr     string
		body   string
	}{
		{name: "a range", req: polGet("range", "bytes=0-1"), status: 206, cr: "bytes 0-1/10", body: "01"},
		{name: "a suffix", req: polGet("range", "bytes=-1"), status: 206, cr: "bytes 9-9/10", body: "9"},
		{name: "past the end", req: polGet("range", "bytes=10-"), status: 416, cr: "bytes */10"},
		{name: "several ranges: the whole", req: polGet("range", "bytes=0-1,4-5")},
		{name: "two Range fields: the whole", req: polGet("range", "bytes=0-1", "range", "bytes=2-3")},
		{name: "If-Range with the strong ETag", req: polGet("range", "bytes=2-3", "if-range", `"v1"`), status: 206, cr: "bytes 2-3/10", body: "23"},
		{name: "If-Range with another ETag: the whole", req: polGet("range", "bytes=2-3", "if-range", `"v2"`)},
		{name: "If-Range with a weak ETag never matches", req: polGet("range", "bytes=2-3", "if-range", `W/"v1"`)},
		{name: "If-Range with the Last-Modified", req: polGet("range", "bytes=2-3", "if-range", lm), status: 206, cr: "bytes 2-3/10", body: "23"},
		{name: "If-Range with another date", req: polGet("range", "bytes=2-3", "if-range", polDate(0))},
		{name: "HEAD ignores Range", req: Request{Method: "HEAD", Header: polHeader("range", "bytes=0-1")}},
		{name: "only a 200 is ranged", req: polGet("range", "bytes=0-1"), entry: &Entry{Status: 404, Body: []byte("nope")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			en := e
			if tt.entry != nil {
				en = tt.entry
			}
			got := AnswerRange(tt.req, en, polNow)
			if got.Status != tt.status || got.ContentRange != tt.cr || string(got.Body) != tt.body {
				t.Errorf("AnswerRange = %d %q %q, want %d %q %q", got.Status, got.ContentRange, got.Body, tt.status, tt.cr, tt.body)
			}
		})
	}
}
