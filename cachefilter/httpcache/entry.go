package httpcache

import (
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// Entry is one stored response and what RFC 9111 needs to serve it later.
// Entries are immutable once stored: readers share them without copying.
type Entry struct {
	// Status is the response status code (200, 203, 204, 300, 301, 308, 404,
	// 405, 410, 414, 501 and others a policy allows).
	Status int
	// Header is the stored response header section, without hop-by-hop
	// fields (RFC 9110 §7.6.1) and without fields Sluice adds when serving
	// (Age, Cache-Status, x-cache).
	Header header.List
	// Body is the complete response body (identity-encoded: Envoy's
	// compressors run after ext_proc on the way out).
	Body []byte

	// RequestTime and ResponseTime are request_time and response_time of
	// RFC 9111 §4.2.3, from which the current age is computed.
	RequestTime, ResponseTime time.Time
	// InitialAge is corrected_initial_age (§4.2.3) at ResponseTime.
	InitialAge time.Duration
	// Lifetime is the freshness lifetime (§4.2.1) chosen when storing.
	Lifetime time.Duration
	// StaleWhileRevalidate and StaleIfError are the RFC 5861 windows after
	// Lifetime in which a stale entry may still be served.
	StaleWhileRevalidate, StaleIfError time.Duration
	// MustRevalidate is true for must-revalidate / proxy-revalidate /
	// s-maxage (a shared cache never serves it stale without validation,
	// §5.2.2.2, §5.2.2.8, §5.2.2.10); stale-if-error does not apply then.
	MustRevalidate bool
	// NoCache is true when the response had `no-cache` without field names:
	// every use needs validation (§5.2.2.4).
	NoCache bool
	// Vary lists the request header names (lower-case, sorted) the response
	// varies on; their request values are part of the entry's key.
	Vary []string
	// Tags are the surrogate keys of the entry (from Surrogate-Key and the
	// configured rules) for tag purges.
	Tags []string
	// ETag and LastModified are the validators (empty when absent).
	ETag, LastModified string
}

// Age returns the entry's current_age at now (RFC 9111 §4.2.3).
func (e *Entry) Age(now time.Time) time.Duration {
	resident := now.Sub(e.ResponseTime)
	if resident < 0 {
		resident = 0
	}
	return e.InitialAge + resident
}

// Fresh reports whether the entry is fresh at now (§4.2).
func (e *Entry) Fresh(now time.Time) bool { return e.Lifetime > e.Age(now) }

// Staleness is how long the entry has been stale at now (0 while fresh).
func (e *Entry) Staleness(now time.Time) time.Duration {
	if s := e.Age(now) - e.Lifetime; s > 0 {
		return s
	}
	return 0
}

// UsableUntil is when e stops being servable without validation under any
// request directive but max-stale: the end of its freshness lifetime plus
// the longer of its stale-while-revalidate and stale-if-error windows. A
// store may expire it then, or keep it longer when it has validators
// (ETag, LastModified) so it can still be revalidated.
func (e *Entry) UsableUntil() time.Time {
	return e.ResponseTime.Add(e.Lifetime - e.InitialAge + max(e.StaleWhileRevalidate, e.StaleIfError))
}
