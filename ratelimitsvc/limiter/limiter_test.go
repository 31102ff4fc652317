package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

func TestParseAlgorithm(t *testing.T) {
	tests := []struct {
		in      string
		want    limiter.Algorithm
		wantErr bool
	}{
		{in: "sliding_window", want: limiter.SlidingWindow},
		{in: "fixed_window", want: limiter.FixedWindow},
		{in: "FIXED_Window", want: limiter.FixedWindow},
		{in: "", wantErr: true},
		{in: "fixed", wantErr: true},
		{in: "token_bucket", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			got, err := limiter.ParseAlgorithm(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("ParseAlgorithm(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
			if err == nil && !strings.EqualFold(got.String(), tc.in) {
				t.Errorf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
	if s := limiter.Algorithm(9).String(); s != "Algorithm(9)" {
		t.Errorf("String of an unknown algorithm = %q", s)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     limiter.Config
		want    limiter.Config // after WithDefaults, Now ignored
		wantErr string
	}{
		{name: "zero takes defaults", want: limiter.Config{Timeout: 20 * time.Millisecond, LocalCacheSize: 100000, BreakerFailures: 5, BreakerOpenFor: time.Second,
			Lease: limiter.LeaseConfig{MaxOvershoot: 0.02, Horizon: time.Second, MaxKeys: 100000}, HotKeyThreshold: 1000}},
		{name: "set fields stay", cfg: limiter.Config{Timeout: time.Second, LocalCacheSize: -1, BreakerFailures: 2, BreakerOpenFor: time.Minute,
			Lease: limiter.LeaseConfig{MaxOvershoot: 0.5, Horizon: 3 * time.Second, MaxKeys: 7}, HotKeyThreshold: -1},
			want: limiter.Config{Timeout: time.Second, LocalCacheSize: -1, BreakerFailures: 2, BreakerOpenFor: time.Minute,
				Lease: limiter.LeaseConfig{MaxOvershoot: 0.5, Horizon: 3 * time.Second, MaxKeys: 7}, HotKeyThreshold: -1}},
		{name: "overshoot above one", cfg: limiter.Config{Lease: limiter.LeaseConfig{MaxOvershoot: 1.5}}, wantErr: "lease.max_overshoot 1.5 is not in [0, 1]"},
		{name: "horizon not whole ms", cfg: limiter.Config{Lease: limiter.LeaseConfig{Horizon: time.Microsecond}}, wantErr: "lease.horizon 1µs"},
		{name: "negative timeout", cfg: limiter.Config{Timeout: -1}, wantErr: "timeout -1ns is negative"},
		{name: "negative open time", cfg: limiter.Config{BreakerOpenFor: -time.Second}, wantErr: "breaker_open_for -1s is negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.cfg
			err := tc.cfg.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate() = %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if got := tc.cfg.WithDefaults(); got.Timeout != tc.want.Timeout || got.LocalCacheSize != tc.want.LocalCacheSize ||
				got.BreakerFailures != tc.want.BreakerFailures || got.BreakerOpenFor != tc.want.BreakerOpenFor ||
				got.Lease != tc.want.Lease || got.HotKeyThreshold != tc.want.HotKeyThreshold {
				t.Errorf("WithDefaults() = %+v, want %+v", got, tc.want)
			}
			if tc.cfg.Timeout != before.Timeout {
				t.Error("WithDefaults changed its receiver")
			}
		})
	}
}

func TestNew(t *testing.T) {
	c := redistest.Client(t)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": redistest.Addr()}})
	defer ring.Close()
	deaf := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
	defer deaf.Close()
	deafCluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{redistest.Addr()}})
	defer deafCluster.Close()
	tests := []struct {
		name    string
		client  redis.UniversalClient
		cfg     limiter.Config
		wantErr string
	}{
		{name: "nil client", wantErr: "nil redis client"},
		{name: "ring", client: ring, wantErr: "redis.Ring"},
		{name: "client ignoring context deadlines", client: deaf, wantErr: "ContextTimeoutEnabled"},
		{name: "cluster client ignoring context deadlines", client: deafCluster, wantErr: "ContextTimeoutEnabled"},
		{name: "invalid config", client: c, cfg: limiter.Config{Timeout: -time.Second}, wantErr: "timeout"},
		{name: "cache disabled", client: c, cfg: limiter.Config{LocalCacheSize: -1}},
		{name: "defaults", client: c},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := limiter.New(tc.client, tc.cfg, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New() error = %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if _, _, err := l.Do(context.Background(), []limiter.Item{{Key: "{a}", Window: time.Second}}); !errors.Is(err, limiter.ErrClosed) {
				t.Errorf("Do after Close: %v, want ErrClosed", err)
			}
		})
	}
	var nilLimiter *limiter.Limiter
	if err := nilLimiter.Close(); err != nil {
		t.Errorf("Close of a nil Limiter: %v", err)
	}
}

func TestMetricsRegistration(t *testing.T) {
	c := redistest.Client(t)
	reg := prometheus.NewPedanticRegistry()
	l, err := limiter.New(c, limiter.Config{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := limiter.New(c, limiter.Config{}, reg); err == nil {
		t.Fatal("second New on the same registry succeeded, want an AlreadyRegistered error")
	}
	// Exactly these families, each exported before any call (the error and
	// lease reasons, the hot-key modes are created up front).
	want := map[string]int{
		"sluice_ratelimit_redis_duration_seconds": 1,
		"sluice_ratelimit_breaker_open":           1, "sluice_ratelimit_hot_keys": 2, "sluice_ratelimit_lease_calls_total": 3,
		"sluice_ratelimit_leases": 1, "sluice_ratelimit_local_cache_hits_total": 1, "sluice_ratelimit_redis_errors_total": 3,
	}
	total := 0
	for name, n := range want {
		if got, err := testutil.GatherAndCount(reg, name); err != nil || got != n {
			t.Errorf("%s: %d series (%v), want %d", name, got, err, n)
		}
		total += n
	}
	// and nothing else.
	if got, err := testutil.GatherAndCount(reg); err != nil || got != total {
		t.Errorf("registry: %d series (%v), want %d", got, err, total)
	}
	_ = l.Close()
	l2, err := limiter.New(c, limiter.Config{}, reg) // Close unregistered the first one's
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	_ = l2.Close()
}

func TestValidation(t *testing.T) {
	c := redistest.Client(t)
	hook := &counter{}
	c.AddHook(hook)
	l := newLimiter(t, c, limiter.Config{})
	ok := limiter.Item{Key: "x{t}", Limit: 1, Window: time.Second, Hits: 1}
	tests := []struct {
		name string
		item limiter.Item
		want string
	}{
		{name: "empty key", item: limiter.Item{Window: time.Second}, want: "empty key"},
		{name: "no hash tag", item: limiter.Item{Key: "abc", Window: time.Second}, want: "hash tag"},
		{name: "empty hash tag", item: limiter.Item{Key: "a{}b", Window: time.Second}, want: "hash tag"},
		{name: "two hash tags", item: limiter.Item{Key: "{a}{b}", Window: time.Second}, want: "hash tag"},
		{name: "unclosed hash tag", item: limiter.Item{Key: "a{b", Window: time.Second}, want: "hash tag"},
		{name: "reversed braces", item: limiter.Item{Key: "a}b{", Window: time.Second}, want: "hash tag"},
		{name: "zero window", item: limiter.Item{Key: "{a}"}, want: "not positive"},
		{name: "negative window", item: limiter.Item{Key: "{a}", Window: -time.Second}, want: "not positive"},
		{name: "fractional window", item: limiter.Item{Key: "{a}", Window: 1500 * time.Microsecond}, want: "whole number of milliseconds"},
		{name: "sub-windows negative", item: limiter.Item{Key: "{a}", Window: time.Second, SubWindows: -1}, want: "sub-windows"},
		{name: "sub-windows too many", item: limiter.Item{Key: "{a}", Window: time.Second, SubWindows: 121}, want: "sub-windows"},
		{name: "unknown algorithm", item: limiter.Item{Key: "{a}", Window: time.Second, Algorithm: 2}, want: "algorithm"},
		{name: "too many hits", item: limiter.Item{Key: "{a}", Window: time.Second, Hits: 1 << 53}, want: "hits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := hook.cmds.Load()
			_, _, err := l.Do(context.Background(), []limiter.Item{ok, tc.item})
			if !errors.Is(err, limiter.ErrInvalidItem) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "item 1") {
				t.Fatalf("Do error = %v, want ErrInvalidItem naming item 1 and %q", err, tc.want)
			}
			if n := hook.cmds.Load() - before; n != 0 {
				t.Errorf("%d Redis commands sent for an invalid request", n)
			}
		})
	}
	if res, allowed, err := l.Do(context.Background(), nil); err != nil || !allowed || res != nil {
		t.Errorf("Do(nil) = %v, %v, %v; want nil, true, nil", res, allowed, err)
	}
}

// TestOneRoundTrip checks that a Do call is one Redis command whatever the number of items.
func TestOneRoundTrip(t *testing.T) {
	c, p, clk := setup(t)
	hook := &counter{}
	c.AddHook(hook)
	l := newLimiter(t, c, limiter.Config{Now: clk.Now})
	var items []limiter.Item
	for i, alg := range []limiter.Algorithm{limiter.FixedWindow, limiter.SlidingWindow, limiter.SlidingWindow, limiter.FixedWindow, limiter.SlidingWindow} {
		items = append(items, limiter.Item{Key: p + "{rt}" + itoa(int64(i)), Limit: 10, Window: time.Minute, Algorithm: alg, Hits: 1})
	}
	do(t, l, items...) // may load the script (NOSCRIPT, then EVAL)
	for n := 1; n <= len(items); n++ {
		before := hook.cmds.Load()
		do(t, l, items[:n]...)
		if got := hook.cmds.Load() - before; got != 1 {
			t.Errorf("Do with %d items sent %d commands, want 1", n, got)
		}
	}
}

func TestMultiItem(t *testing.T) {
	c, p, clk := setup(t)
	l := newLimiter(t, c, limiter.Config{Now: clk.Now, LocalCacheSize: -1})
	type call struct {
		items   []limiter.Item
		allowed bool
		want    []limiter.Result
	}
	minute := time.Minute
	item := func(name string, alg limiter.Algorithm, limit, hits uint64) limiter.Item {
		return limiter.Item{Key: p + "{" + name + "}", Limit: limit, Window: time.Minute, Algorithm: alg, Hits: hits}
	}
	shadow := func(it limiter.Item) limiter.Item { it.Shadow = true; return it }
	tests := []struct {
		name  string
		calls []call
	}{
		{name: "one item over charges nothing", calls: []call{
			{items: []limiter.Item{item("n1", limiter.FixedWindow, 1, 1)}, allowed: true, want: []limiter.Result{res(false, 1, 0, minute)}},
			{items: []limiter.Item{item("n0", limiter.FixedWindow, 10, 1), item("n1", limiter.FixedWindow, 1, 1), item("n2", limiter.SlidingWindow, 10, 2)},
				allowed: false, want: []limiter.Result{res(false, 0, 10, minute), res(true, 1, 0, minute), res(false, 0, 10, 0)}},
			{items: []limiter.Item{item("n0", limiter.FixedWindow, 10, 0), item("n2", limiter.SlidingWindow, 10, 0)},
				allowed: true, want: []limiter.Result{res(false, 0, 10, minute), res(false, 0, 10, 0)}},
		}},
		{name: "shadow item over allows and charges all", calls: []call{
			{items: []limiter.Item{item("s1", limiter.SlidingWindow, 1, 1)}, allowed: true, want: []limiter.Result{res(false, 1, 0, minute)}},
			{items: []limiter.Item{item("s0", limiter.FixedWindow, 10, 1), shadow(item("s1", limiter.SlidingWindow, 1, 1))},
				allowed: true, want: []limiter.Result{res(false, 1, 9, minute), res(true, 2, 0, minute)}},
		}},
		{name: "check-only item at its limit denies", calls: []call{
			{items: []limiter.Item{item("c1", limiter.FixedWindow, 1, 1)}, allowed: true, want: []limiter.Result{res(false, 1, 0, minute)}},
			{items: []limiter.Item{item("c0", limiter.FixedWindow, 10, 1), item("c1", limiter.FixedWindow, 1, 0)},
				allowed: false, want: []limiter.Result{res(false, 0, 10, minute), res(true, 1, 0, minute)}},
		}},
		{name: "refund applies in a denied request", calls: []call{
			{items: []limiter.Item{item("r0", limiter.FixedWindow, 5, 5), item("r1", limiter.FixedWindow, 1, 1)}, allowed: true,
				want: []limiter.Result{res(false, 5, 0, minute), res(false, 1, 0, minute)}},
			{items: []limiter.Item{withRefund(item("r0", limiter.FixedWindow, 5, 2), true), item("r1", limiter.FixedWindow, 1, 1)}, allowed: false,
				want: []limiter.Result{res(false, 3, 2, minute), res(true, 1, 0, minute)}},
		}},
		{name: "the same counter twice adds up", calls: []call{
			{items: []limiter.Item{item("d", limiter.SlidingWindow, 3, 2)}, allowed: true, want: []limiter.Result{res(false, 2, 1, minute)}},
			{items: []limiter.Item{item("d", limiter.SlidingWindow, 3, 1), item("d", limiter.SlidingWindow, 3, 1)}, allowed: false,
				want: []limiter.Result{res(false, 2, 1, minute), res(true, 2, 1, minute)}},
			{items: []limiter.Item{item("d", limiter.SlidingWindow, 3, 1), shadow(item("d", limiter.SlidingWindow, 3, 1))}, allowed: true,
				want: []limiter.Result{res(false, 4, 0, minute), res(true, 4, 0, minute)}},
		}},
		{name: "same key, both algorithms, separate counters", calls: []call{
			{items: []limiter.Item{item("b", limiter.SlidingWindow, 1, 1), item("b", limiter.FixedWindow, 1, 1)}, allowed: true,
				want: []limiter.Result{res(false, 1, 0, minute), res(false, 1, 0, minute)}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i, c := range tc.calls {
				got, allowed := do(t, l, c.items...)
				if allowed != c.allowed || len(got) != len(c.want) {
					t.Fatalf("call %d: allowed=%v %+v, want allowed=%v %+v", i, allowed, got, c.allowed, c.want)
				}
				for j := range got {
					if got[j] != c.want[j] {
						t.Errorf("call %d item %d: %+v, want %+v", i, j, got[j], c.want[j])
					}
				}
			}
		})
	}
}

// TestLocalCache checks that a counter Redis reported exhausted is denied without any Redis
// command until its quota frees, and what makes the cache step aside.
func TestLocalCache(t *testing.T) {
	c, p, clk := setup(t)
	hook := &counter{}
	c.AddHook(hook)
	reg := metricstest.NewRegistry()
	l, err := limiter.New(c, limiter.Config{Now: clk.Now, Timeout: 5 * time.Second}, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, alg := range []limiter.Algorithm{limiter.FixedWindow, limiter.SlidingWindow} {
		t.Run(alg.String(), func(t *testing.T) {
			clk.Set(epoch)
			full := limiter.Item{Key: p + "{cache-" + alg.String() + "}", Limit: 2, Window: time.Minute, Algorithm: alg, Hits: 2}
			other := limiter.Item{Key: p + "{cache-other-" + alg.String() + "}", Limit: 5, Window: time.Minute, Algorithm: alg, Hits: 1}
			if r, _ := do(t, l, full); r[0].Remaining != 0 || r[0].FromCache {
				t.Fatalf("first call: %+v, want Remaining 0 from Redis", r[0])
			}
			cacheHits := metric(t, reg, "sluice_ratelimit_local_cache_hits_total", "")

			clk.Advance(10 * time.Second)
			before := hook.cmds.Load()
			got, allowed := do(t, l, other, withHits(full, 1))
			if n := hook.cmds.Load() - before; n != 0 {
				t.Errorf("%d Redis commands for a request with a known exhausted counter, want 0", n)
			}
			want := []limiter.Result{{FromCache: true}, {Over: true, Used: 2, ResetAfter: 50 * time.Second, FromCache: true}}
			if allowed || got[0] != want[0] || got[1] != want[1] {
				t.Errorf("cached answer: allowed=%v %+v, want denied %+v", allowed, got, want)
			}
			if d := metric(t, reg, "sluice_ratelimit_local_cache_hits_total", "") - cacheHits; d != 1 {
				t.Errorf("local cache hits metric grew by %v, want 1", d)
			}

			tests := []struct {
				name string
				item limiter.Item
			}{
				{name: "shadow items go to Redis", item: limiter.Item{Key: full.Key, Limit: 2, Window: time.Minute, Algorithm: alg, Hits: 1, Shadow: true}},
				{name: "another limit goes to Redis", item: limiter.Item{Key: full.Key, Limit: 3, Window: time.Minute, Algorithm: alg, Hits: 1}},
			}
			for _, tc := range tests {
				before := hook.cmds.Load()
				r, _ := do(t, l, tc.item)
				if hook.cmds.Load() == before || r[0].FromCache {
					t.Errorf("%s: answered from the cache", tc.name)
				}
			}

			clk.Set(epoch.Add(time.Minute)) // quota frees: fixed window ends, the sliding hits leave
			before = hook.cmds.Load()
			if r, ok := do(t, l, withHits(full, 1)); !ok || r[0].FromCache || hook.cmds.Load() == before {
				t.Errorf("after reset: allowed=%v %+v, want an allowed answer from Redis", ok, r[0])
			}
			do(t, l, withHits(full, 1)) // exhausted again
			before = hook.cmds.Load()
			if r, ok := do(t, l, withRefund(withHits(full, 1), true), withHits(full, 1)); !ok || r[1].FromCache || hook.cmds.Load() == before {
				t.Errorf("refund and charge: allowed=%v %+v, want an allowed answer from Redis", ok, r)
			}
		})
	}
}

// TestConcurrent races 64 goroutines on one counter in real time (the server's TIME): exactly
// Limit hits pass.
func TestConcurrent(t *testing.T) {
	const (
		goroutines = 64
		calls      = 20
		limit      = 500
	)
	c, p, _ := setup(t)
	tests := []struct {
		name      string
		algorithm limiter.Algorithm
		cacheSize int
	}{
		{name: "fixed", algorithm: limiter.FixedWindow},
		{name: "sliding", algorithm: limiter.SlidingWindow},
		{name: "sliding without local cache", algorithm: limiter.SlidingWindow, cacheSize: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(t, c, limiter.Config{LocalCacheSize: tc.cacheSize})
			// an hour-long fixed window: keep clear of its end, which would let a second round in
			if left := time.Hour - time.Duration(time.Now().UnixNano()%int64(time.Hour)); left < 10*time.Second {
				time.Sleep(left + 100*time.Millisecond)
			}
			item := limiter.Item{Key: p + "{race-" + tc.name + "}", Limit: limit, Window: time.Hour, Algorithm: tc.algorithm, Hits: 1}
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for range goroutines {
				wg.Go(func() {
					for range calls {
						_, ok, err := l.Do(context.Background(), []limiter.Item{item})
						if err != nil {
							t.Error(err)
							return
						}
						if ok {
							allowed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if got := allowed.Load(); got != limit {
				t.Errorf("%d of %d calls allowed, want exactly %d", got, goroutines*calls, limit)
			}
		})
	}
}
