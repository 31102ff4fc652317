package httpcache

import (
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// Conditional requests, both directions (RFC 9110 §13, RFC 9111 §4.3):
//
//   - answering a client's If-None-Match / If-Modified-Since from a stored
//     response (NotModified, then ServeHeaders with status 304);
//   - validating a stored response upstream (ConditionalHeaders), then
//     Freshen on a 304.
//
// When Sluice validates an entry it replaces the client's own validators
// (ConditionalFields) with the entry's: the upstream 304 then refers to the
// entry, which is freshened and used to answer the client's conditions. On a
// miss the client's conditional headers are forwarded untouched and the
// upstream's answer (a 304 is never stored) goes straight back.

// ConditionalFields are the request fields Sluice replaces with
// ConditionalHeaders when it validates an entry.
var ConditionalFields = []string{"if-none-match", "if-modified-since"}

// ConditionalHeaders returns the validators to send upstream to validate e
// (RFC 9111 §4.3.1): If-None-Match with its entity-tag (quoted if the
// origin sent it unquoted), and If-Modified-Since with its Last-Modified.
// It returns nil when e has no validator: the request is then an ordinary
// fetch.
func ConditionalHeaders(e *Entry) header.List {
	var h header.List
	if e.ETag != "" {
		h = append(h, header.Field{Name: "if-none-match", Value: parseEntityTag(e.ETag).String()})
	}
	if e.LastModified != "" {
		h = append(h, header.Field{Name: "if-modified-since", Value: e.LastModified})
	}
	return h
}

// NotModified evaluates the client's conditional GET or HEAD against the
// stored response e at now (RFC 9110 §13.2.2, RFC 9111 §4.3.2) and reports
// whether the answer is 304:
//
//   - If-None-Match, when present, decides alone (it takes precedence over
//     If-Modified-Since): "*" matches any stored response; otherwise a
//     member must match e's ETag by weak comparison (§8.8.3.2);
//   - else If-Modified-Since, when it is a single valid HTTP-date not later
//     than now: e was not modified after it, using e's Last-Modified, or
//     its Date, or the time it was received (§4.3.2).
//
// Entity-tags the origin or client sent unquoted are compared by their
// text, so "abc" and abc match; anything else follows the grammar.
func NotModified(req Request, e *Entry, now time.Time) bool {
	if e == nil || req.Method != "GET" && req.Method != "HEAD" {
		return false
	}
	if inm := req.Header.Values("if-none-match"); len(inm) > 0 {
		stored := parseEntityTag(e.ETag)
		for _, v := range inm {
			for _, m := range header.SplitList(v) {
				if m == "*" || e.ETag != "" && parseEntityTag(m).opaque == stored.opaque {
					return true
				}
			}
		}
		return false
	}
	ims := req.Header.Values("if-modified-since")
	if len(ims) != 1 {
		return false // absent, or more than one member: ignored (§13.1.3)
	}
	since, ok := parseHTTPDate(ims[0], now)
	if !ok || since.After(now) {
		return false
	}
	modified, ok := parseHTTPDate(e.LastModified, now)
	if !ok {
		if modified, ok = httpDateField(e.Header, "date", now); !ok {
			modified = e.ResponseTime
		}
	}
	return !modified.After(since)
}

// entityTag is a parsed entity-tag (RFC 9110 §8.8.3).
type entityTag struct {
	weak   bool
	opaque string // without quotes
}

// parseEntityTag parses `[W/] DQUOTE *etagc DQUOTE`. A value that does not
// follow the grammar (unquoted, "w/" lower-case) is taken whole as a strong
// tag's opaque text, which is how such tags compare equal to themselves.
func parseEntityTag(s string) entityTag {
	s = strings.Trim(s, " \t")
	t := entityTag{}
	rest := s
	if strings.HasPrefix(rest, "W/") {
		t.weak, rest = true, rest[2:]
	}
	if len(rest) >= 2 && rest[0] == '"' && rest[len(rest)-1] == '"' && validETagc(rest[1:len(rest)-1]) {
		t.opaque = rest[1 : len(rest)-1]
		return t
	}
	return entityTag{opaque: strings.Trim(s, `"`)}
}

// String formats the tag with quotes, as it is sent in If-None-Match.
func (t entityTag) String() string {
	if t.weak {
		return `W/"` + t.opaque + `"`
	}
	return `"` + t.opaque + `"`
}

// validETagc reports etagc = %x21 / %x23-7E / obs-text.
func validETagc(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != 0x21 && (c < 0x23 || c == 0x7f) {
			return false
		}
	}
	return true
}
