package ratelimitsvc

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// mustParse parses one rules file or fails the test.
func mustParse(t testing.TB, src string) *Rules {
	t.Helper()
	r, err := ParseRules([]File{{Name: "test.yaml", Data: []byte(src)}})
	if err != nil {
		t.Fatalf("ParseRules:\n%v", err)
	}
	return r
}

// entries builds a descriptor from "key=value" strings.
func entries(kv ...string) []Entry {
	out := make([]Entry, len(kv))
	for i, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		out[i] = Entry{Key: k, Value: v}
	}
	return out
}

// limitsString summarises limits as "10/1s,20/1m0s" ("unlimited" for one).
func limitsString(ls []*Limit) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		if l.Unlimited {
			parts[i] = "unlimited"
			continue
		}
		parts[i] = fmt.Sprintf("%d/%s", l.RequestsPerUnit, l.Window)
	}
	return strings.Join(parts, ",")
}

// matchConfig puts side by side the matching situations the rule format
// has (the reference's README and config tests describe the same ones).
const matchConfig = `
domain: test
descriptors:
  # A grouping value with no limit; below it a key-only default and an
  # exact value with a limit of its own.
  - key: section
    value: s1
    descriptors:
      - key: item
        rate_limit: {unit: second, requests_per_unit: 6}
      - key: item
        value: i1
        rate_limit: {unit: second, requests_per_unit: 12}

  # A key-only default, an exact override, and an exact value without a
  # limit, which exempts it (no fallback to the default).
  - key: plan
    rate_limit: {unit: minute, requests_per_unit: 18}
  - key: plan
    value: team
    rate_limit: {unit: minute, requests_per_unit: 36}
  - key: plan
    value: internal

  # A limit on a descriptor that also has children.
  - key: store
    value: s5
    rate_limit: {unit: day, requests_per_unit: 14}
    descriptors:
      - key: aisle
        value: a5
        rate_limit: {unit: day, requests_per_unit: 28}

  - key: health
    rate_limit: {unlimited: true}

  # Wildcards: trailing, middle, several; key-only fallback after them.
  - key: sku
    value: item*
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: sku
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: mid
    value: ca*t
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: multi
    value: red*green*blue
    rate_limit: {unit: minute, requests_per_unit: 4}
  - key: any
    value: "*"
    rate_limit: {unit: minute, requests_per_unit: 5}

  # Wildcards are tried in config order: the first match wins, even if a
  # later pattern is longer.
  - key: order
    value: a*
    rate_limit: {unit: minute, requests_per_unit: 6}
  - key: order
    value: ab*
    rate_limit: {unit: minute, requests_per_unit: 7}

  # An exact value beats a wildcard.
  - key: doc
    value: pinned
    rate_limit: {unit: minute, requests_per_unit: 50}
  - key: doc
    value: pin*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 100}

  # share_threshold at several levels, mixed with a non-sharing wildcard.
  - key: docs
    value: docs/*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 8}
  - key: dir
    value: dir/*
    share_threshold: true
    descriptors:
      - key: file
        value: f/*
        descriptors:
          - key: kind
            rate_limit: {unit: minute, requests_per_unit: 9}
  - key: docs
    value: top/*
    share_threshold: true
    descriptors:
      - key: docs
        value: sub/*
        share_threshold: true
        rate_limit: {unit: minute, requests_per_unit: 11}

  # The reference joins key and value with '_'; Sluice compares them apart.
  - key: a
    value: b_c
    rate_limit: {unit: minute, requests_per_unit: 12}
`

