package ratelimitsvc

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// Rules is an immutable, validated set of rate-limit rules: one tree of
// descriptors per domain, as envoyproxy/ratelimit builds it. Build it with
// ParseRules or LoadRules; the zero value and nil hold no domain. It is safe
// for concurrent use, and nothing it returns may be modified.
type Rules struct {
	domains map[string]*Domain
	names   []string // sorted domain names
}

// Domain is one configured domain. Its exported fields are read-only.
type Domain struct {
	// Name is the `domain` of the file that defines it.
	Name string
	// FailureModeDeny is the domain's `failure_mode_deny` (Sluice extension):
	// true answers OVER_LIMIT for this domain when Redis cannot be consulted.
	// Default false (fail open).
	FailureModeDeny bool
	// FailureModeSet reports that the file sets failure_mode_deny (true or
	// false), so that it can override a service-wide default.
	FailureModeSet bool
	// Algorithm is the domain's `algorithm` (Sluice extension), the default of
	// its limits. Default limiter.SlidingWindow.
	Algorithm limiter.Algorithm
	// Mode is limiter.Lease for `algorithm: sliding_window_lease`, else
	// limiter.Exact: the default of its limits.
	Mode limiter.Mode
	// HotKeyLease is the domain's `on_hot_key: lease`, the default of its
	// limits: a hot key of a sliding window moves to lease mode.
	HotKeyLease bool
	// File and Line say where the domain is defined.
	File string
	Line int

	root level
}

// Limit is one configured rate limit of a descriptor. Limits are shared by
// every request that matches them: treat them as read-only.
type Limit struct {
	// Name is the configured `name`, or "".
	Name string
	// ID identifies the limit's counters: Name when set, else the descriptor's
	// rule and the limit's index among the descriptor's limits, as in
	// "tier_free.tenant_id#0". `rate_limit` has index 0 and the entries of
	// `rate_limits` follow it in order. It is built from the config only.
	ID string
	// RequestsPerUnit is the number of hits allowed per Window (at most
	// math.MaxUint32, the width of RateLimitResponse.RateLimit.requests_per_unit).
	RequestsPerUnit uint64
	// Unit is the configured unit, for DescriptorStatus.current_limit.
	// RATE_LIMIT_UNKNOWN (0) when Unlimited.
	Unit rlsv3.RateLimitResponse_RateLimit_Unit
	// UnitMultiplier is `unit_multiplier` (Sluice extension, default 1); it
	// maps to RateLimitResponse.RateLimit.unit_multiplier.
	UnitMultiplier uint32
	// Window is Unit times UnitMultiplier (0 when Unlimited).
	Window time.Duration
	// Algorithm is the limit's `algorithm`, else its domain's.
	Algorithm limiter.Algorithm
	// Mode is how its decisions are made: limiter.Lease for
	// sliding_window_lease, limiter.LeaseWhenHot for a sliding window with
	// on_hot_key: lease, else limiter.Exact.
	Mode limiter.Mode
	// SubWindows is `sub_windows` for a sliding window (default 10); 1 for a
	// fixed window; 0 when Unlimited.
	SubWindows int
	// Unlimited is `unlimited: true`: the descriptor is known but never limited.
	// An unlimited limit is the only limit of its descriptor.
	Unlimited bool
	// Shadow is the descriptor's `shadow_mode`: count, report, never refuse.
	Shadow bool
	// Quota is the descriptor's `quota_mode` (envoyproxy/ratelimit): an
	// over-limit quota descriptor only refuses the request when every quota
	// descriptor of the request is over its limit (and then its hits are
	// refunded, as for any refused request).
	Quota bool
	// Replaces lists the names of limits this one replaces when both apply to
	// one request.
	Replaces []string
	// DetailedMetric is the descriptor's `detailed_metric`. Sluice keeps metric
	// labels bounded, so it never puts request values into them.
	DetailedMetric bool
	// File and Line say where the limit is defined.
	File string
	Line int

	// What every response of this limit repeats, built once (finish): its
	// DescriptorStatus.current_limit, shared by the responses (gRPC only reads
	// it), and its name as an sf-string and its IETF policy item for the
	// headers.
	current *rlsv3.RateLimitResponse_RateLimit
	sfName  string
	policy  string
	// override: made for one request from its descriptor's `limit`.
	override bool
}

