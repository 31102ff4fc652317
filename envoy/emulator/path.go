package emulator

import "strings"

// Path normalisation of the HTTP connection manager
// (ConnectionManagerUtility::maybeNormalizePath, source/common/http/
// conn_manager_utility.cc): a path with a fragment is refused
// (envoy.reloadable_features.http_reject_path_with_fragment, on by default);
// with normalize_path the path part (not the query) is canonicalised
// (PathUtil::canonicalPath, source/common/http/path_utility.cc); with
// merge_slashes repeated slashes are then collapsed (PathUtil::mergeSlashes).
// Envoy never changes case: "/API/V1" stays as it is.

// canonicalPath is PathUtil::canonicalPath: dot segments carrying
// parameters (";...") lose them first (stripParametersFromDotSegments,
// envoy.reloadable_features.strip_dotdot_segments_with_parameters), then the
// path before the query goes through googleurl's url::CanonicalizePath
// (url/url_canon_path.cc), the query is appended unchanged. ok is false for
// a path Envoy answers 400 (an escaped NUL).
//
// url::CanonicalizePath, as built into Envoy:
//   - a path not starting with "/" (or "\") gets one;
//   - "\" becomes "/";
//   - "." and ".." segments, also spelled "%2e"/"%2E", are removed
//     (RFC 3986 §5.2.4), ".." never climbing above the root;
//   - "%XX" of an unreserved character (ALPHA, DIGIT, "-", "_", "~") is
//     decoded (RFC 3986 §6.2.2.2); "%2E" decodes to "." where it is not a
//     dot segment; other escapes are kept with their hex case; a "%" not
//     followed by two hex digits is kept;
//   - "%00" or a raw NUL fails the path;
//   - controls, space, '"', '#', '%'-less "<", ">", "\", "^", "`", "{", "|",
//     "}", DEL and bytes >= 0x80 are percent-encoded (upper-case hex).
func canonicalPath(p string) (string, bool) {
	path, query, hasQuery := strings.Cut(p, "?")
	path = stripDotSegmentParameters(path)
	out, ok := canonicalizePath(path)
	if !ok {
		return "", false
	}
	if hasQuery {
		out += "?" + query
	}
	return out, true
}

// stripDotSegmentParameters is PathUtil::stripParametersFromDotSegments on
// the path part: a segment starting "..;" becomes "..", one starting ".;"
// becomes ".", so that canonicalisation removes them.
func stripDotSegmentParameters(path string) string {
	if !strings.Contains(path, ".;") {
		return path
	}
	segs := strings.Split(path, "/")
	for i, s := range segs {
		switch {
		case strings.HasPrefix(s, "..;"):
			segs[i] = ".."
		case strings.HasPrefix(s, ".;"):
			segs[i] = "."
		}
	}
	return strings.Join(segs, "/")
}

// pathChar classifies a byte as googleurl's kPathCharLookup does.
type pathChar uint8

const (
	pathPass     pathChar = iota // copied
	pathEscape                   // percent-encoded
	pathUnescape                 // copied; decoded when it arrives escaped
	pathDot                      // '.': dot-segment handling
	pathInvalid                  // NUL: the path fails
)

func classifyPathChar(c byte) pathChar {
	switch {
	case c == 0:
		return pathInvalid
	case c < 0x20 || c >= 0x7f:
		return pathEscape
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return pathUnescape
	case c == '.':
		return pathDot
	}
	switch c {
	case '-', '_', '~':
		return pathUnescape
	case ' ', '"', '#', '%', '<', '>', '?', '\\', '^', '`', '{', '|', '}':
		return pathEscape
	}
	// ! $ & ' ( ) * + , / : ; = @ [ ]
	return pathPass
}

func isURLSlash(c byte) bool { return c == '/' || c == '\\' }

// dotLen reports whether p[i:] starts with a dot, "." or "%2e"/"%2E"
// (googleurl IsDot), and its length.
func dotLen(p string, i int) int {
	if p[i] == '.' {
		return 1
	}
	if p[i] == '%' && i+3 <= len(p) && p[i+1] == '2' && (p[i+2] == 'e' || p[i+2] == 'E') {
		return 3
	}
	return 0
}

