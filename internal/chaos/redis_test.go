package chaos_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/faultproxy"
	"github.com/sluicehq/sluice/internal/redistest"
)

// breakerOpenFor is the breakers' open time in the Redis tests (both the rate
// limiter's and the cache's; the default is 1s). Once Redis answers again,
// recovery takes what is left of an open period, then one probe call: at
// most this plus a request.
const breakerOpenFor = 250 * time.Millisecond

// recoveryBound is the longest recovery the tests accept after Redis returns:
// breakerOpenFor and generous slack for a loaded machine.
const recoveryBound = time.Second

// checkRecovery fails the test unless, after ref (when Redis answered
// again), a rate limit decision counted in Redis reached a client and the
// probe tenant's cache record was written to Redis (l2), each within
// recoveryBound; it returns both recovery times. Decisions are seen by the
// clients (RateLimit headers on a 200), so measuring them costs Sluice
// nothing: scraping its /metrics every few milliseconds would.
func checkRecovery(t *testing.T, rs []result, l2 *signal, ref time.Time, st *stalls) (time.Duration, time.Duration) {
	t.Helper()
	dAt, dOK := firstDecided(rs, ref)
	lAt, lOK := l2.wait(0)
	if !dOK || !lOK {
		t.Fatalf("after Redis returned: a decision counted in Redis %v, a cache entry written to Redis %v", dOK, lOK)
	}
	d, l := recovery(dAt, ref), recovery(lAt, ref)
	if bound := recoveryBound + st.worst(ref, ref.Add(max(d, l))); d > bound || l > bound {
		t.Errorf("recovery after Redis returned: decisions %v, cache writes %v; want at most %v (%v and the worst stall)", d, l, bound, recoveryBound)
	}
	return d, l
}

// pace is each load client's pause between requests: six clients then send a
// few hundred requests a second, enough to keep every path busy without
// saturating two shared cores under -race.
const pace = 10 * time.Millisecond

// redisLoad is the load of the Redis tests: rate-limited and cached GETs of
// several tiers.
func redisLoad() []client {
	return []client{
		{tenant: "initech", path: unique("/n/i-")},   // free: over its limit, 429s
		{tenant: "acme", path: fixed("/c/hot-", 20)}, // pro: a hot set, cache hits
		{tenant: "acme", path: fixed("/c/hot-", 20)},
		{tenant: "globex", path: unique("/c/g-")},   // basic: misses, each stored
		{tenant: "umbrella", path: unique("/n/u-")}, // enterprise: never limited
	}
}

func breakers(c *config.Config) {
	c.RateLimit.BreakerOpenFor = breakerOpenFor
	c.Cache.Store.BreakerOpenFor = breakerOpenFor
}

// probeKeys is the pattern of the probe tenant's cache records in Redis.
func probeKeys(s *stack) string {
	return s.prefix + "c:{" + cachefilter.TenantTag("probe") + "}:k:*"
}

// checkAdded fails the test when a fault phase added more latency than a
// loaded two-core machine explains: at the median the larger of doubling and
// 25ms, at the 99th percentile the larger of tripling and 300ms. The median
// is what catches a fault costing every request a Redis timeout; the 99th
// percentile bound only catches waits of the order of a dial timeout (250ms)
// or a breaker period, as another test run on the same cores can stall a
// few requests for hundreds of milliseconds. Both add the worst stall of the
// test process seen during the phase.
func checkAdded(t *testing.T, name string, before, during phase, st *stalls) {
	t.Helper()
	stall := st.worst(during.from, during.to)
	if bound := max(2*before.p50, before.p50+25*time.Millisecond) + stall; during.p50 > bound {
		t.Errorf("%s: p50 %v, before %v; want at most %v (worst stall %v)", name, during.p50, before.p50, bound, stall)
	}
	if bound := max(3*before.p99, before.p99+300*time.Millisecond) + stall; during.p99 > bound {
		t.Errorf("%s: p99 %v, before %v; want at most %v (worst stall %v)", name, during.p99, before.p99, bound, stall)
	}
}

// recovery is how long after the reference a recovery signal came; 0 when
// it came first.
func recovery(at, ref time.Time) time.Duration { return max(at.Sub(ref), 0) }