// finish builds what every response of l repeats, once its fields are set.
func (l *Limit) finish() {
	if l.Unlimited {
		return
	}
	l.current = &rlsv3.RateLimitResponse_RateLimit{
		Name:            l.Name,
		RequestsPerUnit: clampU32(l.RequestsPerUnit),
		Unit:            l.Unit,
	}
	// RateLimit.unit_multiplier: "If not specified, defaults to 1".
	if l.UnitMultiplier > 1 {
		l.current.UnitMultiplier = wrapperspb.UInt32(l.UnitMultiplier)
	}
	l.sfName = sfString(policyName(l))
	l.policy = l.sfName + ";q=" + strconv.FormatUint(l.RequestsPerUnit, 10) + ";w=" + strconv.FormatInt(ceilSeconds(l.Window), 10)
}

// Entry is one key/value pair of a request descriptor.
type Entry struct{ Key, Value string }

// Match is what Rules.Match finds for one request descriptor.
type Match struct {
	// Limits are the limits of the matched descriptor, in config order.
	Limits []*Limit
	// Rule names the matched descriptor for metrics: config keys and values
	// only (wildcard values as written, e.g. "path_/api/*"), joined as
	// envoyproxy/ratelimit names stats without its domain prefix, so its
	// cardinality is bounded by the config: "tier_free.tenant_id".
	Rule string
	// CounterEntries identify the counters: the request's entries, except that
	// an entry matched by a `share_threshold` wildcard carries the wildcard
	// value (e.g. "files/*"), so all its matches share one counter. It may be
	// the caller's slice.
	CounterEntries []Entry
	// Metadata is the descriptor's `metadata`, nil if none.
	Metadata map[string]any
}

// node is one configured descriptor.
type node struct {
	key, value string
	parts      []string // value split at '*' when it is a wildcard, else nil
	rule       string
	limits     []*Limit
	share      bool // share_threshold
	metadata   map[string]any
	shadow     bool
	quota      bool
	detailed   bool
	toMetric   bool // value_to_metric: accepted, ignored (labels stay bounded)
	children   level
	file       string
	line       int
}

// level is one descriptor list, indexed for envoyproxy's lookup order.
type level struct {
	nodes []*node // config order
	// exact holds every descriptor with a value, wildcards included: as in
	// envoyproxy/ratelimit, a request value equal to a pattern hits it here.
	exact    map[Entry]*node
	wildcard map[string][]*node // by key, config order
	keyOnly  map[string]*node
}

// lookup finds the descriptor for one request entry in envoyproxy/ratelimit's
// order (config_impl.go GetLimit): key and value exactly, then the first
// wildcard value that matches in config order, then the key alone.
func (l *level) lookup(e Entry) (n *node, viaWildcard bool) {
	if n := l.exact[e]; n != nil {
		return n, false
	}
	for _, w := range l.wildcard[e.Key] {
		if globMatch(w.parts, e.Value) {
			return w, true
		}
	}
	return l.keyOnly[e.Key], false
}

// globMatch reports whether v matches a pattern already split at '*'; each
// '*' matches any run of bytes, possibly empty.
func globMatch(parts []string, v string) bool {
	first, last := parts[0], parts[len(parts)-1]
	if len(v) < len(first)+len(last) || !strings.HasPrefix(v, first) || !strings.HasSuffix(v, last) {
		return false
	}
	mid := v[len(first) : len(v)-len(last)]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(mid, p)
		if i < 0 {
			return false
		}
		mid = mid[i+len(p):]
	}
	return true
}

// Match returns the limits that apply to one request descriptor of a domain,
// with envoyproxy/ratelimit's semantics: each entry descends one level of the
// domain's descriptor tree (see level.lookup for the order), and the limits
// apply only when the last entry reaches a descriptor that has some. A request
// shorter or longer than the configured path, or one reaching a descriptor
// without limits (an exempt value in the reference's README), gets none. An
// unlimited descriptor matches with its single Unlimited limit. ok is false
// when nothing applies. Match does not allocate unless share_threshold applies.
func (r *Rules) Match(domain string, entries []Entry) (m Match, ok bool) {
	if r == nil || len(entries) == 0 {
		return Match{}, false
	}
	d := r.domains[domain]
	if d == nil {
		return Match{}, false
	}
	lvl := &d.root
	var (
		n       *node
		counter []Entry
	)
	for i, e := range entries {
		next, wild := lvl.lookup(e)
		if next == nil {
			return Match{}, false
		}
		if wild && next.share {
			// share_threshold: the pattern replaces the value in the counter
			// key (envoyproxy cache_key.go, ShareThresholdKeyPattern).
			if counter == nil {
				counter = slices.Clone(entries)
			}
			counter[i].Value = next.value
		}
		n = next
		lvl = &n.children
	}
	if len(n.limits) == 0 {
		return Match{}, false
	}
	if counter == nil {
		counter = entries
	}
	return Match{Limits: n.limits, Rule: n.rule, CounterEntries: counter, Metadata: n.metadata}, true
}

