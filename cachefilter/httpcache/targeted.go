package httpcache

import (
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/internal/header"
)

// Targeted cache-control fields (RFC 9213): a response may carry caching directives meant for
// one class of caches only, such as CDN-Cache-Control for the CDNs in front of an origin, so
// that they can keep a response longer (or shorter) than browsers. Sluice is such a shared edge
// cache, and the fields it obeys are RoutePolicy.Targets (cache.targeted_cache_control, default
// [cdn-cache-control]). Per RFC 9213 §2.1:
//
//   - the first field of the list present with a valid, non-empty value decides, and then
//     Cache-Control and Expires are ignored for the response's caching (they still reach the
//     client unchanged, for the caches after Sluice);
//   - a field that fails to parse as a Structured Fields Dictionary (RFC 8941 §3.2), or is
//     empty, is ignored as if absent;
//   - directives mean what they mean in Cache-Control; a directive whose value has the wrong
//     type (max-age="60", a string) is ignored.

// DefaultTargets is the default target list: CDN-Cache-Control, which targets every shared
// cache an origin's operator runs in front of it (RFC 9213 §3).
var DefaultTargets = []string{"cdn-cache-control"}

// responseDirectives returns the directives that govern storing and reusing a response: those
// of the first targeted field with a valid, non-empty value (targeted true), else those of
// its Cache-Control.
func responseDirectives(hdr header.List, targets []string) (cc CacheControl, targeted bool) {
	for _, name := range targets {
		lines := hdr.Values(name)
		if len(lines) == 0 {
			continue
		}
		if cc, ok := parseTargeted(lines); ok {
			return cc, true
		}
	}
	return ParseCacheControl(hdr.Values("cache-control")...), false
}

// parseTargeted reads a targeted field's lines as one Dictionary and maps its members onto
// Cache-Control directives. ok is false for a value that does not parse or is empty.
func parseTargeted(lines []string) (CacheControl, bool) {
	var cc CacheControl
	total := 0
	for _, l := range lines {
		total += len(l)
	}
	if total > maxCacheControlBytes {
		return cc, false
	}
	members, ok := parseSFDictionary(strings.Join(lines, ", "))
	if !ok || len(members) == 0 {
		return cc, false
	}
	for _, m := range members {
		name, it := m.key, m.item
		switch name {
		case "max-age", "s-maxage", "stale-while-revalidate", "stale-if-error":
			if it.kind != sfInteger {
				continue // wrong type: the directive is ignored
			}
			cc.apply(name, strconv.FormatInt(it.i, 10), true, true)
		case "no-store", "no-cache", "private", "must-revalidate", "proxy-revalidate", "no-transform":
			// Restrictive: set unless explicitly false; a list qualifies no-cache and private.
			switch {
			case it.kind == sfBoolean && !it.b:
			case it.kind == sfBoolean:
				cc.apply(name, "", false, true)
			case (name == "no-cache" || name == "private") && (it.kind == sfString || it.kind == sfToken || it.kind == sfInnerList):
				cc.apply(name, it.fieldList(), true, true)
			default:
				cc.apply(name, "", false, false)
			}
		case "public", "must-understand", "immutable":
			if it.kind == sfBoolean && it.b {
				cc.apply(name, "", false, true)
			}
		}
	}
	return cc, true
}

// fieldList is a qualified no-cache or private list as Cache-Control spells it.
func (it sfItem) fieldList() string {
	if it.kind != sfInnerList {
		return it.s
	}
	names := make([]string, 0, len(it.list))
	for _, e := range it.list {
		if e.kind == sfString || e.kind == sfToken {
			names = append(names, e.s)
		}
	}
	return strings.Join(names, ",")
}

// ---- RFC 8941 Dictionary parsing --------------------------------------------------------

type sfKind uint8

const (
	sfInteger sfKind = iota + 1
	sfDecimal
	sfString
	sfToken
	sfBytes
	sfBoolean
	sfInnerList
)

// sfItem is a bare item or an inner list; parameters are parsed and dropped (no directive
// uses them).
type sfItem struct {
	kind sfKind
	i    int64    // sfInteger
	s    string   // sfString, sfToken (sfDecimal and sfBytes keep their text)
	b    bool     // sfBoolean
	list []sfItem // sfInnerList
}

type sfMember struct {
	key  string
	item sfItem
}

// maxSFMembers bounds the members of one dictionary (and the items of one inner list).
const maxSFMembers = 128

// parseSFDictionary parses s as a Dictionary (RFC 8941 §4.2.2). Keys are unique: a repeated
// key keeps its place and takes the later value. It fails (false) on anything the grammar
// does not allow, as the RFC requires of a whole field.
func parseSFDictionary(s string) ([]sfMember, bool) {
	p := sfParser{s: s}
	p.skipSP()
	var out []sfMember
	for p.i < len(p.s) {
		key, ok := p.key()
		if !ok {
			return nil, false
		}
		it := sfItem{kind: sfBoolean, b: true}
		if p.peek() == '=' {
			p.i++
			if it, ok = p.itemOrInnerList(); !ok {
				return nil, false
			}
		} else if !p.params() {
			return nil, false
		}
		replaced := false
		for j := range out {
			if out[j].key == key {
				out[j].item, replaced = it, true
				break
			}
		}
		if !replaced {
			if len(out) == maxSFMembers {
				return nil, false
			}
			out = append(out, sfMember{key, it})
		}
		p.skipOWS()
		if p.i == len(p.s) {
			return out, true
		}
		if p.s[p.i] != ',' {
			return nil, false
		}
		p.i++
		p.skipOWS()
		if p.i == len(p.s) {
			return nil, false // a trailing comma
		}
	}
	return out, true
}

