package emulator

import (
	"net/http"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// headerMap is an Envoy-style header map: lower-case names, pseudo-headers
// (":method", ":path", ":authority", ":scheme", ":status") first, other
// headers in insertion order, repeated names allowed. Not safe for concurrent
// use.
type headerMap struct {
	kv []headerEntry
}

type headerEntry struct{ key, value string }

func (h *headerMap) get(key string) (string, bool) {
	for _, e := range h.kv {
		if e.key == key {
			return e.value, true
		}
	}
	return "", false
}

// value is get without the presence flag.
func (h *headerMap) value(key string) string {
	v, _ := h.get(key)
	return v
}

func (h *headerMap) has(key string) bool {
	_, ok := h.get(key)
	return ok
}

func (h *headerMap) values(key string) []string {
	var out []string
	for _, e := range h.kv {
		if e.key == key {
			out = append(out, e.value)
		}
	}
	return out
}

// add appends a value, keeping pseudo-headers ahead of regular ones.
func (h *headerMap) add(key, value string) {
	key = strings.ToLower(key)
	if strings.HasPrefix(key, ":") {
		i := 0
		for i < len(h.kv) && strings.HasPrefix(h.kv[i].key, ":") {
			i++
		}
		h.kv = append(h.kv, headerEntry{})
		copy(h.kv[i+1:], h.kv[i:])
		h.kv[i] = headerEntry{key, value}
		return
	}
	h.kv = append(h.kv, headerEntry{key, value})
}

// set replaces every value of key with one value, in the first one's place.
func (h *headerMap) set(key, value string) {
	key = strings.ToLower(key)
	for i, e := range h.kv {
		if e.key == key {
			h.kv[i].value = value
			h.removeFrom(key, i+1)
			return
		}
	}
	h.add(key, value)
}

func (h *headerMap) remove(key string) {
	h.removeFrom(strings.ToLower(key), 0)
}

func (h *headerMap) removeFrom(key string, from int) {
	out := h.kv[:from]
	for _, e := range h.kv[from:] {
		if e.key != key {
			out = append(out, e)
		}
	}
	h.kv = out
}

func (h *headerMap) len() int { return len(h.kv) }

// byteSize is the sum of name and value lengths, as Envoy's
// HeaderMap::byteSize counts.
func (h *headerMap) byteSize() int {
	n := 0
	for _, e := range h.kv {
		n += len(e.key) + len(e.value)
	}
	return n
}

func (h *headerMap) clone() *headerMap {
	return &headerMap{kv: append([]headerEntry(nil), h.kv...)}
}

// proto renders the map as ext_proc sends it: every value in raw_value
// (MutationUtils::headersToProto with send_header_raw_value, the default
// since Envoy 1.27).
func (h *headerMap) proto() *corev3.HeaderMap {
	out := &corev3.HeaderMap{}
	for _, e := range h.kv {
		out.Headers = append(out.Headers, &corev3.HeaderValue{Key: e.key, RawValue: []byte(e.value)})
	}
	return out
}

// fromHTTP copies Go's header map. Go does not keep the wire order, so names
// are sorted to make the order deterministic.
func fromHTTP(hdr http.Header, into *headerMap) {
	keys := make([]string, 0, len(hdr))
	for k := range hdr {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range hdr[k] {
			into.add(strings.ToLower(k), v)
		}
	}
}

// toHTTP writes the regular (non-pseudo) headers into a Go header map.
func (h *headerMap) toHTTP(dst http.Header) {
	for _, e := range h.kv {
		if strings.HasPrefix(e.key, ":") {
			continue
		}
		dst[http.CanonicalHeaderKey(e.key)] = append(dst[http.CanonicalHeaderKey(e.key)], e.value)
	}
}

// validHeaderName follows Envoy's HeaderUtility::headerNameIsValid: RFC 9110
// token characters, with an optional leading ':' for pseudo-headers.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	s := name
	if s[0] == ':' {
		s = s[1:]
		if s == "" {
			return false
		}
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validHeaderValue follows HeaderUtility::headerValueIsValid: no NUL, CR or
// LF.
func validHeaderValue(v string) bool {
	return !strings.ContainsAny(v, "\x00\r\n")
}
