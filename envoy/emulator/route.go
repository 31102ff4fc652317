package emulator

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/internal/header"
)

// defaultRouteTimeout is RouteAction.timeout's default (15 s).
const defaultRouteTimeout = 15 * time.Second

// router matches requests against a RouteConfiguration
// (source/common/router/config_impl.cc): the first virtual host whose domains
// match :authority, then the first route whose match applies. Safe for
// concurrent use once built.
type router struct {
	cfg     *routev3.RouteConfiguration
	regexps map[string]*regexp.Regexp
}

func newRouter(cfg *routev3.RouteConfiguration) (*router, error) {
	r := &router{cfg: cfg, regexps: map[string]*regexp.Regexp{}}
	for _, vh := range cfg.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			if err := r.check(rt); err != nil {
				return nil, fmt.Errorf("route %q in virtual host %q: %w", rt.GetName(), vh.GetName(), err)
			}
		}
	}
	return r, nil
}

// check rejects route features the emulator does not implement, so a config
// change cannot silently make the emulator diverge from Envoy.
func (r *router) check(rt *routev3.Route) error {
	m := rt.GetMatch()
	switch m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix, *routev3.RouteMatch_Path, *routev3.RouteMatch_PathSeparatedPrefix:
	case *routev3.RouteMatch_SafeRegex:
		if err := r.compile(m.GetSafeRegex().GetRegex()); err != nil {
			return err
		}
	default:
		return fmt.Errorf("path specifier %T is not emulated", m.GetPathSpecifier())
	}
	if len(m.GetQueryParameters()) > 0 || m.GetRuntimeFraction() != nil || m.GetGrpc() != nil || m.GetTlsContext() != nil || len(m.GetDynamicMetadata()) > 0 {
		return fmt.Errorf("route match options other than path and headers are not emulated")
	}
	for _, hm := range m.GetHeaders() {
		if err := r.checkHeaderMatcher(hm); err != nil {
			return err
		}
	}
	switch a := rt.GetAction().(type) {
	case *routev3.Route_Route:
		ra := a.Route
		switch ra.GetClusterSpecifier().(type) {
		case *routev3.RouteAction_Cluster, *routev3.RouteAction_WeightedClusters:
		default:
			return fmt.Errorf("cluster specifier %T is not emulated", ra.GetClusterSpecifier())
		}
		if ra.GetRegexRewrite() != nil || ra.GetPathRewritePolicy() != nil || ra.GetRetryPolicy() != nil || len(ra.GetRequestMirrorPolicies()) > 0 {
			return fmt.Errorf("route action rewrites, retries and mirrors other than prefix_rewrite are not emulated")
		}
	case *routev3.Route_DirectResponse:
	default:
		return fmt.Errorf("route action %T is not emulated", rt.GetAction())
	}
	return nil
}

func (r *router) checkHeaderMatcher(hm *routev3.HeaderMatcher) error {
	switch s := hm.GetHeaderMatchSpecifier().(type) {
	case nil, *routev3.HeaderMatcher_ExactMatch, *routev3.HeaderMatcher_PrefixMatch, *routev3.HeaderMatcher_SuffixMatch,
		*routev3.HeaderMatcher_ContainsMatch, *routev3.HeaderMatcher_PresentMatch:
	case *routev3.HeaderMatcher_SafeRegexMatch:
		return r.compile(s.SafeRegexMatch.GetRegex())
	case *routev3.HeaderMatcher_StringMatch:
		if re := s.StringMatch.GetSafeRegex(); re != nil {
			return r.compile(re.GetRegex())
		}
	default:
		return fmt.Errorf("header matcher %T is not emulated", s)
	}
	return nil
}

// compile prepares a RE2 expression (Go's regexp is RE2).
func (r *router) compile(expr string) error {
	if _, ok := r.regexps[expr]; ok {
		return nil
	}
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return fmt.Errorf("regex %q: %w", expr, err)
	}
	r.regexps[expr] = re
	return nil
}

// match returns the virtual host and route for the request, or nils.
func (r *router) match(h *header.List) (*routev3.VirtualHost, *routev3.Route) {
	vh := r.virtualHost(h.Get(":authority"))
	if vh == nil {
		return nil, nil
	}
	for _, rt := range vh.GetRoutes() {
		if r.routeMatches(rt.GetMatch(), h) {
			return vh, rt
		}
	}
	return vh, nil
}

// virtualHost picks by domain the way config_impl.cc does: exact, then the
// longest suffix wildcard ("*.x"), then the longest prefix wildcard ("x.*"),
// then "*". Ports are not stripped (ignore_port_in_host_matching unset).
func (r *router) virtualHost(authority string) *routev3.VirtualHost {
	host := strings.ToLower(authority)
	var best *routev3.VirtualHost
	bestRank, bestLen := 0, -1
	for _, vh := range r.cfg.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			rank, l := 0, len(d)
			switch {
			case d == host:
				rank = 4
			case d == "*":
				rank = 1
			case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]) && len(host) > len(d)-1:
				rank = 3
			case strings.HasSuffix(d, "*") && strings.HasPrefix(host, d[:len(d)-1]) && len(host) > len(d)-1:
				rank = 2
			}
			if rank > bestRank || (rank == bestRank && rank > 0 && l > bestLen) {
				best, bestRank, bestLen = vh, rank, l
			}
		}
	}
	return best
}

