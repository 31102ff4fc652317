package httpcache

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// CacheStatusName is Sluice's cache name in Cache-Status members.
const CacheStatusName = "sluice"

// x-cache results (operator-facing; see XCacheValue for the layer).
const (
	XCacheHit         = "HIT"
	XCacheMiss        = "MISS"
	XCacheStale       = "STALE"
	XCacheRevalidated = "REVALIDATED"
	XCacheBypass      = "BYPASS"
)

// XCacheValue returns an x-cache value: the result, and the layer that
// answered when there is one ("HIT-L1", "STALE-L2", "MISS").
func XCacheValue(result, layer string) string {
	if layer == "" {
		return result
	}
	return result + "-" + layer
}

// CacheStatus is one Cache-Status member (RFC 9211 §2). The zero value is
// a bare "sluice" member.
type CacheStatus struct {
	// Hit: the response was served from the cache without going upstream.
	Hit bool
	// Fwd is why the request went upstream (Fwd* constants), empty if not.
	Fwd string
	// FwdStatus is the upstream response status, 0 to omit.
	FwdStatus int
	// TTL is the remaining freshness (negative when stale), sent as whole
	// seconds (floor) when HasTTL.
	TTL    time.Duration
	HasTTL bool
	// Stored: the upstream response was stored (or a stored one freshened).
	Stored bool
	// Collapsed: the request was collapsed with another one.
	Collapsed bool
	// Key and Detail are optional free text, sent as sf-strings (printable
	// ASCII only; others are dropped).
	Key, Detail string
}

// String formats the member, e.g. `sluice; hit; ttl=12`,
// `sluice; fwd=stale; fwd-status=304; stored; ttl=60`,
// `sluice; fwd=uri-miss; stored`.
func (cs CacheStatus) String() string {
	// One allocation, the string: it is built on every miss and hit.
	var buf [128]byte
	b := append(buf[:0], CacheStatusName...)
	if cs.Hit {
		b = append(b, "; hit"...)
	}
	if cs.Fwd != "" && header.IsToken(cs.Fwd) {
		b = append(append(b, "; fwd="...), cs.Fwd...)
	}
	if cs.FwdStatus > 0 {
		b = strconv.AppendInt(append(b, "; fwd-status="...), int64(cs.FwdStatus), 10)
	}
	if cs.Stored {
		b = append(b, "; stored"...)
	}
	if cs.Collapsed {
		b = append(b, "; collapsed"...)
	}
	if cs.HasTTL {
		secs := math.Floor(cs.TTL.Seconds())
		secs = max(min(secs, MaxDeltaSeconds), -MaxDeltaSeconds)
		b = strconv.AppendInt(append(b, "; ttl="...), int64(secs), 10)
	}
	if cs.Key != "" {
		b = appendSFString(append(b, "; key="...), cs.Key)
	}
	if cs.Detail != "" {
		b = appendSFString(append(b, "; detail="...), cs.Detail)
	}
	return string(b)
}

// appendSFString appends s as an RFC 8941 sf-string.
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c >= 0x20 && c < 0x7f:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// AppendCacheStatus appends member to an upstream Cache-Status value (the
// upstream lines joined with ", "), as RFC 9211 §2 asks: members are
// ordered from the origin towards the client, and existing ones are kept.
func AppendCacheStatus(existing string, member CacheStatus) string {
	existing = strings.Trim(existing, " \t,")
	if existing == "" {
		return member.String()
	}
	return existing + ", " + member.String()
}

// AgeValue formats an Age field value (RFC 9111 §5.1): whole seconds,
// never negative, at most MaxDeltaSeconds.
func AgeValue(age time.Duration) string {
	secs := int64(age / time.Second)
	return strconv.FormatInt(min(max(secs, 0), MaxDeltaSeconds), 10)
}

// ServeHeaders returns the header section to answer with from e at now:
// the stored fields, then Age (§5.1), Cache-Status (the stored upstream
// members with cs appended, RFC 9211) and x-cache (omitted when xcache is
// ""). With status 304 only the fields RFC 9110 §15.4.5 requires are kept
// (Cache-Control, Content-Location, Date, ETag, Expires, Vary, and
// Last-Modified when there is no ETag); the caller sends no body. For a
// HEAD request the caller likewise sends no body.
func ServeHeaders(e *Entry, now time.Time, status int, cs CacheStatus, xcache string) header.List {
	out := make(header.List, 0, len(e.Header)+3)
	var upstream []string
	for _, h := range e.Header {
		switch {
		case h.Name == "cache-status":
			upstream = append(upstream, h.Value)
			continue
		case h.Name == "age" || h.Name == "x-cache":
			continue
		case status == 304 && !notModifiedField(h.Name, e.ETag != ""):
			continue
		}
		out = append(out, h)
	}
	out = append(out,
		header.Field{Name: "age", Value: AgeValue(e.Age(now))},
		header.Field{Name: "cache-status", Value: AppendCacheStatus(strings.Join(upstream, ", "), cs)})
	if xcache != "" {
		out = append(out, header.Field{Name: "x-cache", Value: xcache})
	}
	return out
}

// notModifiedField reports the fields a 304 carries (RFC 9110 §15.4.5).
func notModifiedField(name string, hasETag bool) bool {
	switch name {
	case "cache-control", "content-location", "date", "etag", "expires", "vary":
		return true
	case "last-modified":
		return !hasETag
	}
	return false
}
