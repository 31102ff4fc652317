// Package header is the HTTP header field list shared by the ext_proc
// server (extproc), the cache (cachefilter) and the Envoy emulator: one
// field type, so that a header section travels between them without copying.
//
// A List keeps fields the way Envoy hands them over (HttpHeaders.headers):
// names are lower-case, order and repetition are kept, and pseudo-headers
// (":method", ":path", ":authority", ":scheme", ":status") are ordinary
// fields whose names start with ':'. Lookups compare names exactly, so
// callers pass lower-case names; Add, Set and Del lower-case the name they
// are given.
package header

import "strings"

// Field is one header field. Name is lower-case; Value is the field value as
// received (not trimmed, not joined with other lines of the same name).
type Field struct {
	Name, Value string
}

// List is a header section in order, repeated names included. The zero value
// (nil) is an empty list ready to use. A List is a plain slice: reading it
// from several goroutines is safe, changing it is not. Methods that only
// read never modify the list; Add, Set and Del change it in place.
type List []Field

// Get returns the first value of name, or "" when name is absent.
func (l List) Get(name string) string {
	v, _ := l.Lookup(name)
	return v
}

// Lookup returns the first value of name and whether name is present.
func (l List) Lookup(name string) (string, bool) {
	for _, f := range l {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// Has reports whether name is present (with any value, empty included).
func (l List) Has(name string) bool {
	_, ok := l.Lookup(name)
	return ok
}

// Values returns every value of name in order, or nil when name is absent.
// The result is a new slice.
func (l List) Values(name string) []string {
	var vs []string
	for _, f := range l {
		if f.Name == name {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

// Add appends a field. A pseudo-header is inserted after the pseudo-headers
// already present and before every regular field, as HTTP/2 and Envoy's
// header map keep them (RFC 9113 §8.3).
func (l *List) Add(name, value string) {
	name = strings.ToLower(name)
	if !pseudo(name) {
		*l = append(*l, Field{name, value})
		return
	}
	h := *l
	i := 0
	for i < len(h) && pseudo(h[i].Name) {
		i++
	}
	h = append(h, Field{})
	copy(h[i+1:], h[i:])
	h[i] = Field{name, value}
	*l = h
}

// Set replaces every value of name with one value, kept in the place of the
// first one; when name is absent it is added as Add does.
func (l *List) Set(name, value string) {
	name = strings.ToLower(name)
	for i, f := range *l {
		if f.Name == name {
			(*l)[i].Value = value
			l.delFrom(name, i+1)
			return
		}
	}
	l.Add(name, value)
}

// Del removes every field named name, keeping the order of the others.
func (l *List) Del(name string) {
	l.delFrom(strings.ToLower(name), 0)
}

// delFrom removes the fields named name at index from and after.
func (l *List) delFrom(name string, from int) {
	h := *l
	out := h[:from]
	for _, f := range h[from:] {
		if f.Name != name {
			out = append(out, f)
		}
	}
	*l = out
}

// Clone returns a copy that shares no backing array with l (nil for nil).
func (l List) Clone() List {
	if l == nil {
		return nil
	}
	return append(make(List, 0, len(l)), l...)
}

// ByteSize is the sum of name and value lengths, as Envoy's
// HeaderMap::byteSize counts them for its header size limits.
func (l List) ByteSize() int {
	n := 0
	for _, f := range l {
		n += len(f.Name) + len(f.Value)
	}
	return n
}

// pseudo reports whether name is a pseudo-header name.
func pseudo(name string) bool { return strings.HasPrefix(name, ":") }

// IsTokenChar reports whether c is a tchar (RFC 9110 §5.6.2).
func IsTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// IsToken reports whether s is a non-empty token (RFC 9110 §5.6.2): what a
// field name, a method or a list member such as a Vary name must be.
func IsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !IsTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// SplitList splits a list-based field value (RFC 9110 §5.6.1) at commas
// outside quoted-strings, trims OWS around each member and drops empty
// members. A backslash inside a quoted-string escapes the next byte
// (quoted-pair); an unterminated quoted-string runs to the end.
func SplitList(v string) []string {
	var out []string
	add := func(m string) {
		if m = strings.Trim(m, " \t"); m != "" {
			out = append(out, m)
		}
	}
	start, inQuote := 0, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case inQuote && c == '\\':
			i++ // quoted-pair
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == ',':
			add(v[start:i])
			start = i + 1
		}
	}
	add(v[start:])
	return out
}
