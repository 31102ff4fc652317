package httpcache

import (
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// MaxDeltaSeconds is the largest delta-seconds value Sluice represents:
// RFC 9111 §1.2.2 has a cache treat any larger value (and any value it
// cannot represent) as 2^31 seconds, about 68 years.
const MaxDeltaSeconds = 1 << 31

// Bounds on the work ParseCacheControl does. Envoy already limits a request
// or response header section (max_request_headers_kb, 60 KiB by default);
// these bound what one field may cost. Input beyond them sets Overflow and is
// not parsed, and callers then treat the message as uncacheable.
const (
	maxCacheControlBytes = 16 << 10 // summed over all field lines
	maxCacheDirectives   = 128
	maxQualifiedFields   = 32 // field names in one no-cache="…" or private="…"
	maxFieldsPerKind     = 64 // field names of all no-cache="…" (or private="…") together
)

// Delta is the argument of a delta-seconds directive (max-age, s-maxage,
// max-stale, min-fresh, stale-while-revalidate, stale-if-error). The zero
// value means the directive is absent.
type Delta struct {
	// Present reports that the directive appeared, valid or not.
	Present bool
	// Invalid reports an argument that is missing, not 1*DIGIT (negative,
	// decimal, alphabetic, single-quoted, space around "="), or a directive
	// repeated with different values. RFC 9111 §4.2.1 lets a cache consider
	// such a response stale, which Sluice does; request directives are read
	// in the most conservative way (see Evaluate).
	Invalid bool
	// Seconds is the value, capped at MaxDeltaSeconds; 0 when Invalid.
	Seconds int64
}

// Valid reports whether the directive is present with a usable value.
func (d Delta) Valid() bool { return d.Present && !d.Invalid }

// Duration returns Seconds as a time.Duration.
func (d Delta) Duration() time.Duration { return time.Duration(d.Seconds) * time.Second }

// CacheControl is a parsed Cache-Control field (RFC 9111 §5.2), request or
// response: one struct serves both, and the directives of the other side are
// simply never set by a well-behaved peer. Unknown extension directives are
// ignored (§5.2.3). The zero value is an empty field.
type CacheControl struct {
	// NoCache is an unqualified no-cache (§5.2.1.4 request, §5.2.2.4
	// response: every use needs validation). A qualified no-cache whose
	// field list cannot be parsed counts as unqualified.
	NoCache bool
	// NoCacheFields are the lower-case field names of no-cache="…"
	// (§5.2.2.4): those fields must not be reused without validation.
	NoCacheFields []string
	// NoStore is no-store (§5.2.1.5, §5.2.2.5).
	NoStore bool
	// NoTransform is no-transform (§5.2.1.6, §5.2.2.6).
	NoTransform bool
	// MaxAge is max-age (§5.2.1.1 request, §5.2.2.1 response).
	MaxAge Delta
	// StaleIfError is stale-if-error (RFC 5861 §4), request or response.
	StaleIfError Delta

	// SMaxAge is s-maxage (§5.2.2.10).
	SMaxAge Delta
	// Private is an unqualified private (§5.2.2.7): a shared cache must not
	// store the response. A qualified private whose field list cannot be
	// parsed counts as unqualified.
	Private bool
	// PrivateFields are the lower-case field names of private="…": a shared
	// cache must not store those fields.
	PrivateFields []string
	// Public is public (§5.2.2.9).
	Public bool
	// MustRevalidate is must-revalidate (§5.2.2.2).
	MustRevalidate bool
	// ProxyRevalidate is proxy-revalidate (§5.2.2.8).
	ProxyRevalidate bool
	// MustUnderstand is must-understand (§5.2.2.3).
	MustUnderstand bool
	// Immutable is immutable (RFC 8246).
	Immutable bool
	// StaleWhileRevalidate is stale-while-revalidate (RFC 5861 §3).
	StaleWhileRevalidate Delta

	// MaxStale is max-stale (§5.2.1.2); without an argument it is valid
	// with Seconds = MaxDeltaSeconds (any staleness).
	MaxStale Delta
	// MinFresh is min-fresh (§5.2.1.3).
	MinFresh Delta
	// OnlyIfCached is only-if-cached (§5.2.1.7).
	OnlyIfCached bool

	// Overflow reports input beyond the parser's bounds (16 KiB, 128
	// directives); what followed was not parsed. Treat the message as not
	// cacheable rather than guess which directives were missed.
	Overflow bool
}

// ParseCacheControl parses the lines of a Cache-Control field, in order, as
// one comma-separated list (RFC 9110 §5.3, §5.6.1). Directive names are
// case-insensitive; an argument may be a token or a quoted-string (§5.2:
// recipients accept both forms), and commas inside a quoted-string do not
// split. It never fails: an element that is not `token ["=" (token /
// quoted-string)]` is recovered from at the next top-level comma, and
//
//   - a restrictive directive with a malformed or unexpected argument
//     (no-store=x, must-revalidate "junk") still counts;
//   - a permissive one (public, must-understand, immutable) only counts when
//     well-formed, so garbage never widens what may be stored;
//   - a delta-seconds directive with a malformed argument, or repeated with a
//     different value, is Invalid;
//   - no-cache and private with several qualified forms collect the union of
//     their field names.
//
// Work is linear in the input and bounded (see Overflow); it does not panic.
func ParseCacheControl(values ...string) CacheControl {
	var cc CacheControl
	total, n := 0, 0
	for _, v := range values {
		total += len(v)
		if total > maxCacheControlBytes {
			cc.Overflow = true
			return cc
		}
		p := ccScanner{s: v}
		for {
			p.skipSeparators()
			if p.i >= len(p.s) {
				break
			}
			name := p.token()
			if name == "" {
				p.skipElement() // not a directive: ignore the element
				continue
			}
			if n++; n > maxCacheDirectives {
				cc.Overflow = true
				return cc
			}
			arg, hasArg, ok := "", false, true
			if p.i < len(p.s) && p.s[p.i] == '=' {
				p.i++
				hasArg = true
				if p.i < len(p.s) && p.s[p.i] == '"' {
					arg, ok = p.quoted()
				} else {
					arg = p.token()
					ok = arg != ""
				}
			}
			p.skipOWS()
			if p.i < len(p.s) && p.s[p.i] != ',' {
				ok = false
				p.skipElement()
			}
			cc.apply(strings.ToLower(name), arg, hasArg, ok)
		}
	}
	return cc
}

// apply records one directive. wellFormed is false when the element had
// anything but `name`, `name=token` or `name="quoted"`.
func (cc *CacheControl) apply(name, arg string, hasArg, wellFormed bool) {
	bare := !hasArg && wellFormed // no argument, nothing else
	switch name {
	case "no-store":
		cc.NoStore = true
	case "no-transform":
		cc.NoTransform = true
	case "must-revalidate":
		cc.MustRevalidate = true
	case "proxy-revalidate":
		cc.ProxyRevalidate = true
	case "only-if-cached":
		cc.OnlyIfCached = true
	case "public":
		cc.Public = cc.Public || bare
	case "must-understand":
		cc.MustUnderstand = cc.MustUnderstand || bare
	case "immutable":
		cc.Immutable = cc.Immutable || bare
	case "no-cache":
		addFieldNames(&cc.NoCacheFields, &cc.NoCache, arg, hasArg && wellFormed)
	case "private":
		addFieldNames(&cc.PrivateFields, &cc.Private, arg, hasArg && wellFormed)
	case "max-age":
		cc.MaxAge.set(arg, hasArg && wellFormed)
	case "s-maxage":
		cc.SMaxAge.set(arg, hasArg && wellFormed)
	case "min-fresh":
		cc.MinFresh.set(arg, hasArg && wellFormed)
	case "stale-while-revalidate":
		cc.StaleWhileRevalidate.set(arg, hasArg && wellFormed)
	case "stale-if-error":
		cc.StaleIfError.set(arg, hasArg && wellFormed)
	case "max-stale":
		if bare {
			cc.MaxStale.set(strconv.Itoa(MaxDeltaSeconds), true)
		} else {
			cc.MaxStale.set(arg, hasArg && wellFormed)
		}
	}
}

// set records one occurrence of a delta-seconds directive.
func (d *Delta) set(arg string, ok bool) {
	secs, valid := int64(0), false
	if ok {
		secs, valid = parseDeltaSeconds(arg)
	}
	switch {
	case !d.Present:
		*d = Delta{Present: true, Invalid: !valid, Seconds: secs}
	case d.Invalid || !valid || d.Seconds != secs:
		// RFC 9111 §4.2.1: a directive present more than once with
		// different values makes the freshness information invalid.
		*d = Delta{Present: true, Invalid: true}
	}
	if d.Invalid {
		d.Seconds = 0
	}
}

// parseDeltaSeconds parses delta-seconds = 1*DIGIT (RFC 9111 §1.2.2),
// leading zeros allowed, capping at MaxDeltaSeconds.
func parseDeltaSeconds(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if v < MaxDeltaSeconds {
			v = v*10 + int64(c-'0')
		}
	}
	if v > MaxDeltaSeconds {
		v = MaxDeltaSeconds
	}
	return v, true
}

