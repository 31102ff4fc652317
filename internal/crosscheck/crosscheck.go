// Package crosscheck finds the couplings between Sluice's config, its rate
// limit rules and the Envoy bootstrap in front of it that break silently
// when one side changes: a body size Envoy refuses to buffer, a wait Envoy
// ignores, a limit no descriptor reaches, a batch listener that limits items
// as Sluice's own address. `sluice check-config --envoy` prints what it
// finds.
package crosscheck

import (
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	customheaderv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/original_ip_detection/custom_header/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/envoy/emulator"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

// Problem is one mismatch, printed as "File:Line: Message" (or "File:
// Message" without a line).
type Problem struct {
	File    string
	Line    int
	Message string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Message)
	}
	return fmt.Sprintf("%s: %s", p.File, p.Message)
}

// Inputs are the three configurations and the names to report them under.
type Inputs struct {
	// Config is the Sluice config (defaulted, validated); ConfigFile names
	// it ("(defaults)" without a file).
	Config     config.Config
	ConfigFile string
	// Rules are the rate limit rules (nil: none loaded); RulesFile names
	// them for problems without a line of their own.
	Rules     *ratelimitsvc.Rules
	RulesFile string
	// Envoy is the bootstrap's listeners (envoy.ParseListeners); EnvoyFile
	// names it.
	Envoy     []*envoy.Settings
	EnvoyFile string
}

// Check returns every problem found, sorted by file and line.
func Check(in Inputs) []Problem {
	c := &checker{in: in}
	for _, l := range in.Envoy {
		if l.ExtProc == nil {
			continue
		}
		c.bodySizes(l)
		c.messageTimeouts(l)
		c.processingMode(l)
	}
	c.rateLimits()
	c.batchListener()
	c.batchRoute()
	sort.SliceStable(c.out, func(i, j int) bool {
		if c.out[i].File != c.out[j].File {
			return c.out[i].File < c.out[j].File
		}
		return c.out[i].Line < c.out[j].Line
	})
	return c.out
}

type checker struct {
	in  Inputs
	out []Problem
}

func (c *checker) config(format string, args ...any) {
	c.out = append(c.out, Problem{File: c.in.ConfigFile, Message: fmt.Sprintf(format, args...)})
}

func (c *checker) envoy(format string, args ...any) {
	c.out = append(c.out, Problem{File: c.in.EnvoyFile, Message: fmt.Sprintf(format, args...)})
}

// bodySizes: Envoy buffers bodies for ext_proc up to the listener's
// per_connection_buffer_limit_bytes (a buffered response body over it is
// answered 500, a request body 413); Sluice refuses bodies over
// extproc.max_body_bytes (the stream fails).
func (c *checker) bodySizes(l *envoy.Settings) {
	cfg := c.in.Config
	limit := int64(l.BufferLimit)
	if enabled := cfg.Cache.Enabled; (enabled == nil || *enabled) && int64(cfg.Cache.MaxObjectBytes) > limit {
		c.config("cache.max_object_bytes %d is above %s listener %s's per_connection_buffer_limit_bytes %d: Envoy answers 500 to a response Sluice asks it to buffer between the two sizes",
			cfg.Cache.MaxObjectBytes, c.in.EnvoyFile, l.Listener, limit)
	}
	if int64(cfg.ExtProc.MaxBodyBytes) < limit {
		c.config("extproc.max_body_bytes %d is below %s listener %s's per_connection_buffer_limit_bytes %d: a body Envoy buffers whole can be refused by Sluice, failing its stream",
			cfg.ExtProc.MaxBodyBytes, c.in.EnvoyFile, l.Listener, limit)
	}
}

