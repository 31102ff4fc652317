package cachefilter_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/header"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
)

// Tenant tags of the tests (the policy makes them 16 hex digits).
const (
	tenantA = "aaaaaaaaaaaaaaa1"
	tenantB = "bbbbbbbbbbbbbbb2"
)

// epoch is the simulated start time.
var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a simulated clock for NewStore. Safe for concurrent use.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newClock() *clock { return &clock{t: epoch} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// primaryKey returns a primary key of tenant for path, shaped like the policy's.
func primaryKey(tenant, path string) string {
	sum := sha256.Sum256([]byte(path))
	return tenant + ":" + hex.EncodeToString(sum[:])
}

// variants returns a variantOf callback for a request with header h (lower-case names), shaped
// like the policy's VariantKey: the primary key itself without Vary.
func variants(primary string, h map[string]string) func([]string) string {
	return func(names []string) string {
		if len(names) == 0 {
			return primary
		}
		s := sha256.New()
		for _, n := range names {
			fmt.Fprintf(s, "%s\x00%s\x00", n, h[n])
		}
		return primary + ":" + hex.EncodeToString(s.Sum(nil))
	}
}

// newEntry returns a 200 response fresh for lifetime from now.
func newEntry(now time.Time, body string, lifetime time.Duration) *httpcache.Entry {
	return &httpcache.Entry{
		Status:       200,
		Header:       header.List{{Name: "content-type", Value: "application/json"}},
		Body:         []byte(body),
		RequestTime:  now,
		ResponseTime: now,
		Lifetime:     lifetime,
	}
}

// testConfig is a StoreConfig with generous Redis timeouts: the race detector on two shared
// cores is slow, and timeouts are tested on purpose elsewhere.
func testConfig() cachefilter.StoreConfig {
	return cachefilter.StoreConfig{
		RedisTimeout:      2 * time.Second,
		SubscriptionLease: time.Second,
		PurgeTimeout:      5 * time.Second,
	}
}

// newStore returns a Store closed when the test ends.
func newStore(t testing.TB, cfg cachefilter.StoreConfig, rdb redis.UniversalClient, prefix string, clk *clock, reg prometheus.Registerer) *cachefilter.Store {
	t.Helper()
	s, err := cachefilter.NewStore(cfg, cachefilter.StoreOptions{Redis: rdb, KeyPrefix: prefix, Registerer: reg, Now: clk.Now})
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// run runs s.Run until the test ends and waits until s trusts its L1.
func run(t testing.TB, s *cachefilter.Store) {
	t.Helper()
	runUntrusted(t, s)
	waitFor(t, 10*time.Second, "the store to trust its L1", s.Trusted)
}

// runUntrusted runs s.Run until the test ends, waiting for nothing.
func runUntrusted(t testing.TB, s *cachefilter.Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// waitFor polls cond every 5ms until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// learned waits until s has heard of another replica's put of primary: a Store learns of keys
// put elsewhere through the presence channel (presence.go), not at once.
func learned(t testing.TB, s *cachefilter.Store, primary string) {
	t.Helper()
	waitFor(t, 5*time.Second, "the announcement of "+primary, func() bool { return s.Announced(primary) })
}

// lookup calls s.Lookup and fails the test on error.
func lookup(t testing.TB, s *cachefilter.Store, primary string, h map[string]string) (*httpcache.Entry, cachefilter.Layer) {
	t.Helper()
	e, layer, err := s.Lookup(context.Background(), primary, variants(primary, h))
	if err != nil {
		t.Fatalf("Lookup(%s): %v", primary, err)
	}
	return e, layer
}

// put calls s.Put for the variant of h and fails the test on error.
func put(t testing.TB, s *cachefilter.Store, primary, path string, h map[string]string, e *httpcache.Entry) {
	t.Helper()
	if err := s.Put(context.Background(), primary, variants(primary, h)(e.Vary), path, e); err != nil {
		t.Fatalf("Put(%s): %v", primary, err)
	}
}

func body(e *httpcache.Entry) string {
	if e == nil {
		return "<nil>"
	}
	return string(e.Body)
}

// TestLookupPut stores entries through one replica and reads them through it and through a
// second one sharing the Redis: L1 hits, L2 hits promoted to the L1, Vary variants, misses.
func TestLookupPut(t *testing.T) {
	type step struct {
		replica int               // 0 writes, 1 only reads
		hdr     map[string]string // request header
		want    string            // body; "" for a miss
		layer   cachefilter.Layer
	}
	tests := []struct {
		name  string
		vary  []string
		puts  []map[string]string // request headers of the stored variants; body = their values
		steps []step
	}{
		{
			name: "no vary",
			puts: []map[string]string{nil},
			steps: []step{
				{replica: 0, want: "", layer: cachefilter.L1},
				{replica: 1, want: "", layer: cachefilter.L2},
				{replica: 1, want: "", layer: cachefilter.L1},
			},
		},
		{
			name: "vary",
			vary: []string{"accept-encoding", "accept-language"},
			puts: []map[string]string{
				{"accept-encoding": "gzip", "accept-language": "en"},
				{"accept-encoding": "br", "accept-language": "en"},
			},
			steps: []step{
				{replica: 0, hdr: map[string]string{"accept-encoding": "gzip", "accept-language": "en"}, want: "gzip,en", layer: cachefilter.L1},
				{replica: 0, hdr: map[string]string{"accept-encoding": "br", "accept-language": "en"}, want: "br,en", layer: cachefilter.L1},
				{replica: 0, hdr: map[string]string{"accept-encoding": "br", "accept-language": "de"}, layer: cachefilter.Miss},
				{replica: 1, hdr: map[string]string{"accept-encoding": "br", "accept-language": "en"}, want: "br,en", layer: cachefilter.L2},
				{replica: 1, hdr: map[string]string{"accept-encoding": "br", "accept-language": "en"}, want: "br,en", layer: cachefilter.L1},
				// The record is in replica 1's L1 now: one round trip with the right guess.
				{replica: 1, hdr: map[string]string{"accept-encoding": "gzip", "accept-language": "en"}, want: "gzip,en", layer: cachefilter.L2},
				{replica: 1, hdr: map[string]string{"accept-encoding": "gzip", "accept-language": "en"}, want: "gzip,en", layer: cachefilter.L1},
				{replica: 1, hdr: map[string]string{"accept-encoding": "zstd", "accept-language": "en"}, layer: cachefilter.Miss},
			},
		},
		{
			name:  "miss",
			steps: []step{{replica: 0, layer: cachefilter.Miss}, {replica: 1, layer: cachefilter.Miss}},
		},
	}
	rdb, prefix, clk := redistest.Client(t), redistest.Prefix(t), newClock()
	replicas := []*cachefilter.Store{
		newStore(t, testConfig(), rdb, prefix, clk, nil),
		newStore(t, testConfig(), rdb, prefix, clk, nil),
	}
	for _, s := range replicas {
		run(t, s)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			primary := primaryKey(tenantA, "/"+tt.name)
			for _, h := range tt.puts {
				var vals []string
				for _, n := range tt.vary {
					vals = append(vals, h[n])
				}
				e := newEntry(clk.Now(), strings.Join(vals, ","), time.Minute)
				e.Vary = tt.vary
				put(t, replicas[0], primary, "/"+tt.name, h, e)
			}
			for i, st := range tt.steps {
				if len(tt.puts) > 0 {
					learned(t, replicas[st.replica], primary)
				}
				e, layer := lookup(t, replicas[st.replica], primary, st.hdr)
				if layer != st.layer || (layer != cachefilter.Miss && body(e) != st.want) || (layer == cachefilter.Miss && e != nil) {
					t.Errorf("step %d (replica %d, %v): got %q from %v, want %q from %v", i, st.replica, st.hdr, body(e), layer, st.want, st.layer)
				}
			}
		})
	}
}

// TestExpiry checks the TTL of entries in Redis (freshness left + the longer stale window +
// stale_retention, capped by max_ttl), that nothing Sluice writes lives without a TTL, and that
// retention sets StaleRetention (0: the default).
func retention(d time.Duration) func(*cachefilter.StoreConfig) {
	return func(c *cachefilter.StoreConfig) { c.StaleRetention = d }
}

// entries past their expiry are not served.
func TestExpiry(t *testing.T) {
	tests := []struct {
		name      string
		cfg       func(*cachefilter.StoreConfig)
		lifetime  time.Duration
		age       time.Duration // InitialAge
		swr, sie  time.Duration
		mustReval bool
		etag      string
		want      time.Duration // 0: not stored
	}{
		{name: "fresh only", lifetime: time.Minute, want: time.Minute},
		{name: "age counts", lifetime: time.Minute, age: 20 * time.Second, want: 40 * time.Second},
		{name: "longer stale window", lifetime: time.Minute, swr: 30 * time.Second, sie: 2 * time.Minute, want: 3 * time.Minute},
		{name: "must-revalidate drops stale windows", lifetime: time.Minute, sie: time.Hour, mustReval: true, want: time.Minute},
		{name: "stale retention, with a validator", lifetime: time.Minute, swr: 10 * time.Second, etag: `"v1"`,
			cfg: retention(time.Hour), want: time.Hour + 70*time.Second},
		{name: "default stale retention", lifetime: time.Minute, etag: `"v1"`,
			cfg: retention(0), want: time.Minute + cachefilter.DefaultStaleRetention},
		{name: "stale retention without a validator: served when the origin is unreachable", lifetime: time.Minute, swr: 10 * time.Second,
			cfg: retention(time.Hour), want: time.Hour + 70*time.Second},
		{name: "no stale retention for must-revalidate without a validator: nothing could use it", lifetime: time.Minute, mustReval: true,
			cfg: retention(time.Hour), want: time.Minute},
		{name: "stale retention for must-revalidate with a validator: revalidated", lifetime: time.Minute, mustReval: true, etag: `"v1"`,
			cfg: retention(time.Hour), want: time.Hour + time.Minute},
		{name: "stale retention disabled", lifetime: time.Minute, etag: `"v1"`, want: time.Minute},
		{name: "capped by max_ttl", lifetime: 48 * time.Hour,
			cfg: func(c *cachefilter.StoreConfig) { c.MaxTTL = time.Hour }, want: time.Hour},
		{name: "stale within its window", lifetime: time.Minute, age: 90 * time.Second, sie: time.Minute, want: 30 * time.Second},
		{name: "already past every window", lifetime: time.Minute, age: 2 * time.Minute, swr: 30 * time.Second},
	}
	rdb := redistest.Client(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix, clk := redistest.Prefix(t), newClock()
			cfg := testConfig()
			cfg.StaleRetention = -1 // the windows alone, unless the case sets it
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			s := newStore(t, cfg, rdb, prefix, clk, nil)
			primary := primaryKey(tenantA, "/ttl")
			e := newEntry(clk.Now(), "x", tt.lifetime)
			e.InitialAge, e.StaleWhileRevalidate, e.StaleIfError, e.MustRevalidate = tt.age, tt.swr, tt.sie, tt.mustReval
			e.ETag = tt.etag
			e.Tags = []string{"t"}
			put(t, s, primary, "/ttl", nil, e)

			ctx := context.Background()
			entryKey := prefix + "c:{" + tenantA + "}:e:" + strings.TrimPrefix(primary, tenantA+":")
			pttl, err := rdb.PTTL(ctx, entryKey).Result()
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == 0 {
				keys, _ := rdb.Keys(ctx, prefix+"*").Result()
				if len(keys) != 0 {
					t.Errorf("stored keys %v, want none", keys)
				}
				if got, layer := lookup(t, s, primary, nil); got != nil {
					t.Errorf("Lookup = %q from %v, want a miss", body(got), layer)
				}
				return
			}
			if pttl > tt.want || pttl < tt.want-time.Second {
				t.Errorf("PTTL = %v, want %v (within 1s)", pttl, tt.want)
			}
			// Every key but the tenant generation expires, no earlier than the entry.
			keys, err := rdb.Keys(ctx, prefix+"*").Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				d, err := rdb.PTTL(ctx, k).Result()
				if err != nil {
					t.Fatal(err)
				}
				if strings.HasPrefix(k, prefix+"hot:") {
					continue
				}
				if d < 0 || d < pttl-time.Second {
					t.Errorf("key %s: PTTL %v, want at least the entry's %v", k, d, pttl)
				}
			}
			if got, layer := lookup(t, s, primary, nil); got == nil {
				t.Errorf("Lookup missed at once (%v)", layer)
			}
			clk.Advance(tt.want + time.Millisecond)
			if got, layer := lookup(t, s, primary, nil); got != nil {
				t.Errorf("Lookup after the expiry = %q from %v, want a miss", body(got), layer)
			}
		})
	}
}