func TestRulesMatch(t *testing.T) {
	r := mustParse(t, matchConfig)
	tests := []struct {
		name        string
		domain      string
		entries     []Entry
		wantRule    string // "" when nothing applies
		wantLimits  string
		wantCounter []Entry // nil: the request's own entries
	}{
		{name: "unknown domain", domain: "nope", entries: entries("plan=x")},
		{name: "no entries", entries: nil},
		{name: "placeholder without limit", entries: entries("section=s1")},
		{name: "no key-only default at first level", entries: entries("section=something")},
		{name: "nested key-only default", entries: entries("section=s1", "item=something"),
			wantRule: "section_s1.item", wantLimits: "6/1s"},
		{name: "nested exact beats key-only", entries: entries("section=s1", "item=i1"),
			wantRule: "section_s1.item_i1", wantLimits: "12/1s"},
		{name: "key-only default", entries: entries("plan=something"), wantRule: "plan", wantLimits: "18/1m0s"},
		{name: "exact override", entries: entries("plan=team"), wantRule: "plan_team", wantLimits: "36/1m0s"},
		{name: "exact without limit is exempt, no fallback to key-only", entries: entries("plan=internal")},
		{name: "request longer than config path", entries: entries("plan=team", "extra=x")},
		{name: "limit on a node with children", entries: entries("store=s5"),
			wantRule: "store_s5", wantLimits: "14/24h0m0s"},
		{name: "child exact", entries: entries("store=s5", "aisle=a5"),
			wantRule: "store_s5.aisle_a5", wantLimits: "28/24h0m0s"},
		{name: "child unmatched", entries: entries("store=s5", "aisle=other")},
		{name: "unlimited", entries: entries("health=x"), wantRule: "health", wantLimits: "unlimited"},
		{name: "trailing wildcard", entries: entries("sku=item123"), wantRule: "sku_item*", wantLimits: "1/1m0s"},
		{name: "wildcard matches empty rest", entries: entries("sku=item"), wantRule: "sku_item*", wantLimits: "1/1m0s"},
		{name: "wildcard before key-only", entries: entries("sku=ite"), wantRule: "sku", wantLimits: "2/1m0s"},
		{name: "request value equal to pattern", entries: entries("sku=item*"), wantRule: "sku_item*", wantLimits: "1/1m0s"},
		{name: "middle wildcard", entries: entries("mid=caXYZt"), wantRule: "mid_ca*t", wantLimits: "3/1m0s"},
		{name: "middle wildcard no overlap of prefix and suffix", entries: entries("mid=ca")},
		{name: "middle wildcard wrong suffix", entries: entries("mid=caXs")},
		{name: "multi wildcard", entries: entries("multi=red1green2blue"), wantRule: "multi_red*green*blue", wantLimits: "4/1m0s"},
		{name: "multi wildcard empty segments", entries: entries("multi=redgreenblue"), wantRule: "multi_red*green*blue", wantLimits: "4/1m0s"},
		{name: "multi wildcard out of order", entries: entries("multi=redbluegreen")},
		{name: "star matches empty value", entries: entries("any="), wantRule: "any_*", wantLimits: "5/1m0s"},
		{name: "first wildcard in config order wins", entries: entries("order=abc"), wantRule: "order_a*", wantLimits: "6/1m0s"},
		{name: "exact beats shared wildcard", entries: entries("doc=pinned"), wantRule: "doc_pinned", wantLimits: "50/1m0s"},
		{name: "shared wildcard", entries: entries("doc=pin2"), wantRule: "doc_pin*", wantLimits: "100/1m0s",
			wantCounter: entries("doc=pin*")},
		{name: "share_threshold single level", entries: entries("docs=docs/a.pdf"), wantRule: "docs_docs/*",
			wantLimits: "8/1m0s", wantCounter: entries("docs=docs/*")},
		{name: "share_threshold on an upper level only", entries: entries("dir=dir/x", "file=f/y", "kind=pdf"),
			wantRule: "dir_dir/*.file_f/*.kind", wantLimits: "9/1m0s",
			wantCounter: entries("dir=dir/*", "file=f/y", "kind=pdf")},
		{name: "share_threshold same key at two levels", entries: entries("docs=top/1", "docs=sub/2"),
			wantRule: "docs_top/*.docs_sub/*", wantLimits: "11/1m0s",
			wantCounter: entries("docs=top/*", "docs=sub/*")},
		{name: "exact match of a pattern does not share", entries: entries("docs=docs/*"), wantRule: "docs_docs/*",
			wantLimits: "8/1m0s"},
		{name: "key and value compared apart (the reference would match a_b_c)", entries: entries("a_b=c")},
		{name: "key and value exact", entries: entries("a=b_c"), wantRule: "a_b_c", wantLimits: "12/1m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			domain := tt.domain
			if domain == "" {
				domain = "test"
			}
			m, ok := r.Match(domain, tt.entries)
			if tt.wantRule == "" {
				if ok {
					t.Fatalf("Match = %q %s, want no match", m.Rule, limitsString(m.Limits))
				}
				return
			}
			if !ok {
				t.Fatalf("no match, want %q", tt.wantRule)
			}
			if m.Rule != tt.wantRule {
				t.Errorf("Rule = %q, want %q", m.Rule, tt.wantRule)
			}
			if got := limitsString(m.Limits); got != tt.wantLimits {
				t.Errorf("limits = %s, want %s", got, tt.wantLimits)
			}
			want := tt.wantCounter
			if want == nil {
				want = tt.entries
			}
			if !slices.Equal(m.CounterEntries, want) {
				t.Errorf("CounterEntries = %v, want %v", m.CounterEntries, want)
			}
		})
	}
}

