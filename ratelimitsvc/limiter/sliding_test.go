package limiter_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

func TestSlidingWindow(t *testing.T) {
	const s = time.Second
	// window 1m, 10 sub-windows of 6s unless said otherwise
	runSteps(t, limiter.SlidingWindow, []stepCase{
		{name: "limit reached exactly", limit: 3, window: time.Minute, steps: []step{
			{at: 0, hits: 1, allowed: true, want: res(false, 1, 2, 60*s)},
			{at: 1 * s, hits: 1, allowed: true, want: res(false, 2, 1, 60*s)},
			{at: 7 * s, hits: 1, allowed: true, want: res(false, 3, 0, 54*s)}, // sub-window 0 frees at 1s+60s
			{at: 8 * s, hits: 1, allowed: false, want: res(true, 3, 0, 53*s)},
			{at: 60999 * ms, hits: 1, allowed: false, want: res(true, 3, 0, ms)},
			{at: 61 * s, hits: 1, allowed: true, want: res(false, 2, 1, 6*s)},
		}},
		{name: "burst at the end of a window still counts at the start of the next", limit: 5, window: time.Minute, steps: []step{
			{at: 59900 * ms, hits: 5, allowed: true, want: res(false, 5, 0, 60*s)},
			{at: 60 * s, hits: 1, allowed: false, want: res(true, 5, 0, 59900*ms)},
			{at: 119899 * ms, hits: 1, allowed: false, want: res(true, 5, 0, ms)},
			{at: 119900 * ms, hits: 5, allowed: true, want: res(false, 5, 0, 60*s)},
		}},
		{name: "hits addend above one", limit: 10, window: time.Minute, steps: []step{
			{at: 0, hits: 4, allowed: true, want: res(false, 4, 6, 60*s)},
			{at: 0, hits: 4, allowed: true, want: res(false, 8, 2, 60*s)},
			{at: 0, hits: 4, allowed: false, want: res(true, 8, 2, 60*s)},
			{at: 0, hits: 2, allowed: true, want: res(false, 10, 0, 60*s)},
		}},
		{name: "check only never charges", limit: 2, window: time.Minute, steps: []step{
			{at: 0, hits: 0, allowed: true, want: res(false, 0, 2, 0)},
			{at: 0, hits: 2, allowed: true, want: res(false, 2, 0, 60*s)},
			{at: 1 * s, hits: 0, allowed: false, want: res(true, 2, 0, 59*s)},
		}},
		{name: "refund takes from the newest sub-windows", limit: 4, window: time.Minute, steps: []step{
			{at: 0, hits: 2, allowed: true, want: res(false, 2, 2, 60*s)},
			{at: 30 * s, hits: 2, allowed: true, want: res(false, 4, 0, 30*s)},
			{at: 31 * s, hits: 3, refund: true, allowed: true, want: res(false, 1, 3, 29*s)},
			{at: 31 * s, hits: 3, allowed: true, want: res(false, 4, 0, 29*s)},
			{at: 60 * s, hits: 0, allowed: true, want: res(false, 3, 1, 31*s)},
			{at: 60 * s, hits: 9, refund: true, allowed: true, want: res(false, 0, 4, 0)},
		}},
		{name: "lags an exact log by at most one sub-window", limit: 2, window: time.Minute, steps: []step{
			{at: 0, hits: 1, allowed: true, want: res(false, 1, 1, 60*s)},
			{at: 5999 * ms, hits: 1, allowed: true, want: res(false, 2, 0, 60*s)},
			// an exact log frees one hit at 60s; the sub-window of both hits frees at 65.999s
			{at: 60 * s, hits: 1, allowed: false, want: res(true, 2, 0, 5999*ms)},
			{at: 65999 * ms, hits: 2, allowed: true, want: res(false, 2, 0, 60*s)},
		}},
		{name: "one sub-window", limit: 2, window: time.Minute, subs: 1, steps: []step{
			{at: 0, hits: 1, allowed: true, want: res(false, 1, 1, 60*s)},
			{at: 30 * s, hits: 1, allowed: true, want: res(false, 2, 0, 60*s)},
			{at: 60 * s, hits: 1, allowed: false, want: res(true, 2, 0, 30*s)},
			{at: 90 * s, hits: 1, allowed: true, want: res(false, 1, 1, 60*s)},
		}},
		{name: "window not divisible by sub-windows", limit: 1, window: 1000 * ms, subs: 3, steps: []step{
			{at: 333 * ms, hits: 1, allowed: true, want: res(false, 1, 0, 1000*ms)},
			{at: 1332 * ms, hits: 1, allowed: false, want: res(true, 1, 0, ms)},
			{at: 1333 * ms, hits: 1, allowed: true, want: res(false, 1, 0, 1000*ms)},
		}},
		{name: "limit zero", limit: 0, window: time.Minute, steps: []step{
			{at: 0, hits: 1, allowed: false, want: res(true, 0, 0, 0)},
			{at: 0, hits: 0, allowed: false, want: res(true, 0, 0, 0)},
		}},
		{name: "shadow over is charged and allowed", limit: 1, window: time.Minute, steps: []step{
			{at: 0, hits: 1, shadow: true, allowed: true, want: res(false, 1, 0, 60*s)},
			{at: 0, hits: 1, shadow: true, allowed: true, want: res(true, 2, 0, 60*s)},
		}},
	})
}

