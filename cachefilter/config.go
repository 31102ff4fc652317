package cachefilter

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/header"
)

// Config is the policy part of the `cache` section of the Sluice config
// file: what may be stored, for how long, and under which key. The storage
// settings (L1 size, Redis) live in StoreConfig (`cache.store`); both join
// in the section. Use WithDefaults before Validate. The zero value, defaulted,
// caches every path, storing only responses with explicit freshness, for
// at most an hour, up to 1 MiB each.
//
//	cache:
//	  enabled: true
//	  heuristic: false          # heuristic freshness (RFC 9111 §4.2.2)
//	  heuristic_fraction: 0.1   # of Date − Last-Modified
//	  heuristic_max: 24h
//	  store_set_cookie: false
//	  max_object_bytes: 1048576
//	  default_max_ttl: 1h
//	  routes:                   # first match wins; unmatched paths use the defaults
//	    - {name: contacts, prefix: /api/v1/contacts, max_ttl: 5m, query_params: [page, per_page]}
//	    - {name: export, prefix: /api/v1/export, enabled: false}
//	  tag_rules:
//	    - {prefix: /api/v1/contacts, tags: ["contacts:{tenant}"]}
type Config struct {
	// Enabled turns the cache on or off everywhere. Default true.
	Enabled *bool `yaml:"enabled"`
	// Heuristic allows heuristic freshness for responses without explicit
	// freshness (RFC 9111 §4.2.2): HeuristicFraction of the time since
	// Last-Modified, at most HeuristicMax, for heuristically cacheable
	// statuses or public responses. Default false: nothing is stored
	// without explicit freshness.
	Heuristic bool `yaml:"heuristic"`
	// HeuristicFraction is in (0, 1]. Default 0.1 (§4.2.2's typical 10%).
	HeuristicFraction float64 `yaml:"heuristic_fraction"`
	// HeuristicMax caps a heuristic lifetime. Default 24h.
	HeuristicMax time.Duration `yaml:"heuristic_max"`
	// StoreSetCookie stores responses carrying Set-Cookie, without the
	// Set-Cookie fields (a shared cache must never replay one caller's
	// cookie to another). Default false: such responses are not stored.
	StoreSetCookie bool `yaml:"store_set_cookie"`
	// MaxObjectBytes is the largest body stored. Default 1 MiB; at most
	// 1 GiB. Keep it within Envoy's buffer limit for the response body.
	MaxObjectBytes int `yaml:"max_object_bytes"`
	// DefaultMaxTTL caps how long a response is used without validation once
	// stored (the freshness it has left on arrival: its lifetime minus its
	// Age) and every stale window. Default 1h.
	DefaultMaxTTL time.Duration `yaml:"default_max_ttl"`
	// Routes override the policy for path prefixes or paths; the first
	// match wins. Default none.
	Routes []RouteConfig `yaml:"routes"`
	// TagRules attach tags to stored responses and purge them after unsafe
	// requests. Default none.
	TagRules []TagRule `yaml:"tag_rules"`
	// TargetedCacheControl lists the targeted cache-control fields Sluice
	// obeys (RFC 9213), first match first: when a response carries one with
	// a valid value, its directives replace Cache-Control and Expires for
	// Sluice (not for the caches after it). Default [cdn-cache-control];
	// an empty list ([]) obeys none.
	TargetedCacheControl []string `yaml:"targeted_cache_control"`
	// Refresh revalidates entries served stale in the background (refresh.go).
	Refresh RefreshConfig `yaml:"refresh"`
	// CollapseWait is how long a request that misses while another request
	// for the same entry is upstream (a collapsed follower) waits for that
	// response before going upstream itself. Sluice asks Envoy to wait
	// CollapseWait plus 300 ms for its answer (override_message_timeout),
	// which Envoy grants only up to the ext_proc filter's
	// max_message_timeout: keep CollapseWait + 300ms within it (sluice dev
	// and `sluice check-config --envoy` check it). Default 9.5s, for
	// envoy.yaml's 10s.
	CollapseWait time.Duration `yaml:"collapse_wait"`
}