// canonicalizePath follows googleurl's DoPath/DoPartialPath on a path
// without query.
func canonicalizePath(p string) (string, bool) {
	var b strings.Builder
	b.Grow(len(p) + 1)
	if p == "" || !isURLSlash(p[0]) {
		b.WriteByte('/')
	}
	out := []byte(b.String())
	ok := true
	for i := 0; i < len(p); i++ {
		c := p[i]
		cls := classifyPathChar(c)
		if cls == pathPass || cls == pathUnescape {
			out = append(out, c)
			continue
		}
		if n := dotLen(p, i); n > 0 {
			if out[len(out)-1] != '/' {
				// A dot inside a segment is just a character.
				out = append(out, '.')
				i += n - 1
				continue
			}
			consumed, kind := classifyAfterDot(p, i+n)
			switch kind {
			case dotNone:
				out = append(out, '.')
				i += n - 1
			case dotCurrent:
				i += n + consumed - 1
			case dotParent:
				out = backUpToPreviousSlash(out)
				i += n + consumed - 1
			}
			continue
		}
		switch {
		case c == '\\':
			out = append(out, '/')
		case c == '%':
			v, valid := decodeEscape(p, i)
			if !valid {
				// An invalid escape: the '%' is kept, what follows is read as
				// usual.
				out = append(out, '%')
				continue
			}
			switch classifyPathChar(v) {
			case pathUnescape:
				out = append(out, v)
			case pathInvalid:
				out = append(out, '%', p[i+1], p[i+2])
				ok = false
			default:
				// Kept escaped, hex case unchanged.
				out = append(out, '%', p[i+1], p[i+2])
			}
			i += 2
		case cls == pathInvalid:
			out = appendEscaped(out, c)
			ok = false
		default: // pathEscape
			out = appendEscaped(out, c)
		}
	}
	return string(out), ok
}

type dotKind int

const (
	dotNone dotKind = iota
	dotCurrent
	dotParent
)

// classifyAfterDot is googleurl ClassifyAfterDot: what a dot that follows a
// slash means, given what comes after it, and how many more bytes that
// takes (a following slash included).
func classifyAfterDot(p string, after int) (int, dotKind) {
	if after == len(p) {
		return 0, dotCurrent
	}
	if isURLSlash(p[after]) {
		return 1, dotCurrent
	}
	if n := dotLen(p, after); n > 0 {
		next := after + n
		if next == len(p) {
			return n, dotParent
		}
		if isURLSlash(p[next]) {
			return n + 1, dotParent
		}
	}
	return 0, dotNone
}

// backUpToPreviousSlash drops the last segment of out, which ends in "/",
// never going above the first slash.
func backUpToPreviousSlash(out []byte) []byte {
	i := len(out) - 1
	if i == 0 {
		return out
	}
	i--
	for out[i] != '/' && i > 0 {
		i--
	}
	return out[:i+1]
}

// decodeEscape reads "%XX" at p[i].
func decodeEscape(p string, i int) (byte, bool) {
	if i+2 >= len(p) {
		return 0, false
	}
	h, ok1 := unhex(p[i+1])
	l, ok2 := unhex(p[i+2])
	if !ok1 || !ok2 {
		return 0, false
	}
	return h<<4 | l, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func appendEscaped(out []byte, c byte) []byte {
	const hex = "0123456789ABCDEF"
	return append(out, '%', hex[c>>4], hex[c&0xf])
}

// mergeSlashes is PathUtil::mergeSlashes: in the path part, runs of "/"
// become one; a leading and a trailing slash are kept (so "//" stays "//");
// the query is left alone.
func mergeSlashes(p string) string {
	path, query, hasQuery := strings.Cut(p, "?")
	if !strings.Contains(path, "//") {
		return p
	}
	var b strings.Builder
	if strings.HasPrefix(path, "/") {
		b.WriteByte('/')
	}
	first := true
	for _, seg := range strings.Split(path, "/") {
		if seg == "" {
			continue
		}
		if !first {
			b.WriteByte('/')
		}
		b.WriteString(seg)
		first = false
	}
	if strings.HasSuffix(path, "/") {
		b.WriteByte('/')
	}
	if hasQuery {
		b.WriteString("?" + query)
	}
	return b.String()
}