func TestRulesMatchDoesNotModifyRequest(t *testing.T) {
	r := mustParse(t, matchConfig)
	req := entries("docs=docs/a.pdf")
	m, ok := r.Match("test", req)
	if !ok || m.CounterEntries[0].Value != "docs/*" {
		t.Fatalf("Match = %+v, %v", m, ok)
	}
	if req[0].Value != "docs/a.pdf" {
		t.Errorf("request entries changed: %v", req)
	}
}

func TestRulesMatchNilAndEmpty(t *testing.T) {
	var r *Rules
	if _, ok := r.Match("x", entries("a=b")); ok {
		t.Error("nil Rules matched")
	}
	if _, ok := r.Domain("x"); ok {
		t.Error("nil Rules has a domain")
	}
	if r.Domains() != nil {
		t.Error("nil Rules has domains")
	}
	empty, err := ParseRules(nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := json.Marshal(empty); err != nil || string(b) != `{"domains":[]}` {
		t.Errorf("MarshalJSON = %s, %v", b, err)
	}
}

func TestRulesConcurrentMatch(t *testing.T) {
	r := mustParse(t, matchConfig)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				req := entries("docs=docs/"+strconv.Itoa(g*1000+i), "x=y")[:1]
				m, ok := r.Match("test", req)
				if !ok || m.CounterEntries[0].Value != "docs/*" || m.Rule != "docs_docs/*" {
					t.Errorf("Match = %+v, %v", m, ok)
					return
				}
				_, _ = r.Domain("test")
				_ = r.Domains()
			}
		}()
	}
	if _, err := json.Marshal(r); err != nil {
		t.Error(err)
	}
	wg.Wait()
}

func TestRulesMatchAllocs(t *testing.T) {
	r := mustParse(t, matchConfig)
	req := entries("section=s1", "item=i1")
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := r.Match("test", req); !ok {
			t.Fatal("no match")
		}
	})
	if allocs != 0 {
		t.Errorf("Match allocates %v times, want 0", allocs)
	}
}