// RouteConfig is the policy of one route. Exactly one of Prefix and Path is
// set; Prefix is a plain string prefix of the path (query excluded), as
// Envoy's route prefix.
type RouteConfig struct {
	// Name identifies the route in logs and metrics: 1-64 of a-z 0-9 _, not
	// "default".
	Name   string `yaml:"name"`
	Prefix string `yaml:"prefix"`
	Path   string `yaml:"path"`
	// Enabled turns caching off for the route (false). Default: the
	// section's Enabled; a route cannot turn on what the section turns off.
	Enabled *bool `yaml:"enabled"`
	// MaxTTL replaces DefaultMaxTTL for the route. Default 0: DefaultMaxTTL.
	MaxTTL time.Duration `yaml:"max_ttl"`
	// MaxObjectBytes replaces the section's for the route. Default 0: the
	// section's.
	MaxObjectBytes int `yaml:"max_object_bytes"`
	// QueryParams, when set, are the only query parameters in the cache key:
	// the origin must ignore every other one, or callers could be served
	// each other's answers. An empty list ([]) keys on the path alone.
	// Default unset: every parameter is in the key.
	QueryParams []string `yaml:"query_params"`
}

// TagRule tags responses by request path. Stored GET responses whose path
// matches get Tags; an unsafe request (POST, PUT, PATCH, DELETE, …) whose
// path matches purges Tags once it succeeds (2xx or 3xx). "{tenant}" in a
// tag is replaced by the request's tenant, which keeps purges within it.
// Exactly one of Prefix and Path is set.
type TagRule struct {
	// Method limits the rule to one method (upper-case): GET to tag only,
	// an unsafe method to purge only. Default "*": tag and purge.
	Method string `yaml:"method"`
	Prefix string `yaml:"prefix"`
	Path   string `yaml:"path"`
	// Tags are 1-16 templates; after substitution each is 1-256 bytes of
	// visible ASCII without braces.
	Tags []string `yaml:"tags"`
}

// RoutePolicy is the effective policy for one request path, from
// Config.Route. The zero value stores nothing (Enabled is false).
type RoutePolicy struct {
	// Name is the matched route's name, or DefaultRouteName.
	Name string
	// QueryParams is nil to key on every query parameter, else the only
	// names kept (empty: none).
	QueryParams []string
	// Policy is what the RFC 9111 decisions read (httpcache.Storable,
	// httpcache.Freshen): Enabled, MaxTTL, MaxObjectBytes, the heuristic,
	// StoreSetCookie, tag templates ({tenant} not yet substituted) and the
	// targeted Cache-Control fields (Config.TargetedCacheControl's, lower-case).
	httpcache.Policy
}

// Defaults of Config.
const (
	DefaultHeuristicFraction = 0.1
	DefaultHeuristicMax      = 24 * time.Hour
	DefaultMaxObjectBytes    = 1 << 20
	DefaultPolicyMaxTTL      = time.Hour
	DefaultCollapseWait      = 9500 * time.Millisecond
	// ExtendSlack is what Sluice adds to a wait when it asks Envoy to extend
	// the ext_proc message timeout: the time to send its answer after it.
	ExtendSlack = 300 * time.Millisecond
	// DefaultRouteName is RoutePolicy.Name for paths no route matches.
	DefaultRouteName = "default"
)

const (
	maxObjectBytesLimit = 1 << 30
	maxTagsPerRule      = 16
)

// WithDefaults returns c with every unset field given its documented
// default.
func (c Config) WithDefaults() Config {
	if c.Enabled == nil {
		on := true
		c.Enabled = &on
	}
	if c.HeuristicFraction == 0 {
		c.HeuristicFraction = DefaultHeuristicFraction
	}
	if c.HeuristicMax == 0 {
		c.HeuristicMax = DefaultHeuristicMax
	}
	if c.MaxObjectBytes == 0 {
		c.MaxObjectBytes = DefaultMaxObjectBytes
	}
	if c.DefaultMaxTTL == 0 {
		c.DefaultMaxTTL = DefaultPolicyMaxTTL
	}
	c.Refresh = c.Refresh.WithDefaults()
	if c.CollapseWait == 0 {
		c.CollapseWait = DefaultCollapseWait
	}
	return c
}