// TestBoundaryBurst sends Limit hits just before a fixed window ends and Limit more as the next
// begins: the fixed window lets 2*Limit through within 1ms, the sliding window only Limit.
func TestBoundaryBurst(t *testing.T) {
	c, p, clk := setup(t)
	l := newLimiter(t, c, limiter.Config{Now: clk.Now, LocalCacheSize: -1})
	const limit = 50
	tests := []struct {
		name      string
		algorithm limiter.Algorithm
		want      uint64
	}{
		{name: "fixed allows twice the limit", algorithm: limiter.FixedWindow, want: 2 * limit},
		{name: "sliding allows the limit", algorithm: limiter.SlidingWindow, want: limit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var admitted uint64
			for _, at := range []time.Duration{time.Minute - ms, time.Minute} {
				clk.Set(epoch.Add(at))
				for range limit {
					_, ok := do(t, l, limiter.Item{Key: p + "{" + tc.name + "}", Limit: limit, Window: time.Minute, Algorithm: tc.algorithm, Hits: 1})
					if ok {
						admitted++
					}
				}
			}
			if admitted != tc.want {
				t.Errorf("admitted %d hits within 1ms, want %d", admitted, tc.want)
			}
		})
	}
}

// TestSlidingAdversarialTrickle plays the pattern that beats the weighted two-window counter:
// the whole limit at the very end of one window, then a hit every 100ms. The weighted counter
// forgets the burst gradually and lets close to 2*Limit through in one window; the sliding
// window never lets more than Limit through in any span of one window.
func TestSlidingAdversarialTrickle(t *testing.T) {
	c, p, clk := setup(t)
	l := newLimiter(t, c, limiter.Config{Now: clk.Now})
	const (
		limit  = 100
		window = time.Minute
	)
	var events []event
	events = append(events, event{at: window - ms, hits: limit})
	for at := window; at < 3*window; at += 100 * ms {
		events = append(events, event{at: at, hits: 1})
	}
	item := limiter.Item{Key: p + "{trickle}", Limit: limit, Window: window, Hits: 1}
	var admitted hitLog
	for _, e := range events {
		clk.Set(epoch.Add(e.at))
		_, ok := do(t, l, withHits(item, e.hits))
		if ok {
			admitted.add(e.at, e.hits)
		}
	}
	weighted := weightedCounter(events, limit, window)
	t.Logf("max hits admitted in one window: sliding %d, weighted two-window counter %d (limit %d)",
		admitted.maxInAnyWindow(window), weighted.maxInAnyWindow(window), limit)
	if got := admitted.maxInAnyWindow(window); got > limit {
		t.Errorf("sliding window admitted %d hits in one window, limit %d", got, limit)
	}
	if got := weighted.maxInAnyWindow(window); got < limit*3/2 {
		t.Errorf("the weighted two-window counter admitted only %d hits in one window; the pattern is not adversarial", got)
	}
}

