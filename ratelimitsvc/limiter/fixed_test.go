package limiter_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

func TestFixedWindow(t *testing.T) {
	runSteps(t, limiter.FixedWindow, []stepCase{
		{name: "limit reached exactly", limit: 3, window: time.Minute, steps: []step{
			{at: 0, hits: 1, allowed: true, want: res(false, 1, 2, 60*time.Second)},
			{at: time.Second, hits: 1, allowed: true, want: res(false, 2, 1, 59*time.Second)},
			{at: 2 * time.Second, hits: 1, allowed: true, want: res(false, 3, 0, 58*time.Second)},
			{at: 3 * time.Second, hits: 1, allowed: false, want: res(true, 3, 0, 57*time.Second)},
		}},
		{name: "reset at window boundary", limit: 2, window: time.Minute, steps: []step{
			// The key's TTL is the rest of the window on Redis's real clock, so the
			// simulated clock leaves it a real second to live: a 1ms TTL expired
			// between two calls of a loaded -race run.
			{at: 59 * time.Second, hits: 2, allowed: true, want: res(false, 2, 0, time.Second)},
			{at: 59999 * ms, hits: 1, allowed: false, want: res(true, 2, 0, ms)},
			{at: 60 * time.Second, hits: 2, allowed: true, want: res(false, 2, 0, time.Minute)},
			{at: 119999 * ms, hits: 1, allowed: false, want: res(true, 2, 0, ms)},
		}},
		{name: "windows align to the epoch", limit: 5, window: 7 * time.Second, steps: []step{
			// epoch is 1_800_000_000_000 ms = 257142857 windows of 7 s + 1 s: the window began 1 s ago
			{at: 0, hits: 5, allowed: true, want: res(false, 5, 0, 6*time.Second)},
			{at: 5999 * ms, hits: 1, allowed: false, want: res(true, 5, 0, ms)},
			{at: 6 * time.Second, hits: 1, allowed: true, want: res(false, 1, 4, 7*time.Second)},
		}},
		{name: "hits addend above one", limit: 10, window: time.Minute, steps: []step{
			{at: 0, hits: 4, allowed: true, want: res(false, 4, 6, time.Minute)},
			{at: 0, hits: 4, allowed: true, want: res(false, 8, 2, time.Minute)},
			{at: 0, hits: 4, allowed: false, want: res(true, 8, 2, time.Minute)},
			{at: 0, hits: 2, allowed: true, want: res(false, 10, 0, time.Minute)},
		}},
		{name: "check only never charges", limit: 2, window: time.Minute, steps: []step{
			{at: 0, hits: 0, allowed: true, want: res(false, 0, 2, time.Minute)},
			{at: 0, hits: 0, allowed: true, want: res(false, 0, 2, time.Minute)},
			{at: 0, hits: 2, allowed: true, want: res(false, 2, 0, time.Minute)},
			{at: 0, hits: 0, allowed: false, want: res(true, 2, 0, time.Minute)},
		}},
		{name: "refund", limit: 3, window: time.Minute, steps: []step{
			{at: 0, hits: 3, allowed: true, want: res(false, 3, 0, time.Minute)},
			{at: 0, hits: 1, allowed: false, want: res(true, 3, 0, time.Minute)},
			{at: 0, hits: 2, refund: true, allowed: true, want: res(false, 1, 2, time.Minute)},
			{at: 0, hits: 2, allowed: true, want: res(false, 3, 0, time.Minute)},
			{at: 0, hits: 5, refund: true, allowed: true, want: res(false, 0, 3, time.Minute)},
			{at: 0, hits: 1, refund: true, allowed: true, want: res(false, 0, 3, time.Minute)},
		}},
		{name: "refund of an empty window", limit: 3, window: time.Minute, steps: []step{
			{at: 0, hits: 3, allowed: true, want: res(false, 3, 0, time.Minute)},
			{at: time.Minute, hits: 2, refund: true, allowed: true, want: res(false, 0, 3, time.Minute)},
		}},
		{name: "limit zero", limit: 0, window: time.Minute, steps: []step{
			{at: 0, hits: 1, allowed: false, want: res(true, 0, 0, time.Minute)},
			{at: 0, hits: 0, allowed: false, want: res(true, 0, 0, time.Minute)},
		}},
		{name: "shadow over is charged and allowed", limit: 1, window: time.Minute, steps: []step{
			{at: 0, hits: 1, shadow: true, allowed: true, want: res(false, 1, 0, time.Minute)},
			{at: 0, hits: 1, shadow: true, allowed: true, want: res(true, 2, 0, time.Minute)},
		}},
	})
}

// TestFixedWindowTTL checks the key layout and that the TTL, the rest of the window, is set
// when the key is created and never refreshed.
func TestFixedWindowTTL(t *testing.T) {
	ctx := t.Context()
	c, p, clk := setup(t)
	l := newLimiter(t, c, limiter.Config{Now: clk.Now, LocalCacheSize: -1})
	clk.Set(epoch.Add(20 * time.Second))
	item := limiter.Item{Key: p + "{ttl}", Limit: 100, Window: time.Minute, Algorithm: limiter.FixedWindow, Hits: 1}
	do(t, l, item)
	key := p + "{ttl}:f:60000:" + itoa(epoch.UnixMilli())
	first, err := c.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if first <= 39*time.Second || first > 40*time.Second {
		t.Fatalf("PTTL of %s after the first hit = %v, want the 40s left of the window", key, first)
	}
	time.Sleep(100 * time.Millisecond)
	do(t, l, item)                   // a charge
	do(t, l, withHits(item, 0))      // a check
	do(t, l, withRefund(item, true)) // a refund
	later, err := c.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if later > first-90*time.Millisecond {
		t.Errorf("PTTL went from %v to %v in 100ms of calls: refreshed, want set once", first, later)
	}
	if v, _ := c.Get(ctx, key).Int(); v != 1 {
		t.Errorf("counter = %d, want 1 (two charges, one refund)", v)
	}
}

func withHits(it limiter.Item, hits uint64) limiter.Item { it.Hits = hits; return it }

func withRefund(it limiter.Item, refund bool) limiter.Item { it.Refund = refund; return it }