// CheckEnvoy reports whether the waits Sluice asks Envoy for fit the ext_proc
// filter's max_message_timeout (0: Envoy grants no extension, so a collapsed
// follower waits at most 150 ms, under the 200 ms message_timeout).
func (c Config) CheckEnvoy(maxMessageTimeout time.Duration) error {
	c = c.WithDefaults()
	if maxMessageTimeout > 0 && c.CollapseWait+ExtendSlack > maxMessageTimeout {
		return fmt.Errorf("cache: collapse_wait %v + %v exceeds the ext_proc filter's max_message_timeout %v: Envoy would refuse the extension and stop waiting for Sluice (failure_mode_allow: the request goes on uncached)",
			c.CollapseWait, ExtendSlack, maxMessageTimeout)
	}
	return nil
}

// Validate reports every problem with a defaulted c. It changes nothing.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("cache: "+format, args...)) }
	if c.HeuristicFraction <= 0 || c.HeuristicFraction > 1 {
		bad("heuristic_fraction %v must be in (0, 1]", c.HeuristicFraction)
	}
	if c.HeuristicMax <= 0 || c.HeuristicMax > httpcache.MaxDeltaSeconds*time.Second {
		bad("heuristic_max %v must be positive and at most 2^31s", c.HeuristicMax)
	}
	if c.MaxObjectBytes < 1 || c.MaxObjectBytes > maxObjectBytesLimit {
		bad("max_object_bytes %d must be in [1, %d]", c.MaxObjectBytes, maxObjectBytesLimit)
	}
	if c.DefaultMaxTTL <= 0 || c.DefaultMaxTTL > httpcache.MaxDeltaSeconds*time.Second {
		bad("default_max_ttl %v must be positive and at most 2^31s", c.DefaultMaxTTL)
	}
	seen := make(map[string]bool, len(c.Routes))
	for i, r := range c.Routes {
		switch {
		case !validRouteName(r.Name) || r.Name == DefaultRouteName:
			bad("routes[%d]: name %q must be 1-64 of a-z 0-9 _ and not %q", i, r.Name, DefaultRouteName)
		case seen[r.Name]:
			bad("routes[%d]: duplicate name %q", i, r.Name)
		}
		seen[r.Name] = true
		if err := validMatch(r.Prefix, r.Path); err != "" {
			bad("routes[%d] (%s): %s", i, r.Name, err)
		}
		if r.MaxTTL < 0 || r.MaxTTL > httpcache.MaxDeltaSeconds*time.Second {
			bad("routes[%d] (%s): max_ttl %v must be in [0, 2^31s]", i, r.Name, r.MaxTTL)
		}
		if r.MaxObjectBytes < 0 || r.MaxObjectBytes > maxObjectBytesLimit {
			bad("routes[%d] (%s): max_object_bytes %d must be in [0, %d]", i, r.Name, r.MaxObjectBytes, maxObjectBytesLimit)
		}
		for _, q := range r.QueryParams {
			if q == "" || strings.ContainsAny(q, "&=#") {
				bad("routes[%d] (%s): query parameter name %q must be non-empty without & = #", i, r.Name, q)
			}
		}
	}
	if err := c.Refresh.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.CollapseWait < 0 || c.CollapseWait > 10*time.Minute {
		bad("collapse_wait %v must be in [0, 10m]", c.CollapseWait)
	}
	if err := c.Refresh.Validate(); err != nil {
		errs = append(errs, err)
	}
	for i, f := range c.TargetedCacheControl {
		switch lf := strings.ToLower(f); {
		case !header.IsToken(f):
			bad("targeted_cache_control[%d]: %q is not a field name", i, f)
		case lf == "cache-control" || lf == "expires":
			bad("targeted_cache_control[%d]: %q is what a targeted field replaces", i, f)
		}
	}
	for i, t := range c.TagRules {
		if t.Method != "" && t.Method != "*" && (!header.IsToken(t.Method) || strings.ToUpper(t.Method) != t.Method) {
			bad("tag_rules[%d]: method %q must be an upper-case method or *", i, t.Method)
		}
		if err := validMatch(t.Prefix, t.Path); err != "" {
			bad("tag_rules[%d]: %s", i, err)
		}
		if len(t.Tags) == 0 || len(t.Tags) > maxTagsPerRule {
			bad("tag_rules[%d]: needs 1-%d tags", i, maxTagsPerRule)
		}
		for _, tag := range t.Tags {
			if !httpcache.ValidTag(strings.ReplaceAll(tag, httpcache.TenantPlaceholder, "t")) {
				bad("tag_rules[%d]: tag %q must be 1-%d bytes of visible ASCII without braces (other than {tenant})", i, tag, httpcache.MaxTagLen)
			}
		}
	}
	return errors.Join(errs...)
}