// TestSlidingAccuracy drives random and adversarial traffic, in simulated time, through the
// real limiter and compares it with an exact sliding log:
//   - safety: after every admitted hit, the hits admitted in the window before it never exceed
//     the limit (tolerance 0);
//   - lag: whenever the limiter denies a request that an exact log would admit given the same
//     history, quota frees (ResetAfter) within one sub-window;
//   - loss: hits admitted against those an exact log limiter admits from the same traffic.
//
// The local cache is on: it must not change a single decision.
func TestSlidingAccuracy(t *testing.T) {
	c, p, clk := setup(t)
	l := newLimiter(t, c, limiter.Config{Now: clk.Now})
	const (
		limit  = 100
		window = time.Minute
		span   = 10 * window
	)
	patterns := []struct {
		name   string
		events func(r *rand.Rand) []event
	}{
		{name: "random 2x limit", events: func(r *rand.Rand) []event {
			return randomEvents(r, 2*limit*int(span/window), span, 1)
		}},
		{name: "random 10x limit, 1-3 hits", events: func(r *rand.Rand) []event {
			return randomEvents(r, 10*limit*int(span/window), span, 3)
		}},
		{name: "steady at the limit", events: func(r *rand.Rand) []event {
			return steadyEvents(window/limit, span)
		}},
		{name: "steady 1.2x limit", events: func(r *rand.Rand) []event {
			return steadyEvents(window*10/(12*limit), span)
		}},
		{name: "random bursts", events: func(r *rand.Rand) []event {
			var ev []event
			for at := time.Duration(0); at < span; at += time.Duration(r.Int64N(int64(window / 2))) {
				for range 1 + r.IntN(limit/2) {
					ev = append(ev, event{at: at, hits: 1 + r.Uint64N(3)})
				}
			}
			return ev
		}},
		{name: "bursts at sub-window ends", events: func(r *rand.Rand) []event {
			// the worst case for sub-window counting: every hit at the last ms of a sub-window,
			// so the straddling sub-window is counted a whole sub-window longer than its hits
			var ev []event
			for at := window/10 - ms; at < span; at += window / 10 {
				ev = append(ev, event{at: at, hits: limit / 4}, event{at: at, hits: limit / 4})
			}
			return ev
		}},
	}
	var summary []string
	for _, subs := range []int{1, 10, 60} {
		bucket := window / time.Duration(subs)
		for i, pat := range patterns {
			name := fmt.Sprintf("%d sub-windows/%s", subs, pat.name)
			t.Run(name, func(t *testing.T) {
				events := pat.events(rand.New(rand.NewPCG(uint64(i), 0))) // the same traffic for every N
				item := limiter.Item{Key: fmt.Sprintf("%s{acc-%d-%d}", p, subs, i), Limit: limit, Window: window, SubWindows: subs}
				var (
					admitted     hitLog
					falseDenials int
					maxLag       time.Duration
					sumLag       time.Duration
				)
				for _, e := range events {
					clk.Set(epoch.Add(e.at))
					res, ok := do(t, l, withHits(item, e.hits))
					if ok {
						admitted.add(e.at, e.hits)
						if n := admitted.inWindow(e.at, window); n > limit {
							t.Fatalf("at %v: %d hits admitted in the window before, limit %d", e.at, n, limit)
						}
						continue
					}
					if admitted.inWindow(e.at, window)+e.hits <= limit {
						falseDenials++
						lag := res[0].ResetAfter
						sumLag += lag
						maxLag = max(maxLag, lag)
						if lag > bucket {
							t.Errorf("at %v: denied %d hits an exact log admits; quota frees in %v, more than a sub-window (%v)", e.at, e.hits, lag, bucket)
						}
					}
				}
				exact := exactLog(events, limit, window)
				meanLag := time.Duration(0)
				if falseDenials > 0 {
					meanLag = sumLag / time.Duration(falseDenials)
				}
				line := fmt.Sprintf("N=%-3d %-26s requests %5d  admitted %5d hits vs exact log %5d (%5.1f%%)  denied where exact admits %4d  lag mean %-7v max %v",
					subs, pat.name, len(events), admitted.total(), exact.total(),
					100*float64(admitted.total())/float64(exact.total()), falseDenials, meanLag.Round(ms), maxLag)
				t.Log(line)
				summary = append(summary, line)
			})
		}
	}
	t.Log("summary (window 1m, limit 100, 10 windows of traffic):\n" + strings.Join(summary, "\n"))
}