// messageTimeouts: Sluice extends Envoy's message_timeout with
// override_message_timeout (batches, cache waits), which Envoy honours only
// up to max_message_timeout (0: never).
func (c *checker) messageTimeouts(l *envoy.Settings) {
	max := l.ExtProc.GetMaxMessageTimeout().AsDuration()
	cfg := c.in.Config
	check := func(what string, want time.Duration, effect string) {
		if want > max {
			c.config("%s %v is above %s listener %s's ext_proc max_message_timeout %v: Envoy ignores the extension (%s)",
				what, want, c.in.EnvoyFile, l.Listener, max, effect)
		}
	}
	check("batch.max_message_timeout", cfg.Batch.MaxMessageTimeout, "a batch then fails when message_timeout expires")
	if enabled := cfg.Cache.Enabled; enabled == nil || *enabled {
		check(fmt.Sprintf("the cache's longest wait (cache.collapse_wait or an invalidation, plus %v to answer)", cachefilter.ExtendSlack), cfg.Cache.Config.LongestMessageTimeout(), "collapsed requests and invalidations then get only message_timeout")
	}
}

// processingMode: Sluice repeats the filter's processing_mode in every
// mode_override (extproc.processing_mode), so the two must agree.
func (c *checker) processingMode(l *envoy.Settings) {
	pm := l.ExtProc.GetProcessingMode()
	want := c.in.Config.ExtProc.ProcessingMode
	pairs := []struct{ name, sluice, envoy string }{
		{"request_header_mode", want.RequestHeaderMode, headerMode(pm.GetRequestHeaderMode())},
		{"response_header_mode", want.ResponseHeaderMode, headerMode(pm.GetResponseHeaderMode())},
		{"request_body_mode", want.RequestBodyMode, pm.GetRequestBodyMode().String()},
		{"response_body_mode", want.ResponseBodyMode, pm.GetResponseBodyMode().String()},
		{"request_trailer_mode", want.RequestTrailerMode, trailerMode(pm.GetRequestTrailerMode())},
		{"response_trailer_mode", want.ResponseTrailerMode, trailerMode(pm.GetResponseTrailerMode())},
	}
	for _, p := range pairs {
		if p.sluice != p.envoy {
			c.config("extproc.processing_mode.%s %s differs from %s listener %s's ext_proc %s: Sluice's mode overrides would change it",
				p.name, p.sluice, c.in.EnvoyFile, l.Listener, p.envoy)
		}
	}
}

// headerMode and trailerMode spell a mode as Envoy applies DEFAULT.
func headerMode(m extprocv3.ProcessingMode_HeaderSendMode) string {
	if m == extprocv3.ProcessingMode_SKIP {
		return "SKIP"
	}
	return "SEND"
}

func trailerMode(m extprocv3.ProcessingMode_HeaderSendMode) string {
	if m == extprocv3.ProcessingMode_SEND {
		return "SEND"
	}
	return "SKIP"
}