// TestPurgeReachesEveryReplica fills the L1 of replica B, purges through replica A, and checks
// right after the purge returned that B's L1 no longer holds what was purged (and still holds
// the rest), that Redis no longer does, and that tenant B's entries were never touched.
func TestPurgeReachesEveryReplica(t *testing.T) {
	type doc struct {
		name, tenant, path, tag string
	}
	docs := []doc{
		{"target", tenantA, "/api/v1/contacts/1", "contacts"},
		{"sibling", tenantA, "/api/v1/contacts/2", "other"},
		{"elsewhere", tenantA, "/api/v2/orgs/1", "orgs"},
		{"other tenant", tenantB, "/api/v1/contacts/1", "contacts"},
	}
	tests := []struct {
		name  string
		purge func(ctx context.Context, s *cachefilter.Store) error
		gone  []string // names of the docs purged
	}{
		{
			name: "key",
			purge: func(ctx context.Context, s *cachefilter.Store) error {
				return s.Invalidate(ctx, primaryKey(tenantA, "/api/v1/contacts/1"))
			},
			gone: []string{"target"},
		},
		{
			name:  "tag",
			purge: func(ctx context.Context, s *cachefilter.Store) error { return s.PurgeTag(ctx, tenantA, "contacts") },
			gone:  []string{"target"},
		},
		{
			name:  "prefix",
			purge: func(ctx context.Context, s *cachefilter.Store) error { return s.PurgePrefix(ctx, tenantA, "/api/v1/") },
			gone:  []string{"target", "sibling"},
		},
		{
			name:  "tenant",
			purge: func(ctx context.Context, s *cachefilter.Store) error { return s.PurgeTenant(ctx, tenantA) },
			gone:  []string{"target", "sibling", "elsewhere"},
		},
	}
	rdb := redistest.Client(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix, clk := redistest.Prefix(t), newClock()
			a := newStore(t, testConfig(), rdb, prefix, clk, nil)
			b := newStore(t, testConfig(), rdb, prefix, clk, nil)
			run(t, a)
			run(t, b)
			for _, d := range docs {
				e := newEntry(clk.Now(), d.name, time.Hour)
				e.Tags = []string{d.tag}
				put(t, a, primaryKey(d.tenant, d.path), d.path, nil, e)
				learned(t, b, primaryKey(d.tenant, d.path))
				lookup(t, b, primaryKey(d.tenant, d.path), nil) // L2 hit: fills B's L1
				if k := primaryKey(d.tenant, d.path); !b.InL1(k, k) {
					t.Fatalf("%s: not in B's L1 after an L2 hit", d.name)
				}
			}
			start := time.Now()
			if err := tt.purge(context.Background(), a); err != nil {
				t.Fatalf("purge: %v", err)
			}
			took := time.Since(start)
			// Right after the purge returned: B's L1 first, then both layers.
			for _, d := range docs {
				k := primaryKey(d.tenant, d.path)
				wantGone := false
				for _, g := range tt.gone {
					wantGone = wantGone || g == d.name
				}
				if inB := b.InL1(k, k); inB == wantGone {
					t.Errorf("%s: in B's L1 = %v after the purge returned, want %v", d.name, inB, !wantGone)
				}
				for i, s := range []*cachefilter.Store{a, b} {
					e, layer := lookup(t, s, k, nil)
					if wantGone && e != nil {
						t.Errorf("%s: replica %d serves %q from %v after the purge", d.name, i, body(e), layer)
					}
					if !wantGone && body(e) != d.name {
						t.Errorf("%s: replica %d got %q from %v, want it kept", d.name, i, body(e), layer)
					}
				}
			}
			t.Logf("purge returned after %v", took)
		})
	}
}