// TestSlidingMemoryBounded checks that a sliding counter stays one string of 90+29(N+1) bytes
// (the newest sub-window, the running sum, the oldest counted sub-window and its last hit, the
// newest sub-window's count and last hit, and a count and a time for each of N+1 sub-windows,
// in fixed-width decimal), whose running sum is the newest sub-window's count plus the counts
// of the other slots, with a TTL of at most window plus one sub-window, under random traffic
// with refunds.
func TestSlidingMemoryBounded(t *testing.T) {
	ctx := t.Context()
	c, p, clk := setup(t)
	l := newLimiter(t, c, limiter.Config{Now: clk.Now, LocalCacheSize: -1})
	const (
		subs   = 10
		window = time.Minute
		size   = 90 + 29*(subs+1)
	)
	item := limiter.Item{Key: p + "{mem}", Limit: 50, Window: window, SubWindows: subs, Hits: 1}
	key := p + "{mem}:sw:60000:10"
	num := func(s string) int64 {
		t.Helper()
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("field %q is not a number: %v", s, err)
		}
		return n
	}
	r := rand.New(rand.NewPCG(7, 7))
	seen := false
	for range 3000 {
		clk.Advance(time.Duration(r.Int64N(400)) * ms)
		it := withHits(item, 1+r.Uint64N(3))
		it.Refund = r.IntN(10) == 0
		do(t, l, it)
		v, err := c.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		seen = true
		if len(v) != size {
			t.Fatalf("at %v: %d bytes, want %d", clk.Now().Sub(epoch), len(v), size)
		}
		total := num(v[61:77]) // the newest sub-window, in the head
		newest := int(num(v[0:16])) % (subs + 1)
		for i := range subs + 1 {
			if i != newest { // its slot is stale: the head holds it
				total += num(v[90+29*i : 90+29*i+16])
			}
		}
		if s := num(v[16:32]); s != total {
			t.Fatalf("at %v: running sum %d, counts add up to %d: %s", clk.Now().Sub(epoch), s, total, v)
		}
		if ttl := c.PTTL(ctx, key).Val(); ttl <= 0 || ttl > window+window/subs {
			t.Fatalf("at %v: PTTL %v, want (0, %v]", clk.Now().Sub(epoch), ttl, window+window/subs)
		}
	}
	if !seen {
		t.Fatalf("counter %s never written", key)
	}
}

// event is a request at a simulated time.
type event struct {
	at   time.Duration
	hits uint64
}

func randomEvents(r *rand.Rand, n int, span time.Duration, maxHits uint64) []event {
	ev := make([]event, n)
	for i := range ev {
		// whole milliseconds, as the limiter sees them
		ev[i] = event{at: time.Duration(r.Int64N(int64(span/ms))) * ms, hits: 1 + r.Uint64N(maxHits)}
	}
	slices.SortFunc(ev, func(a, b event) int { return int(a.at - b.at) })
	return ev
}

func steadyEvents(every, span time.Duration) []event {
	var ev []event
	for at := time.Duration(0); at < span; at += every {
		ev = append(ev, event{at: at.Truncate(ms), hits: 1})
	}
	return ev
}

// hitLog is a log of admitted hits in time order.
type hitLog struct {
	at   []time.Duration
	hits []uint64
}

func (h *hitLog) add(at time.Duration, hits uint64) {
	h.at = append(h.at, at)
	h.hits = append(h.hits, hits)
}

// inWindow returns the hits in (t-w, t].
func (h *hitLog) inWindow(t, w time.Duration) uint64 {
	var n uint64
	for i := len(h.at) - 1; i >= 0 && h.at[i] > t-w; i-- {
		if h.at[i] <= t {
			n += h.hits[i]
		}
	}
	return n
}

func (h *hitLog) total() uint64 {
	var n uint64
	for _, x := range h.hits {
		n += x
	}
	return n
}

// maxInAnyWindow returns the most hits in any span (t-w, t]; the worst spans end at a hit.
func (h *hitLog) maxInAnyWindow(w time.Duration) uint64 {
	var best uint64
	for _, t := range h.at {
		best = max(best, h.inWindow(t, w))
	}
	return best
}

// exactLog admits events with an exact sliding log: a request passes if the hits admitted in
// the window before it, plus its own, stay within limit.
func exactLog(events []event, limit uint64, w time.Duration) *hitLog {
	var h hitLog
	for _, e := range events {
		if h.inWindow(e.at, w)+e.hits <= limit {
			h.add(e.at, e.hits)
		}
	}
	return &h
}

// weightedCounter admits events with the weighted two-window counter (the previous fixed
// window's count weighted by how much of it still overlaps the sliding window), the design the
// sliding window improves on.
func weightedCounter(events []event, limit uint64, w time.Duration) *hitLog {
	var h hitLog
	counts := map[int64]uint64{}
	for _, e := range events {
		t := epoch.Add(e.at).UnixMilli()
		wm := w.Milliseconds()
		cur := t / wm
		weight := 1 - float64(t%wm)/float64(wm)
		est := float64(counts[cur-1])*weight + float64(counts[cur])
		if est+float64(e.hits) <= float64(limit) {
			counts[cur] += e.hits
			h.add(e.at, e.hits)
		}
	}
	return &h
}