// batchListener: batch.listener_url must name a listener that takes the
// client address from x-sluice-client-address, or every item is limited as
// Sluice's own address.
func (c *checker) batchListener() {
	u, err := url.Parse(c.in.Config.Batch.ListenerURL)
	if err != nil {
		return // Validate reports it
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	var names []string
	for _, l := range c.in.Envoy {
		_, p, err := net.SplitHostPort(l.Address)
		if err != nil || p != port {
			continue
		}
		if takesClientAddress(l) {
			return
		}
		names = append(names, l.Listener)
	}
	if len(names) > 0 {
		c.config("batch.listener_url %s is %s listener %s, which does not take the client address from %s: every batch item would be limited as Sluice's own address (use the internal listener)",
			c.in.Config.Batch.ListenerURL, c.in.EnvoyFile, strings.Join(names, ", "), extproc.HeaderClientAddress)
		return
	}
	c.config("batch.listener_url %s matches no listener port of %s: batch items must go to its internal listener", c.in.Config.Batch.ListenerURL, c.in.EnvoyFile)
}

func takesClientAddress(l *envoy.Settings) bool {
	for _, e := range l.HCM.GetOriginalIpDetectionExtensions() {
		var ch customheaderv3.CustomHeaderConfig
		if e.GetTypedConfig().UnmarshalTo(&ch) == nil && strings.EqualFold(ch.GetHeaderName(), extproc.HeaderClientAddress) {
			return true
		}
	}
	return false
}

// batchRoute: every spelling the batch stage answers (any case, a
// trailing slash) must reach a route that buffers the body for ext_proc and
// fails closed, on each listener with ext_proc; otherwise a spelling goes to
// the app's route, where ext_proc fails open to the app.
func (c *checker) batchRoute() {
	p := c.in.Config.Batch.BatchPath
	for _, l := range c.in.Envoy {
		if l.ExtProc == nil {
			continue
		}
		for _, variant := range []string{p, strings.ToUpper(p), strings.TrimSuffix(p, "/") + "/"} {
			rt, err := emulator.MatchRoute(l, "POST", variant, "sluice.check")
			if err != nil {
				c.envoy("listener %s: %v", l.Listener, err)
				return
			}
			if reason := notBatchRoute(l, rt); reason != "" {
				c.envoy("listener %s: POST %s (Sluice's batch stage answers it: batch.batch_path %s) %s", l.Listener, variant, p, reason)
			}
		}
	}
}

// notBatchRoute says why rt is not fit for batches, or "".
func notBatchRoute(l *envoy.Settings, rt *routev3.Route) string {
	if rt == nil {
		return "matches no route"
	}
	a, ok := rt.GetTypedPerFilterConfig()[l.ExtProcName]
	if !ok {
		return fmt.Sprintf("reaches route %q without an ext_proc override: not BUFFERED, and ext_proc failing open sends it to the app", rt.GetName())
	}
	var per extprocv3.ExtProcPerRoute
	if err := a.UnmarshalTo(&per); err != nil {
		return fmt.Sprintf("reaches route %q: %v", rt.GetName(), err)
	}
	o := per.GetOverrides()
	if o.GetProcessingMode().GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED {
		return fmt.Sprintf("reaches route %q, whose ext_proc override does not set request_body_mode BUFFERED", rt.GetName())
	}
	if fo := o.GetFailureModeAllow(); fo == nil || fo.GetValue() {
		return fmt.Sprintf("reaches route %q, whose ext_proc override does not set failure_mode_allow: false (a batch would reach the app when Sluice fails)", rt.GetName())
	}
	return ""
}

// rateLimits compares the descriptors Envoy's ratelimit filters send with
// the rules: the domain must exist, every rule with limits must be
// reachable by some descriptor, and every descriptor must be able to reach
// some rule with limits.
func (c *checker) rateLimits() {
	if c.in.Rules == nil {
		return
	}
	type sent struct {
		listener, where string
		domain          string
		desc            []descEntry
	}
	var all []sent
	for _, l := range c.in.Envoy {
		if l.RateLimit == nil {
			continue
		}
		domain := l.RateLimit.GetDomain()
		for i, rl := range l.RateLimit.GetRateLimits() {
			all = append(all, sent{l.Listener, fmt.Sprintf("ratelimit filter rate_limits[%d]", i), domain, descriptorShape(rl)})
		}
		for _, vh := range l.Routes.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				per := perRoute(rt.GetTypedPerFilterConfig()[l.RateLimitName])
				if per == nil {
					continue
				}
				d := domain
				if per.GetDomain() != "" {
					d = per.GetDomain()
				}
				for i, rl := range per.GetRateLimits() {
					all = append(all, sent{l.Listener, fmt.Sprintf("route %s RateLimitPerRoute rate_limits[%d]", rt.GetName(), i), d, descriptorShape(rl)})
				}
			}
		}
	}
	domains := map[string]bool{}
	for _, s := range all {
		domains[s.domain] = true
	}
	for d := range domains {
		if _, ok := c.in.Rules.Domain(d); !ok {
			c.envoy("the ratelimit filter asks for domain %q; %s defines %v", d, c.in.RulesFile, c.in.Rules.Domains())
		}
	}
	reached := map[string]bool{} // rule names reached by a descriptor
	seen := map[string]bool{}
	for _, s := range all {
		any := false
		for _, p := range c.in.Rules.Paths(s.domain) {
			if p.Limited && shapeReaches(s.desc, p.Entries) {
				reached[s.domain+"|"+p.Rule] = true
				any = true
			}
		}
		shape := shapeString(s.desc)
		if !any && !seen[shape] {
			seen[shape] = true
			c.envoy("listener %s: the descriptor %s (%s) reaches no rule with limits in domain %q of %s", s.listener, shape, s.where, s.domain, c.in.RulesFile)
		}
	}
	var shapes []string
	for _, s := range all {
		shapes = append(shapes, shapeString(s.desc))
	}
	shapes = uniq(shapes)
	for d := range domains {
		for _, p := range c.in.Rules.Paths(d) {
			if p.Limited && !reached[d+"|"+p.Rule] {
				c.out = append(c.out, Problem{File: p.File, Line: p.Line, Message: fmt.Sprintf(
					"descriptor %s has limits, but %s never sends a descriptor that reaches it (it sends %s)",
					pathString(p.Entries), c.in.EnvoyFile, strings.Join(shapes, ", "))})
			}
		}
	}
}