// TestRedisKilledUnderLoad kills Redis under concurrent load through the
// gateway, then restarts it (empty). No request may fail: rate limits and
// the cache fail open. The circuit breakers keep the outage from adding
// latency, and once Redis answers again, rate limit decisions counted in
// Redis and cache writes to Redis (the probe tenant's keys) resume within
// recoveryBound.
func TestRedisKilledUnderLoad(t *testing.T) {
	st := monitorStalls(t)
	srv := redistest.StartServer(t)
	o := newOrigin(t)
	s := startStack(t, o.URL, srv.Addr(), breakers)
	rdb := srv.Client(t)

	l := startLoad(t, s, pace, redisLoad()...)
	time.Sleep(1500 * time.Millisecond)
	killed := time.Now()
	srv.Kill()
	time.Sleep(2 * time.Second)
	restarting := time.Now()
	// The probe tenant starts now: Redis comes back empty, so its keys can
	// only come from writes made after the restart.
	probe := startLoad(t, s, pace, client{tenant: "probe", path: unique("/c/probe-")})
	l2Back := watch(t, func(ctx context.Context) bool { return exists(ctx, rdb, probeKeys(s)) })
	srv.Restart()
	restarted := time.Now()
	time.Sleep(time.Until(restarted.Add(1500 * time.Millisecond)))
	rs := append(l.Stop(), probe.Stop()...)
	end := time.Now()
	decisions, l2 := checkRecovery(t, rs, l2Back, restarted, st)

	before := summarize(rs, time.Time{}, killed)
	outage := summarize(rs, killed, restarting)
	after := summarize(rs, restarting, end)
	before.check(t, "before the kill")
	outage.check(t, "Redis down")
	after.check(t, "after the restart")
	if before.decided == 0 {
		t.Error("before the kill: no decision counted in Redis; the load does not exercise Redis")
	}
	// Redis down: the rate limits fail open (200s without RateLimit
	// headers; counters the limiter knew to be exhausted keep answering 429
	// from its local cache until their window ends), and the outage costs
	// no time: a refused connection fails at once, an open breaker does not
	// even try.
	if outage.decided > outage.n/20 {
		t.Errorf("Redis down: %d of %d answers counted in Redis?", outage.decided, outage.n)
	}
	checkAdded(t, "Redis down", before, outage, st)
	t.Logf("FIGURE: redis killed under load: %d requests, %d errors, %d 5xx, %d wrong; p50/p99 before %s/%s, Redis down %s/%s (added p50 %s, p99 %s; %d failed open, %d 429 from the local cache), after %s/%s; recovery after restart: decisions %s, L2 writes %s (breaker_open_for %s); worst stall of the test process %s",
		before.n+outage.n+after.n, before.errs+outage.errs+after.errs, before.bad+outage.bad+after.bad,
		before.wrong+outage.wrong+after.wrong,
		ms(before.p50), ms(before.p99), ms(outage.p50), ms(outage.p99), ms(outage.p50-before.p50), ms(outage.p99-before.p99),
		outage.n-outage.decided-outage.limited, outage.limited,
		ms(after.p50), ms(after.p99), ms(decisions), ms(l2), breakerOpenFor, ms(st.worst(time.Time{}, end)))
}

// TestRedisSlowUnderLoad puts a proxy adding latency between Sluice and
// Redis: each Redis round trip takes 2×latency, far above the 20ms Redis
// budgets of the rate limiter and the cache. Requests keep succeeding with
// little added latency (the timeouts, then the open breakers, bound it), and
// once the latency is gone, decisions and cache writes recover within
// recoveryBound.
func TestRedisSlowUnderLoad(t *testing.T) {
	st := monitorStalls(t)
	srv := redistest.StartServer(t)
	px := faultproxy.Start(t, srv.Addr())
	o := newOrigin(t)
	s := startStack(t, o.URL, px.Addr(), breakers)
	rdb := srv.Client(t)
	const latency = 75 * time.Millisecond

	l := startLoad(t, s, pace, redisLoad()...)
	time.Sleep(1500 * time.Millisecond)
	slowed := time.Now()
	px.SetLatency(latency, latency)
	time.Sleep(2 * time.Second)
	// The probe tenant starts now: its keys in Redis can only come from
	// writes made after the latency was removed.
	probe := startLoad(t, s, pace, client{tenant: "probe", path: unique("/c/probe-")})
	l2Back := watch(t, func(ctx context.Context) bool { return exists(ctx, rdb, probeKeys(s)) })
	restored := time.Now()
	if err := px.Restore(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(restored.Add(1500 * time.Millisecond)))
	rs := append(l.Stop(), probe.Stop()...)
	end := time.Now()
	decisions, l2 := checkRecovery(t, rs, l2Back, restored, st)

	before := summarize(rs, time.Time{}, slowed)
	slow := summarize(rs, slowed, restored)
	after := summarize(rs, restored, end)
	before.check(t, "before")
	slow.check(t, fmt.Sprintf("Redis %v slower each way", latency))
	after.check(t, "after")
	if before.decided == 0 {
		t.Error("before: no decision counted in Redis; the load does not exercise Redis")
	}
	// Without the 20ms budgets every request would wait a whole Redis round
	// trip (150ms) for the cache lookup, and the gateway's 20ms for the rate
	// limit; without the breakers, 20ms for each (40ms, 60ms for a miss).
	checkAdded(t, "Redis slow", before, slow, st)
	t.Logf("FIGURE: redis +%v each way under load: %d requests, %d errors, %d 5xx, %d wrong; p50/p99 before %s/%s, slow %s/%s (added p50 %s, p99 %s; %d failed open, %d not enriched), after %s/%s; recovery after the latency's removal: decisions %s, L2 writes %s; worst stall of the test process %s",
		latency, before.n+slow.n+after.n, before.errs+slow.errs+after.errs, before.bad+slow.bad+after.bad,
		before.wrong+slow.wrong+after.wrong,
		ms(before.p50), ms(before.p99), ms(slow.p50), ms(slow.p99), ms(slow.p50-before.p50), ms(slow.p99-before.p99),
		slow.n-slow.decided-slow.limited, slow.unenriched, ms(after.p50), ms(after.p99), ms(decisions), ms(l2), ms(st.worst(time.Time{}, end)))
}