// addFieldNames adds the field names of a qualified no-cache or private to
// list, or sets unqualified when there is no usable list or the lists grow
// beyond maxFieldsPerKind (then the directive applies to the whole
// response, the conservative reading).
func addFieldNames(list *[]string, unqualified *bool, arg string, hasArg bool) {
	fields, ok := parseFieldNames(arg, hasArg)
	if ok {
		merged := appendUnique(*list, fields...)
		if len(merged) <= maxFieldsPerKind {
			*list = merged
			return
		}
	}
	*unqualified = true
}

// parseFieldNames parses the argument of a qualified no-cache or private: a
// comma-separated list of field names (RFC 9111 §5.2.2.4, §5.2.2.7). ok is
// false when there is no usable list (then the directive is unqualified).
func parseFieldNames(arg string, hasArg bool) ([]string, bool) {
	if !hasArg {
		return nil, false
	}
	var names []string
	for part := range strings.SplitSeq(arg, ",") {
		part = strings.Trim(part, " \t")
		if part == "" {
			continue
		}
		if !header.IsToken(part) || len(names) >= maxQualifiedFields {
			return nil, false
		}
		names = appendUnique(names, strings.ToLower(part))
	}
	return names, len(names) > 0
}

func appendUnique(list []string, vs ...string) []string {
	for _, v := range vs {
		found := false
		for _, have := range list {
			if have == v {
				found = true
				break
			}
		}
		if !found {
			list = append(list, v)
		}
	}
	return list
}