// TestTenantIsolation purges everything tenant A can name and checks that tenant B's keys in
// Redis are exactly as before.
func TestTenantIsolation(t *testing.T) {
	rdb, prefix, clk := redistest.Client(t), redistest.Prefix(t), newClock()
	s := newStore(t, testConfig(), rdb, prefix, clk, nil)
	run(t, s)
	ctx := context.Background()
	for _, tenant := range []string{tenantA, tenantB} {
		for i := range 20 {
			path := fmt.Sprintf("/items/%d", i)
			e := newEntry(clk.Now(), tenant+path, time.Hour)
			e.Tags = []string{"shared", fmt.Sprintf("item-%d", i)}
			put(t, s, primaryKey(tenant, path), path, nil, e)
		}
	}
	snapshot := func() map[string]string {
		keys, err := rdb.Keys(ctx, prefix+"*{"+tenantB+"}*").Result()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, k := range keys {
			v, err := rdb.Dump(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			m[k] = v
		}
		return m
	}
	before := snapshot()
	for _, purge := range []func() error{
		func() error { return s.PurgeTag(ctx, tenantA, "shared") },
		func() error { return s.PurgePrefix(ctx, tenantA, "/") },
		func() error { return s.Invalidate(ctx, primaryKey(tenantA, "/items/1")) },
		func() error { return s.PurgeTenant(ctx, tenantA) },
	} {
		if err := purge(); err != nil {
			t.Fatal(err)
		}
	}
	after := snapshot()
	if len(after) != len(before) {
		t.Errorf("tenant B has %d keys after tenant A's purges, %d before", len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("tenant B's key %s changed", k)
		}
	}
	for i := range 20 {
		path := fmt.Sprintf("/items/%d", i)
		if e, _ := lookup(t, s, primaryKey(tenantB, path), nil); body(e) != tenantB+path {
			t.Errorf("tenant B %s: got %q", path, body(e))
		}
		if e, layer := lookup(t, s, primaryKey(tenantA, path), nil); e != nil {
			t.Errorf("tenant A %s: got %q from %v after the purges", path, body(e), layer)
		}
	}
	// Run sweeps tenant A's old generation: only its generation key is left.
	var keys []string
	waitFor(t, 5*time.Second, "the old generation to be swept", func() bool {
		keys, _ = rdb.Keys(ctx, prefix+"*{"+tenantA+"}*").Result()
		return len(keys) == 1 && keys[0] == prefix+"c:{"+tenantA+"}:gen"
	})
}

// TestPurgeWaitsForRegisteredReplicas registers replicas that never acknowledge: the purge waits
// until they leave the registry, or fails with ErrUnconfirmed at the purge timeout.
func TestPurgeWaitsForRegisteredReplicas(t *testing.T) {
	tests := []struct {
		name     string
		lease    time.Duration // of the silent replica, from now
		wantErr  bool
		minDelay time.Duration
	}{
		{name: "leaves the registry", lease: 400 * time.Millisecond, minDelay: 300 * time.Millisecond},
		{name: "stays registered", lease: time.Minute, wantErr: true, minDelay: 800 * time.Millisecond},
	}
	rdb := redistest.Client(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix, clk := redistest.Prefix(t), newClock()
			cfg := testConfig()
			cfg.PurgeTimeout = 800 * time.Millisecond
			cfg.SubscriptionLease = 200 * time.Millisecond
			reg := metricstest.NewRegistry()
			s := newStore(t, cfg, rdb, prefix, clk, reg)
			run(t, s)
			ctx := context.Background()
			now, err := rdb.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			silent := redis.Z{Score: float64(now.Add(tt.lease).UnixMilli()), Member: "silent.1"}
			if err := rdb.ZAdd(ctx, prefix+"c:replicas", silent).Err(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = s.PurgeTag(ctx, tenantA, "x")
			took := time.Since(start)
			if got := errors.Is(err, cachefilter.ErrUnconfirmed); got != tt.wantErr {
				t.Errorf("PurgeTag = %v, want ErrUnconfirmed: %v", err, tt.wantErr)
			}
			if took < tt.minDelay || took > cfg.PurgeTimeout+500*time.Millisecond {
				t.Errorf("PurgeTag returned after %v, want between %v and the %v purge timeout", took, tt.minDelay, cfg.PurgeTimeout)
			}
			result := "ok"
			if tt.wantErr {
				result = "unconfirmed"
			}
			if v := gauge(t, reg, "sluice_cache_invalidations_total", map[string]string{"kind": "tag", "result": result}); v != 1 {
				t.Errorf("invalidations_total{tag,%s} = %v, want 1", result, v)
			}
		})
	}
}