func TestRulesLimitFields(t *testing.T) {
	r := mustParse(t, `
domain: ext
algorithm: fixed_window
failure_mode_deny: true
descriptors:
  - key: tenant
    shadow_mode: true
    quota_mode: true
    detailed_metric: true
    metadata: {team: api, weight: 2, ratio: 0.5, tags: [a, b], on: true}
    rate_limit: {unit: Minute, requests_per_unit: 100}
    rate_limits:
      - {requests_per_unit: 10, unit: SECOND, algorithm: sliding_window, unit_multiplier: 5, sub_windows: 20}
      - {name: daily, requests_per_unit: 1000, unit: day, replaces: [{name: other}]}
      - {requests_per_unit: 5, unit: week, algorithm: sliding_window}
      - {requests_per_unit: 6, unit: month}
      - {requests_per_unit: 7, unit: year}
  - key: other
    rate_limit: {name: other, unit: hour, requests_per_unit: 0}
`)
	d, ok := r.Domain("ext")
	if !ok || !d.FailureModeDeny || !d.FailureModeSet || d.Algorithm != limiter.FixedWindow || d.Name != "ext" {
		t.Fatalf("Domain = %+v, %v", d, ok)
	}
	m, ok := r.Match("ext", entries("tenant=acme"))
	if !ok {
		t.Fatal("no match")
	}
	const day = 24 * time.Hour
	want := []Limit{
		{ID: "tenant#0", RequestsPerUnit: 100, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE, UnitMultiplier: 1,
			Window: time.Minute, Algorithm: limiter.FixedWindow, SubWindows: 1, Line: 11},
		{ID: "tenant#1", RequestsPerUnit: 10, Unit: rlsv3.RateLimitResponse_RateLimit_SECOND, UnitMultiplier: 5,
			Window: 5 * time.Second, Algorithm: limiter.SlidingWindow, SubWindows: 20, Line: 13},
		{ID: "daily", Name: "daily", RequestsPerUnit: 1000, Unit: rlsv3.RateLimitResponse_RateLimit_DAY, UnitMultiplier: 1,
			Window: day, Algorithm: limiter.FixedWindow, SubWindows: 1, Replaces: []string{"other"}, Line: 14},
		{ID: "tenant#3", RequestsPerUnit: 5, Unit: rlsv3.RateLimitResponse_RateLimit_WEEK, UnitMultiplier: 1,
			Window: 7 * day, Algorithm: limiter.SlidingWindow, SubWindows: 10, Line: 15},
		{ID: "tenant#4", RequestsPerUnit: 6, Unit: rlsv3.RateLimitResponse_RateLimit_MONTH, UnitMultiplier: 1,
			Window: 30 * day, Algorithm: limiter.FixedWindow, SubWindows: 1, Line: 16},
		{ID: "tenant#5", RequestsPerUnit: 7, Unit: rlsv3.RateLimitResponse_RateLimit_YEAR, UnitMultiplier: 1,
			Window: 365 * day, Algorithm: limiter.FixedWindow, SubWindows: 1, Line: 17},
	}
	if len(m.Limits) != len(want) {
		t.Fatalf("got %d limits, want %d", len(m.Limits), len(want))
	}
	for i, w := range want {
		w.Shadow, w.Quota, w.DetailedMetric, w.File = true, true, true, "test.yaml"
		got := *m.Limits[i]
		// What responses repeat, derived from the fields above (Limit.finish).
		wantPolicy := `"` + w.ID + `";q=` + strconv.FormatUint(w.RequestsPerUnit, 10) + ";w=" + strconv.FormatInt(int64(w.Window/time.Second), 10)
		if got.policy != wantPolicy || got.current.GetRequestsPerUnit() != uint32(w.RequestsPerUnit) || got.current.GetUnit() != w.Unit ||
			got.current.GetUnitMultiplier().GetValue() != map[bool]uint32{true: w.UnitMultiplier, false: 0}[w.UnitMultiplier > 1] {
			t.Errorf("limit %d: policy %s, current limit %v; want %s and the limit", i, got.policy, got.current, wantPolicy)
		}
		got.current, got.sfName, got.policy, got.override = nil, "", "", false
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", w) {
			t.Errorf("limit %d:\n got %+v\nwant %+v", i, got, w)
		}
	}
	wantMeta := `{"on":true,"ratio":0.5,"tags":["a","b"],"team":"api","weight":2}`
	if b, _ := json.Marshal(m.Metadata); string(b) != wantMeta {
		t.Errorf("Metadata = %s, want %s", b, wantMeta)
	}
	if m, _ := r.Match("ext", entries("other=x")); m.Limits[0].RequestsPerUnit != 0 || m.Limits[0].Shadow {
		t.Errorf("other = %+v", m.Limits[0])
	}
	if got := r.Domains(); !slices.Equal(got, []string{"ext"}) {
		t.Errorf("Domains = %v", got)
	}
}

