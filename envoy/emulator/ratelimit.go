package emulator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/sluicehq/sluice/internal/header"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// defaultRateLimitTimeout is RateLimit.timeout's default.
const defaultRateLimitTimeout = 20 * time.Millisecond

// maxHitsAddend bounds a formatted hits_addend
// (source/extensions/filters/common/ratelimit_config/ratelimit_config.cc).
const maxHitsAddend = 1_000_000_000

// rateLimitConfig is the ratelimit filter's config. Immutable; safe for
// concurrent use.
type rateLimitConfig struct {
	cfg     *ratelimitv3.RateLimit
	name    string
	timeout time.Duration
	router  *router // for header_value_match regexes
}

func newRateLimitConfig(c *ratelimitv3.RateLimit, name string) (*rateLimitConfig, error) {
	switch {
	case c.GetEnableXRatelimitHeaders() != ratelimitv3.RateLimit_OFF:
		return nil, errors.New("ratelimit: enable_x_ratelimit_headers is not emulated")
	case c.GetFilterEnabled() != nil, c.GetFilterEnforced() != nil, c.GetFailureModeDenyPercent() != nil:
		return nil, errors.New("ratelimit: filter_enabled, filter_enforced and failure_mode_deny_percent are not emulated")
	}
	out := &rateLimitConfig{cfg: c, name: name, timeout: defaultRateLimitTimeout, router: &router{regexps: map[string]*regexp.Regexp{}}}
	if d := c.GetTimeout(); d != nil {
		out.timeout = d.AsDuration() // 0 disables the timeout
	}
	for _, rl := range c.GetRateLimits() {
		if err := out.checkPolicy(rl, true); err != nil {
			return nil, fmt.Errorf("ratelimit: rate_limits: %w", err)
		}
	}
	return out, nil
}