// TestL1NeedsLease checks that without Run (no lease) a Store with Redis serves Redis, not its
// L1, and with Run, its L1.
func TestL1NeedsLease(t *testing.T) {
	rdb, prefix, clk := redistest.Client(t), redistest.Prefix(t), newClock()
	s := newStore(t, testConfig(), rdb, prefix, clk, nil)
	k := primaryKey(tenantA, "/lease")
	put(t, s, k, "/lease", nil, newEntry(clk.Now(), "v", time.Hour))
	for range 3 {
		if e, layer := lookup(t, s, k, nil); layer != cachefilter.L2 || body(e) != "v" {
			t.Fatalf("without Run: %q from %v, want from l2", body(e), layer)
		}
	}
	run(t, s) // the new subscription clears the L1
	lookup(t, s, k, nil)
	if e, layer := lookup(t, s, k, nil); layer != cachefilter.L1 || body(e) != "v" {
		t.Fatalf("with Run: %q from %v, want from l1", body(e), layer)
	}
}

// TestSoleReplicaTrustsItsL1: a store whose Redis no other replica uses (sluice dev's embedded
// server) serves its L1 without a lease, and a new subscription keeps the L1's entries.
func TestSoleReplicaTrustsItsL1(t *testing.T) {
	rdb, prefix, clk := redistest.Client(t), redistest.Prefix(t), newClock()
	cfg := testConfig()
	cfg.SoleReplica = true
	s := newStore(t, cfg, rdb, prefix, clk, nil)
	k := primaryKey(tenantA, "/sole")
	put(t, s, k, "/sole", nil, newEntry(clk.Now(), "v", time.Hour))
	if e, layer := lookup(t, s, k, nil); layer != cachefilter.L1 || body(e) != "v" {
		t.Fatalf("without Run: %q from %v, want from l1", body(e), layer)
	}
	run(t, s)
	if e, layer := lookup(t, s, k, nil); layer != cachefilter.L1 || body(e) != "v" {
		t.Fatalf("after the subscription: %q from %v, want from l1 (kept)", body(e), layer)
	}
}

