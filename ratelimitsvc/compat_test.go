package ratelimitsvc_test

// Compatibility with envoyproxy/ratelimit ("the reference"), the rate limit
// service whose YAML rule format Sluice reads. The fixtures under
// testdata/compat were written for Sluice: each exercises behaviour the
// reference documents in its README or checks in its own tests (which
// descriptor gets which limit, which files it refuses), with this
// project's own domains, keys and values. The calls below expect the
// response fields the reference would give for the same rules; where
// Sluice answers otherwise on purpose, a comment says so and why (README
// "Rate limits", "Differences from envoyproxy/ratelimit").

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

const compatDir = "testdata/compat"

// TestCompatValidConfigs loads each valid fixture on its own (some pairs
// share a domain on purpose, for TestCompatInvalidConfigs).
func TestCompatValidConfigs(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(compatDir, "valid", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 20 {
		t.Fatalf("only %d fixtures under %s/valid", len(paths), compatDir)
	}
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".yaml"), func(t *testing.T) {
			r, err := ratelimitsvc.LoadRules(path)
			if err != nil {
				t.Fatalf("LoadRules: %v", err)
			}
			if len(r.Domains()) != 1 {
				t.Errorf("Domains = %v, want one", r.Domains())
			}
		})
	}
}

// TestCompatInvalidConfigs loads files the reference refuses to load (its
// config loader panics on each; test/config/config_test.go checks them):
// Sluice refuses each too, with a *ConfigError naming the file, the line
// and the problem in its own words.
func TestCompatInvalidConfigs(t *testing.T) {
	tests := []struct {
		name  string
		files []string // under testdata/compat; the last one holds the problem
		ref   string   // why the reference refuses it
		want  string   // in Sluice's error, after the last file's name
	}{
		{name: "unknown unit", files: []string{"invalid/bad_unit.yaml"},
			ref: "the unit is not one it knows", want: `:7: invalid rate limit unit "fortnight"`},
		{name: "unterminated quote", files: []string{"invalid/bad_yaml.yaml"},
			ref: "the YAML does not parse", want: ":2: invalid YAML: found unexpected end of stream"},
		{name: "same key and value twice", files: []string{"invalid/duplicate_descriptor.yaml"},
			ref: "two descriptors of one level share a key and value", want: `:7: duplicate descriptor "tier_gold": same key and value as line 4`},
		{name: "no domain", files: []string{"invalid/missing_domain.yaml"},
			ref: "the domain is empty", want: ":2: domain is missing or empty"},
		{name: "empty key", files: []string{"invalid/empty_key.yaml"},
			ref: "a descriptor has no key", want: ":4: descriptor has an empty key"},
		{name: "rate_limit misspelled", files: []string{"invalid/misspelled_rate_limit.yaml"},
			ref: "a descriptor holds a key it does not know", want: `:6: unknown key "ratelimit" in a descriptor`},
		{name: "requests_per_unit misspelled", files: []string{"invalid/misspelled_requests_per_unit.yaml"},
			ref: "a rate limit holds a key it does not know", want: `:8: unknown key "request_per_unit" in a rate limit`},
		{name: "descriptors of plain words", files: []string{"invalid/scalar_descriptors.yaml"},
			ref: "a list holds something other than mappings", want: `:4: a descriptor must be a mapping, not "alpha"`},
		// A YAML key is a scalar: Sluice reads 1.5 as the text "1.5", which
		// is no key of the format; the reference refuses it as not a string.
		{name: "number as a key", files: []string{"invalid/numeric_top_key.yaml"},
			ref: "a key is not a string", want: `:2: unknown key "1.5" in the top level`},
		{name: "replaces without a name", files: []string{"invalid/replaces_empty.yaml"},
			ref: "a replaces entry has an empty name", want: ":11: replaces entry has no name"},
		{name: "replaces itself", files: []string{"invalid/replaces_self.yaml"},
			ref: "a limit names itself in replaces", want: `:9: limit "seat_limit" replaces its own name`},
		{name: "unlimited with a unit", files: []string{"invalid/unlimited_with_unit.yaml"},
			ref: "an unlimited limit also sets a unit", want: ":7: unit cannot be set on an unlimited rate limit"},
		{name: "one domain in two files", files: []string{"valid/catalog.yaml", "valid/catalog_again.yaml"},
			ref: "a domain is defined twice", want: `:2: duplicate domain "catalog" (also defined at`},
		// The reference joins the files of one domain only when started with
		// MERGE_DOMAIN_CONFIG=true, and refuses them otherwise; Sluice has
		// no such setting and always refuses them.
		{name: "a domain split over two files", files: []string{"valid/split_a.yaml", "valid/split_b.yaml"},
			ref: "a domain is defined twice (without MERGE_DOMAIN_CONFIG)", want: `:2: duplicate domain "split"`},
		// With merging on, the reference finds the descriptors repeated;
		// Sluice stops earlier, at the repeated domain.
		{name: "the same half twice", files: []string{"valid/split_a.yaml", "valid/split_a.yaml"},
			ref: "the merged domain repeats a descriptor", want: `:2: duplicate domain "split"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var files []ratelimitsvc.File
			for _, f := range tt.files {
				read, err := ratelimitsvc.ReadRuleFiles(filepath.Join(compatDir, f))
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, read...)
			}
			r, err := ratelimitsvc.ParseRules(files)
			if err == nil {
				t.Fatalf("loaded domains %v; the reference refuses this (%s)", r.Domains(), tt.ref)
			}
			var ce *ratelimitsvc.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a *ConfigError", err, err)
			}
			want := filepath.Join(compatDir, tt.files[len(tt.files)-1]) + tt.want
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error:\n%v\nwant it to contain %q (the reference refuses this: %s)", err, want, tt.ref)
			}
		})
	}
}

// Shorthands for the expected answers.
const (
	second = rlsv3.RateLimitResponse_RateLimit_SECOND
	minute = rlsv3.RateLimitResponse_RateLimit_MINUTE
	hour   = rlsv3.RateLimitResponse_RateLimit_HOUR
	day    = rlsv3.RateLimitResponse_RateLimit_DAY

	rlOK   = rlsv3.RateLimitResponse_OK
	rlOver = rlsv3.RateLimitResponse_OVER_LIMIT
)

// lim is a current_limit as the reference reports it (name only when set).
func lim(rpu uint32, unit rlsv3.RateLimitResponse_RateLimit_Unit, name ...string) *rlsv3.RateLimitResponse_RateLimit {
	l := &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: rpu, Unit: unit}
	if len(name) > 0 {
		l.Name = name[0]
	}
	return l
}

// want is the status the reference gives one descriptor.
type want struct {
	code  rlsv3.RateLimitResponse_Code
	limit *rlsv3.RateLimitResponse_RateLimit // nil: none, and no duration_until_reset
	rem   uint32
}

// Statuses: within the limit, over it, matching no limit, unlimited.
func within(l *rlsv3.RateLimitResponse_RateLimit, rem uint32) want { return want{rlOK, l, rem} }
func overBy(l *rlsv3.RateLimitResponse_RateLimit) want             { return want{rlOver, l, 0} }

var (
	noLimit   = want{code: rlOK}
	unlimited = want{code: rlOK, rem: math.MaxUint32}
)

// req is one ShouldRateLimit call and the answer expected.
type req struct {
	domain  string
	descs   []*commonrl.RateLimitDescriptor
	hits    uint32 // RateLimitRequest.hits_addend
	overall rlsv3.RateLimitResponse_Code
	st      []want
}

// dh is a descriptor with its own hits_addend.
func dh(hits uint64, kv ...string) *commonrl.RateLimitDescriptor {
	d := desc(kv...)
	d.HitsAddend = wrapperspb.UInt64(hits)
	return d
}

// times repeats a call n times, built for each i from 0.
func times(n int, f func(i int) req) []req {
	out := make([]req, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func concat(parts ...[]req) []req {
	var out []req
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// newCompat serves the named fixtures (under testdata/compat/valid, or YAML
// text when it contains a newline) with Sluice's response headers off: the
// reference adds none unless LIMIT_RESPONSE_HEADERS_ENABLED is set. The Redis
// budget is generous, so that a loaded test machine does not make a call fail
// open (the reference has no such budget).
func newCompat(t *testing.T, rdb redis.UniversalClient, fixtures ...string) *harness {
	t.Helper()
	var rules []string
	for _, f := range fixtures {
		if strings.Contains(f, "\n") {
			rules = append(rules, f)
			continue
		}
		data, err := os.ReadFile(filepath.Join(compatDir, "valid", f+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, string(data))
	}
	return newHarness(t, rdb, ratelimitsvc.Config{Headers: ratelimitsvc.HeadersOff, Timeout: 5 * time.Second}, rules...)
}

// check makes call i and compares the answer with the reference's.
func (h *harness) check(t *testing.T, i int, c req) *rlsv3.RateLimitResponse {
	t.Helper()
	resp, err := h.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: c.domain, Descriptors: c.descs, HitsAddend: c.hits})
	if err != nil {
		t.Fatalf("call %d: %v", i, err)
	}
	where := fmt.Sprintf("call %d (%s %v)", i, c.domain, c.descs)
	if resp.OverallCode != c.overall {
		t.Errorf("%s: overall_code %v, want %v", where, resp.OverallCode, c.overall)
	}
	if len(resp.Statuses) != len(c.descs) {
		t.Fatalf("%s: %d statuses for %d descriptors", where, len(resp.Statuses), len(c.descs))
	}
	for j, w := range c.st {
		got := resp.Statuses[j]
		if got.Code != w.code {
			t.Errorf("%s, descriptor %d: code %v, want %v", where, j, got.Code, w.code)
		}
		if !proto.Equal(got.CurrentLimit, w.limit) {
			t.Errorf("%s, descriptor %d: current_limit {%v}, want {%v}", where, j, got.CurrentLimit, w.limit)
		}
		if got.LimitRemaining != w.rem {
			t.Errorf("%s, descriptor %d: limit_remaining %d, want %d", where, j, got.LimitRemaining, w.rem)
		}
		if w.limit == nil {
			if got.DurationUntilReset != nil {
				t.Errorf("%s, descriptor %d: duration_until_reset %v without a limit", where, j, got.DurationUntilReset.AsDuration())
			}
			continue
		}
		// The reference reports what is left of the epoch-aligned window,
		// between 1s and the unit (utils.CalculateReset); Sluice's sliding
		// window reports when its oldest counted hits leave the window,
		// which is also within (0, unit].
		unit, _ := ratelimitsvc.UnitDuration(w.limit.Unit)
		if d := got.DurationUntilReset.AsDuration(); got.DurationUntilReset == nil || d <= 0 || d > unit {
			t.Errorf("%s, descriptor %d: duration_until_reset %v, want within (0, %v]", where, j, d, unit)
		}
	}
	if len(resp.ResponseHeadersToAdd) != 0 || resp.DynamicMetadata != nil {
		t.Errorf("%s: headers %v, dynamic metadata %v; the reference sends neither by default", where, resp.ResponseHeadersToAdd, resp.DynamicMetadata)
	}
	return resp
}

// The gateway of edge.yaml sends one descriptor per rate_limits action of
// the matched route, and leaves an action out when a request header it reads
// is missing (as Envoy does): (user, plan) and (user, agent) on one route;
// (caller, target) and then (account_kind) added on two others.
func userRoute(user, plan, agent string) []*commonrl.RateLimitDescriptor {
	var out []*commonrl.RateLimitDescriptor
	if plan != "" {
		out = append(out, desc("user", user, "plan", plan))
	}
	if agent != "" {
		out = append(out, desc("user", user, "agent", agent))
	}
	return out
}

func callerRoute(user, plan, caller, target string) []*commonrl.RateLimitDescriptor {
	return ds(desc("user", user, "plan", plan), desc("caller", caller, "target", target))
}

func kindRoute(user, plan, caller, target, kind string) []*commonrl.RateLimitDescriptor {
	return append(callerRoute(user, plan, caller, target), desc("account_kind", kind))
}

// serviceRules holds one descriptor for each kind of limit the reference's
// service tests (test/service/ratelimit_test.go) set up.
const serviceRules = `
domain: service
descriptors:
  - key: regular
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: named
    rate_limit: {name: named_limit, unit: minute, requests_per_unit: 10}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: quota
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: quota2
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: shadow_quota
    shadow_mode: true
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: unlimited
    rate_limit: {unlimited: true}
  - key: unlimited_named
    rate_limit: {unlimited: true, name: free_pass}
  - key: replacer
    rate_limit: {unit: minute, requests_per_unit: 5, replaces: [{name: free_pass}]}
  - key: week
    rate_limit: {unit: week, requests_per_unit: 7}
  - key: month
    rate_limit: {unit: Month, requests_per_unit: 30}
  - key: year
    rate_limit: {unit: YEAR, requests_per_unit: 365}
`

// TestCompatShouldRateLimit drives the real service over gRPC and Redis
// through the behaviours the reference documents and tests.
func TestCompatShouldRateLimit(t *testing.T) {
	rdb := redistest.Client(t)
	tests := []struct {
		name     string
		fixtures []string
		calls    []req
	}{
		// The rule format as the reference's README explains it.
		{
			name:     "exact values, and a value not listed",
			fixtures: []string{"exact_values"},
			calls: []req{
				{domain: "warehouse_db", descs: ds(desc("table", "orders")), overall: rlOK, st: []want{within(lim(400, second), 399)}},
				{domain: "warehouse_db", descs: ds(desc("table", "fallback")), overall: rlOK, st: []want{within(lim(400, second), 399)}},
				{domain: "warehouse_db", descs: ds(desc("table", "audit")), overall: rlOK, st: []want{noLimit}},
			},
		},
		{
			name:     "two descriptors per request, nested and flat",
			fixtures: []string{"nested_and_flat"},
			calls: concat(
				times(4, func(i int) req {
					return req{domain: "notify", descs: ds(desc("campaign", "promo", "recipient", "r-100"), desc("recipient", "r-100")),
						overall: rlOK, st: []want{within(lim(4, day), uint32(3-i)), within(lim(60, day), uint32(59-i))}}
				}),
				[]req{
					// One descriptor over is enough to refuse the request.
					// The reference would still count the hit on the
					// recipient alone (55 left); a refused request charges
					// nothing in Sluice (one Lua script, all or nothing),
					// as in the reference with
					// STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT.
					{domain: "notify", descs: ds(desc("campaign", "promo", "recipient", "r-100"), desc("recipient", "r-100")),
						overall: rlOver, st: []want{overBy(lim(4, day)), within(lim(60, day), 56)}},
					// The campaign level on its own has no limit.
					{domain: "notify", descs: ds(desc("campaign", "promo")), overall: rlOK, st: []want{noLimit}},
					{domain: "notify", descs: ds(desc("campaign", "promo", "recipient", "r-200")), overall: rlOK, st: []want{within(lim(4, day), 3)}},
					{domain: "notify", descs: ds(desc("recipient", "r-200")), overall: rlOK, st: []want{within(lim(60, day), 59)}},
				}),
		},
		{
			name:     "a listed value before the key-only limit",
			fixtures: []string{"value_beats_key"},
			calls: []req{
				{domain: "ingress_per_client", descs: ds(desc("client_ip", "192.0.2.10")), overall: rlOK, st: []want{within(lim(8, second), 7)}},
				{domain: "ingress_per_client", descs: ds(desc("client_ip", "192.0.2.66")), overall: rlOver, st: []want{overBy(lim(0, second))}},
			},
		},
		{
			name:     "a request longer than the rule matches nothing",
			fixtures: []string{"depth_flat"},
			calls: []req{
				{domain: "depth_flat", descs: ds(desc("region", "north", "zone", "z1")), overall: rlOK, st: []want{noLimit}},
				{domain: "depth_flat", descs: ds(desc("region", "north")), overall: rlOK, st: []want{within(lim(240, second), 239)}},
			},
		},
		{
			name:     "a request shorter than the rule matches nothing",
			fixtures: []string{"depth_nested"},
			calls: []req{
				{domain: "depth_nested", descs: ds(desc("region", "north", "zone", "z1")), overall: rlOK, st: []want{within(lim(240, second), 239)}},
				{domain: "depth_nested", descs: ds(desc("region", "north")), overall: rlOK, st: []want{noLimit}},
			},
		},
		{
			name:     "unlimited",
			fixtures: []string{"unlimited"},
			calls: []req{
				// OK with the remaining count at its largest value.
				{domain: "backoffice", descs: ds(desc("directory", "d1")), hits: 1000, overall: rlOK, st: []want{unlimited}},
				{domain: "backoffice", descs: ds(desc("billing", "inv"), desc("directory", "x")), overall: rlOK, st: []want{within(lim(80, minute), 79), unlimited}},
			},
		},
		{
			name:     "shadow_mode counts but never refuses",
			fixtures: []string{"shadow"},
			calls: []req{
				{domain: "trial_rollout", descs: ds(desc("service", "billing", "account", "acct-1")), hits: 8, overall: rlOK, st: []want{within(lim(8, second), 0)}},
				{domain: "trial_rollout", descs: ds(desc("service", "billing", "account", "acct-1")), overall: rlOK, st: []want{within(lim(8, second), 0)}},
				{domain: "trial_rollout", descs: ds(desc("service", "billing", "account", "acct-2")), hits: 16, overall: rlOK, st: []want{within(lim(16, second), 0)}},
				{domain: "trial_rollout", descs: ds(desc("service", "billing", "account", "acct-2")), overall: rlOver, st: []want{overBy(lim(16, second))}},
			},
		},
		{
			name:     "replaces",
			fixtures: []string{"replaces"},
			calls: []req{
				// Both limits match: the replaced one is neither reported
				// nor counted.
				{domain: "partner_api", descs: ds(desc("plan", "gold", "account", "zed"), desc("plan", "silver", "account", "zed")),
					overall: rlOK, st: []want{noLimit, within(lim(8, second), 7)}},
				{domain: "partner_api", descs: ds(desc("plan", "gold", "account", "zed")), overall: rlOK, st: []want{within(lim(4, second, "gold_account"), 3)}},
				{domain: "partner_api", descs: ds(desc("plan", "silver", "account", "zed")), overall: rlOK, st: []want{within(lim(8, second), 6)}},
			},
		},
		{
			// detailed_metric concerns the reference's stats; Sluice never
			// puts request values in metric labels (README "Metrics").
			name:     "detailed_metric changes no decision",
			fixtures: []string{"detailed_metric"},
			calls: []req{
				{domain: "metric_labels", descs: ds(desc("endpoint", "list")), overall: rlOK, st: []want{within(lim(12, minute), 11)}},
				{domain: "metric_labels", descs: ds(desc("endpoint", "browse")), overall: rlOK, st: []want{within(lim(12, minute), 11)}},
				{domain: "metric_labels", descs: ds(desc("endpoint", "search")), overall: rlOK, st: []want{within(lim(24, minute), 23)}},
			},
		},
		{
			// A '*' matches any run of characters, the empty one included;
			// without share_threshold each matching value has its own
			// counter (the reference's README and test/config wildcard
			// tests).
			name:     "wildcard values",
			fixtures: []string{"wildcards"},
			calls: func() []req {
				match := func(key, value string, rpu uint32) req {
					return req{domain: "wildcards", descs: ds(desc(key, value)), overall: rlOK, st: []want{within(lim(rpu, minute), rpu-1)}}
				}
				none := func(key, value string) req {
					return req{domain: "wildcards", descs: ds(desc(key, value)), overall: rlOK, st: []want{noLimit}}
				}
				return []req{
					match("sku", "item1", 25), match("sku", "itemXL", 25), match("sku", "item", 25), none("sku", "other"),
					none("sku_exact", "item1"),
					match("any_sku", "a1", 25), match("any_sku", "a2", 25),
					match("path", "/v1/7/edit", 25), match("path", "/v1/abc/edit", 25), none("path", "/v1/7/view"),
					match("route", "/svc/a/node/1/ping", 25), match("route", "/svc/b/node/2/ping", 25), none("route", "/svc/a/node/1"),
					match("mid", "cat", 25), match("mid", "cart", 25), match("mid", "ca99t", 25), none("mid", "cab"), none("mid", "xcat"),
					match("multi", "red1green2blue", 12), match("multi", "redgreenblue", 12), none("multi", "red1blue"), none("multi", "green2blue"),
					{domain: "wildcards", descs: ds(desc("outer", "lvl1", "inner", "zz9")), overall: rlOK, st: []want{within(lim(25, minute), 24)}},
				}
			}(),
		},
		{
			// value_to_metric, like detailed_metric, changes stats only.
			name:     "value_to_metric changes no decision",
			fixtures: []string{"value_to_metric"},
			calls: []req{
				{domain: "vtm", descs: ds(desc("api_route", "orders", "verb", "GET", "caller_id", "7")), overall: rlOK, st: []want{within(lim(45, minute), 44)}},
				{domain: "vtm", descs: ds(desc("api_route", "users", "verb", "PUT", "caller_id", "8")), overall: rlOK, st: []want{within(lim(45, minute), 44)}},
				{domain: "vtm", descs: ds(desc("member", "mo", "op", "getall", "object", "o1")), overall: rlOK, st: []want{within(lim(75, minute), 74)}},
				{domain: "vtm", descs: ds(desc("member", "mo", "op", "put", "object", "o1")), overall: rlOK, st: []want{noLimit}},
			},
		},
		{
			name:     "share_threshold: one counter for every matching value",
			fixtures: []string{"shared_hourly"},
			calls: []req{
				{domain: "hourly_shares", descs: ds(desc("upload", "upload/a.pdf")), hits: 5, overall: rlOK, st: []want{within(lim(10, hour), 5)}},
				{domain: "hourly_shares", descs: ds(desc("upload", "upload/b.csv")), hits: 5, overall: rlOK, st: []want{within(lim(10, hour), 0)}},
				{domain: "hourly_shares", descs: ds(desc("upload", "upload/c.txt")), overall: rlOver, st: []want{overBy(lim(10, hour))}},
				{domain: "hourly_shares", descs: ds(desc("upload_apart", "upload_apart/a.pdf")), hits: 10, overall: rlOK, st: []want{within(lim(10, hour), 0)}},
				{domain: "hourly_shares", descs: ds(desc("upload_apart", "upload_apart/b.csv")), overall: rlOK, st: []want{within(lim(10, hour), 9)}},
				// The shared parent joins the counters; the key-only child
				// still separates its values.
				{domain: "hourly_shares", descs: ds(desc("zone", "eu/1", "verb", "GET")), overall: rlOK, st: []want{within(lim(60, minute), 59)}},
				{domain: "hourly_shares", descs: ds(desc("zone", "eu/2", "verb", "GET")), overall: rlOK, st: []want{within(lim(60, minute), 58)}},
				{domain: "hourly_shares", descs: ds(desc("zone", "eu/2", "verb", "POST")), overall: rlOK, st: []want{within(lim(60, minute), 59)}},
			},
		},
		{
			// The reference's integration test of share_threshold: the
			// shared budget runs out across values, the per-value one
			// does not.
			name:     "share_threshold runs out across values",
			fixtures: []string{"shared_hourly"},
			calls: concat(
				times(10, func(i int) req {
					return req{domain: "hourly_shares", descs: ds(desc("upload", "upload/a.pdf")), overall: rlOK, st: []want{within(lim(10, hour), uint32(9-i))}}
				}),
				[]req{{domain: "hourly_shares", descs: ds(desc("upload", "upload/b.csv")), overall: rlOver, st: []want{overBy(lim(10, hour))}}},
				times(10, func(i int) req {
					return req{domain: "hourly_shares", descs: ds(desc("upload_apart", fmt.Sprintf("upload_apart/%d", i))), overall: rlOK, st: []want{within(lim(10, hour), 9)}}
				}),
			),
		},

		// What the reference's config tests (test/config/config_test.go)
		// check, on fixtures of the same shapes.
		{
			name:     "key-only defaults, overrides, exempt values, nesting",
			fixtures: []string{"catalog"},
			calls: []req{
				{domain: "no_such_domain", descs: ds(desc("tenant", "t1", "feature", "x")), overall: rlOK, st: []want{noLimit}},
				{domain: "catalog", descs: ds(desc()), overall: rlOK, st: []want{noLimit}},
				{domain: "catalog", descs: ds(desc("tenant", "t9")), overall: rlOK, st: []want{noLimit}},
				{domain: "catalog", descs: ds(desc("tenant", "t1")), overall: rlOK, st: []want{noLimit}},
				{domain: "catalog", descs: ds(desc("plan", "team", "sub", "x")), overall: rlOK, st: []want{noLimit}},
				{domain: "catalog", descs: ds(desc("store", "s5", "aisle", "a9")), overall: rlOK, st: []want{noLimit}},
				{domain: "catalog", descs: ds(desc("tenant", "t1", "feature", "import")), overall: rlOK, st: []want{within(lim(6, second), 5)}},
				{domain: "catalog", descs: ds(desc("tenant", "t1", "feature", "export")), overall: rlOK, st: []want{within(lim(12, second), 11)}},
				{domain: "catalog", descs: ds(desc("plan", "solo")), overall: rlOK, st: []want{within(lim(18, minute), 17)}},
				{domain: "catalog", descs: ds(desc("plan", "team")), overall: rlOK, st: []want{within(lim(36, minute), 35)}},
				// Listed without a limit: exempt, with no fallback to the
				// key-only limit.
				{domain: "catalog", descs: ds(desc("plan", "internal")), overall: rlOK, st: []want{noLimit}},
				{domain: "catalog", descs: ds(desc("region", "eu")), overall: rlOK, st: []want{within(lim(1, hour), 0)}},
				{domain: "catalog", descs: ds(desc("bulk", "b")), overall: rlOK, st: []want{within(lim(1, day, "bulk_daily"), 0)}},
				{domain: "catalog", descs: ds(desc("bulk", "b")), overall: rlOver, st: []want{overBy(lim(1, day, "bulk_daily"))}},
				{domain: "catalog", descs: ds(desc("store", "s5")), overall: rlOK, st: []want{within(lim(14, day), 13)}},
				{domain: "catalog", descs: ds(desc("store", "s5", "aisle", "a5")), overall: rlOK, st: []want{within(lim(28, day), 27)}},
				{domain: "catalog", descs: ds(desc("health", "h")), overall: rlOK, st: []want{unlimited}},
				{domain: "catalog", descs: ds(desc("report", "r")), overall: rlOK, st: []want{within(lim(65, minute), 64)}},
			},
		},
		{
			name:     "a descriptor's limit override",
			fixtures: []string{"catalog"},
			calls: func() []req {
				o := func(rpu uint32, unit typev3.RateLimitUnit, kv ...string) *commonrl.RateLimitDescriptor {
					d := desc(kv...)
					d.Limit = &commonrl.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: rpu, Unit: unit}
					return d
				}
				return []req{
					// Only within a domain the rules define.
					{domain: "no_such_domain", descs: ds(o(11, typev3.RateLimitUnit_DAY, "tenant", "t1")), overall: rlOK, st: []want{noLimit}},
					{domain: "catalog", descs: ds(o(11, typev3.RateLimitUnit_DAY, "tenant", "t1", "feature", "import")), overall: rlOK, st: []want{within(lim(11, day), 10)}},
					// Another limit counts apart.
					{domain: "catalog", descs: ds(o(40, typev3.RateLimitUnit_HOUR, "tenant", "t1", "feature", "import")), overall: rlOK, st: []want{within(lim(40, hour), 39)}},
					{domain: "catalog", descs: ds(o(40, typev3.RateLimitUnit_HOUR, "tenant", "t1", "feature", "import")), overall: rlOK, st: []want{within(lim(40, hour), 38)}},
					{domain: "catalog", descs: ds(o(40, typev3.RateLimitUnit_HOUR, "tenant", "t1", "feature", "other")), overall: rlOK, st: []want{within(lim(40, hour), 39)}},
					// Also where no rule matches.
					{domain: "catalog", descs: ds(o(1, typev3.RateLimitUnit_MINUTE, "nothing", "here")), overall: rlOK, st: []want{within(lim(1, minute), 0)}},
				}
			}(),
		},
		{
			name:     "shadow_mode on an override and on a default",
			fixtures: []string{"shadowed"},
			calls: []req{
				{domain: "shadowed", descs: ds(desc("tenant", "t1", "feature", "export")), hits: 13, overall: rlOK, st: []want{within(lim(12, second), 0)}},
				{domain: "shadowed", descs: ds(desc("tenant", "t1", "feature", "import")), hits: 7, overall: rlOver, st: []want{overBy(lim(6, second))}},
				{domain: "shadowed", descs: ds(desc("plan", "solo")), hits: 19, overall: rlOK, st: []want{within(lim(18, minute), 0)}},
				{domain: "shadowed", descs: ds(desc("plan", "team")), hits: 37, overall: rlOver, st: []want{overBy(lim(36, minute))}},
			},
		},
		{
			// The reference returns metadata in the response's dynamic
			// metadata only when started with RESPONSE_DYNAMIC_METADATA=true
			// (off by default); Sluice reads it and never returns it.
			name:     "metadata changes no decision",
			fixtures: []string{"with_metadata"},
			calls: []req{
				{domain: "with_metadata", descs: ds(desc("tenant", "t1", "feature", "x")), overall: rlOK, st: []want{within(lim(6, second), 5)}},
				{domain: "with_metadata", descs: ds(desc("plan", "y")), overall: rlOK, st: []want{within(lim(18, minute), 17)}},
			},
		},

		// What the reference's integration test
		// (test/integration/integration_test.go) checks against its running
		// service: an unknown domain, a per-second limit, and a refusal that
		// leaves the other descriptor's count alone.
		{
			name:     "limits per second, minute and hour",
			fixtures: []string{"simple", "counts"},
			calls: concat(
				[]req{
					{domain: "nowhere", descs: ds(desc("probe", "x")), overall: rlOK, st: []want{noLimit}},
					{domain: "simple", descs: ds(desc("per_second", "a")), overall: rlOK, st: []want{within(lim(40, second), 39)}},
				},
				times(28, func(i int) req {
					if i >= 24 {
						return req{domain: "counts", descs: ds(desc("per_minute", "7")), overall: rlOver, st: []want{overBy(lim(24, minute))}}
					}
					return req{domain: "counts", descs: ds(desc("per_minute", "7")), overall: rlOK, st: []want{within(lim(24, minute), uint32(24-(i+1)))}}
				}),
				times(16, func(i int) req {
					if i >= 12 {
						// The reference goes on counting per_minute (its
						// remaining count falls with each call) unless
						// STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT is set, when
						// it stays at 12 as here: a refused request charges
						// nothing in Sluice.
						return req{domain: "counts", descs: ds(desc("per_minute", "8"), desc("per_hour", "8")), overall: rlOver,
							st: []want{within(lim(24, minute), 12), overBy(lim(12, hour))}}
					}
					return req{domain: "counts", descs: ds(desc("per_minute", "8"), desc("per_hour", "8")), overall: rlOK,
						st: []want{within(lim(24, minute), uint32(24-(i+1))), within(lim(12, hour), uint32(12-(i+1)))}}
				}),
			),
		},
		{
			name:     "a limit of zero refuses every call",
			fixtures: []string{"blocking"},
			calls: []req{
				{domain: "blocking", descs: ds(desc("per_second", "a")), overall: rlOK, st: []want{within(lim(40, second), 39)}},
				{domain: "blocking", descs: ds(desc("blocked", "a")), overall: rlOver, st: []want{overBy(lim(0, second))}},
				{domain: "blocking", descs: ds(desc("once_a_minute", "a")), overall: rlOK, st: []want{within(lim(1, minute), 0)}},
				{domain: "blocking", descs: ds(desc("once_a_minute", "a")), overall: rlOver, st: []want{overBy(lim(1, minute))}},
			},
		},

		// What the reference's end-to-end scripts (integration-test/scripts)
		// check through Envoy, on the gateway of edge.yaml.
		{
			name:     "gateway: an enforced limit runs out",
			fixtures: []string{"edge"},
			calls: concat(
				[]req{{domain: "edge", descs: userRoute("tess", "", "probe"), overall: rlOK, st: []want{within(lim(3, minute), 2)}}},
				times(5, func(i int) req {
					if i >= 3 {
						return req{domain: "edge", descs: userRoute("pat", "", "crawler"), overall: rlOver, st: []want{overBy(lim(3, minute))}}
					}
					return req{domain: "edge", descs: userRoute("pat", "", "crawler"), overall: rlOK, st: []want{within(lim(3, minute), uint32(2-i))}}
				}),
			),
		},
		{
			name:     "gateway: a shadow limit runs out without refusing; a key-only limit counts each value",
			fixtures: []string{"edge"},
			calls: concat(
				times(6, func(i int) req {
					return req{domain: "edge", descs: userRoute("pat", "", "probe"), overall: rlOK, st: []want{within(lim(3, minute), uint32(max(2-i, 0)))}}
				}),
				[]req{
					{domain: "edge", descs: ds(desc("free_key", "anything")), overall: rlOK, st: []want{within(lim(2, minute), 1)}},
					{domain: "edge", descs: ds(desc("free_key", "anything")), overall: rlOK, st: []want{within(lim(2, minute), 0)}},
					{domain: "edge", descs: ds(desc("free_key", "anything")), overall: rlOver, st: []want{overBy(lim(2, minute))}},
				},
			),
		},
		{
			name:     "gateway: replaces",
			fixtures: []string{"edge"},
			calls: func() []req {
				blocked := lim(0, minute, "blocked_user")
				unblock := lim(2, minute)
				return []req{
					// A zero limit refuses; a limit that replaces it lifts it.
					{domain: "edge", descs: userRoute("ana", "blocked", ""), overall: rlOver, st: []want{overBy(blocked)}},
					// The reference also counts the hit on target stub (1 per
					// minute, none left); a refused request charges nothing
					// in Sluice.
					{domain: "edge", descs: callerRoute("ana", "blocked", "frontend", "stub"), overall: rlOver, st: []want{overBy(blocked), within(lim(1, minute), 1)}},
					{domain: "edge", descs: callerRoute("ana", "blocked", "frontend", "unblock"), overall: rlOK, st: []want{noLimit, within(unblock, 1)}},
					{domain: "edge", descs: callerRoute("ana", "blocked", "frontend", "unblock"), overall: rlOK, st: []want{noLimit, within(unblock, 0)}},
					{domain: "edge", descs: callerRoute("ana", "blocked", "frontend", "unblock"), overall: rlOver, st: []want{noLimit, overBy(unblock)}},
					// A replaced limit still applies wherever its replacement
					// does not match.
					{domain: "edge", descs: callerRoute("kim", "vip", "frontend", "vip"), overall: rlOK, st: []want{noLimit, within(lim(2, minute), 1)}},
					{domain: "edge", descs: callerRoute("kim", "vip", "frontend", "vip"), overall: rlOK, st: []want{noLimit, within(lim(2, minute), 0)}},
					{domain: "edge", descs: callerRoute("kim", "vip", "frontend", "vip"), overall: rlOver, st: []want{noLimit, overBy(lim(2, minute))}},
					{domain: "edge", descs: callerRoute("kim", "vip", "frontend", "regular"), overall: rlOK, st: []want{within(lim(1, minute, "vip_user"), 0), noLimit}},
					{domain: "edge", descs: callerRoute("kim", "vip", "frontend", "regular"), overall: rlOver, st: []want{overBy(lim(1, minute, "vip_user")), noLimit}},
					{domain: "edge", descs: callerRoute("kim", "vip", "frontend", "vip"), overall: rlOver, st: []want{noLimit, overBy(lim(2, minute))}},
					// One limit replaces two others at once.
					{domain: "edge", descs: kindRoute("kim", "vip", "frontend", "beta", "corporate"), overall: rlOK, st: []want{noLimit, noLimit, within(lim(4, minute), 3)}},
					{domain: "edge", descs: kindRoute("kim", "vip", "frontend", "beta", "corporate"), overall: rlOK, st: []want{noLimit, noLimit, within(lim(4, minute), 2)}},
					{domain: "edge", descs: kindRoute("kim", "vip", "frontend", "beta", "corporate"), overall: rlOK, st: []want{noLimit, noLimit, within(lim(4, minute), 1)}},
					{domain: "edge", descs: kindRoute("kim", "vip", "frontend", "beta", "corporate"), overall: rlOK, st: []want{noLimit, noLimit, within(lim(4, minute), 0)}},
					{domain: "edge", descs: kindRoute("kim", "vip", "frontend", "beta", "corporate"), overall: rlOver, st: []want{noLimit, noLimit, overBy(lim(4, minute))}},
					{domain: "edge", descs: userRoute("lee", "vip", ""), overall: rlOK, st: []want{within(lim(1, minute, "vip_user"), 0)}},
					{domain: "edge", descs: userRoute("lee", "vip", ""), overall: rlOver, st: []want{overBy(lim(1, minute, "vip_user"))}},
					{domain: "edge", descs: callerRoute("ron", "basic", "frontend", "beta"), overall: rlOK, st: []want{within(lim(3, minute), 2), within(lim(2, minute, "beta_name"), 1)}},
					{domain: "edge", descs: callerRoute("ron", "basic", "frontend", "beta"), overall: rlOK, st: []want{within(lim(3, minute), 1), within(lim(2, minute, "beta_name"), 0)}},
					// The reference counts the plan hit again (none left).
					{domain: "edge", descs: callerRoute("ron", "basic", "frontend", "beta"), overall: rlOver, st: []want{within(lim(3, minute), 1), overBy(lim(2, minute, "beta_name"))}},
					{domain: "edge", descs: kindRoute("kim", "vip", "frontend", "beta", "corporate"), overall: rlOver, st: []want{noLimit, noLimit, overBy(lim(4, minute))}},
				}
			}(),
		},
		{
			name:     "gateway: a limit with children, an unlimited child and key",
			fixtures: []string{"edge"},
			calls: []req{
				{domain: "edge", descs: ds(desc("user", "x")), overall: rlOK, st: []want{within(lim(2, minute), 1)}},
				{domain: "edge", descs: ds(desc("user", "x", "bypass", "y")), overall: rlOK, st: []want{unlimited}},
				{domain: "edge", descs: ds(desc("user", "x", "agent", "y")), overall: rlOK, st: []want{within(lim(1, second), 0)}},
				{domain: "edge", descs: ds(desc("open_key", "q")), hits: 100, overall: rlOK, st: []want{unlimited}},
			},
		},
		{
			// quota_mode: quota descriptors over their limit refuse the
			// request only once all of them are over.
			name:     "gateway: quota_mode",
			fixtures: []string{"edge"},
			calls: []req{
				{domain: "edge", descs: ds(desc("queue", "q1"), desc("queue", "q2")), overall: rlOK,
					st: []want{within(lim(1, minute), 0), within(lim(2, minute), 1)}},
				{domain: "edge", descs: ds(desc("queue", "q1"), desc("queue", "q2")), overall: rlOK,
					st: []want{overBy(lim(1, minute)), within(lim(2, minute), 0)}},
				{domain: "edge", descs: ds(desc("queue", "q1"), desc("queue", "q2")), overall: rlOver,
					st: []want{overBy(lim(1, minute)), overBy(lim(2, minute))}},
			},
		},
		{
			// A token quota in Envoy: the request checks with hits_addend 0,
			// and the stream's end charges 1 (apply_on_stream_done), whose
			// answer Envoy ignores. The reference lets a check pass while
			// the count has not gone past the limit, so one request more
			// than the limit gets through; in Sluice a check is over once
			// the quota is used up (README "Rate limits"), so the third
			// check here is refused.
			name:     "gateway: token quota",
			fixtures: []string{"edge"},
			calls: []req{
				{domain: "edge", descs: ds(dh(0, "queue", "q2")), overall: rlOK, st: []want{within(lim(2, minute), 2)}},
				{domain: "edge", descs: ds(dh(1, "queue", "q2")), overall: rlOK, st: []want{within(lim(2, minute), 1)}},
				{domain: "edge", descs: ds(dh(0, "queue", "q2")), overall: rlOK, st: []want{within(lim(2, minute), 1)}},
				{domain: "edge", descs: ds(dh(1, "queue", "q2")), overall: rlOK, st: []want{within(lim(2, minute), 0)}},
				{domain: "edge", descs: ds(dh(0, "queue", "q2")), overall: rlOver, st: []want{overBy(lim(2, minute))}},
			},
		},

		// What the reference's service tests (test/service/ratelimit_test.go)
		// check, with the limits of serviceRules.
		{
			name:     "service: a descriptor over its limit, in either position",
			fixtures: []string{serviceRules},
			calls: []req{
				{domain: "service", descs: ds(desc("other", "thing")), overall: rlOK, st: []want{noLimit}},
				{domain: "service", descs: ds(dh(11, "named", "n1"), desc("other", "thing")), overall: rlOver, st: []want{overBy(lim(10, minute, "named_limit")), noLimit}},
				{domain: "service", descs: ds(desc("other", "thing"), dh(11, "named", "n1")), overall: rlOver, st: []want{noLimit, overBy(lim(10, minute, "named_limit"))}},
			},
		},
		{
			name:     "service: unlimited",
			fixtures: []string{serviceRules},
			calls: []req{
				{domain: "service", descs: ds(desc("regular", "r"), desc("other", "thing"), desc("unlimited", "u")), overall: rlOK,
					st: []want{within(lim(2, minute), 1), noLimit, unlimited}},
				// The reference marks a descriptor unlimited before it
				// applies replaces (constructLimitsToCheck), so an unlimited
				// limit stays unlimited even when another replaces it.
				{domain: "service", descs: ds(desc("unlimited_named", "x"), desc("replacer", "x")), overall: rlOK,
					st: []want{unlimited, within(lim(5, minute), 4)}},
			},
		},
		{
			// The reference counts a week as 7 days, a month as 30 and a year
			// as 365 (utils.UnitToDivider), and reads units in any case.
			name:     "units week, month and year",
			fixtures: []string{serviceRules},
			calls: []req{
				{domain: "service", descs: ds(desc("week", "w"), desc("month", "m"), desc("year", "y")), overall: rlOK,
					st: []want{within(lim(7, rlsv3.RateLimitResponse_RateLimit_WEEK), 6), within(lim(30, rlsv3.RateLimitResponse_RateLimit_MONTH), 29),
						within(lim(365, rlsv3.RateLimitResponse_RateLimit_YEAR), 364)}},
			},
		},
		{
			name:     "service: shadow_mode alone and beside an enforced limit",
			fixtures: []string{serviceRules},
			calls: []req{
				{domain: "service", descs: ds(dh(3, "shadow", "a"), dh(3, "shadow", "b")), overall: rlOK, st: []want{within(lim(2, minute), 0), within(lim(2, minute), 0)}},
				{domain: "service", descs: ds(dh(3, "shadow", "c"), dh(3, "regular", "c")), overall: rlOver, st: []want{within(lim(2, minute), 0), overBy(lim(2, minute))}},
			},
		},
		{
			name:     "service: quota_mode",
			fixtures: []string{serviceRules},
			calls: []req{
				// An ordinary descriptor over its limit refuses, whatever
				// the quota descriptors say. (The reference also counts the
				// quota hit: 2 left.)
				{domain: "service", descs: ds(dh(3, "regular", "a"), desc("quota2", "a")), overall: rlOver, st: []want{overBy(lim(2, minute)), within(lim(3, minute), 3)}},
				// The only quota descriptor is over: refused.
				{domain: "service", descs: ds(desc("regular", "b"), dh(3, "quota", "b")), overall: rlOver, st: []want{within(lim(2, minute), 1), overBy(lim(2, minute))}},
				// Refused, so neither hit stayed charged (the reference
				// keeps both).
				{domain: "service", descs: ds(desc("regular", "b"), desc("quota", "b")), overall: rlOK, st: []want{within(lim(2, minute), 1), within(lim(2, minute), 1)}},
				// Both under their limits.
				{domain: "service", descs: ds(desc("regular", "c"), desc("quota", "c")), overall: rlOK, st: []want{within(lim(2, minute), 1), within(lim(2, minute), 1)}},
				// Every quota descriptor over: refused, and refunded.
				{domain: "service", descs: ds(dh(2, "quota", "d")), overall: rlOK, st: []want{within(lim(2, minute), 0)}},
				{domain: "service", descs: ds(desc("quota", "d"), dh(4, "quota2", "d")), overall: rlOver, st: []want{overBy(lim(2, minute)), overBy(lim(3, minute))}},
				{domain: "service", descs: ds(desc("quota2", "d")), overall: rlOK, st: []want{within(lim(3, minute), 2)}},
				// Only some over: the over one reports OVER_LIMIT, the
				// request passes, and both are counted.
				{domain: "service", descs: ds(dh(3, "quota", "e"), desc("quota2", "e")), overall: rlOK, st: []want{overBy(lim(2, minute)), within(lim(3, minute), 2)}},
				{domain: "service", descs: ds(dh(0, "quota", "e")), overall: rlOver, st: []want{overBy(lim(2, minute))}},
				// A quota descriptor in shadow_mode is never over, so the
				// request passes, and it is counted (as in the reference).
				{domain: "service", descs: ds(dh(2, "shadow_quota", "f")), overall: rlOK, st: []want{within(lim(1, minute), 0)}},
				{domain: "service", descs: ds(dh(2, "shadow_quota", "f"), dh(3, "quota", "f")), overall: rlOK, st: []want{within(lim(1, minute), 0), overBy(lim(2, minute))}},
			},
		},
		{
			// Which hits a descriptor is charged (the reference's
			// utils.GetHitsAddends): its own hits_addend, 0 included, else
			// the request's, where 0 means 1.
			name:     "hits_addend",
			fixtures: []string{serviceRules},
			calls: []req{
				{domain: "service", descs: ds(desc("regular", "h")), hits: 0, overall: rlOK, st: []want{within(lim(2, minute), 1)}},
				{domain: "service", descs: ds(desc("regular", "h2")), hits: 2, overall: rlOK, st: []want{within(lim(2, minute), 0)}},
				{domain: "service", descs: ds(dh(0, "regular", "h3")), hits: 5, overall: rlOK, st: []want{within(lim(2, minute), 2)}},
				{domain: "service", descs: ds(dh(1, "regular", "h3"), desc("regular", "h4")), hits: 2, overall: rlOK, st: []want{within(lim(2, minute), 1), within(lim(2, minute), 0)}},
				{domain: "service", descs: ds(desc("regular", "h5")), hits: 3, overall: rlOver, st: []want{overBy(lim(2, minute))}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newCompat(t, rdb, tt.fixtures...)
			for i, c := range tt.calls {
				h.check(t, i, c)
			}
		})
	}
}

// TestCompatInvalidRequests: the reference fails a request that has no
// domain or no descriptors with a plain error (gRPC Unknown); Sluice answers
// InvalidArgument, the code for a malformed request.
func TestCompatInvalidRequests(t *testing.T) {
	h := newCompat(t, redistest.Client(t), "catalog")
	for _, r := range []*rlsv3.RateLimitRequest{
		{Descriptors: ds(desc("other", "thing")), HitsAddend: 1},
		{Domain: "catalog", HitsAddend: 1},
	} {
		resp, err := h.client.ShouldRateLimit(context.Background(), r)
		if status.Code(err) != codes.InvalidArgument || resp != nil {
			t.Errorf("%v: got %v, %v; want no response and InvalidArgument", r, resp, err)
		}
	}
}

// TestCompatDurationUntilReset: the reference's windows are aligned to the
// Unix epoch, so its integration test sees duration_until_reset of a daily
// limit shrink between two hits. Sluice does the same with algorithm:
// fixed_window. Its default sliding window frees quota one window after the
// hits of its oldest counted sub-window (README "Algorithms and accuracy"),
// so a second hit does not bring the reset closer, while a check
// (hits_addend 0) sees it shrink.
func TestCompatDurationUntilReset(t *testing.T) {
	const fixed = "domain: counts_fixed\nalgorithm: fixed_window\ndescriptors:\n  - key: per_day\n    rate_limit: {unit: day, requests_per_unit: 20}\n"
	h := newCompat(t, redistest.Client(t), "counts", fixed)
	reset := func(domain string, d *commonrl.RateLimitDescriptor) time.Duration {
		t.Helper()
		resp := h.call(t, domain, d)
		if resp.OverallCode != rlOK || resp.Statuses[0].DurationUntilReset == nil {
			t.Fatalf("%s: %v", domain, resp)
		}
		return resp.Statuses[0].DurationUntilReset.AsDuration()
	}

	now := time.Now()
	d1 := reset("counts_fixed", desc("per_day", "reset"))
	// An epoch-aligned day ends at UTC midnight.
	untilMidnight := 24*time.Hour - now.Sub(now.Truncate(24*time.Hour))
	if diff := d1 - untilMidnight; diff < -2*time.Second || diff > 2*time.Second {
		t.Errorf("fixed window: duration_until_reset %v, want about %v (the rest of the UTC day)", d1, untilMidnight)
	}
	time.Sleep(20 * time.Millisecond)
	if d2 := reset("counts_fixed", desc("per_day", "reset")); d2 >= d1 {
		t.Errorf("fixed window: duration_until_reset %v then %v, want it to shrink", d1, d2)
	}

	s1 := reset("counts", desc("per_day", "reset"))
	time.Sleep(20 * time.Millisecond)
	if s2 := reset("counts", desc("per_day", "reset")); s2 < s1 || s2 > 24*time.Hour {
		t.Errorf("sliding window: duration_until_reset %v after a second hit, want from %v to 24h", s2, s1)
	}
	time.Sleep(20 * time.Millisecond)
	s3 := reset("counts", dh(0, "per_day", "reset"))
	time.Sleep(20 * time.Millisecond)
	if s4 := reset("counts", dh(0, "per_day", "reset")); s4 >= s3 {
		t.Errorf("sliding window: duration_until_reset %v then %v for checks, want it to shrink", s3, s4)
	}
}

// TestCompatNearLimit: the reference counts a decision as near the limit
// once the count has passed floor(limit × NEAR_LIMIT_RATIO), 0.8 by default,
// without reaching the limit.
func TestCompatNearLimit(t *testing.T) {
	h := newCompat(t, redistest.Client(t), serviceRules)
	near := func() float64 {
		return counterSum(t, h.reg, "sluice_ratelimit_decisions_total", prometheus.Labels{"domain": "service", "code": "near_limit"})
	}
	h.check(t, 0, req{domain: "service", descs: ds(dh(8, "named", "n")), overall: rlOK, st: []want{within(lim(10, minute, "named_limit"), 2)}})
	if got := near(); got != 0 {
		t.Errorf("near_limit decisions at 8 of 10 = %v, want 0 (threshold floor(10*0.8) = 8 not passed)", got)
	}
	h.check(t, 1, req{domain: "service", descs: ds(desc("named", "n")), overall: rlOK, st: []want{within(lim(10, minute, "named_limit"), 1)}})
	if got := near(); got != 1 {
		t.Errorf("near_limit decisions at 9 of 10 = %v, want 1", got)
	}
}
