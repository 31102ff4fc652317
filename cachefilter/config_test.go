package cachefilter

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"go.yaml.in/yaml/v3"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	if c.Enabled == nil || !*c.Enabled || c.Heuristic || c.HeuristicFraction != 0.1 || c.HeuristicMax != 24*time.Hour ||
		c.StoreSetCookie || c.MaxObjectBytes != 1<<20 || c.DefaultMaxTTL != time.Hour {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	off := false
	if c := (Config{Enabled: &off}).WithDefaults(); *c.Enabled {
		t.Fatalf("WithDefaults overrode enabled: false")
	}
	// Route applies the defaults itself.
	if got, want := (Config{}).Route("/x"), c.Route("/x"); !reflect.DeepEqual(got, want) {
		t.Fatalf("Route on a zero Config = %+v, want %+v", got, want)
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
enabled: true
heuristic: true
heuristic_fraction: 0.2
heuristic_max: 12h
store_set_cookie: true
max_object_bytes: 2048
default_max_ttl: 10m
routes:
  - {name: contacts, prefix: /api/v1/contacts, max_ttl: 5m, query_params: [page, per_page]}
  - {name: search, path: /api/v1/search, query_params: []}
  - {name: export, prefix: /api/v1/export, enabled: false, max_object_bytes: 100}
tag_rules:
  - {prefix: /api/v1/contacts, tags: ["contacts:{tenant}"]}
  - {method: DELETE, path: /api/v1/everything, tags: [all]}
targeted_cache_control: [Acme-Cache-Control, CDN-Cache-Control]
`
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	targets := []string{"acme-cache-control", "cdn-cache-control"}
	tests := []struct {
		path string
		want RoutePolicy
	}{
		{path: "/api/v1/contacts/7?page=2", want: RoutePolicy{Name: "contacts", QueryParams: []string{"page", "per_page"}, Policy: httpcache.Policy{Enabled: true, MaxTTL: 5 * time.Minute, MaxObjectBytes: 2048,
			Heuristic: true, HeuristicFraction: 0.2, HeuristicMax: 12 * time.Hour, StoreSetCookie: true,
			Tags: []string{"contacts:{tenant}"}, Targets: targets}}},
		{path: "/api/v1/search", want: RoutePolicy{Name: "search", QueryParams: []string{}, Policy: httpcache.Policy{Enabled: true, MaxTTL: 10 * time.Minute, MaxObjectBytes: 2048,
			Heuristic: true, HeuristicFraction: 0.2, HeuristicMax: 12 * time.Hour, StoreSetCookie: true, Targets: targets}}},
		{path: "/api/v1/search/x", want: RoutePolicy{Name: DefaultRouteName, Policy: httpcache.Policy{Enabled: true, MaxTTL: 10 * time.Minute, MaxObjectBytes: 2048,
			Heuristic: true, HeuristicFraction: 0.2, HeuristicMax: 12 * time.Hour, StoreSetCookie: true, Targets: targets}}},
		{path: "/api/v1/export/all.csv", want: RoutePolicy{Name: "export", Policy: httpcache.Policy{Enabled: false, MaxTTL: 10 * time.Minute, MaxObjectBytes: 100,
			Heuristic: true, HeuristicFraction: 0.2, HeuristicMax: 12 * time.Hour, StoreSetCookie: true, Targets: targets}}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := c.Route(tt.path); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Route(%q)\n got %+v\nwant %+v", tt.path, got, tt.want)
			}
		})
	}
	if c.Route("/api/v1/search").QueryParams == nil {
		t.Error("query_params: [] must decode as an empty, non-nil list")
	}
}

func TestConfigRouteEnabled(t *testing.T) {
	on, off := true, false
	c := Config{Enabled: &off, Routes: []RouteConfig{{Name: "r", Prefix: "/", Enabled: &on}}}
	if c.Route("/x").Enabled {
		t.Error("a route must not turn on what the section turns off")
	}
	c = Config{Routes: []RouteConfig{{Name: "a", Prefix: "/a"}, {Name: "ab", Prefix: "/ab"}}}
	if got := c.Route("/ab").Name; got != "a" {
		t.Errorf("first match wins: got %q", got)
	}
	if got := c.Route("/b?/a").Name; got != DefaultRouteName {
		t.Errorf("query is not matched: got %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{}.WithDefaults()
	tests := []struct {
		name string
		mod  func(c *Config)
		want string // substring of the error
	}{
		{name: "heuristic_fraction above 1", mod: func(c *Config) { c.HeuristicFraction = 1.5 }, want: "heuristic_fraction"},
		{name: "negative heuristic_fraction", mod: func(c *Config) { c.HeuristicFraction = -0.1 }, want: "heuristic_fraction"},
		{name: "negative heuristic_max", mod: func(c *Config) { c.HeuristicMax = -time.Second }, want: "heuristic_max"},
		{name: "max_object_bytes too large", mod: func(c *Config) { c.MaxObjectBytes = 2 << 30 }, want: "max_object_bytes"},
		{name: "negative default_max_ttl", mod: func(c *Config) { c.DefaultMaxTTL = -1 }, want: "default_max_ttl"},
		{name: "default_max_ttl beyond 2^31s", mod: func(c *Config) { c.DefaultMaxTTL = (httpcache.MaxDeltaSeconds + 1) * time.Second }, want: "default_max_ttl"},
		{name: "route without name", mod: func(c *Config) { c.Routes = []RouteConfig{{Prefix: "/"}} }, want: "name"},
		{name: "route named default", mod: func(c *Config) { c.Routes = []RouteConfig{{Name: "default", Prefix: "/"}} }, want: "name"},
		{name: "duplicate route", mod: func(c *Config) { c.Routes = []RouteConfig{{Name: "a", Prefix: "/"}, {Name: "a", Path: "/x"}} }, want: "duplicate"},
		{name: "route with prefix and path", mod: func(c *Config) { c.Routes = []RouteConfig{{Name: "a", Prefix: "/", Path: "/x"}} }, want: "exactly one"},
		{name: "route with neither", mod: func(c *Config) { c.Routes = []RouteConfig{{Name: "a"}} }, want: "exactly one"},
		{name: "route prefix without /", mod: func(c *Config) { c.Routes = []RouteConfig{{Name: "a", Prefix: "x"}} }, want: "start with /"},
		{name: "negative route max_ttl", mod: func(c *Config) { c.Routes = []RouteConfig{{Name: "a", Prefix: "/", MaxTTL: -1}} }, want: "max_ttl"},
		{name: "negative route max_object_bytes", mod: func(c *Config) { c.Routes = []RouteConfig{{Name: "a", Prefix: "/", MaxObjectBytes: -1}} }, want: "max_object_bytes"},
		{name: "bad query parameter", mod: func(c *Config) { c.Routes = []RouteConfig{{Name: "a", Prefix: "/", QueryParams: []string{"a=b"}}} }, want: "query parameter"},
		{name: "targeted field not a name", mod: func(c *Config) { c.TargetedCacheControl = []string{"cdn cache"} }, want: "not a field name"},
		{name: "Cache-Control as a targeted field", mod: func(c *Config) { c.TargetedCacheControl = []string{"Cache-Control"} }, want: "what a targeted field replaces"},
		{name: "empty query parameter", mod: func(c *Config) { c.Routes = []RouteConfig{{Name: "a", Prefix: "/", QueryParams: []string{""}}} }, want: "query parameter"},
		{name: "tag rule lower-case method", mod: func(c *Config) { c.TagRules = []TagRule{{Method: "post", Prefix: "/", Tags: []string{"t"}}} }, want: "method"},
		{name: "tag rule without tags", mod: func(c *Config) { c.TagRules = []TagRule{{Prefix: "/"}} }, want: "tags"},
		{name: "tag rule with a space", mod: func(c *Config) { c.TagRules = []TagRule{{Prefix: "/", Tags: []string{"a b"}}} }, want: "tag"},
		{name: "tag rule with an unknown placeholder", mod: func(c *Config) { c.TagRules = []TagRule{{Prefix: "/", Tags: []string{"{user}"}}} }, want: "tag"},
		{name: "tag rule without prefix or path", mod: func(c *Config) { c.TagRules = []TagRule{{Tags: []string{"t"}}} }, want: "exactly one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "cache: ") {
				t.Errorf("Validate() = %v, want an error about %q", err, tt.want)
			}
		})
	}
	t.Run("every problem is reported", func(t *testing.T) {
		c := ok
		c.HeuristicFraction, c.MaxObjectBytes = 2, -1
		if err := c.Validate(); err == nil || strings.Count(err.Error(), "cache: ") != 2 {
			t.Errorf("Validate() = %v", err)
		}
	})
}

func TestPurgeTags(t *testing.T) {
	c := Config{TagRules: []TagRule{
		{Prefix: "/api/v1/contacts", Tags: []string{"contacts:{tenant}"}},
		{Method: "DELETE", Prefix: "/api/v1/contacts", Tags: []string{"contacts:{tenant}", "deleted:{tenant}"}},
		{Method: "GET", Prefix: "/api/v1/contacts", Tags: []string{"read-only"}},
		{Method: "POST", Path: "/api/v1/reset", Tags: []string{"all"}},
	}}
	req := func(method, path string) httpcache.Request {
		return httpcache.Request{Method: method, Path: path, Tenant: "acme"}
	}
	tests := []struct {
		name   string
		req    httpcache.Request
		status int
		want   []string
	}{
		{name: "unsafe request purges matching tags", req: req("POST", "/api/v1/contacts"), status: 201, want: []string{"contacts:acme"}},
		{name: "method-specific rules add theirs, de-duplicated", req: req("DELETE", "/api/v1/contacts/7"), status: 204, want: []string{"contacts:acme", "deleted:acme"}},
		{name: "exact path", req: req("POST", "/api/v1/reset?x=1"), status: 200, want: []string{"all"}},
		{name: "failed request purges nothing", req: req("POST", "/api/v1/contacts"), status: 500},
		{name: "safe request purges nothing", req: req("GET", "/api/v1/contacts"), status: 200},
		{name: "other paths purge nothing", req: req("POST", "/api/v2/contacts"), status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.PurgeTags(tt.req, tt.status); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("PurgeTags = %v, want %v", got, tt.want)
			}
		})
	}
	if got := c.Route("/api/v1/contacts/7").Tags; !reflect.DeepEqual(got, []string{"contacts:{tenant}", "read-only"}) {
		t.Errorf("Route tags = %v", got)
	}
}

// TestCheckEnvoy: the collapsed follower's wait, plus the time to answer, must fit the ext_proc
// filter's max_message_timeout; without one (0) Envoy grants no extension and nothing is asked.
func TestCheckEnvoy(t *testing.T) {
	tests := []struct {
		wait, max time.Duration
		ok        bool
	}{
		{0, 10 * time.Second, true}, // the default 9.5s + 300ms
		{0, 9 * time.Second, false},
		{time.Second, 2 * time.Second, true},
		{1800 * time.Millisecond, 2 * time.Second, false},
		{time.Hour, 0, true},
	}
	for _, tt := range tests {
		err := Config{CollapseWait: tt.wait}.CheckEnvoy(tt.max)
		if (err == nil) != tt.ok {
			t.Errorf("collapse_wait %v, max_message_timeout %v: %v, want ok=%v", tt.wait, tt.max, err, tt.ok)
		}
	}
}
