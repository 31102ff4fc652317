package httpcache

import (
	"strconv"
	"strings"
	"time"
)

// Range requests answered from a stored complete response (RFC 9110 §14, RFC 9111 §3.3).
//
// Sluice stores complete responses only (a 206 is never stored). A GET with Range that finds a
// stored 200 it may use is answered from it: one satisfiable byte range gets a 206 with that
// slice and Content-Range; a range that starts past the end gets a 416 naming the length; a
// request with several ranges, or a Range the grammar refuses, or an If-Range that does not
// match the entry, gets the whole 200 (a server may ignore Range, §14.2). If-Range matches a
// strong ETag equal to the entry's, or a date equal to its Last-Modified (§13.1.5).

// RangeAnswer is how a Range request is answered from an entry.
type RangeAnswer struct {
	// Status is 206 or 416, or 0 to answer with the whole entry.
	Status int
	// ContentRange is the Content-Range value for a 206 or 416.
	ContentRange string
	// Body is the selected slice of the entry's body (206 only).
	Body []byte
}

// maxRangeFieldBytes bounds the Range value considered; longer ones are ignored.
const maxRangeFieldBytes = 1024

// AnswerRange decides how the GET req, carrying Range, is answered from e at now.
func AnswerRange(req Request, e *Entry, now time.Time) RangeAnswer {
	values := req.Header.Values("range")
	if req.Method != "GET" || len(values) != 1 || e.Status != 200 || !ifRangeMatches(req, e, now) {
		return RangeAnswer{}
	}
	size := int64(len(e.Body))
	first, last, ok := parseByteRange(values[0], size)
	switch {
	case !ok:
		return RangeAnswer{}
	case first < 0: // unsatisfiable (§14.1.1)
		return RangeAnswer{Status: 416, ContentRange: "bytes */" + strconv.FormatInt(size, 10)}
	}
	return RangeAnswer{
		Status:       206,
		ContentRange: "bytes " + strconv.FormatInt(first, 10) + "-" + strconv.FormatInt(last, 10) + "/" + strconv.FormatInt(size, 10),
		Body:         e.Body[first : last+1],
	}
}

// parseByteRange parses a Range value of one byte range (§14.1.2) against a representation of
// size bytes. ok is false for anything else (several ranges, other units, bad syntax): the
// Range is then ignored. A satisfiable range gives first <= last < size; an unsatisfiable one
// (first at or past the end, or a zero suffix) gives first = -1.
func parseByteRange(v string, size int64) (first, last int64, ok bool) {
	if len(v) > maxRangeFieldBytes {
		return 0, 0, false
	}
	unit, spec, found := strings.Cut(strings.Trim(v, " \t"), "=")
	if !found || !strings.EqualFold(strings.Trim(unit, " \t"), "bytes") || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	spec = strings.Trim(spec, " \t")
	a, b, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false
	}
	if a == "" { // suffix-range: the last b bytes
		n, ok := digits(b)
		if !ok {
			return 0, 0, false
		}
		if n == 0 || size == 0 {
			return -1, 0, true
		}
		return max(size-n, 0), size - 1, true
	}
	first, ok = digits(a)
	if !ok {
		return 0, 0, false
	}
	last = size - 1
	if b != "" {
		if last, ok = digits(b); !ok || last < first {
			return 0, 0, false
		}
		last = min(last, size-1)
	}
	if first >= size {
		return -1, 0, true
	}
	return first, last, true
}

// digits parses 1*DIGIT without overflow (values past 2^62 are capped: no body is that long).
func digits(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < 1<<62 {
			n = n*10 + int64(c-'0')
		}
	}
	return n, true
}

// ifRangeMatches evaluates If-Range (§13.1.5): absent, or a strong ETag equal to e's (a weak
// one never matches), or an HTTP-date equal to e's Last-Modified.
func ifRangeMatches(req Request, e *Entry, now time.Time) bool {
	v, ok := req.Header.Lookup("if-range")
	if !ok {
		return true
	}
	v = strings.Trim(v, " \t")
	if strings.HasPrefix(v, `"`) || strings.HasPrefix(v, "W/") {
		got, stored := parseEntityTag(v), parseEntityTag(e.ETag)
		return e.ETag != "" && !got.weak && !stored.weak && got.opaque == stored.opaque
	}
	t, ok := parseHTTPDate(v, now)
	lm, lmOK := parseHTTPDate(e.LastModified, now)
	return ok && lmOK && t.Equal(lm)
}
