package httpcache

import (
	"net/http"
	"strings"
	"time"
)

func formatHTTPDate(t time.Time) string { return t.UTC().Format(http.TimeFormat) }

// parseHTTPDate parses an HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, or the
// obsolete rfc850-date and asctime-date, with net/http's parser
// (http.ParseTime, which knows all three) and the rules of a cache
// recipient it lacks:
//
//   - names and "GMT" match case-insensitively (RFC 9111 §4.2 asks a cache
//     to; time.Parse already matches day and month names so);
//   - only "GMT" (RFC 9111 §4.2: other zones are invalid; http.ParseTime's
//     rfc850 layout takes any zone abbreviation);
//   - an rfc850 two-digit year more than 50 years ahead of now is the most
//     recent past year with those digits (RFC 9110 §5.6.7), not
//     time.Parse's fixed 1969–2068 window;
//   - a leap second (60) is read as 59 (time.Parse refuses it);
//   - the shapes are exact: single spaces (time.Parse takes a run of them),
//     two-digit hours, no fractional seconds.
//
// OWS around the value is ignored.
func parseHTTPDate(s string, now time.Time) (time.Time, bool) {
	s = strings.Trim(s, " \t")
	if len(s) > 64 || strings.IndexByte(s, '.') >= 0 {
		return time.Time{}, false
	}
	// time.Parse lets one space in a layout match several: only asctime's
	// padded day ("Nov  6") may have two.
	if i := strings.Index(s, "  "); i >= 0 && (len(s) != 24 || i != 7 || strings.Contains(s[8:], "  ")) {
		return time.Time{}, false
	}
	b := []byte(s)
	rfc850 := false
	var sec int // index of the seconds' digits in b
	switch {
	case len(b) == 29: // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
		if !shaped(s, "___, __ ___ ____ __:__:__ GMT") || !strings.EqualFold(s[26:], "GMT") {
			return time.Time{}, false
		}
		copy(b[26:], "GMT")
		sec = 23
	case strings.IndexByte(s, '-') > 0: // rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
		c := strings.IndexByte(s, ',')
		if c < 0 || !shaped(s[c:], ", __-___-__ __:__:__ GMT") || !strings.EqualFold(s[len(s)-3:], "GMT") {
			return time.Time{}, false
		}
		copy(b[len(b)-3:], "GMT")
		sec, rfc850 = len(b)-6, true
	case len(b) == 24: // asctime-date: Sun Nov  6 08:49:37 1994
		if !shaped(s, "___ ___ __ __:__:__ ____") {
			return time.Time{}, false
		}
		sec = 17
	default:
		return time.Time{}, false
	}
	if b[sec] == '6' && b[sec+1] == '0' {
		b[sec] = '5'
		b[sec+1] = '9'
	}
	t, err := http.ParseTime(string(b))
	if err != nil {
		return time.Time{}, false
	}
	t = t.UTC()
	if rfc850 {
		ref := now.UTC().Year()
		year := ref - ref%100 + t.Year()%100
		if year > ref+50 {
			year -= 100
		}
		y := time.Date(year, t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
		if y.Day() != t.Day() {
			return time.Time{}, false // 29 Feb of a year that has none
		}
		t = y
	}
	return t, true
}

// shaped reports whether s has the length of pattern and its separators
// (',', ' ', '-', ':') where pattern has them; '_' and letters stand for
// any byte, which time.Parse then checks.
func shaped(s, pattern string) bool {
	if len(s) != len(pattern) {
		return false
	}
	for i := 0; i < len(pattern); i++ {
		switch p := pattern[i]; p {
		case ',', ' ', '-', ':':
			if s[i] != p {
				return false
			}
		}
	}
	return true
}
