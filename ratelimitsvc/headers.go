package ratelimitsvc

import (
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// headers builds RateLimitResponse.response_headers_to_add. Envoy's ratelimit
// filter copies them with h.key()/h.value() (ratelimit_impl.cc), so `value`
// is set (not raw_value); it adds them to the upstream response on OK and to
// the 429 local reply on OVER_LIMIT.
//
// The quota reported is the one closest to exhaustion among the enforced
// (non-shadow) limits of the request; the policy header lists them all.
func (s *Service) headers(apps []applied, results []limiter.Result, over bool) []*corev3.HeaderValue {
	type pol struct {
		l     *Limit
		quota uint64
		reset time.Duration
		r     limiter.Result
	}
	var (
		pols    = make([]pol, 0, len(apps))
		primary = -1
		retry   time.Duration
	)
	for _, a := range apps {
		if a.item < 0 || a.limit.Shadow {
			continue
		}
		r := results[a.item]
		reset := resetAfter(a.limit, r)
		pols = append(pols, pol{l: a.limit, quota: a.limit.RequestsPerUnit, reset: reset, r: r})
		if r.Over && reset > retry {
			retry = reset
		}
		if primary < 0 {
			primary = len(pols) - 1
			continue
		}
		p := pols[primary].r
		if (r.Over && !p.Over) || (r.Over == p.Over && (r.Remaining < p.Remaining || (r.Remaining == p.Remaining && r.ResetAfter > p.ResetAfter))) {
			primary = len(pols) - 1
		}
	}
	if primary < 0 {
		return nil
	}
	p := pols[primary]
	reset := ceilSeconds(p.reset)
	out := make([]*corev3.HeaderValue, 0, 5)
	add := func(k, v string) { out = append(out, &corev3.HeaderValue{Key: k, Value: v}) }

	switch s.cfg.Headers {
	case HeadersIETF:
		// draft-ietf-httpapi-ratelimit-headers-09 §3/§4: lists of sf-strings
		// with q (quota), w (window seconds), r (remaining), t (reset seconds).
		policy := pols[0].l.policy // built once per limit (Limit.finish)
		if len(pols) > 1 {
			var b strings.Builder
			for i, x := range pols {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(x.l.policy)
			}
			policy = b.String()
		}
		add("ratelimit-policy", policy)
		add("ratelimit", p.l.sfName+";r="+strconv.FormatUint(p.r.Remaining, 10)+";t="+strconv.FormatInt(reset, 10))
	case HeadersIETFDraft07:
		var b strings.Builder
		for i, x := range pols {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(strconv.FormatUint(x.quota, 10))
			b.WriteString(";w=")
			b.WriteString(strconv.FormatInt(ceilSeconds(x.l.Window), 10))
		}
		add("ratelimit-limit", strconv.FormatUint(p.quota, 10))
		add("ratelimit-remaining", strconv.FormatUint(p.r.Remaining, 10))
		add("ratelimit-reset", strconv.FormatInt(reset, 10))
		add("ratelimit-policy", b.String())
	case HeadersXRateLimit:
		add("x-ratelimit-limit", strconv.FormatUint(p.quota, 10))
		add("x-ratelimit-remaining", strconv.FormatUint(p.r.Remaining, 10))
		add("x-ratelimit-reset", strconv.FormatInt(reset, 10))
	}
	if over && *s.cfg.RetryAfter && retry > 0 {
		// RFC 9110 §10.2.3: delay-seconds; a request before then is refused again.
		add("retry-after", strconv.FormatInt(max(ceilSeconds(retry), 1), 10))
	}
	return out
}

func policyName(l *Limit) string {
	if l.Name != "" {
		return l.Name
	}
	return l.ID
}

// sfString encodes v as an RFC 8941 sf-string: printable ASCII only, with '"'
// and '\' escaped; other bytes become '_'.
func sfString(v string) string {
	var b strings.Builder
	b.Grow(len(v) + 2)
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('_')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}