// Domain returns the named domain.
func (r *Rules) Domain(name string) (*Domain, bool) {
	if r == nil {
		return nil, false
	}
	d, ok := r.domains[name]
	return d, ok
}

// Domains returns the configured domain names, sorted. The caller owns the slice.
func (r *Rules) Domains() []string {
	if r == nil {
		return nil
	}
	return slices.Clone(r.names)
}

// unitSeconds gives each unit's length as envoyproxy/ratelimit counts it
// (utils.UnitToDivider): a month is 30 days and a year 365 days.
var unitSeconds = map[rlsv3.RateLimitResponse_RateLimit_Unit]int64{
	rlsv3.RateLimitResponse_RateLimit_SECOND: 1,
	rlsv3.RateLimitResponse_RateLimit_MINUTE: 60,
	rlsv3.RateLimitResponse_RateLimit_HOUR:   60 * 60,
	rlsv3.RateLimitResponse_RateLimit_DAY:    24 * 60 * 60,
	rlsv3.RateLimitResponse_RateLimit_WEEK:   7 * 24 * 60 * 60,
	rlsv3.RateLimitResponse_RateLimit_MONTH:  30 * 24 * 60 * 60,
	rlsv3.RateLimitResponse_RateLimit_YEAR:   365 * 24 * 60 * 60,
}

// UnitDuration returns the length of one unit as envoyproxy/ratelimit counts
// it (a month is 30 days, a year 365 days); ok is false for UNKNOWN and
// values outside the enum.
func UnitDuration(u rlsv3.RateLimitResponse_RateLimit_Unit) (d time.Duration, ok bool) {
	s, ok := unitSeconds[u]
	return time.Duration(s) * time.Second, ok
}

// OverrideUnit converts the unit of Envoy's per-descriptor limit override
// (RateLimitDescriptor.RateLimitOverride.unit, an envoy.type.v3.RateLimitUnit)
// to the response's unit enum by name, with its length. ok is false for
// UNKNOWN and unknown values.
func OverrideUnit(u typev3.RateLimitUnit) (unit rlsv3.RateLimitResponse_RateLimit_Unit, d time.Duration, ok bool) {
	name, ok := typev3.RateLimitUnit_name[int32(u)]
	if !ok {
		return 0, 0, false
	}
	v, ok := rlsv3.RateLimitResponse_RateLimit_Unit_value[name]
	if !ok {
		return 0, 0, false
	}
	unit = rlsv3.RateLimitResponse_RateLimit_Unit(v)
	d, ok = UnitDuration(unit)
	return unit, d, ok
}

// unitName is the config spelling of a unit ("minute").
func unitName(u rlsv3.RateLimitResponse_RateLimit_Unit) string {
	return strings.ToLower(u.String())
}

// Path is one configured descriptor of a domain, from the root: what a
// request descriptor must look like to reach it.
type Path struct {
	// Entries are the keys and configured values from the root; Value is ""
	// for a key-only descriptor (any value) and may hold '*' wildcards.
	Entries []Entry
	// Rule is the descriptor's rule name (Match.Rule).
	Rule string
	// Limited reports whether the descriptor has limits (one without only
	// leads to others).
	Limited bool
	// File and Line say where the descriptor is defined.
	File string
	Line int
}

// Paths lists every descriptor of domain in config order, parents before
// their children; nil for an unknown domain.
func (r *Rules) Paths(domain string) []Path {
	d, ok := r.Domain(domain)
	if !ok {
		return nil
	}
	var out []Path
	var walk func(l *level, prefix []Entry)
	walk = func(l *level, prefix []Entry) {
		for _, n := range l.nodes {
			entries := append(append([]Entry(nil), prefix...), Entry{Key: n.key, Value: n.value})
			out = append(out, Path{Entries: entries, Rule: n.rule, Limited: len(n.limits) > 0, File: n.file, Line: n.line})
			walk(&n.children, entries)
		}
	}
	walk(&d.root, nil)
	return out
}

