package httpcache

import (
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// explicitLifetime returns the explicit freshness lifetime (§4.2.1) and
// whether the response has explicit freshness information at all.
func explicitLifetime(cc CacheControl, hdr header.List, dateValue, now time.Time) (time.Duration, bool) {
	governing := cc.SMaxAge // shared cache: s-maxage first
	if !governing.Present {
		governing = cc.MaxAge
	}
	if governing.Present {
		return governing.Duration(), true // Invalid → 0: stale (§4.2.1)
	}
	values := hdr.Values("expires")
	if len(values) == 0 {
		return 0, false
	}
	for _, v := range values[1:] {
		if strings.Trim(v, " \t") != strings.Trim(values[0], " \t") {
			return 0, true // conflicting lines: stale (§4.2.1)
		}
	}
	exp, ok := parseHTTPDate(values[0], now)
	if !ok || !exp.After(dateValue) {
		return 0, true // invalid means already expired (§5.3)
	}
	d := exp.Sub(dateValue)
	if d > MaxDeltaSeconds*time.Second {
		d = MaxDeltaSeconds * time.Second
	}
	return d, true
}

// initialAge is corrected_initial_age (§4.2.3).
func initialAge(hdr header.List, dateValue, requestTime, responseTime time.Time) time.Duration {
	apparent := max(responseTime.Sub(dateValue), 0)
	delay := max(responseTime.Sub(requestTime), 0)
	corrected := ageValue(hdr) + delay
	return min(max(apparent, corrected), MaxDeltaSeconds*time.Second)
}

// ageValue reads Age (§5.1): the first member of the first line; a value
// that is not a non-negative integer is ignored.
func ageValue(hdr header.List) time.Duration {
	v, ok := hdr.Lookup("age")
	if !ok {
		return 0
	}
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	secs, ok := parseDeltaSeconds(strings.Trim(v, " \t"))
	if !ok {
		return 0
	}
	return time.Duration(secs) * time.Second
}