// TestHotKeys counts every hit (sample rate 1) and reads the ranking back.
func TestHotKeys(t *testing.T) {
	rdb, prefix, clk := redistest.Client(t), redistest.Prefix(t), newClock()
	cfg := testConfig()
	cfg.HotSampleRate = 1
	s := newStore(t, cfg, rdb, prefix, clk, nil)
	run(t, s)
	hits := map[string]int{"/a": 5, "/b": 3, "/c": 1}
	for path, n := range hits {
		put(t, s, primaryKey(tenantA, path), path, nil, newEntry(clk.Now(), path, time.Hour))
		for range n {
			lookup(t, s, primaryKey(tenantA, path), nil)
		}
	}
	put(t, s, primaryKey(tenantB, "/z"), "/z", nil, newEntry(clk.Now(), "z", time.Hour))
	lookup(t, s, primaryKey(tenantB, "/z"), nil)
	want := []string{primaryKey(tenantA, "/a"), primaryKey(tenantA, "/b"), primaryKey(tenantA, "/c")}
	var got []string
	waitFor(t, 5*time.Second, "the hot-key counts", func() bool {
		var err error
		got, err = s.HotKeys(context.Background(), tenantA, 10)
		return err == nil && strings.Join(got, " ") == strings.Join(want, " ")
	})
	if got, _ := s.HotKeys(context.Background(), tenantA, 1); len(got) != 1 || got[0] != want[0] {
		t.Errorf("HotKeys(1) = %v, want %v", got, want[:1])
	}
}