func TestRulesExampleConfig(t *testing.T) {
	r, err := LoadRules("../config/ratelimit/tiers.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d, ok := r.Domain("sluice")
	if !ok || d.FailureModeDeny || !d.FailureModeSet || d.Algorithm != limiter.SlidingWindow {
		t.Fatalf("Domain = %+v, %v", d, ok)
	}
	tests := []struct {
		name       string
		entries    []Entry
		wantRule   string
		wantLimits string
		wantShadow bool
	}{
		{"free tenant", entries("tier=free", "tenant_id=acme"), "tier_free.tenant_id", "10/1s,10000/24h0m0s", false},
		{"free user of a tenant", entries("tier=free", "tenant_id=acme", "user_id=u1"), "tier_free.tenant_id.user_id", "5/1s,2000/24h0m0s", false},
		{"a user without a tenant is not limited", entries("tier=free", "user_id=u1"), "", "", false},
		{"basic tenant", entries("tier=basic", "tenant_id=acme"), "tier_basic.tenant_id", "50/1s,100000/24h0m0s", false},
		{"basic user", entries("tier=basic", "tenant_id=acme", "user_id=u1"), "tier_basic.tenant_id.user_id", "20/1s,20000/24h0m0s", false},
		{"pro tenant", entries("tier=pro", "tenant_id=acme"), "tier_pro.tenant_id", "200/1s,1000000/24h0m0s", false},
		{"pro user", entries("tier=pro", "tenant_id=acme", "user_id=u1"), "tier_pro.tenant_id.user_id", "50/1s,100000/24h0m0s", false},
		{"enterprise tenant", entries("tier=enterprise", "tenant_id=acme"), "tier_enterprise.tenant_id", "5000/10s,50000000/24h0m0s", false},
		{"enterprise user shadow", entries("tier=enterprise", "tenant_id=acme", "user_id=u1"), "tier_enterprise.tenant_id.user_id", "200/1s,1000000/24h0m0s", true},
		{"unknown tier falls back", entries("tier=trial", "tenant_id=acme"), "tier.tenant_id", "10/1s,10000/24h0m0s", false},
		{"unknown tier user falls back", entries("tier=trial", "tenant_id=acme", "user_id=u1"), "tier.tenant_id.user_id", "5/1s,2000/24h0m0s", false},
		{"anonymous per ip", entries("tier=anonymous", "remote_address=1.2.3.4"), "tier_anonymous.remote_address", "60/1m0s,1000/24h0m0s", false},
		{"anonymous tenant is not shared-limited", entries("tier=anonymous", "tenant_id=anonymous"), "", "", false},
		{"identified callers are not limited per ip and tier", entries("tier=pro", "remote_address=1.2.3.4"), "", "", false},
		{"every address has a ceiling (fixed window: every request counts there)", entries("remote_address=1.2.3.4"), "remote_address", "500/1s", false},
		{"requests ext_proc did not identify, per ip", entries("identity=missing", "remote_address=1.2.3.4"), "identity_missing.remote_address", "10/1s", false},
		{"tier alone", entries("tier=pro"), "", "", false},
		{"unknown key", entries("tier=pro", "org=x"), "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := r.Match("sluice", tt.entries)
			if tt.wantRule == "" {
				if ok {
					t.Fatalf("matched %q", m.Rule)
				}
				return
			}
			if !ok || m.Rule != tt.wantRule || limitsString(m.Limits) != tt.wantLimits {
				t.Fatalf("Match = %q %s (ok %v), want %q %s", m.Rule, limitsString(m.Limits), ok, tt.wantRule, tt.wantLimits)
			}
			for _, l := range m.Limits {
				if l.Shadow != tt.wantShadow {
					t.Errorf("%s: Shadow = %v", l.ID, l.Shadow)
				}
				if l.Name == "" || l.ID != l.Name {
					t.Errorf("limit %+v: want a name as ID", l)
				}
			}
			wantBurst := limiter.SlidingWindow
			if m.Rule == "remote_address" {
				wantBurst = limiter.FixedWindow // every request counts there: the cheaper window
			}
			if burst := m.Limits[0]; burst.Algorithm != wantBurst {
				t.Errorf("burst algorithm = %s; want %s", burst.Algorithm, wantBurst)
			}
			if len(m.Limits) < 2 {
				return
			}
			if daily := m.Limits[1]; daily.Algorithm != limiter.FixedWindow {
				t.Errorf("daily algorithm = %s", daily.Algorithm)
			}
		})
	}
}

