package emulator

import (
	"net/http"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/sluicehq/sluice/internal/header"
)

// The emulator keeps header sections in header.List, as Envoy's header map
// keeps them: lower-case names, pseudo-headers first (List.Add), other
// fields in insertion order, repeated names allowed.

// headerProto renders h as ext_proc sends it: every value in raw_value
// (MutationUtils::headersToProto with send_header_raw_value, the default
// since Envoy 1.27).
func headerProto(h header.List) *corev3.HeaderMap {
	out := &corev3.HeaderMap{}
	for _, e := range h {
		out.Headers = append(out.Headers, &corev3.HeaderValue{Key: e.Name, RawValue: []byte(e.Value)})
	}
	return out
}

// fromHTTP copies Go's header map. Go does not keep the wire order, so names
// are sorted to make the order deterministic.
func fromHTTP(hdr http.Header, into *header.List) {
	keys := make([]string, 0, len(hdr))
	for k := range hdr {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range hdr[k] {
			into.Add(k, v)
		}
	}
}

// toHTTP writes the regular (non-pseudo) headers of h into a Go header map.
func toHTTP(h header.List, dst http.Header) {
	for _, e := range h {
		if strings.HasPrefix(e.Name, ":") {
			continue
		}
		dst[http.CanonicalHeaderKey(e.Name)] = append(dst[http.CanonicalHeaderKey(e.Name)], e.Value)
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
		if !header.IsTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// validHeaderValue follows HeaderUtility::headerValueIsValid: no NUL, CR or
// LF.
func validHeaderValue(v string) bool {
	return !strings.ContainsAny(v, "\x00\r\n")
}