// TestHotPaths reads back the path and freshness of hot keys, leaving out invalidated ones.
func TestHotPaths(t *testing.T) {
	rdb, prefix, clk := redistest.Client(t), redistest.Prefix(t), newClock()
	cfg := testConfig()
	cfg.HotSampleRate = 1
	s := newStore(t, cfg, rdb, prefix, clk, nil)
	run(t, s)
	hits := map[string]int{"/a?x=1": 3, "/b": 2, "/c": 1}
	lifetimes := map[string]time.Duration{"/a?x=1": time.Hour, "/b": time.Minute, "/c": 2 * time.Hour}
	for path, n := range hits {
		put(t, s, primaryKey(tenantA, path), path, nil, newEntry(clk.Now(), path, lifetimes[path]))
		for range n {
			lookup(t, s, primaryKey(tenantA, path), nil)
		}
	}
	waitFor(t, 5*time.Second, "the hot-key counts", func() bool {
		got, err := s.HotKeys(context.Background(), tenantA, 10)
		return err == nil && len(got) == 3
	})
	if err := s.Invalidate(context.Background(), primaryKey(tenantA, "/c")); err != nil {
		t.Fatal(err)
	}
	got, err := s.HotPaths(context.Background(), tenantA, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("HotPaths = %+v, want /a?x=1 and /b", got)
	}
	for i, path := range []string{"/a?x=1", "/b"} {
		e := got[i]
		if e.Key != primaryKey(tenantA, path) || e.Path != path || e.Lifetime != lifetimes[path] ||
			!e.FreshUntil.Equal(clk.Now().Add(lifetimes[path])) || e.Expires.IsZero() {
			t.Errorf("HotPaths[%d] = %+v, want %s fresh for %v", i, e, path, lifetimes[path])
		}
	}
	if got, err := s.HotPaths(context.Background(), tenantB, 10); err != nil || len(got) != 0 {
		t.Errorf("HotPaths of another tenant = %+v, %v", got, err)
	}
}

