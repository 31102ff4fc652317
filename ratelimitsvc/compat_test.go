package ratelimitsvc_test

// Compatibility with envoyproxy/ratelimit, the reference implementation of
// Envoy's rate limit service whose YAML rules Sluice reads. The fixtures under
// testdata/compat are the reference's own configs (README examples,
// examples/ratelimit/config, test/config, test/integration), each naming its
// source in its first line; the calls mirror the reference's documentation,
// its config and service tests (test/config/config_test.go,
// test/service/ratelimit_test.go), its integration test
// (test/integration/integration_test.go) and its end-to-end scripts through
// Envoy (integration-test/scripts/*.sh), and expect the response fields the
// reference gives. Where Sluice deliberately answers otherwise, a comment
// says so and why (README "Rate limits", "Differences from
// envoyproxy/ratelimit").

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
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

const compatDir = "testdata/compat"

// TestCompatValidConfigs loads every valid config of envoyproxy/ratelimit
// (one file at a time: several README examples share a domain name).
func TestCompatValidConfigs(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(compatDir, "valid", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 30 {
		t.Fatalf("only %d fixtures under %s/valid", len(paths), compatDir)
	}
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(data), "# Source: envoyproxy/ratelimit ") {
				t.Errorf("the first line must name the fixture's source in envoyproxy/ratelimit")
			}
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

// TestCompatInvalidConfigs loads the configs that envoyproxy/ratelimit
// rejects (test/config/config_test.go, expectConfigPanic): Sluice rejects
// each too, with a *ConfigError naming the file, the line and the problem.
// The reference's message is kept in ref; Sluice's wording differs.
func TestCompatInvalidConfigs(t *testing.T) {
	tests := []struct {
		name  string
		files []string // under testdata/compat; the last one holds the problem
		ref   string   // envoyproxy/ratelimit's error
		want  string   // in Sluice's error
	}{
		{"bad_limit_unit", []string{"invalid/bad_limit_unit.yaml"},
			"invalid rate limit unit 'foo'", `:7: invalid rate limit unit "foo"`},
		{"bad_yaml", []string{"invalid/bad_yaml.yaml"},
			"error loading config file: yaml: line 2: found unexpected end of stream", ":2: invalid YAML: found unexpected end of stream"},
		{"duplicate_key", []string{"invalid/duplicate_key.yaml"},
			"duplicate descriptor composite key 'test-domain.key1_value1'", `:7: duplicate descriptor "key1_value1": same key and value as line 4`},
		{"empty_domain", []string{"invalid/empty_domain.yaml"},
			"config file cannot have empty domain", ":2: domain is missing or empty"},
		{"empty_key", []string{"invalid/empty_key.yaml"},
			"descriptor has empty key", ":4: descriptor has an empty key"},
		{"misspelled_key", []string{"invalid/misspelled_key.yaml"},
			"config error, unknown key 'ratelimit'", `:6: unknown key "ratelimit" in a descriptor`},
		{"misspelled_key2", []string{"invalid/misspelled_key2.yaml"},
			"config error, unknown key 'requestsperunit'", `:8: unknown key "requestsperunit" in a rate limit`},
		{"non_map_list", []string{"invalid/non_map_list.yaml"},
			"config error, yaml file contains list of type other than map: a", `:4: a descriptor must be a mapping, not "a"`},
		// YAML keys are scalars: Sluice reads 0.25 as the text "0.25".
		{"non_string_key", []string{"invalid/non_string_key.yaml"},
			"config error, key is not of type string: 0.25", `:2: unknown key "0.25" in the top level`},
		{"replaces_empty", []string{"invalid/replaces_empty.yaml"},
			"should not have an empty replaces entry", ":11: replaces entry has no name"},
		{"replaces_self", []string{"invalid/replaces_self.yaml"},
			"replaces should not contain name of same descriptor", `:9: limit "self" replaces its own name`},
		{"unlimited_with_unit", []string{"invalid/unlimited_with_unit.yaml"},
			"should not specify rate limit unit when unlimited", ":7: unit cannot be set on an unlimited rate limit"},
		// TestDuplicateDomain: two files, one domain.
		{"duplicate_domain", []string{"valid/config_basic_config.yaml", "valid/config_duplicate_domain.yaml"},
			"duplicate domain 'test-domain' in config file", `:2: duplicate domain "test-domain" (also defined at`},
		// The reference merges files of one domain only with
		// MERGE_DOMAIN_CONFIG=true (TestDomainMerge); by default it rejects
		// them, and Sluice, which has no such setting, always does.
		{"merge_domain without MERGE_DOMAIN_CONFIG", []string{"valid/config_merge_domain_key1.yaml", "valid/config_merge_domain_key2.yaml"},
			"duplicate domain 'test-domain' in config file", `:3: duplicate domain "test-domain"`},
		// TestDuplicateKeyDomainMerge: with merging on, the reference finds
		// the repeated descriptor; Sluice stops at the repeated domain.
		{"merge_domain twice", []string{"valid/config_merge_domain_key1.yaml", "valid/config_merge_domain_key1.yaml"},
			"duplicate descriptor composite key 'test-domain.key1_value1'", `:3: duplicate domain "test-domain"`},
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
				t.Fatalf("loaded domains %v; envoyproxy/ratelimit fails with %q", r.Domains(), tt.ref)
			}
			var ce *ratelimitsvc.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a *ConfigError", err, err)
			}
			want := filepath.Join(compatDir, tt.files[len(tt.files)-1]) + tt.want
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error:\n%v\nwant it to contain %q (envoyproxy/ratelimit: %q)", err, want, tt.ref)
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
		// The reference reports the rest of the epoch-aligned window,
		// 1s..unit (utils.CalculateReset); Sluice's sliding window reports
		// when its oldest counted hits leave the window: also within (0, unit].
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

// Envoy's descriptors for the routes of the reference's examples/envoy/proxy.yaml,
// used by integration-test/scripts: each rate_limits entry is one descriptor,
// left out when one of its request headers is missing.
func twoHeader(foo, bar, baz string) []*commonrl.RateLimitDescriptor {
	var out []*commonrl.RateLimitDescriptor
	if bar != "" {
		out = append(out, desc("foo", foo, "bar", bar))
	}
	if baz != "" {
		out = append(out, desc("foo", foo, "baz", baz))
	}
	return out
}

func fourHeader(foo, bar, src, dst string) []*commonrl.RateLimitDescriptor {
	return ds(desc("foo", foo, "bar", bar), desc("source_cluster", src, "destination_cluster", dst))
}

func fiveHeader(foo, bar, src, dst, category string) []*commonrl.RateLimitDescriptor {
	return append(fourHeader(foo, bar, src, dst), desc("category", category))
}

// serviceRules has one descriptor per kind of limit the reference's service
// tests (test/service/ratelimit_test.go) build by hand.
const serviceRules = `
domain: service
descriptors:
  - key: regular
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: named
    rate_limit: {name: key_name, unit: minute, requests_per_unit: 10}
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
// through the reference's documented and tested behaviours.
func TestCompatShouldRateLimit(t *testing.T) {
	rdb := redistest.Client(t)
	tests := []struct {
		name     string
		fixtures []string
		calls    []req
	}{
		// README "The configuration format", examples 1 to 11.
		{
			name:     "README example 1: key and value",
			fixtures: []string{"readme_example1"},
			calls: []req{
				{domain: "mongo_cps", descs: ds(desc("database", "users")), overall: rlOK, st: []want{within(lim(500, second), 499)}},
				{domain: "mongo_cps", descs: ds(desc("database", "default")), overall: rlOK, st: []want{within(lim(500, second), 499)}},
				{domain: "mongo_cps", descs: ds(desc("database", "orders")), overall: rlOK, st: []want{noLimit}},
			},
		},
		{
			name:     "README example 2: nested lists, several descriptors per request",
			fixtures: []string{"readme_example2"},
			calls: concat(
				times(5, func(i int) req {
					return req{domain: "messaging", descs: ds(desc("message_type", "marketing", "to_number", "2061111111"), desc("to_number", "2061111111")),
						overall: rlOK, st: []want{within(lim(5, day), uint32(4-i)), within(lim(100, day), uint32(99-i))}}
				}),
				[]req{
					// "a logical OR of all the individual rate limit decisions".
					// The reference also counts the hit on ("to_number") here
					// (94 remaining); Sluice charges a denied request nothing
					// (README: all-or-nothing in one Lua script), like the
					// reference with STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT.
					{domain: "messaging", descs: ds(desc("message_type", "marketing", "to_number", "2061111111"), desc("to_number", "2061111111")),
						overall: rlOver, st: []want{overBy(lim(5, day)), within(lim(100, day), 95)}},
					// The top level ("message_type", "marketing") is a placeholder.
					{domain: "messaging", descs: ds(desc("message_type", "marketing")), overall: rlOK, st: []want{noLimit}},
					{domain: "messaging", descs: ds(desc("message_type", "marketing", "to_number", "2062222222")), overall: rlOK, st: []want{within(lim(5, day), 4)}},
					{domain: "messaging", descs: ds(desc("to_number", "2062222222")), overall: rlOK, st: []want{within(lim(100, day), 99)}},
				}),
		},
		{
			name:     "README example 3: key and value before key alone",
			fixtures: []string{"readme_example3"},
			calls: []req{
				{domain: "edge_proxy_per_ip", descs: ds(desc("remote_address", "50.0.0.1")), overall: rlOK, st: []want{within(lim(10, second), 9)}},
				{domain: "edge_proxy_per_ip", descs: ds(desc("remote_address", "50.0.0.5")), overall: rlOver, st: []want{overBy(lim(0, second))}},
			},
		},
		{
			name:     "README example 4: a longer request does not match a shorter config",
			fixtures: []string{"readme_example4a"},
			calls: []req{
				{domain: "example4", descs: ds(desc("key", "value", "subkey", "subvalue")), overall: rlOK, st: []want{noLimit}},
				{domain: "example4", descs: ds(desc("key", "value")), overall: rlOK, st: []want{within(lim(300, second), 299)}},
			},
		},
		{
			name:     "README example 4: the same number of entries as nested levels",
			fixtures: []string{"readme_example4b"},
			calls: []req{
				{domain: "example4", descs: ds(desc("key", "value", "subkey", "subvalue")), overall: rlOK, st: []want{within(lim(300, second), 299)}},
				{domain: "example4", descs: ds(desc("key", "value")), overall: rlOK, st: []want{noLimit}},
			},
		},
		{
			name:     "README example 5: unlimited",
			fixtures: []string{"readme_example5"},
			calls: []req{
				// "an OK status code with the LimitRemaining field set to MaxUint32".
				{domain: "internal", descs: ds(desc("ldap", "cn=admin")), hits: 1000, overall: rlOK, st: []want{unlimited}},
				{domain: "internal", descs: ds(desc("azure", "vm"), desc("ldap", "x")), overall: rlOK, st: []want{within(lim(100, minute), 99), unlimited}},
			},
		},
		{
			name:     "README example 6: shadow_mode always answers OK",
			fixtures: []string{"readme_example6"},
			calls: []req{
				{domain: "example6", descs: ds(desc("service", "auth-service", "user", "user-a")), hits: 10, overall: rlOK, st: []want{within(lim(10, second), 0)}},
				{domain: "example6", descs: ds(desc("service", "auth-service", "user", "user-a")), overall: rlOK, st: []want{within(lim(10, second), 0)}},
				{domain: "example6", descs: ds(desc("service", "auth-service", "user", "user-b")), hits: 20, overall: rlOK, st: []want{within(lim(20, second), 0)}},
				{domain: "example6", descs: ds(desc("service", "auth-service", "user", "user-b")), overall: rlOver, st: []want{overBy(lim(20, second))}},
			},
		},
		{
			name:     "README example 7: replaces",
			fixtures: []string{"readme_example7"},
			calls: []req{
				// Both match: only the replacing limit applies; the replaced
				// one reports no limit and is not counted.
				{domain: "example7", descs: ds(desc("key_1", "value_1", "user", "bkthomps"), desc("key_2", "value_2", "user", "bkthomps")),
					overall: rlOK, st: []want{noLimit, within(lim(10, second), 9)}},
				{domain: "example7", descs: ds(desc("key_1", "value_1", "user", "bkthomps")), overall: rlOK, st: []want{within(lim(5, second, "specific_limit"), 4)}},
				{domain: "example7", descs: ds(desc("key_2", "value_2", "user", "bkthomps")), overall: rlOK, st: []want{within(lim(10, second), 8)}},
			},
		},
		{
			// detailed_metric changes metrics only (Sluice keeps metric
			// labels to config values: README "Metrics").
			name:     "README example 8: detailed_metric",
			fixtures: []string{"readme_example8"},
			calls: []req{
				{domain: "example8", descs: ds(desc("key1", "unspecified_value")), overall: rlOK, st: []want{within(lim(10, minute), 9)}},
				{domain: "example8", descs: ds(desc("key1", "unspecified_value2")), overall: rlOK, st: []want{within(lim(10, minute), 9)}},
				{domain: "example8", descs: ds(desc("key1", "value1")), overall: rlOK, st: []want{within(lim(20, minute), 19)}},
			},
		},
		{
			name:     "README example 9: trailing wildcard",
			fixtures: []string{"readme_example9_trailing"},
			calls: []req{
				{domain: "example9", descs: ds(desc("key1", "value1")), overall: rlOK, st: []want{within(lim(20, minute), 19)}},
				// Without share_threshold each value has its own counter.
				{domain: "example9", descs: ds(desc("key1", "valueXYZ")), overall: rlOK, st: []want{within(lim(20, minute), 19)}},
				{domain: "example9", descs: ds(desc("key1", "value")), overall: rlOK, st: []want{within(lim(20, minute), 19)}},
				{domain: "example9", descs: ds(desc("key1", "other")), overall: rlOK, st: []want{noLimit}},
			},
		},
		{
			name:     "README example 9: middle wildcard",
			fixtures: []string{"readme_example9_middle"},
			calls: []req{
				{domain: "example9", descs: ds(desc("path", "/api/123/action")), overall: rlOK, st: []want{within(lim(20, minute), 19)}},
				{domain: "example9", descs: ds(desc("path", "/api/user-id/action")), overall: rlOK, st: []want{within(lim(20, minute), 19)}},
				{domain: "example9", descs: ds(desc("path", "/api/123/other")), overall: rlOK, st: []want{noLimit}},
			},
		},
		{
			name:     "README example 9: multiple wildcards",
			fixtures: []string{"readme_example9_multiple"},
			calls: []req{
				{domain: "example9", descs: ds(desc("route", "/api/v1/resource/123/action")), overall: rlOK, st: []want{within(lim(20, minute), 19)}},
				{domain: "example9", descs: ds(desc("route", "/api/v2/resource/456/action")), overall: rlOK, st: []want{within(lim(20, minute), 19)}},
				{domain: "example9", descs: ds(desc("route", "/api/v1/resource/123")), overall: rlOK, st: []want{noLimit}},
			},
		},
		{
			name:     "README example 10: value_to_metric",
			fixtures: []string{"readme_example10", "readme_example10_wildcard"},
			calls: []req{
				{domain: "example10", descs: ds(desc("route", "api", "http_method", "GET", "subject_id", "123")), overall: rlOK, st: []want{within(lim(60, minute), 59)}},
				{domain: "example10", descs: ds(desc("route", "web", "http_method", "POST", "subject_id", "456")), overall: rlOK, st: []want{within(lim(60, minute), 59)}},
				{domain: "example10_wildcard", descs: ds(desc("user", "alice", "action", "readfile", "resource", "documents")), overall: rlOK, st: []want{within(lim(100, minute), 99)}},
				{domain: "example10_wildcard", descs: ds(desc("user", "alice", "action", "write", "resource", "documents")), overall: rlOK, st: []want{noLimit}},
			},
		},
		{
			name:     "README example 11: share_threshold",
			fixtures: []string{"readme_example11", "readme_example11_metrics"},
			calls: []req{
				{domain: "example11", descs: ds(desc("files", "files/a.pdf")), hits: 5, overall: rlOK, st: []want{within(lim(10, hour), 5)}},
				{domain: "example11", descs: ds(desc("files", "files/b.csv")), hits: 5, overall: rlOK, st: []want{within(lim(10, hour), 0)}},
				{domain: "example11", descs: ds(desc("files", "files/c.txt")), overall: rlOver, st: []want{overBy(lim(10, hour))}},
				{domain: "example11", descs: ds(desc("files_no_share", "files_no_share/a.pdf")), hits: 10, overall: rlOK, st: []want{within(lim(10, hour), 0)}},
				{domain: "example11", descs: ds(desc("files_no_share", "files_no_share/b.csv")), overall: rlOK, st: []want{within(lim(10, hour), 9)}},
				{domain: "example11_metrics", descs: ds(desc("route", "api/v1", "method", "GET")), overall: rlOK, st: []want{within(lim(60, minute), 59)}},
				{domain: "example11_metrics", descs: ds(desc("route", "api/v2", "method", "GET")), overall: rlOK, st: []want{within(lim(60, minute), 58)}},
				{domain: "example11_metrics", descs: ds(desc("route", "api/v2", "method", "POST")), overall: rlOK, st: []want{within(lim(60, minute), 59)}},
			},
		},

		// test/config/config_test.go.
		{
			name:     "config_test TestBasicConfig",
			fixtures: []string{"config_basic_config"},
			calls: []req{
				{domain: "foo_domain", descs: ds(desc("key1", "value1", "subkey1", "x")), overall: rlOK, st: []want{noLimit}},
				{domain: "test-domain", descs: ds(desc()), overall: rlOK, st: []want{noLimit}},
				{domain: "test-domain", descs: ds(desc("key1", "something")), overall: rlOK, st: []want{noLimit}},
				{domain: "test-domain", descs: ds(desc("key1", "value1")), overall: rlOK, st: []want{noLimit}},
				{domain: "test-domain", descs: ds(desc("key2", "value2", "subkey", "subvalue")), overall: rlOK, st: []want{noLimit}},
				{domain: "test-domain", descs: ds(desc("key5", "value5", "subkey5", "subvalue")), overall: rlOK, st: []want{noLimit}},
				{domain: "test-domain", descs: ds(desc("key1", "value1", "subkey1", "something")), overall: rlOK, st: []want{within(lim(5, second), 4)}},
				{domain: "test-domain", descs: ds(desc("key1", "value1", "subkey1", "subvalue1")), overall: rlOK, st: []want{within(lim(10, second), 9)}},
				{domain: "test-domain", descs: ds(desc("key2", "something")), overall: rlOK, st: []want{within(lim(20, minute), 19)}},
				{domain: "test-domain", descs: ds(desc("key2", "value2")), overall: rlOK, st: []want{within(lim(30, minute), 29)}},
				// "First level override with no limit. This effectively whitelists the value."
				{domain: "test-domain", descs: ds(desc("key2", "value3")), overall: rlOK, st: []want{noLimit}},
				{domain: "test-domain", descs: ds(desc("key3", "foo")), overall: rlOK, st: []want{within(lim(1, hour), 0)}},
				{domain: "test-domain", descs: ds(desc("key4", "foo")), overall: rlOK, st: []want{within(lim(1, day, "key4_rate_limit"), 0)}},
				{domain: "test-domain", descs: ds(desc("key4", "foo")), overall: rlOver, st: []want{overBy(lim(1, day, "key4_rate_limit"))}},
				{domain: "test-domain", descs: ds(desc("key5", "value5")), overall: rlOK, st: []want{within(lim(15, day), 14)}},
				{domain: "test-domain", descs: ds(desc("key5", "value5", "subkey5", "subvalue5")), overall: rlOK, st: []want{within(lim(25, day), 24)}},
				{domain: "test-domain", descs: ds(desc("key6", "foo")), overall: rlOK, st: []want{unlimited}},
				{domain: "test-domain", descs: ds(desc("key7", "unspecified_value")), overall: rlOK, st: []want{within(lim(70, minute), 69)}},
			},
		},
		{
			name:     "config_test TestConfigLimitOverride",
			fixtures: []string{"config_basic_config"},
			calls: func() []req {
				o := func(rpu uint32, unit typev3.RateLimitUnit, kv ...string) *commonrl.RateLimitDescriptor {
					d := desc(kv...)
					d.Limit = &commonrl.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: rpu, Unit: unit}
					return d
				}
				return []req{
					// An override applies only within a configured domain.
					{domain: "foo_domain", descs: ds(o(10, typev3.RateLimitUnit_DAY, "key1", "value1")), overall: rlOK, st: []want{noLimit}},
					{domain: "test-domain", descs: ds(o(10, typev3.RateLimitUnit_DAY, "key1", "value1", "subkey1", "something")), overall: rlOK, st: []want{within(lim(10, day), 9)}},
					{domain: "test-domain", descs: ds(o(42, typev3.RateLimitUnit_HOUR, "key1", "value1", "subkey1", "something")), overall: rlOK, st: []want{within(lim(42, hour), 41)}},
					{domain: "test-domain", descs: ds(o(42, typev3.RateLimitUnit_HOUR, "key1", "value1", "subkey1", "something")), overall: rlOK, st: []want{within(lim(42, hour), 40)}},
					{domain: "test-domain", descs: ds(o(42, typev3.RateLimitUnit_HOUR, "key1", "value1", "subkey1", "something_else")), overall: rlOK, st: []want{within(lim(42, hour), 41)}},
					// Even where no rule matches.
					{domain: "test-domain", descs: ds(o(1, typev3.RateLimitUnit_MINUTE, "nothing", "here")), overall: rlOK, st: []want{within(lim(1, minute), 0)}},
				}
			}(),
		},
		{
			name:     "config_test TestShadowModeConfig",
			fixtures: []string{"config_shadowmode_config"},
			calls: []req{
				{domain: "test-domain", descs: ds(desc("key1", "value1", "subkey1", "subvalue1")), hits: 11, overall: rlOK, st: []want{within(lim(10, second), 0)}},
				{domain: "test-domain", descs: ds(desc("key1", "value1", "subkey1", "something")), hits: 6, overall: rlOver, st: []want{overBy(lim(5, second))}},
				{domain: "test-domain", descs: ds(desc("key2", "something")), hits: 21, overall: rlOK, st: []want{within(lim(20, minute), 0)}},
				{domain: "test-domain", descs: ds(desc("key2", "value2")), hits: 31, overall: rlOver, st: []want{overBy(lim(30, minute))}},
			},
		},
		{
			name:     "config_test TestWildcardConfig",
			fixtures: []string{"config_wildcard"},
			calls: func() []req {
				match := func(key, value string, rpu uint32) req {
					return req{domain: "test-domain", descs: ds(desc(key, value)), overall: rlOK, st: []want{within(lim(rpu, minute), rpu-1)}}
				}
				none := func(key, value string) req {
					return req{domain: "test-domain", descs: ds(desc(key, value)), overall: rlOK, st: []want{noLimit}}
				}
				return []req{
					match("noVal", "foo1", 20), match("noVal", "foo2", 20),
					match("wild", "foo1", 20), match("wild", "foo2", 20),
					{domain: "test-domain", descs: ds(desc("nestedWild", "val1", "wild", "goo2")), overall: rlOK, st: []want{within(lim(20, minute), 19)}},
					none("wild", "bar"), none("noWild", "foo1"),
					match("midWild", "barab", 20), match("midWild", "bar123b", 20), match("midWild", "barb", 20),
					none("midWild", "bara"), none("midWild", "xbarb"),
					match("multiWild", "foo123bar456baz", 10), match("multiWild", "foobarbaz", 10),
					none("multiWild", "foo123baz"), none("multiWild", "bar456baz"),
				}
			}(),
		},
		{
			name:     "config_test share_threshold",
			fixtures: []string{"config_share_threshold"},
			calls: func() []req {
				call := func(rpu, rem uint32, kv ...string) req {
					return req{domain: "test-domain", descs: ds(desc(kv...)), overall: rlOK, st: []want{within(lim(rpu, minute), rem)}}
				}
				return []req{
					{domain: "test-domain", descs: ds(desc("files", "files/a")), hits: 60, overall: rlOK, st: []want{within(lim(100, minute), 40)}},
					{domain: "test-domain", descs: ds(desc("files", "files/b")), hits: 41, overall: rlOver, st: []want{overBy(lim(100, minute))}},
					call(100, 39, "files", "files/c"),
					call(200, 199, "nested", "parent", "files", "nested/a"),
					call(200, 198, "nested", "parent", "files", "nested/b"),
					call(300, 299, "files", "top/a", "files", "nested/a"),
					call(300, 298, "files", "top/b", "files", "nested/b"),
					call(60, 59, "route", "api/v1", "method", "GET"),
					call(60, 58, "route", "api/v2", "method", "GET"),
					call(80, 79, "service", "svc/a", "endpoint", "e1"),
					call(80, 78, "service", "svc/b", "endpoint", "e1"),
					// path shares its counter, file (share_threshold: false) does not.
					call(120, 119, "path", "path/a", "file", "file/x", "type", "t"),
					call(120, 118, "path", "path/b", "file", "file/x", "type", "t"),
					call(120, 119, "path", "path/b", "file", "file/y", "type", "t"),
					call(150, 149, "user", "user/1", "resource", "res/1", "action", "a"),
					call(150, 148, "user", "user/2", "resource", "res/2", "action", "a"),
					// An explicit value before a matching wildcard.
					call(50, 49, "file", "test1"),
					call(100, 99, "file", "test2"),
					call(100, 98, "file", "test3"),
					call(100, 99, "midpath", "/api-x-v1"),
					call(100, 98, "midpath", "/apiv1"),
					call(50, 49, "multiroute", "svcAepBrpc"),
					call(50, 48, "multiroute", "svcepXrpc"),
					call(80, 79, "midroute", "/api1v2"),
					call(80, 78, "midroute", "/api2v2"),
					call(60, 59, "tenant", "t1prod", "resource", "res1v2"),
					call(60, 58, "tenant", "t2prod", "resource", "res2v2"),
				}
			}(),
		},
		{
			// metadata goes to the response's dynamic metadata only when the
			// reference runs with RESPONSE_DYNAMIC_METADATA=true (default
			// false); Sluice never sends it.
			name:     "config_test metadata",
			fixtures: []string{"config_metadata"},
			calls: []req{
				{domain: "test-domain", descs: ds(desc("key1", "value1", "subkey1", "x")), overall: rlOK, st: []want{within(lim(5, second), 4)}},
				{domain: "test-domain", descs: ds(desc("key2", "y")), overall: rlOK, st: []want{within(lim(20, minute), 19)}},
			},
		},

		// test/integration/integration_test.go (testBasicBaseConfig,
		// testShareThreshold, testConfigReload) on its runtime configs.
		{
			name:     "integration: basic",
			fixtures: []string{"integration_basic", "integration_another"},
			calls: concat(
				[]req{
					{domain: "foo", descs: ds(desc("hello", "world")), overall: rlOK, st: []want{noLimit}},
					{domain: "basic", descs: ds(desc("key1", "foo")), overall: rlOK, st: []want{within(lim(50, second), 49)}},
				},
				times(25, func(i int) req {
					if i >= 20 {
						return req{domain: "another", descs: ds(desc("key2", "7")), overall: rlOver, st: []want{overBy(lim(20, minute))}}
					}
					return req{domain: "another", descs: ds(desc("key2", "7")), overall: rlOK, st: []want{within(lim(20, minute), uint32(20-(i+1)))}}
				}),
				times(15, func(i int) req {
					if i >= 10 {
						// The reference keeps counting key2 (remaining
						// 20-(i+1)) unless STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT,
						// where it stays at 10 as here: a denied request
						// charges nothing in Sluice.
						return req{domain: "another", descs: ds(desc("key2", "8"), desc("key3", "8")), overall: rlOver,
							st: []want{within(lim(20, minute), 10), overBy(lim(10, hour))}}
					}
					return req{domain: "another", descs: ds(desc("key2", "8"), desc("key3", "8")), overall: rlOK,
						st: []want{within(lim(20, minute), uint32(20-(i+1))), within(lim(10, hour), uint32(10-(i+1)))}}
				}),
			),
		},
		{
			name:     "integration: share_threshold",
			fixtures: []string{"integration_share_threshold"},
			calls: concat(
				times(10, func(i int) req {
					return req{domain: "share-threshold-test", descs: ds(desc("files", "files/a.pdf")), overall: rlOK, st: []want{within(lim(10, hour), uint32(9-i))}}
				}),
				[]req{{domain: "share-threshold-test", descs: ds(desc("files", "files/b.csv")), overall: rlOver, st: []want{overBy(lim(10, hour))}}},
				times(10, func(i int) req {
					return req{domain: "share-threshold-test", descs: ds(desc("files_no_share", fmt.Sprintf("files_no_share/%d", i))), overall: rlOK, st: []want{within(lim(10, hour), 9)}}
				}),
			),
		},
		{
			name:     "integration: reload config",
			fixtures: []string{"integration_reload"},
			calls: []req{
				{domain: "reload", descs: ds(desc("key1", "foo")), overall: rlOK, st: []want{within(lim(50, second), 49)}},
				{domain: "reload", descs: ds(desc("block", "foo")), overall: rlOver, st: []want{overBy(lim(0, second))}},
				{domain: "reload", descs: ds(desc("one_per_minute", "foo")), overall: rlOK, st: []want{within(lim(1, minute), 0)}},
				{domain: "reload", descs: ds(desc("one_per_minute", "foo")), overall: rlOver, st: []want{overBy(lim(1, minute))}},
			},
		},

		// integration-test/scripts/*.sh through Envoy, examples/ratelimit/config/example.yaml.
		{
			name:     "scripts simple-get and trigger-ratelimit",
			fixtures: []string{"examples_example"},
			calls: concat(
				[]req{{domain: "rl", descs: twoHeader("test", "", "shady"), overall: rlOK, st: []want{within(lim(3, minute), 2)}}},
				times(5, func(i int) req {
					if i >= 3 {
						return req{domain: "rl", descs: twoHeader("pelle", "", "not-so-shady"), overall: rlOver, st: []want{overBy(lim(3, minute))}}
					}
					return req{domain: "rl", descs: twoHeader("pelle", "", "not-so-shady"), overall: rlOK, st: []want{within(lim(3, minute), uint32(2-i))}}
				}),
			),
		},
		{
			name:     "scripts trigger-shadow-mode-key and value-included-in-stats-key-when-unspecified",
			fixtures: []string{"examples_example"},
			calls: concat(
				times(6, func(i int) req {
					return req{domain: "rl", descs: twoHeader("pelle", "", "shady"), overall: rlOK, st: []want{within(lim(3, minute), uint32(max(2-i, 0)))}}
				}),
				[]req{
					{domain: "rl", descs: ds(desc("unspec", "unspecified_value")), overall: rlOK, st: []want{within(lim(2, minute), 1)}},
					{domain: "rl", descs: ds(desc("unspec", "unspecified_value")), overall: rlOK, st: []want{within(lim(2, minute), 0)}},
					{domain: "rl", descs: ds(desc("unspec", "unspecified_value")), overall: rlOver, st: []want{overBy(lim(2, minute))}},
				},
			),
		},
		{
			name:     "script replaces",
			fixtures: []string{"examples_example"},
			calls: func() []req {
				banned := lim(0, minute, "banned_limit")
				override := lim(2, minute)
				return []req{
					// Verify that replaces increases the limit.
					{domain: "rl", descs: twoHeader("bkthomps", "banned", ""), overall: rlOver, st: []want{overBy(banned)}},
					// The reference also counts the hit on mock (1/min,
					// remaining 0); a denied request charges nothing in Sluice.
					{domain: "rl", descs: fourHeader("bkthomps", "banned", "proxy", "mock"), overall: rlOver, st: []want{overBy(banned), within(lim(1, minute), 1)}},
					{domain: "rl", descs: fourHeader("bkthomps", "banned", "proxy", "override"), overall: rlOK, st: []want{noLimit, within(override, 1)}},
					{domain: "rl", descs: fourHeader("bkthomps", "banned", "proxy", "override"), overall: rlOK, st: []want{noLimit, within(override, 0)}},
					{domain: "rl", descs: fourHeader("bkthomps", "banned", "proxy", "override"), overall: rlOver, st: []want{noLimit, overBy(override)}},
					// Verify that replaces doesn't affect the original limit.
					{domain: "rl", descs: fourHeader("my_foo", "bkthomps", "proxy", "bkthomps"), overall: rlOK, st: []want{noLimit, within(lim(2, minute), 1)}},
					{domain: "rl", descs: fourHeader("my_foo", "bkthomps", "proxy", "bkthomps"), overall: rlOK, st: []want{noLimit, within(lim(2, minute), 0)}},
					{domain: "rl", descs: fourHeader("my_foo", "bkthomps", "proxy", "bkthomps"), overall: rlOver, st: []want{noLimit, overBy(lim(2, minute))}},
					{domain: "rl", descs: fourHeader("my_foo", "bkthomps", "proxy", "not_bkthomps"), overall: rlOK, st: []want{within(lim(1, minute, "bkthomps"), 0), noLimit}},
					{domain: "rl", descs: fourHeader("my_foo", "bkthomps", "proxy", "not_bkthomps"), overall: rlOver, st: []want{overBy(lim(1, minute, "bkthomps")), noLimit}},
					{domain: "rl", descs: fourHeader("my_foo", "bkthomps", "proxy", "bkthomps"), overall: rlOver, st: []want{noLimit, overBy(lim(2, minute))}},
					// Verify that replaces can replace multiple descriptors.
					{domain: "rl", descs: fiveHeader("my_foo", "bkthomps", "proxy", "fake", "account"), overall: rlOK, st: []want{noLimit, noLimit, within(lim(4, minute), 3)}},
					{domain: "rl", descs: fiveHeader("my_foo", "bkthomps", "proxy", "fake", "account"), overall: rlOK, st: []want{noLimit, noLimit, within(lim(4, minute), 2)}},
					{domain: "rl", descs: fiveHeader("my_foo", "bkthomps", "proxy", "fake", "account"), overall: rlOK, st: []want{noLimit, noLimit, within(lim(4, minute), 1)}},
					{domain: "rl", descs: fiveHeader("my_foo", "bkthomps", "proxy", "fake", "account"), overall: rlOK, st: []want{noLimit, noLimit, within(lim(4, minute), 0)}},
					{domain: "rl", descs: fiveHeader("my_foo", "bkthomps", "proxy", "fake", "account"), overall: rlOver, st: []want{noLimit, noLimit, overBy(lim(4, minute))}},
					{domain: "rl", descs: twoHeader("foo_2", "bkthomps", ""), overall: rlOK, st: []want{within(lim(1, minute, "bkthomps"), 0)}},
					{domain: "rl", descs: twoHeader("foo_2", "bkthomps", ""), overall: rlOver, st: []want{overBy(lim(1, minute, "bkthomps"))}},
					{domain: "rl", descs: fourHeader("foo_3", "bar_3", "proxy", "fake"), overall: rlOK, st: []want{within(lim(3, minute), 2), within(lim(2, minute, "fake_name"), 1)}},
					{domain: "rl", descs: fourHeader("foo_3", "bar_3", "proxy", "fake"), overall: rlOK, st: []want{within(lim(3, minute), 1), within(lim(2, minute, "fake_name"), 0)}},
					// The reference counts foo_3/bar_3 again (remaining 0).
					{domain: "rl", descs: fourHeader("foo_3", "bar_3", "proxy", "fake"), overall: rlOver, st: []want{within(lim(3, minute), 1), overBy(lim(2, minute, "fake_name"))}},
					{domain: "rl", descs: fiveHeader("my_foo", "bkthomps", "proxy", "fake", "account"), overall: rlOver, st: []want{noLimit, noLimit, overBy(lim(4, minute))}},
				}
			}(),
		},
		{
			name:     "example.yaml: a limit and nested descriptors on one key, unlimited",
			fixtures: []string{"examples_example"},
			calls: []req{
				{domain: "rl", descs: ds(desc("foo", "x")), overall: rlOK, st: []want{within(lim(2, minute), 1)}},
				{domain: "rl", descs: ds(desc("foo", "x", "bay", "y")), overall: rlOK, st: []want{unlimited}},
				{domain: "rl", descs: ds(desc("foo", "x", "baz", "y")), overall: rlOK, st: []want{within(lim(1, second), 0)}},
				{domain: "rl", descs: ds(desc("qux", "q")), hits: 100, overall: rlOK, st: []want{unlimited}},
			},
		},
		{
			// quota_mode: over-limit quota descriptors refuse the request
			// only when all of them are over.
			name:     "script quota",
			fixtures: []string{"examples_example"},
			calls: []req{
				{domain: "rl", descs: ds(desc("service", "service_1"), desc("service", "service_2")), overall: rlOK,
					st: []want{within(lim(1, minute), 0), within(lim(2, minute), 1)}},
				{domain: "rl", descs: ds(desc("service", "service_1"), desc("service", "service_2")), overall: rlOK,
					st: []want{overBy(lim(1, minute)), within(lim(2, minute), 0)}},
				{domain: "rl", descs: ds(desc("service", "service_1"), desc("service", "service_2")), overall: rlOver,
					st: []want{overBy(lim(1, minute)), overBy(lim(2, minute))}},
			},
		},
		{
			// Envoy checks with hits_addend 0 on the request and charges 1 on
			// stream done (apply_on_stream_done), whose answer it ignores.
			// The reference admits the third request (a check passes while
			// used <= limit, so limit+1 requests pass); in Sluice a check is
			// over once the quota is used up (README "Rate limits"), so the
			// third request is refused.
			name:     "script token-quota",
			fixtures: []string{"examples_example"},
			calls: []req{
				{domain: "rl", descs: ds(dh(0, "service", "service_2")), overall: rlOK, st: []want{within(lim(2, minute), 2)}},
				{domain: "rl", descs: ds(dh(1, "service", "service_2")), overall: rlOK, st: []want{within(lim(2, minute), 1)}},
				{domain: "rl", descs: ds(dh(0, "service", "service_2")), overall: rlOK, st: []want{within(lim(2, minute), 1)}},
				{domain: "rl", descs: ds(dh(1, "service", "service_2")), overall: rlOK, st: []want{within(lim(2, minute), 0)}},
				{domain: "rl", descs: ds(dh(0, "service", "service_2")), overall: rlOver, st: []want{overBy(lim(2, minute))}},
			},
		},

		// test/service/ratelimit_test.go, with limits from serviceRules.
		{
			name:     "service_test TestService",
			fixtures: []string{serviceRules},
			calls: []req{
				{domain: "service", descs: ds(desc("hello", "world")), overall: rlOK, st: []want{noLimit}},
				{domain: "service", descs: ds(dh(11, "named", "bar"), desc("hello", "world")), overall: rlOver, st: []want{overBy(lim(10, minute, "key_name")), noLimit}},
				{domain: "service", descs: ds(desc("hello", "world"), dh(11, "named", "bar")), overall: rlOver, st: []want{noLimit, overBy(lim(10, minute, "key_name"))}},
			},
		},
		{
			name:     "service_test TestUnlimited",
			fixtures: []string{serviceRules},
			calls: []req{
				{domain: "service", descs: ds(desc("regular", "bar"), desc("hello", "world"), desc("unlimited", "qux")), overall: rlOK,
					st: []want{within(lim(2, minute), 1), noLimit, unlimited}},
				// constructLimitsToCheck marks a descriptor unlimited before
				// applying replaces, so a replaced unlimited one stays so.
				{domain: "service", descs: ds(desc("unlimited_named", "x"), desc("replacer", "x")), overall: rlOK,
					st: []want{unlimited, within(lim(5, minute), 4)}},
			},
		},
		{
			// utils.UnitToDivider: a week is 7 days, a month 30, a year 365;
			// units are read in any case (strings.ToUpper).
			name:     "units week, month and year",
			fixtures: []string{serviceRules},
			calls: []req{
				{domain: "service", descs: ds(desc("week", "w"), desc("month", "m"), desc("year", "y")), overall: rlOK,
					st: []want{within(lim(7, rlsv3.RateLimitResponse_RateLimit_WEEK), 6), within(lim(30, rlsv3.RateLimitResponse_RateLimit_MONTH), 29),
						within(lim(365, rlsv3.RateLimitResponse_RateLimit_YEAR), 364)}},
			},
		},
		{
			name:     "service_test TestRuleShadowMode and TestMixedRuleShadowMode",
			fixtures: []string{serviceRules},
			calls: []req{
				{domain: "service", descs: ds(dh(3, "shadow", "a"), dh(3, "shadow", "b")), overall: rlOK, st: []want{within(lim(2, minute), 0), within(lim(2, minute), 0)}},
				{domain: "service", descs: ds(dh(3, "shadow", "c"), dh(3, "regular", "c")), overall: rlOver, st: []want{within(lim(2, minute), 0), overBy(lim(2, minute))}},
			},
		},
		{
			name:     "service_test quota mode",
			fixtures: []string{serviceRules},
			calls: []req{
				// TestServicePerDescriptorQuotaMode: a regular descriptor over
				// refuses whatever the quota ones say. (The reference counts
				// the quota hit too: remaining 2.)
				{domain: "service", descs: ds(dh(3, "regular", "a"), desc("quota2", "a")), overall: rlOver, st: []want{overBy(lim(2, minute)), within(lim(3, minute), 3)}},
				// TestServiceMixedPerDescriptorModes: the only quota descriptor is over.
				{domain: "service", descs: ds(desc("regular", "b"), dh(3, "quota", "b")), overall: rlOver, st: []want{within(lim(2, minute), 1), overBy(lim(2, minute))}},
				// Refused, so nothing stays charged (the reference keeps both hits).
				{domain: "service", descs: ds(desc("regular", "b"), desc("quota", "b")), overall: rlOK, st: []want{within(lim(2, minute), 1), within(lim(2, minute), 1)}},
				// TestServiceMixedPerDescriptorModesUnderLimit.
				{domain: "service", descs: ds(desc("regular", "c"), desc("quota", "c")), overall: rlOK, st: []want{within(lim(2, minute), 1), within(lim(2, minute), 1)}},
				// TestServiceQuotaModeOnlyAllOverTheLimit.
				{domain: "service", descs: ds(dh(2, "quota", "d")), overall: rlOK, st: []want{within(lim(2, minute), 0)}},
				{domain: "service", descs: ds(desc("quota", "d"), dh(4, "quota2", "d")), overall: rlOver, st: []want{overBy(lim(2, minute)), overBy(lim(3, minute))}},
				{domain: "service", descs: ds(desc("quota2", "d")), overall: rlOK, st: []want{within(lim(3, minute), 2)}},
				// TestServiceQuotaModeOnlySomeOverTheLimit: the over one says
				// OVER_LIMIT, the request passes, and both are counted.
				{domain: "service", descs: ds(dh(3, "quota", "e"), desc("quota2", "e")), overall: rlOK, st: []want{overBy(lim(2, minute)), within(lim(3, minute), 2)}},
				{domain: "service", descs: ds(dh(0, "quota", "e")), overall: rlOver, st: []want{overBy(lim(2, minute))}},
				// A quota descriptor in shadow_mode is never over, so the
				// request passes (as the reference counts it).
				{domain: "service", descs: ds(dh(2, "shadow_quota", "f")), overall: rlOK, st: []want{within(lim(1, minute), 0)}},
				{domain: "service", descs: ds(dh(2, "shadow_quota", "f"), dh(3, "quota", "f")), overall: rlOK, st: []want{within(lim(1, minute), 0), overBy(lim(2, minute))}},
			},
		},
		{
			// utils.GetHitsAddends: a descriptor's hits_addend, even 0, else
			// the request's, with 0 meaning 1.
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

// TestCompatInvalidRequests: the reference fails a request without domain or
// descriptors ("rate limit domain must not be empty", "rate limit descriptor
// list must not be empty"), as a plain error (gRPC Unknown); Sluice answers
// InvalidArgument, the code for a malformed request.
func TestCompatInvalidRequests(t *testing.T) {
	h := newCompat(t, redistest.Client(t), "config_basic_config")
	for _, r := range []*rlsv3.RateLimitRequest{
		{Descriptors: ds(desc("hello", "world")), HitsAddend: 1},
		{Domain: "test-domain", HitsAddend: 1},
	} {
		resp, err := h.client.ShouldRateLimit(context.Background(), r)
		if status.Code(err) != codes.InvalidArgument || resp != nil {
			t.Errorf("%v: got %v, %v; want no response and InvalidArgument", r, resp, err)
		}
	}
}

// TestCompatDurationUntilReset: the reference's integration test hits a
// daily limit twice, 2s apart, and expects duration_until_reset to shrink
// (epoch-aligned windows). Sluice does that with algorithm: fixed_window; its
// default sliding window frees quota one window after the last hits of its
// oldest counted sub-window (README "Algorithms and accuracy"), so a second
// hit does not bring the reset closer, while a check (hits_addend 0) sees it
// shrink.
func TestCompatDurationUntilReset(t *testing.T) {
	const fixed = "domain: another_fixed\nalgorithm: fixed_window\ndescriptors:\n  - key: key4\n    rate_limit: {unit: day, requests_per_unit: 20}\n"
	h := newCompat(t, redistest.Client(t), "integration_another", fixed)
	reset := func(domain string, d *commonrl.RateLimitDescriptor) time.Duration {
		t.Helper()
		resp := h.call(t, domain, d)
		if resp.OverallCode != rlOK || resp.Statuses[0].DurationUntilReset == nil {
			t.Fatalf("%s: %v", domain, resp)
		}
		return resp.Statuses[0].DurationUntilReset.AsDuration()
	}

	now := time.Now()
	d1 := reset("another_fixed", desc("key4", "durTest"))
	// utils.CalculateReset: unit - now % unit, from the Unix epoch.
	untilMidnight := 24*time.Hour - now.Sub(now.Truncate(24*time.Hour))
	if diff := d1 - untilMidnight; diff < -2*time.Second || diff > 2*time.Second {
		t.Errorf("fixed window: duration_until_reset %v, want about %v (the rest of the UTC day)", d1, untilMidnight)
	}
	time.Sleep(20 * time.Millisecond)
	if d2 := reset("another_fixed", desc("key4", "durTest")); d2 >= d1 {
		t.Errorf("fixed window: duration_until_reset %v then %v, want it to shrink", d1, d2)
	}

	s1 := reset("another", desc("key4", "durTest"))
	time.Sleep(20 * time.Millisecond)
	if s2 := reset("another", desc("key4", "durTest")); s2 < s1 || s2 > 24*time.Hour {
		t.Errorf("sliding window: duration_until_reset %v after a second hit, want from %v to 24h", s2, s1)
	}
	time.Sleep(20 * time.Millisecond)
	s3 := reset("another", dh(0, "key4", "durTest"))
	time.Sleep(20 * time.Millisecond)
	if s4 := reset("another", dh(0, "key4", "durTest")); s4 >= s3 {
		t.Errorf("sliding window: duration_until_reset %v then %v for checks, want it to shrink", s3, s4)
	}
}

// TestCompatNearLimit: the reference counts a hit near the limit once the
// count passes floor(limit * NEAR_LIMIT_RATIO) (0.8), below the limit itself.
func TestCompatNearLimit(t *testing.T) {
	h := newCompat(t, redistest.Client(t), serviceRules)
	near := func() float64 {
		return testutil.ToFloat64(mustCounter(t, h.reg, "sluice_ratelimit_decisions_total", map[string]string{"domain": "service", "code": "near_limit"}))
	}
	h.check(t, 0, req{domain: "service", descs: ds(dh(8, "named", "n")), overall: rlOK, st: []want{within(lim(10, minute, "key_name"), 2)}})
	if got := near(); got != 0 {
		t.Errorf("near_limit decisions at 8 of 10 = %v, want 0 (threshold floor(10*0.8) = 8 not passed)", got)
	}
	h.check(t, 1, req{domain: "service", descs: ds(desc("named", "n")), overall: rlOK, st: []want{within(lim(10, minute, "key_name"), 1)}})
	if got := near(); got != 1 {
		t.Errorf("near_limit decisions at 9 of 10 = %v, want 1", got)
	}
}