// String returns the directives in a canonical form (fixed order,
// lower-case, field lists quoted, Invalid deltas as "=invalid"), which
// ParseCacheControl maps back to an equal value (Overflow aside).
func (cc CacheControl) String() string {
	var b strings.Builder
	add := func(s string) {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s)
	}
	flag := func(on bool, name string) {
		if on {
			add(name)
		}
	}
	delta := func(d Delta, name string) {
		switch {
		case !d.Present:
		case d.Invalid:
			add(name + "=invalid")
		default:
			add(name + "=" + strconv.FormatInt(d.Seconds, 10))
		}
	}
	fields := func(list []string, name string) {
		for len(list) > 0 { // at most maxQualifiedFields per directive
			n := min(len(list), maxQualifiedFields)
			add(name + `="` + strings.Join(list[:n], ", ") + `"`)
			list = list[n:]
		}
	}
	flag(cc.NoStore, "no-store")
	flag(cc.NoCache, "no-cache")
	fields(cc.NoCacheFields, "no-cache")
	flag(cc.Private, "private")
	fields(cc.PrivateFields, "private")
	flag(cc.Public, "public")
	flag(cc.MustRevalidate, "must-revalidate")
	flag(cc.ProxyRevalidate, "proxy-revalidate")
	flag(cc.MustUnderstand, "must-understand")
	flag(cc.NoTransform, "no-transform")
	flag(cc.Immutable, "immutable")
	flag(cc.OnlyIfCached, "only-if-cached")
	delta(cc.MaxAge, "max-age")
	delta(cc.SMaxAge, "s-maxage")
	delta(cc.MaxStale, "max-stale")
	delta(cc.MinFresh, "min-fresh")
	delta(cc.StaleWhileRevalidate, "stale-while-revalidate")
	delta(cc.StaleIfError, "stale-if-error")
	return b.String()
}

// ccScanner walks one field line. Every method advances i or leaves it at a
// position where the caller makes progress, so parsing is linear.
type ccScanner struct {
	s string
	i int
}

func (p *ccScanner) skipOWS() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *ccScanner) skipSeparators() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == ',') {
		p.i++
	}
}

func (p *ccScanner) token() string {
	start := p.i
	for p.i < len(p.s) && header.IsTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// quoted reads a quoted-string (RFC 9110 §5.6.4) starting at '"' and returns
// its unescaped content. ok is false for a control character (the scan
// still goes on to the closing quote, so the rest of the line is read as
// the sender framed it) or a missing closing quote.
func (p *ccScanner) quoted() (string, bool) {
	p.i++ // opening quote
	start := p.i
	var b *strings.Builder // only when an escape is seen
	ok := true
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			switch {
			case !ok:
				return "", false
			case b == nil:
				return p.s[start : p.i-1], true
			}
			return b.String(), true
		case c == '\\' && p.i+1 < len(p.s):
			e := p.s[p.i+1]
			if !qdchar(e) && e != '"' && e != '\\' {
				ok = false
			}
			if ok && b == nil {
				b = &strings.Builder{}
				b.WriteString(p.s[start:p.i])
			}
			if ok {
				b.WriteByte(e)
			}
			p.i += 2
		case qdchar(c):
			if ok && b != nil {
				b.WriteByte(c)
			}
			p.i++
		default:
			ok = false
			p.i++
		}
	}
	return "", false
}

// skipElement advances to the next comma outside a quoted-string.
func (p *ccScanner) skipElement() {
	inQuote := false
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case inQuote && c == '\\':
			p.i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == ',':
			return
		}
		p.i++
	}
}

// qdchar reports qdtext (RFC 9110 §5.6.4): HTAB, SP, VCHAR except '"' and
// '\', obs-text.
func qdchar(c byte) bool {
	return c == '\t' || c == ' ' || c == 0x21 || c >= 0x23 && c <= 0x5b || c >= 0x5d && c <= 0x7e || c >= 0x80
}
