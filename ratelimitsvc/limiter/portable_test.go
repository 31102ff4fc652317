package limiter_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// TestPortable runs one random traffic trace through a real Redis and through
// miniredis (the embedded server of `sluice dev`, whose Lua is gopher-lua, with
// none of Redis's extra libraries), which run the same script, and requires
// identical decisions.
func TestPortable(t *testing.T) {
	real, prefix, realClock := setup(t)
	mini := miniredis.RunT(t)
	mc := redis.NewClient(&redis.Options{Addr: mini.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { mc.Close() })
	miniClock := newClock(epoch)

	lr := newLimiter(t, real, limiter.Config{Now: realClock.Now, LocalCacheSize: -1})
	lm := newLimiter(t, mc, limiter.Config{Now: miniClock.Now, LocalCacheSize: -1})

	rng := rand.New(rand.NewPCG(1, 2))
	items := func() []limiter.Item {
		n := 1 + rng.IntN(3)
		out := make([]limiter.Item, n)
		for i := range out {
			alg := limiter.SlidingWindow
			if rng.IntN(3) == 0 {
				alg = limiter.FixedWindow
			}
			out[i] = limiter.Item{
				Key:        prefix + "{k" + itoa(int64(rng.IntN(4))) + "}:x",
				Limit:      uint64(5 + rng.IntN(20)),
				Window:     time.Minute,
				Algorithm:  alg,
				SubWindows: []int{0, 1, 6, 60}[rng.IntN(4)],
				Hits:       uint64(rng.IntN(4)),
				Refund:     rng.IntN(10) == 0,
				Shadow:     rng.IntN(8) == 0,
			}
			if alg == limiter.FixedWindow {
				out[i].SubWindows = 0
			}
		}
		return out
	}
	for step := 0; step < 600; step++ {
		d := time.Duration(rng.IntN(1500)) * time.Millisecond
		realClock.Advance(d)
		miniClock.Advance(d)
		its := items()
		gotR, okR := do(t, lr, its...)
		gotM, okM := do(t, lm, its...)
		if okR != okM {
			t.Fatalf("step %d: allowed real=%v miniredis=%v for %+v", step, okR, okM, its)
		}
		for i := range gotR {
			if gotR[i] != gotM[i] {
				t.Fatalf("step %d item %d: real %+v, miniredis %+v (%+v)", step, i, gotR[i], gotM[i], its[i])
			}
		}
	}
}