func perRoute(a *anypb.Any) *ratelimitv3.RateLimitPerRoute {
	if a == nil {
		return nil
	}
	var per ratelimitv3.RateLimitPerRoute
	if a.UnmarshalTo(&per) != nil {
		return nil
	}
	return &per
}

// descEntry is one entry of a descriptor Envoy builds: its key, and its
// value when the config fixes it (generic_key, header_value_match), else
// dynamic (a header's value, the client address).
type descEntry struct {
	key, value string
	fixed      bool
}

// descriptorShape reads the entries a rate limit policy produces
// (source/common/router/router_ratelimit.cc: each action's descriptor key
// and, where the config fixes it, value).
func descriptorShape(rl *routev3.RateLimit) []descEntry {
	var out []descEntry
	for _, a := range rl.GetActions() {
		switch x := a.GetActionSpecifier().(type) {
		case *routev3.RateLimit_Action_RequestHeaders_:
			out = append(out, descEntry{key: x.RequestHeaders.GetDescriptorKey()})
		case *routev3.RateLimit_Action_RemoteAddress_:
			out = append(out, descEntry{key: "remote_address"})
		case *routev3.RateLimit_Action_MaskedRemoteAddress_:
			out = append(out, descEntry{key: "masked_remote_address"})
		case *routev3.RateLimit_Action_SourceCluster_:
			out = append(out, descEntry{key: "source_cluster"})
		case *routev3.RateLimit_Action_DestinationCluster_:
			out = append(out, descEntry{key: "destination_cluster"})
		case *routev3.RateLimit_Action_GenericKey_:
			key := x.GenericKey.GetDescriptorKey()
			if key == "" {
				key = "generic_key"
			}
			out = append(out, descEntry{key: key, value: x.GenericKey.GetDescriptorValue(), fixed: true})
		case *routev3.RateLimit_Action_HeaderValueMatch_:
			key := x.HeaderValueMatch.GetDescriptorKey()
			if key == "" {
				key = "header_match"
			}
			out = append(out, descEntry{key: key, value: x.HeaderValueMatch.GetDescriptorValue(), fixed: true})
		default:
			out = append(out, descEntry{key: "?"})
		}
	}
	return out
}

// shapeReaches reports whether a descriptor of this shape can reach the
// configured path: same keys in the same order, and where Envoy fixes a
// value, the configured one takes it (equal, a matching wildcard, or
// key-only).
func shapeReaches(desc []descEntry, path []ratelimitsvc.Entry) bool {
	if len(desc) != len(path) {
		return false
	}
	for i, d := range desc {
		p := path[i]
		if d.key != p.Key {
			return false
		}
		if d.fixed && p.Value != "" && !glob(p.Value, d.value) {
			return false
		}
	}
	return true
}

// glob matches v against a configured value with '*' wildcards.
func glob(pattern, v string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == v
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(v, parts[0]) {
		return false
	}
	v = v[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(v, p)
		if i < 0 {
			return false
		}
		v = v[i+len(p):]
	}
	return strings.HasSuffix(v, parts[len(parts)-1])
}

func shapeString(desc []descEntry) string {
	var parts []string
	for _, d := range desc {
		if d.fixed {
			parts = append(parts, d.key+"="+strconv.Quote(d.value))
		} else {
			parts = append(parts, d.key)
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func pathString(es []ratelimitsvc.Entry) string {
	var parts []string
	for _, e := range es {
		if e.Value != "" {
			parts = append(parts, e.Key+"="+e.Value)
		} else {
			parts = append(parts, e.Key)
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func uniq(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