// checkPolicy rejects actions and options the emulator does not implement;
// filterLevel marks the filter's and RateLimitPerRoute's rate_limits, where
// hits_addend applies and stage/disable_key/limit are refused
// (ratelimit_config.cc RateLimitPolicy).
func (c *rateLimitConfig) checkPolicy(rl *routev3.RateLimit, filterLevel bool) error {
	if filterLevel && (rl.GetStage() != nil || rl.GetDisableKey() != "") {
		return errors.New("'stage' field and 'disable_key' field are not supported")
	}
	if rl.GetLimit() != nil || rl.GetApplyOnStreamDone() || rl.GetXRatelimitOption() != routev3.RateLimit_UNSPECIFIED {
		return errors.New("limit overrides, apply_on_stream_done and x_ratelimit_option are not emulated")
	}
	if ha := rl.GetHitsAddend(); ha != nil && filterLevel {
		if ha.GetFormat() != "" {
			if ha.GetNumber() != nil {
				return errors.New("hits_addend must contain either a format or a number")
			}
			if _, ok := reqFormatHeader(ha.GetFormat()); !ok {
				return fmt.Errorf("hits_addend format %q: only %%REQ(header)%% is emulated", ha.GetFormat())
			}
		} else if ha.GetNumber() == nil {
			return errors.New("hits_addend must contain either a format or a number")
		}
	}
	for _, a := range rl.GetActions() {
		switch x := a.GetActionSpecifier().(type) {
		case *routev3.RateLimit_Action_RequestHeaders_, *routev3.RateLimit_Action_RemoteAddress_,
			*routev3.RateLimit_Action_GenericKey_, *routev3.RateLimit_Action_DestinationCluster_,
			*routev3.RateLimit_Action_MaskedRemoteAddress_:
		case *routev3.RateLimit_Action_HeaderValueMatch_:
			for _, hm := range x.HeaderValueMatch.GetHeaders() {
				if err := c.router.checkHeaderMatcher(hm); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("rate limit action %T is not emulated", x)
		}
	}
	return nil
}

// reqFormatHeader parses "%REQ(name)%".
func reqFormatHeader(f string) (string, bool) {
	if !strings.HasPrefix(f, "%REQ(") || !strings.HasSuffix(f, ")%") {
		return "", false
	}
	name := f[len("%REQ(") : len(f)-len(")%")]
	if name == "" || strings.ContainsAny(name, "()%:") {
		return "", false
	}
	return strings.ToLower(name), true
}

// checkRateLimitRoutes validates the route-level rate_limits and every
// RateLimitPerRoute the routes carry.
func checkRateLimitRoutes(c *rateLimitConfig, rc *routev3.RouteConfiguration) error {
	checkPer := func(where string, m map[string]*anypb.Any) error {
		a, ok := m[c.name]
		if !ok {
			return nil
		}
		var per ratelimitv3.RateLimitPerRoute
		if err := a.UnmarshalTo(&per); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		for _, rl := range per.GetRateLimits() {
			if err := c.checkPolicy(rl, true); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		}
		return nil
	}
	for _, vh := range rc.GetVirtualHosts() {
		if err := checkPer("virtual host "+vh.GetName(), vh.GetTypedPerFilterConfig()); err != nil {
			return err
		}
		for _, rl := range vh.GetRateLimits() {
			if err := c.checkPolicy(rl, false); err != nil {
				return fmt.Errorf("virtual host %s: %w", vh.GetName(), err)
			}
		}
		for _, rt := range vh.GetRoutes() {
			if err := checkPer("route "+rt.GetName(), rt.GetTypedPerFilterConfig()); err != nil {
				return err
			}
			for _, rl := range rt.GetRoute().GetRateLimits() {
				if err := c.checkPolicy(rl, false); err != nil {
					return fmt.Errorf("route %s: %w", rt.GetName(), err)
				}
			}
		}
	}
	return nil
}

// rateLimitStream is one request's ratelimit filter
// (source/extensions/filters/http/ratelimit/ratelimit.cc).
type rateLimitStream struct {
	s   *stream
	cfg *rateLimitConfig
	// responseHeadersToAdd come from an OK (or OVER_LIMIT) answer and are
	// added to the response in encodeHeaders.
	responseHeadersToAdd *header.List
}

// decode is Filter::decodeHeaders: build descriptors from the headers as
// they are now (after ext_proc), call the service, act on its answer.
func (rl *rateLimitStream) decode() *localReply {
	s := rl.s
	c := rl.cfg.cfg
	// request_type: requests are external (edge, no x-envoy-internal).
	if c.GetRequestType() == "internal" {
		return nil
	}
	// A route and its cluster are needed (Filter::populateRateLimitDescriptors).
	if s.route == nil || s.route.GetRoute() == nil {
		return nil
	}
	if _, ok := s.g.settings.ClusterConfigs[clusterName(s.route)]; !ok {
		return nil
	}
	descs, domain := rl.descriptors()
	if len(descs) == 0 {
		return nil
	}
	client := s.g.opts.RateLimit
	var (
		resp *rlsv3.RateLimitResponse
		err  error
	)
	if client == nil {
		err = errors.New("no healthy upstream")
	} else {
		ctx := s.ctx
		if rl.cfg.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, rl.cfg.timeout)
			defer cancel()
		}
		resp, err = client.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: domain, Descriptors: descs})
	}
	if err != nil {
		// Error or timeout: failure_mode_deny ? status_on_error (500) : on.
		if c.GetFailureModeDeny() {
			code := http.StatusInternalServerError
			if sc := int(c.GetStatusOnError().GetCode()); sc != 0 {
				code = sc
			}
			return &localReply{code: code, details: "rate_limiter_error"}
		}
		return nil
	}
	hdrs := &header.List{}
	for _, h := range resp.GetResponseHeadersToAdd() {
		hdrs.Add(h.GetKey(), h.GetValue())
	}
	if resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
		if !c.GetDisableXEnvoyRatelimitedHeader() {
			hdrs.Set("x-envoy-ratelimited", "true")
		}
		if c.GetEnableRetryAfterHeader() && !hdrs.Has("retry-after") {
			if secs, ok := retryAfter(resp); ok {
				hdrs.Set("retry-after", strconv.Itoa(secs))
			}
		}
		rl.responseHeadersToAdd = hdrs
		code := http.StatusTooManyRequests
		if sc := int(c.GetRateLimitedStatus().GetCode()); sc >= 400 {
			code = sc
		}
		grpc := 14 // UNAVAILABLE
		if c.GetRateLimitedAsResourceExhausted() {
			grpc = 8 // RESOURCE_EXHAUSTED
		}
		return &localReply{
			code:       code,
			body:       string(resp.GetRawBody()),
			grpcStatus: &grpc,
			details:    "request_rate_limited",
			modify: func(h *header.List) {
				// The service's content-type wins over the local reply's.
				if rl.responseHeadersToAdd != nil && rl.responseHeadersToAdd.Has("content-type") {
					h.Del("content-type")
				}
				rl.encodeHeaders(h)
				applyHeaderOptions(h, c.GetResponseHeadersToAdd(), nil)
			},
		}
	}
	// OK (UNKNOWN is not expected from a service and is treated as OK by
	// GrpcClientImpl::onSuccess): request_headers_to_add go upstream,
	// response_headers_to_add onto the response.
	for _, h := range resp.GetRequestHeadersToAdd() {
		s.req.Add(h.GetKey(), h.GetValue())
	}
	if len(*hdrs) > 0 {
		rl.responseHeadersToAdd = hdrs
	}
	return nil
}