func TestUnitDuration(t *testing.T) {
	tests := []struct {
		name   string
		unit   rlsv3.RateLimitResponse_RateLimit_Unit
		want   time.Duration
		wantOK bool
	}{
		{"unknown", rlsv3.RateLimitResponse_RateLimit_UNKNOWN, 0, false},
		{"second", rlsv3.RateLimitResponse_RateLimit_SECOND, time.Second, true},
		{"minute", rlsv3.RateLimitResponse_RateLimit_MINUTE, time.Minute, true},
		{"hour", rlsv3.RateLimitResponse_RateLimit_HOUR, time.Hour, true},
		{"day", rlsv3.RateLimitResponse_RateLimit_DAY, 24 * time.Hour, true},
		{"week", rlsv3.RateLimitResponse_RateLimit_WEEK, 7 * 24 * time.Hour, true},
		{"month is 30 days", rlsv3.RateLimitResponse_RateLimit_MONTH, 30 * 24 * time.Hour, true},
		{"year is 365 days", rlsv3.RateLimitResponse_RateLimit_YEAR, 365 * 24 * time.Hour, true},
		{"out of range", 99, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := UnitDuration(tt.unit)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("UnitDuration(%v) = %v, %v; want %v, %v", tt.unit, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestOverrideUnit(t *testing.T) {
	tests := []struct {
		name     string
		unit     typev3.RateLimitUnit
		wantUnit rlsv3.RateLimitResponse_RateLimit_Unit
		want     time.Duration
		wantOK   bool
	}{
		{"unknown", typev3.RateLimitUnit_UNKNOWN, 0, 0, false},
		{"second", typev3.RateLimitUnit_SECOND, rlsv3.RateLimitResponse_RateLimit_SECOND, time.Second, true},
		{"minute", typev3.RateLimitUnit_MINUTE, rlsv3.RateLimitResponse_RateLimit_MINUTE, time.Minute, true},
		{"hour", typev3.RateLimitUnit_HOUR, rlsv3.RateLimitResponse_RateLimit_HOUR, time.Hour, true},
		{"day", typev3.RateLimitUnit_DAY, rlsv3.RateLimitResponse_RateLimit_DAY, 24 * time.Hour, true},
		{"month", typev3.RateLimitUnit_MONTH, rlsv3.RateLimitResponse_RateLimit_MONTH, 30 * 24 * time.Hour, true},
		{"year", typev3.RateLimitUnit_YEAR, rlsv3.RateLimitResponse_RateLimit_YEAR, 365 * 24 * time.Hour, true},
		{"out of range", 42, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, d, ok := OverrideUnit(tt.unit)
			if u != tt.wantUnit || d != tt.want || ok != tt.wantOK {
				t.Errorf("OverrideUnit(%v) = %v, %v, %v; want %v, %v, %v", tt.unit, u, d, ok, tt.wantUnit, tt.want, tt.wantOK)
			}
		})
	}
}

func ExampleRules_Match() {
	rules, err := ParseRules([]File{{Name: "tiers.yaml", Data: []byte(`
domain: sluice
descriptors:
  - key: tier
    value: pro
    descriptors:
      - key: tenant_id
        rate_limits:
          - {name: burst, requests_per_unit: 200, unit: second}
          - {requests_per_unit: 1000000, unit: day, algorithm: fixed_window}
`)}})
	if err != nil {
		fmt.Println(err)
		return
	}
	m, ok := rules.Match("sluice", []Entry{{"tier", "pro"}, {"tenant_id", "acme"}})
	fmt.Println(ok, m.Rule)
	for _, l := range m.Limits {
		fmt.Println(l.ID, l.RequestsPerUnit, l.Window, l.Algorithm)
	}
	_, ok = rules.Match("sluice", []Entry{{"tier", "pro"}})
	fmt.Println(ok)
	// Output:
	// true tier_pro.tenant_id
	// burst 200 1s sliding_window
	// tier_pro.tenant_id#1 1000000 24h0m0s fixed_window
	// false
}

func ExampleParseRules() {
	_, err := ParseRules([]File{{Name: "bad.yaml", Data: []byte(`
domain: sluice
descriptors:
  - key: tier
    rate_limit: {unit: fortnight, requests_per_unit: 10}
  - key: user
    ratelimit: {unit: second}
`)}})
	fmt.Println(err)
	// Output:
	// bad.yaml:5: invalid rate limit unit "fortnight" (want second, minute, hour, day, week, month or year)
	// bad.yaml:7: unknown key "ratelimit" in a descriptor (valid: key, value, rate_limit, rate_limits, descriptors, shadow_mode, quota_mode, detailed_metric, value_to_metric, share_threshold, metadata)
}

func TestPaths(t *testing.T) {
	r, err := ParseRules([]File{{Name: "r.yaml", Data: []byte(`domain: d
descriptors:
  - key: tier
    value: free
    descriptors:
      - key: tenant_id
        rate_limit: {unit: second, requests_per_unit: 1}
        descriptors:
          - key: user_id
            rate_limit: {unit: second, requests_per_unit: 1}
  - key: path
    value: "/api/*"
    rate_limit: {unit: second, requests_per_unit: 1}
`)}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range r.Paths("d") {
		var parts []string
		for _, e := range p.Entries {
			parts = append(parts, e.Key+"="+e.Value)
		}
		got = append(got, fmt.Sprintf("%s %s %v r.yaml:%d", strings.Join(parts, ","), p.Rule, p.Limited, p.Line))
	}
	want := []string{
		"tier=free tier_free false r.yaml:3",
		"tier=free,tenant_id= tier_free.tenant_id true r.yaml:6",
		"tier=free,tenant_id=,user_id= tier_free.tenant_id.user_id true r.yaml:9",
		"path=/api/* path_/api/* true r.yaml:11",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Paths =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r.Paths("nope") != nil {
		t.Error("unknown domain has paths")
	}
}