// TestInvalidArguments checks that bad keys and entries fail with ErrInvalid and touch nothing.
func TestInvalidArguments(t *testing.T) {
	s := newStore(t, cachefilter.StoreConfig{}, nil, "", newClock(), nil)
	ok := newEntry(epoch, "x", time.Hour)
	k := primaryKey(tenantA, "/x")
	put(t, s, k, "/x", nil, ok) // so that Lookup asks for a variant key
	tests := []struct {
		name string
		call func() error
	}{
		{"lookup without tenant", func() error {
			_, _, err := s.Lookup(context.Background(), "nohash", variants("nohash", nil))
			return err
		}},
		{"lookup with a brace in the tenant", func() error {
			_, _, err := s.Lookup(context.Background(), "a{b}:x", variants("a{b}:x", nil))
			return err
		}},
		{"variant of another tenant", func() error {
			_, _, err := s.Lookup(context.Background(), k, func([]string) string { return primaryKey(tenantB, "/x") })
			return err
		}},
		{"put variant of another tenant", func() error { return s.Put(context.Background(), k, primaryKey(tenantB, "/x"), "/x", ok) }},
		{"put nil entry", func() error { return s.Put(context.Background(), k, k, "/x", nil) }},
		{"put status 0", func() error { return s.Put(context.Background(), k, k, "/x", &httpcache.Entry{}) }},
		{"put NUL in path", func() error { return s.Put(context.Background(), k, k, "/x\x00", ok) }},
		{"put comma in a Vary name", func() error {
			e := *ok
			e.Vary = []string{"a,b"}
			return s.Put(context.Background(), k, k+":v", "/x", &e)
		}},
		{"purge empty tag", func() error { return s.PurgeTag(context.Background(), tenantA, "") }},
		{"purge bad tenant", func() error { return s.PurgeTenant(context.Background(), "a:b") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, cachefilter.ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
		})
	}
}

// TestL1Only runs a Store without Redis: put, lookup and every purge work locally.
func TestL1Only(t *testing.T) {
	clk := newClock()
	s := newStore(t, cachefilter.StoreConfig{}, nil, "sluice:", clk, nil)
	ctx := context.Background()
	k := primaryKey(tenantA, "/only")
	e := newEntry(clk.Now(), "v", time.Hour)
	e.Tags = []string{"t"}
	put(t, s, k, "/only", nil, e)
	if got, layer := lookup(t, s, k, nil); layer != cachefilter.L1 || body(got) != "v" {
		t.Fatalf("got %q from %v", body(got), layer)
	}
	if err := s.PurgeTag(ctx, tenantA, "t"); err != nil {
		t.Fatal(err)
	}
	if got, layer := lookup(t, s, k, nil); got != nil {
		t.Fatalf("after PurgeTag: %q from %v", body(got), layer)
	}
	if keys, err := s.HotKeys(ctx, tenantA, 5); err != nil || keys != nil {
		t.Errorf("HotKeys without Redis = %v, %v", keys, err)
	}
}

// gauge returns the value of the counter or gauge name{labels} registered on reg.
func gauge(t testing.TB, reg *metricstest.Registry, name string, labels prometheus.Labels) float64 {
	t.Helper()
	return reg.Value(t, name, labels)
}