// encodeHeaders is Filter::encodeHeaders / populateResponseHeaders: the
// stored headers are added (HeaderMapImpl::copyFrom appends) once.
func (rl *rateLimitStream) encodeHeaders(h *header.List) {
	if rl.responseHeadersToAdd == nil {
		return
	}
	for _, e := range *rl.responseHeadersToAdd {
		h.Add(e.Name, e.Value)
	}
	rl.responseHeadersToAdd = nil
}

// retryAfter is enable_retry_after_header: the largest duration_until_reset
// among OVER_LIMIT statuses, in seconds, at least 1.
func retryAfter(resp *rlsv3.RateLimitResponse) (int, bool) {
	best, found := time.Duration(0), false
	for _, st := range resp.GetStatuses() {
		if st.GetCode() == rlsv3.RateLimitResponse_OVER_LIMIT && st.GetDurationUntilReset() != nil {
			found = true
			best = max(best, st.GetDurationUntilReset().AsDuration())
		}
	}
	if !found {
		return 0, false
	}
	return max(int(best/time.Second), 1), true
}

// descriptors picks the rate limit policies the way
// Filter::populateRateLimitDescriptors does: RateLimitPerRoute.rate_limits,
// else the filter's rate_limits, else the route's (plus the virtual host's
// per vh_rate_limits), and returns the domain (RateLimitPerRoute.domain
// overrides the filter's).
func (rl *rateLimitStream) descriptors() ([]*ratelimitcommon.RateLimitDescriptor, string) {
	s := rl.s
	c := rl.cfg.cfg
	domain := c.GetDomain()
	var per *ratelimitv3.RateLimitPerRoute
	// Most specific per-route config wins (resolveMostSpecificPerFilterConfig).
	for _, m := range []map[string]*anypb.Any{s.route.GetTypedPerFilterConfig(), s.vh.GetTypedPerFilterConfig(), s.g.settings.Routes.GetTypedPerFilterConfig()} {
		if a, ok := m[rl.cfg.name]; ok {
			var p ratelimitv3.RateLimitPerRoute
			if a.UnmarshalTo(&p) == nil {
				per = &p
				break
			}
		}
	}
	if per != nil && per.GetDomain() != "" {
		domain = per.GetDomain()
	}
	var out []*ratelimitcommon.RateLimitDescriptor
	switch {
	case per != nil && len(per.GetRateLimits()) > 0:
		for _, p := range per.GetRateLimits() {
			out = rl.populate(out, p, true)
		}
	case len(c.GetRateLimits()) > 0:
		for _, p := range c.GetRateLimits() {
			out = rl.populate(out, p, true)
		}
	default:
		routeLimits := s.route.GetRoute().GetRateLimits()
		for _, p := range routeLimits {
			if stageOf(p) == c.GetStage() {
				out = rl.populate(out, p, false)
			}
		}
		include := s.route.GetRoute().GetIncludeVhRateLimits().GetValue()
		opt := ratelimitv3.RateLimitPerRoute_OVERRIDE
		if per != nil {
			opt = per.GetVhRateLimits()
		}
		if include || opt == ratelimitv3.RateLimitPerRoute_INCLUDE || (opt == ratelimitv3.RateLimitPerRoute_OVERRIDE && len(routeLimits) == 0) {
			for _, p := range s.vh.GetRateLimits() {
				if stageOf(p) == c.GetStage() {
					out = rl.populate(out, p, false)
				}
			}
		}
	}
	return out, domain
}