func (r *router) routeMatches(m *routev3.RouteMatch, h *header.List) bool {
	path := h.Get(":path")
	// Query strings take no part in path matching (RouteEntryImplBase::matchRoute).
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	caseSensitive := m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()
	eq := func(a, b string) bool {
		if caseSensitive {
			return a == b
		}
		return strings.EqualFold(a, b)
	}
	hasPrefix := func(s, p string) bool { return len(s) >= len(p) && eq(s[:len(p)], p) }
	ok := false
	switch s := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		ok = hasPrefix(path, s.Prefix)
	case *routev3.RouteMatch_Path:
		ok = eq(path, s.Path)
	case *routev3.RouteMatch_PathSeparatedPrefix:
		// "/api" matches "/api" and "/api/..." but not "/apix".
		p := s.PathSeparatedPrefix
		ok = hasPrefix(path, p) && (len(path) == len(p) || path[len(p)] == '/')
	case *routev3.RouteMatch_SafeRegex:
		ok = r.regexps[s.SafeRegex.GetRegex()].MatchString(path)
	}
	if !ok {
		return false
	}
	for _, hm := range m.GetHeaders() {
		if !r.headerMatches(hm, h) {
			return false
		}
	}
	return true
}

// headerMatches follows HeaderUtility::matchHeaders: multiple values are
// joined with "," before matching; a matcher without a specifier means
// present_match.
func (r *router) headerMatches(hm *routev3.HeaderMatcher, h *header.List) bool {
	vals := h.Values(hm.GetName())
	present := len(vals) > 0
	v := strings.Join(vals, ",")
	if !present && hm.GetTreatMissingHeaderAsEmpty() {
		if _, isPresent := hm.GetHeaderMatchSpecifier().(*routev3.HeaderMatcher_PresentMatch); !isPresent {
			present = true
		}
	}
	var ok bool
	switch s := hm.GetHeaderMatchSpecifier().(type) {
	case nil:
		ok = present
	case *routev3.HeaderMatcher_PresentMatch:
		ok = present == s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		ok = present && v == s.ExactMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		ok = present && strings.HasPrefix(v, s.PrefixMatch)
	case *routev3.HeaderMatcher_SuffixMatch:
		ok = present && strings.HasSuffix(v, s.SuffixMatch)
	case *routev3.HeaderMatcher_ContainsMatch:
		ok = present && strings.Contains(v, s.ContainsMatch)
	case *routev3.HeaderMatcher_SafeRegexMatch:
		ok = present && r.regexps[s.SafeRegexMatch.GetRegex()].MatchString(v)
	case *routev3.HeaderMatcher_StringMatch:
		ok = present && r.stringMatches(s.StringMatch, v)
	}
	if hm.GetInvertMatch() {
		return !ok
	}
	return ok
}

func (r *router) stringMatches(sm *matcherv3.StringMatcher, v string) bool {
	cmp := v
	pat := ""
	fold := sm.GetIgnoreCase()
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		pat = p.Exact
		if fold {
			return strings.EqualFold(cmp, pat)
		}
		return cmp == pat
	case *matcherv3.StringMatcher_Prefix:
		pat = p.Prefix
		if fold {
			cmp, pat = strings.ToLower(cmp), strings.ToLower(pat)
		}
		return strings.HasPrefix(cmp, pat)
	case *matcherv3.StringMatcher_Suffix:
		pat = p.Suffix
		if fold {
			cmp, pat = strings.ToLower(cmp), strings.ToLower(pat)
		}
		return strings.HasSuffix(cmp, pat)
	case *matcherv3.StringMatcher_Contains:
		pat = p.Contains
		if fold {
			cmp, pat = strings.ToLower(cmp), strings.ToLower(pat)
		}
		return strings.Contains(cmp, pat)
	case *matcherv3.StringMatcher_SafeRegex:
		return r.regexps[p.SafeRegex.GetRegex()].MatchString(v)
	}
	return false
}

// routeTimeout is RouteAction.timeout: 15 s when unset, 0 disables it.
func routeTimeout(rt *routev3.Route) time.Duration {
	ra := rt.GetRoute()
	if ra.GetTimeout() == nil {
		return defaultRouteTimeout
	}
	return ra.GetTimeout().AsDuration()
}

// MatchRoute selects the route Envoy's router would for a request with
// this method, path (after the connection manager's normalisation, which
// MatchRoute applies as configured) and authority: the matched route, or nil
// (404). For configuration checks (sluice check-config --envoy).
func MatchRoute(s *envoy.Settings, method, path, authority string) (*routev3.Route, error) {
	r, err := newRouter(s.Routes)
	if err != nil {
		return nil, err
	}
	if s.HCM.GetNormalizePath().GetValue() {
		p, ok := canonicalPath(path)
		if !ok {
			return nil, nil
		}
		path = p
	}
	if s.HCM.GetMergeSlashes() {
		path = mergeSlashes(path)
	}
	h := &header.List{}
	h.Add(":method", method)
	h.Add(":path", path)
	h.Add(":authority", authority)
	_, rt := r.match(h)
	return rt, nil
}