// MarshalJSON writes the effective rules as a readable tree, for
// /debug/ratelimit: domains sorted by name, descriptors in config order, each
// with its rule name and limits with their defaults filled in.
func (r *Rules) MarshalJSON() ([]byte, error) {
	out := jsonRules{Domains: []jsonDomain{}}
	if r != nil {
		for _, name := range r.names {
			d := r.domains[name]
			out.Domains = append(out.Domains, jsonDomain{
				Domain:          d.Name,
				Algorithm:       d.Algorithm.String(),
				FailureModeDeny: d.FailureModeDeny,
				Source:          source(d.File, d.Line),
				Descriptors:     jsonLevel(&d.root),
			})
		}
	}
	return json.Marshal(out)
}

type jsonRules struct {
	Domains []jsonDomain `json:"domains"`
}

type jsonDomain struct {
	Domain          string     `json:"domain"`
	Algorithm       string     `json:"algorithm"`
	FailureModeDeny bool       `json:"failure_mode_deny"`
	Source          string     `json:"source"`
	Descriptors     []jsonNode `json:"descriptors,omitempty"`
}

type jsonNode struct {
	Key            string         `json:"key"`
	Value          string         `json:"value,omitempty"`
	Rule           string         `json:"rule"`
	Source         string         `json:"source"`
	ShadowMode     bool           `json:"shadow_mode,omitempty"`
	QuotaMode      bool           `json:"quota_mode,omitempty"`
	DetailedMetric bool           `json:"detailed_metric,omitempty"`
	ValueToMetric  bool           `json:"value_to_metric,omitempty"`
	ShareThreshold bool           `json:"share_threshold,omitempty"`
	Metadata       map[string]any `json:"metadata,omitempty"`
	Limits         []jsonLimit    `json:"limits,omitempty"`
	Descriptors    []jsonNode     `json:"descriptors,omitempty"`
}

type jsonLimit struct {
	ID              string   `json:"id"`
	Name            string   `json:"name,omitempty"`
	Unlimited       bool     `json:"unlimited,omitempty"`
	RequestsPerUnit *uint64  `json:"requests_per_unit,omitempty"`
	Unit            string   `json:"unit,omitempty"`
	UnitMultiplier  uint32   `json:"unit_multiplier,omitempty"`
	Window          string   `json:"window,omitempty"`
	Algorithm       string   `json:"algorithm,omitempty"`
	Mode            string   `json:"mode,omitempty"` // lease or lease_when_hot; empty when exact
	SubWindows      int      `json:"sub_windows,omitempty"`
	Replaces        []string `json:"replaces,omitempty"`
	Source          string   `json:"source"`
}

func jsonLevel(l *level) []jsonNode {
	var out []jsonNode
	for _, n := range l.nodes {
		jn := jsonNode{
			Key:            n.key,
			Value:          n.value,
			Rule:           n.rule,
			ShadowMode:     n.shadow,
			QuotaMode:      n.quota,
			DetailedMetric: n.detailed,
			ValueToMetric:  n.toMetric,
			ShareThreshold: n.share,
			Metadata:       n.metadata,
			Descriptors:    jsonLevel(&n.children),
		}
		for _, l := range n.limits {
			jl := jsonLimit{ID: l.ID, Name: l.Name, Unlimited: l.Unlimited, Replaces: l.Replaces, Source: source(l.File, l.Line)}
			if !l.Unlimited {
				rpu := l.RequestsPerUnit
				jl.RequestsPerUnit = &rpu
				jl.Unit = unitName(l.Unit)
				jl.UnitMultiplier = l.UnitMultiplier
				jl.Window = l.Window.String()
				jl.Algorithm = l.Algorithm.String()
				if l.Mode != limiter.Exact {
					jl.Mode = l.Mode.String()
				}
				jl.SubWindows = l.SubWindows
			}
			jn.Limits = append(jn.Limits, jl)
		}
		jn.Source = source(n.file, n.line)
		out = append(out, jn)
	}
	return out
}

func source(file string, line int) string {
	if line <= 0 {
		return file
	}
	return fmt.Sprintf("%s:%d", file, line)
}