// TestTenantCap checks max_keys_per_tenant: Put evicts the tenant's soonest-expiring keys
// (checked on one Put in 8, so the count may run over by a few between checks), with their
// entries and index entries, and never another tenant's.
func TestTenantCap(t *testing.T) {
	rdb, prefix, clk := redistest.Client(t), redistest.Prefix(t), newClock()
	cfg := testConfig()
	cfg.MaxKeysPerTenant = 10
	s := newStore(t, cfg, rdb, prefix, clk, nil)
	ctx := context.Background()
	put(t, s, primaryKey(tenantB, "/b"), "/b", nil, newEntry(clk.Now(), "b", time.Hour))
	for i := range 300 {
		path := fmt.Sprintf("/k/%d", i)
		e := newEntry(clk.Now(), path, time.Hour+time.Duration(i)*time.Second) // later keys live longer
		e.Tags = []string{"all"}
		put(t, s, primaryKey(tenantA, path), path, nil, e)
	}
	records, err := rdb.Keys(ctx, prefix+"c:{"+tenantA+"}:k:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := rdb.Keys(ctx, prefix+"c:{"+tenantA+"}:e:*").Result()
	tagged, _ := rdb.SCard(ctx, prefix+"tag:{"+tenantA+"}:0:all").Result()
	if n := len(records); n < cfg.MaxKeysPerTenant || n > cfg.MaxKeysPerTenant+60 || len(entries) != n || int(tagged) != n {
		t.Errorf("%d records, %d entries, %d tagged after 300 puts; want about %d of each", n, len(entries), tagged, cfg.MaxKeysPerTenant)
	}
	// The longest-lived (latest) keys stay.
	if e, _ := lookup(t, s, primaryKey(tenantA, "/k/299"), nil); body(e) != "/k/299" {
		t.Errorf("the last key put: %q", body(e))
	}
	if e, _ := lookup(t, s, primaryKey(tenantB, "/b"), nil); body(e) != "b" {
		t.Errorf("tenant B's key: %q", body(e))
	}
}

// TestPutSinceRacedInvalidation: a response fetched across an invalidation that covers it —
// its key, a tag it carries, a prefix of its path, or its whole tenant; made here, or received
// from another replica — is not stored in either layer, so the version read before a write
// cannot come back after the write's purge. A fetch that raced only invalidations of other
// keys, tags, paths or tenants is stored: in a busy tenant writes never stop, and a guard on
// the whole tenant would keep almost nothing (issue 13).
func TestPutSinceRacedInvalidation(t *testing.T) {
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t)
	clk := newClock()
	reg := metricstest.NewRegistry()
	s := newStore(t, testConfig(), rdb, prefix, clk, reg)
	other := newStore(t, testConfig(), rdb, prefix, clk, nil)
	run(t, s)
	run(t, other)
	ctx := context.Background()
	const path = "/api/v1/contacts/1"
	target := primaryKey(tenantA, path)
	sibling := primaryKey(tenantA, "/api/v1/contacts/2")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name       string
		invalidate func() // runs while the fetch is "in flight"; nil for none
		wantStored bool
	}{
		{"no invalidation", nil, true},
		{"its key, here", func() { must(s.Invalidate(ctx, target)) }, false},
		{"its key, by another replica", func() { must(other.Invalidate(ctx, target)) }, false},
		{"its key among others", func() { must(other.Invalidate(ctx, sibling, target)) }, false},
		{"another key of the tenant", func() { must(s.Invalidate(ctx, sibling)) }, true},
		{"another key, by another replica", func() { must(other.Invalidate(ctx, sibling)) }, true},
		{"its tag", func() { must(other.PurgeTag(ctx, tenantA, "contacts")) }, false},
		{"another tag of the tenant", func() { must(other.PurgeTag(ctx, tenantA, "unrelated")) }, true},
		{"a prefix of its path", func() { must(s.PurgePrefix(ctx, tenantA, "/api/v1/contacts")) }, false},
		{"another prefix", func() { must(s.PurgePrefix(ctx, tenantA, "/api/v1/deals")) }, true},
		{"its tenant", func() { must(other.PurgeTenant(ctx, tenantA)) }, false},
		{"another tenant", func() { must(other.PurgeTenant(ctx, tenantB)) }, true},
		{"its key, among many invalidations of others", func() {
			must(s.Invalidate(ctx, target))
			for i := range 50 {
				must(s.Invalidate(ctx, primaryKey(tenantA, fmt.Sprintf("/other/%d", i))))
			}
		}, false},
	}
	raced := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			must(s.Invalidate(ctx, target)) // start clean
			since := s.Epoch(target)
			if tt.invalidate != nil {
				tt.invalidate()
			}
			e := newEntry(clk.Now(), "fetched", time.Hour)
			e.Tags = []string{"contacts"}
			must(s.PutSince(ctx, since, target, target, path, e))
			for name, st := range map[string]*cachefilter.Store{"this replica": s, "other replica": other} {
				if tt.wantStored {
					learned(t, st, target)
				}
				_, layer := lookup(t, st, target, nil)
				if stored := layer != cachefilter.Miss; stored != tt.wantStored {
					t.Errorf("%s: lookup from %v, want stored=%v", name, layer, tt.wantStored)
				}
			}
		})
		if !tt.wantStored {
			raced++
		}
	}
	if got := gauge(t, reg, "sluice_cache_raced_puts_total", nil); got != float64(raced) {
		t.Errorf("sluice_cache_raced_puts_total = %v, want %d", got, raced)
	}
}