func stageOf(p *routev3.RateLimit) uint32 { return p.GetStage().GetValue() }

// populate appends the policy's descriptor unless an action cannot produce
// its entry (RateLimitPolicy::populateDescriptors): a missing header without
// skip_if_absent, a non-IP remote address, a failed header_value_match, or
// (filter level) a hits_addend format that yields no number in [0, 1e9].
func (rl *rateLimitStream) populate(out []*ratelimitcommon.RateLimitDescriptor, p *routev3.RateLimit, filterLevel bool) []*ratelimitcommon.RateLimitDescriptor {
	s := rl.s
	d := &ratelimitcommon.RateLimitDescriptor{}
	for _, a := range p.GetActions() {
		var key, value string
		switch x := a.GetActionSpecifier().(type) {
		case *routev3.RateLimit_Action_RequestHeaders_:
			v, ok := s.req.Lookup(strings.ToLower(x.RequestHeaders.GetHeaderName()))
			if !ok {
				if x.RequestHeaders.GetSkipIfAbsent() {
					continue
				}
				return out
			}
			key, value = x.RequestHeaders.GetDescriptorKey(), v
		case *routev3.RateLimit_Action_RemoteAddress_:
			if net.ParseIP(s.remoteIP) == nil {
				return out
			}
			key, value = "remote_address", s.remoteIP
		case *routev3.RateLimit_Action_GenericKey_:
			key = x.GenericKey.GetDescriptorKey()
			if key == "" {
				key = "generic_key"
			}
			value = x.GenericKey.GetDescriptorValue()
		case *routev3.RateLimit_Action_DestinationCluster_:
			key, value = "destination_cluster", clusterName(s.route)
		case *routev3.RateLimit_Action_MaskedRemoteAddress_:
			ip := net.ParseIP(s.remoteIP)
			if ip == nil {
				return out
			}
			bits, size := 32, 32
			if v := x.MaskedRemoteAddress.GetV4PrefixMaskLen(); v != nil {
				bits = int(v.GetValue())
			}
			if ip.To4() == nil {
				bits, size = 128, 128
				if v := x.MaskedRemoteAddress.GetV6PrefixMaskLen(); v != nil {
					bits = int(v.GetValue())
				}
			} else {
				ip = ip.To4()
			}
			key = "masked_remote_address"
			value = (&net.IPNet{IP: ip.Mask(net.CIDRMask(bits, size)), Mask: net.CIDRMask(bits, size)}).String()
		case *routev3.RateLimit_Action_HeaderValueMatch_:
			hv := x.HeaderValueMatch
			match := true
			for _, hm := range hv.GetHeaders() {
				if !rl.cfg.router.headerMatches(hm, s.req) {
					match = false
					break
				}
			}
			expect := hv.GetExpectMatch() == nil || hv.GetExpectMatch().GetValue()
			if match != expect {
				return out
			}
			key = hv.GetDescriptorKey()
			if key == "" {
				key = "header_match"
			}
			value = hv.GetDescriptorValue()
		}
		if key != "" {
			d.Entries = append(d.Entries, &ratelimitcommon.RateLimitDescriptor_Entry{Key: key, Value: value})
		}
	}
	if ha := p.GetHitsAddend(); ha != nil && filterLevel {
		if name, ok := reqFormatHeader(ha.GetFormat()); ok {
			v, present := s.req.Lookup(name)
			if !present {
				return out // %REQ% of a missing header formats to null
			}
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || n < 0 || n > maxHitsAddend {
				return out
			}
			d.HitsAddend = wrapperspb.UInt64(uint64(n))
		} else if ha.GetNumber() != nil {
			d.HitsAddend = wrapperspb.UInt64(ha.GetNumber().GetValue())
		}
		d.IsNegativeHits = ha.GetIsNegativeHits()
	}
	return append(out, d)
}

// clusterName is the route's cluster (the first weighted cluster for
// weighted routes; the emulator routes weighted clusters to the first).
func clusterName(rt *routev3.Route) string {
	ra := rt.GetRoute()
	if name := ra.GetCluster(); name != "" {
		return name
	}
	if wc := ra.GetWeightedClusters().GetClusters(); len(wc) > 0 {
		return wc[0].GetName()
	}
	return ""
}