func validMatch(prefix, path string) string {
	if (prefix == "") == (path == "") {
		return "set exactly one of prefix and path"
	}
	if !strings.HasPrefix(prefix+path, "/") {
		return "prefix or path must start with /"
	}
	return ""
}

// validRouteName reports 1-64 of a-z 0-9 _.
func validRouteName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Route returns the policy for a request path (query and fragment are
// ignored for matching): the first route that matches, or the section's
// defaults. It applies the documented defaults itself, so it also works on
// a Config that was not defaulted. Safe for concurrent use; the result
// shares slices with c and must not be modified.
func (c Config) Route(path string) RoutePolicy {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	p := RoutePolicy{Name: DefaultRouteName, Policy: httpcache.Policy{
		Enabled:           c.Enabled == nil || *c.Enabled,
		MaxTTL:            orDefault(c.DefaultMaxTTL, DefaultPolicyMaxTTL),
		MaxObjectBytes:    orDefault(c.MaxObjectBytes, DefaultMaxObjectBytes),
		Heuristic:         c.Heuristic,
		HeuristicFraction: orDefault(c.HeuristicFraction, DefaultHeuristicFraction),
		HeuristicMax:      orDefault(c.HeuristicMax, DefaultHeuristicMax),
		StoreSetCookie:    c.StoreSetCookie,
		Targets:           c.targets(),
	}}
	for i := range c.Routes {
		r := &c.Routes[i]
		if !pathMatches(path, r.Prefix, r.Path) {
			continue
		}
		p.Name = r.Name
		p.Enabled = p.Enabled && (r.Enabled == nil || *r.Enabled)
		p.MaxTTL = orDefault(r.MaxTTL, p.MaxTTL)
		p.MaxObjectBytes = orDefault(r.MaxObjectBytes, p.MaxObjectBytes)
		p.QueryParams = r.QueryParams
		break
	}
	for i := range c.TagRules {
		t := &c.TagRules[i]
		if (t.Method == "" || t.Method == "*" || t.Method == "GET") && pathMatches(path, t.Prefix, t.Path) {
			p.Tags = append(p.Tags, t.Tags...)
		}
	}
	return p
}

// targets returns the targeted fields to obey: the default list when the
// config names none (nil), the configured ones lower-cased otherwise.
func (c Config) targets() []string {
	if c.TargetedCacheControl == nil {
		return httpcache.DefaultTargets
	}
	out := make([]string, len(c.TargetedCacheControl))
	for i, f := range c.TargetedCacheControl {
		out[i] = strings.ToLower(f)
	}
	return out
}

// PurgeTags returns the tags to purge after the response to an unsafe
// request (see TagRule), with {tenant} substituted, or nil.
func (c Config) PurgeTags(req httpcache.Request, status int) []string {
	if !unsafeMethod(req.Method) || status < 200 || status > 399 {
		return nil
	}
	path := req.Path
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	var tags []string
	for i := range c.TagRules {
		t := &c.TagRules[i]
		if (t.Method == "" || t.Method == "*" || t.Method == req.Method) && pathMatches(path, t.Prefix, t.Path) {
			for _, tag := range t.Tags {
				if tag = strings.ReplaceAll(tag, httpcache.TenantPlaceholder, req.Tenant); httpcache.ValidTag(tag) && !slices.Contains(tags, tag) {
					tags = append(tags, tag)
				}
			}
		}
	}
	return tags
}

func pathMatches(path, prefix, exact string) bool {
	if exact != "" {
		return path == exact
	}
	return prefix != "" && strings.HasPrefix(path, prefix)
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
