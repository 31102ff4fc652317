package httpcache

import (
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// httpDateField parses the single value of a date field; more than one
// differing line makes it invalid.
func httpDateField(h header.List, name string, now time.Time) (time.Time, bool) {
	values := h.Values(name)
	if len(values) == 0 {
		return time.Time{}, false
	}
	for _, v := range values[1:] {
		if v != values[0] {
			return time.Time{}, false
		}
	}
	return parseHTTPDate(values[0], now)
}
