package limiter_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// step is one Do call of a single item at a simulated time, with the answer it must get.
type step struct {
	at      time.Duration // since epoch
	hits    uint64
	refund  bool
	shadow  bool
	allowed bool
	want    limiter.Result
}

// stepCase is a sequence of calls on one counter.
type stepCase struct {
	name   string
	limit  uint64
	window time.Duration
	subs   int
	steps  []step
}

// runSteps plays each case on a fresh key, with the local cache off so every answer comes from
// Redis.
func runSteps(t *testing.T, alg limiter.Algorithm, cases []stepCase) {
	t.Helper()
	c, p, clk := setup(t)
	l := newLimiter(t, c, limiter.Config{Now: clk.Now, LocalCacheSize: -1})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i, s := range tc.steps {
				clk.Set(epoch.Add(s.at))
				item := limiter.Item{
					Key: p + "{" + tc.name + "}", Limit: tc.limit, Window: tc.window, Algorithm: alg,
					SubWindows: tc.subs, Hits: s.hits, Refund: s.refund, Shadow: s.shadow,
				}
				res, ok := do(t, l, item)
				if ok != s.allowed || res[0] != s.want {
					t.Fatalf("step %d at %v (hits %d refund %v): got allowed=%v %+v, want allowed=%v %+v",
						i, s.at, s.hits, s.refund, ok, res[0], s.allowed, s.want)
				}
			}
		})
	}
}

// res builds a Result tersely.
func res(over bool, used, remaining uint64, reset time.Duration) limiter.Result {
	return limiter.Result{Over: over, Used: used, Remaining: remaining, ResetAfter: reset}
}

const ms = time.Millisecond
