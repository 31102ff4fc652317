package batch

import (
	"errors"
	"strconv"
	"strings"
)

// The item url validator. Its principle: an accepted url must mean the same
// thing to every parser between Sluice and the application (Go's net/url,
// Envoy with normalize_path and merge_slashes, the application's router), so
// anything some parser might read differently is rejected rather than
// normalised. An accepted url is sent byte for byte as the request-target
// (origin-form, RFC 9112 §3.2.1) to the configured listener; it never
// chooses the host.
//
// Accepted: "/" path ["?" query], at most MaxURLLength bytes, where
//   - every byte is printable ASCII from RFC 3986's pchar set (path) or
//     query set: no spaces, controls, non-ASCII, "\", "#", "<", ">", "{" …;
//   - "%" is always followed by two hex digits;
//   - the path starts with exactly one "/" (no scheme, no authority, no
//     "//host"), has no empty segment ("//"), no "." or ".." segment, no
//     ";" (Tomcat-style "..;/"), and no escaped byte that decodes to ".",
//     "/", "\", "%", ";", a control or a non-ASCII byte (so no %2e, %2f,
//     %5c, double-encoded %252e, overlong UTF-8 %c0%ae, fullwidth dots…);
//   - the query has no escaped control (%00-%1f, %7f: CR/LF injection) and
//     no escaped "%" (double encoding);
//   - the path starts with one of the configured prefixes and is not the
//     batch path (nested batches).
//
// Case matters for the prefix as it does for Envoy's route matching; the
// batch path is compared case-insensitively, so /API/V1/BATCH is refused too.

// URL rejection reasons, returned wrapped in *URLError.
var (
	errURLEmpty      = errors.New("empty")
	errURLTooLong    = errors.New("too long")
	errURLNotPath    = errors.New("must be a path starting with a single /")
	errURLByte       = errors.New("character not allowed")
	errURLEscape     = errors.New("malformed or forbidden percent-escape")
	errURLSegment    = errors.New("empty, . or .. path segment")
	errURLFragment   = errors.New("fragment not allowed")
	errURLPrefix     = errors.New("path outside the allowed prefixes")
	errURLNested     = errors.New("nested batch requests are not allowed")
	errURLSemicolon  = errors.New("; not allowed in the path")
	errURLBackslash  = errors.New(`\ not allowed`)
	errURLControl    = errors.New("control or non-ASCII character")
	errURLDoubleEnc  = errors.New("double-encoded escape")
	errURLQueryEmpty = errors.New("empty query")
)

// URLError is why an item url was rejected.
type URLError struct {
	URL string // truncated to 64 bytes for messages
	Err error
}

func (e *URLError) Error() string { return "url " + quoteShort(e.URL) + ": " + e.Err.Error() }
func (e *URLError) Unwrap() error { return e.Err }

// urlValidator checks item urls against one Config. Safe for concurrent use.
type urlValidator struct {
	prefixes  []string
	batchPath string
	maxLen    int
}

func newURLValidator(c Config) *urlValidator {
	return &urlValidator{prefixes: c.PathPrefixes, batchPath: strings.TrimSuffix(c.BatchPath, "/"), maxLen: c.MaxURLLength}
}

// Validate returns the path and raw query of an acceptable item url.
func (v *urlValidator) Validate(raw string) (path, query string, err error) {
	fail := func(e error) (string, string, error) { return "", "", &URLError{URL: raw, Err: e} }
	switch {
	case raw == "":
		return fail(errURLEmpty)
	case len(raw) > v.maxLen:
		return fail(errURLTooLong)
	}
	for i := 0; i < len(raw); i++ {
		switch b := raw[i]; {
		case b < 0x20 || b >= 0x7f:
			return fail(errURLControl)
		case b == '\\':
			return fail(errURLBackslash)
		case b == '#':
			return fail(errURLFragment)
		}
	}
	if raw[0] != '/' || (len(raw) > 1 && raw[1] == '/') {
		return fail(errURLNotPath)
	}
	path, query, hasQuery := strings.Cut(raw, "?")
	if hasQuery && query == "" {
		return fail(errURLQueryEmpty)
	}
	if e := checkPath(path); e != nil {
		return fail(e)
	}
	if hasQuery {
		if e := checkQuery(query); e != nil {
			return fail(e)
		}
	}
	p := strings.TrimSuffix(path, "/")
	if strings.EqualFold(p, v.batchPath) {
		return fail(errURLNested)
	}
	for _, pre := range v.prefixes {
		if strings.HasPrefix(path, pre) && len(path) > len(pre) {
			return path, query, nil
		}
	}
	return fail(errURLPrefix)
}

// checkPath checks an origin-form path that starts with one "/".
func checkPath(path string) error {
	segStart := 1
	for i := 1; i <= len(path); i++ {
		if i < len(path) && path[i] != '/' {
			b := path[i]
			switch {
			case b == ';':
				return errURLSemicolon
			case b == '%':
				d, ok := unhex2(path, i)
				if !ok {
					return errURLEscape
				}
				if d == '.' || d == '/' || d == '\\' || d == '%' || d == ';' || d < 0x20 || d >= 0x7f {
					return errURLEscape
				}
				i += 2
			case !isPchar(b):
				return errURLByte
			}
			continue
		}
		// End of a segment at i.
		seg := path[segStart:i]
		if seg == "." || seg == ".." || (seg == "" && i < len(path)) {
			return errURLSegment
		}
		segStart = i + 1
	}
	return nil
}

// checkQuery checks a query (after "?").
func checkQuery(q string) error {
	for i := 0; i < len(q); i++ {
		b := q[i]
		switch {
		case b == '%':
			d, ok := unhex2(q, i)
			if !ok {
				return errURLEscape
			}
			if d < 0x20 || d == 0x7f {
				return errURLControl
			}
			if d == '%' {
				return errURLDoubleEnc
			}
			i += 2
		case !isPchar(b) && b != '/' && b != '?' && b != ';':
			return errURLByte
		}
	}
	return nil
}

// isPchar reports whether b is an RFC 3986 pchar other than "%" (escapes are
// checked separately): unreserved, sub-delims, ":" and "@". ";" is a
// sub-delim; checkPath refuses it separately.
func isPchar(b byte) bool {
	if isAlnum(b) {
		return true
	}
	switch b {
	case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@':
		return true
	}
	return false
}

// unhex2 decodes the escape "%HH" at s[i].
func unhex2(s string, i int) (byte, bool) {
	if i+2 >= len(s) {
		return 0, false
	}
	h, ok1 := unhex(s[i+1])
	l, ok2 := unhex(s[i+2])
	return h<<4 | l, ok1 && ok2
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strconv.Quote(strings.ToValidUTF8(s, "?"))
}