type sfParser struct {
	s string
	i int
}

func (p *sfParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *sfParser) skipSP() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *sfParser) skipOWS() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || c >= 'A' && c <= 'Z' }

// key is RFC 8941 §4.2.3.3.
func (p *sfParser) key() (string, bool) {
	start := p.i
	if c := p.peek(); !isLCAlpha(c) && c != '*' {
		return "", false
	}
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		if !isLCAlpha(c) && !isDigit(c) && c != '_' && c != '-' && c != '.' && c != '*' {
			break
		}
		p.i++
	}
	return p.s[start:p.i], true
}

// itemOrInnerList is RFC 8941 §4.2.1.1.
func (p *sfParser) itemOrInnerList() (sfItem, bool) {
	if p.peek() != '(' {
		it, ok := p.bareItem()
		return it, ok && p.params()
	}
	p.i++
	l := sfItem{kind: sfInnerList}
	for {
		p.skipSP()
		if p.peek() == ')' {
			p.i++
			return l, p.params()
		}
		if len(l.list) == maxSFMembers {
			return sfItem{}, false
		}
		it, ok := p.bareItem()
		if !ok || !p.params() {
			return sfItem{}, false
		}
		l.list = append(l.list, it)
		if c := p.peek(); c != ' ' && c != ')' {
			return sfItem{}, false
		}
	}
}

// params parses and drops parameters (RFC 8941 §4.2.3.2).
func (p *sfParser) params() bool {
	for p.peek() == ';' {
		p.i++
		p.skipSP()
		if _, ok := p.key(); !ok {
			return false
		}
		if p.peek() == '=' {
			p.i++
			if _, ok := p.bareItem(); !ok {
				return false
			}
		}
	}
	return true
}

// bareItem is RFC 8941 §4.2.3.1.
func (p *sfParser) bareItem() (sfItem, bool) {
	switch c := p.peek(); {
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		return p.str()
	case c == '*' || isAlpha(c):
		return p.token(), true
	case c == ':':
		return p.bytes()
	case c == '?':
		if p.i+1 < len(p.s) && (p.s[p.i+1] == '0' || p.s[p.i+1] == '1') {
			b := p.s[p.i+1] == '1'
			p.i += 2
			return sfItem{kind: sfBoolean, b: b}, true
		}
	}
	return sfItem{}, false
}

// number is RFC 8941 §4.2.4: at most 15 digits for an Integer, 12.3 for a Decimal.
func (p *sfParser) number() (sfItem, bool) {
	start := p.i
	neg := p.peek() == '-'
	if neg {
		p.i++
	}
	if !isDigit(p.peek()) {
		return sfItem{}, false
	}
	digits, dot := 0, -1
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case isDigit(c):
			digits++
		case c == '.' && dot < 0:
			if digits > 12 {
				return sfItem{}, false
			}
			dot = digits
		default:
			goto done
		}
		p.i++
		if digits > 15 {
			return sfItem{}, false
		}
	}
done:
	text := p.s[start:p.i]
	if dot >= 0 {
		if frac := digits - dot; frac < 1 || frac > 3 {
			return sfItem{}, false
		}
		return sfItem{kind: sfDecimal, s: text}, true
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return sfItem{}, false
	}
	return sfItem{kind: sfInteger, i: n}, true
}

// str is RFC 8941 §4.2.5: printable ASCII, with \" and \\ escapes only.
func (p *sfParser) str() (sfItem, bool) {
	p.i++ // the opening quote
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '\\':
			if p.i == len(p.s) || (p.s[p.i] != '"' && p.s[p.i] != '\\') {
				return sfItem{}, false
			}
			b.WriteByte(p.s[p.i])
			p.i++
		case c == '"':
			return sfItem{kind: sfString, s: b.String()}, true
		case c < 0x20 || c > 0x7e:
			return sfItem{}, false
		default:
			b.WriteByte(c)
		}
	}
	return sfItem{}, false // no closing quote
}

// token is RFC 8941 §4.2.6.
func (p *sfParser) token() sfItem {
	start := p.i
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		if !header.IsTokenChar(c) && c != ':' && c != '/' {
			break
		}
		p.i++
	}
	return sfItem{kind: sfToken, s: p.s[start:p.i]}
}

// bytes is RFC 8941 §4.2.7: base64 between colons (its value is not needed).
func (p *sfParser) bytes() (sfItem, bool) {
	start := p.i
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch {
		case c == ':':
			return sfItem{kind: sfBytes, s: p.s[start:p.i]}, true
		case isAlpha(c) || isDigit(c) || c == '+' || c == '/' || c == '=':
		default:
			return sfItem{}, false
		}
	}
	return sfItem{}, false
}
