package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// TestLeaseDecidesLocally checks that a key in lease mode costs one waiting round trip (its
// first lease), then background renewals only: far fewer Redis commands than decisions.
func TestLeaseDecidesLocally(t *testing.T) {
	c, p, clk := setup(t)
	hook := &counter{}
	c.AddHook(hook)
	reg := metricstest.NewRegistry()
	l, err := limiter.New(c, limiter.Config{Now: clk.Now, Timeout: 5 * time.Second}, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	item := limiter.Item{Key: p + "{local}", Limit: 100_000, Window: time.Minute, Hits: 1, Mode: limiter.Lease}
	const calls = 5000
	for i := range calls {
		res, ok := do(t, l, item)
		if !ok || !res[0].Leased || res[0].Over {
			t.Fatalf("call %d: allowed %v %+v, want allowed from the lease", i, ok, res[0])
		}
		if res[0].Used < uint64(i+1) || res[0].Used+res[0].Remaining != item.Limit {
			t.Fatalf("call %d: used %d remaining %d, want used at least %d and used+remaining = limit", i, res[0].Used, res[0].Remaining, i+1)
		}
		clk.Advance(time.Millisecond) // 1000 decisions per second
	}
	need := metric(t, reg, "sluice_ratelimit_lease_calls_total", "need")
	renew := metric(t, reg, "sluice_ratelimit_lease_calls_total", "renew")
	cmds := hook.cmds.Load()
	t.Logf("%d decisions: %d Redis commands (%.4f per decision); lease calls: %v waited, %v in the background", calls, cmds, float64(cmds)/calls, need, renew)
	if need != 1 {
		t.Errorf("%v decisions waited for a lease, want 1 (the first)", need)
	}
	if float64(cmds)/calls > 0.01 {
		t.Errorf("%d Redis commands for %d decisions, want at most 1%%", cmds, calls)
	}
}

// TestLeaseOverAdmission runs three replicas sharing one key, in simulated time, and checks
// every window against the bound of lease mode: Limit plus the hits leased across replicas,
// floor(MaxOvershoot*Limit). The traffic is steady at five times the limit, or alternates
// light spells, in which leases grow to their full share, with bursts that use them up.
func TestLeaseOverAdmission(t *testing.T) {
	const (
		limit    = 600
		window   = time.Minute
		span     = 8 * window
		overshot = 0.05 // a larger share than the default, for a bound that traffic can reach
	)
	patterns := []struct {
		name  string
		every func(r *rand.Rand, at time.Duration) time.Duration // the time to the next request
	}{
		{name: "steady at 5x the limit", every: func(*rand.Rand, time.Duration) time.Duration {
			return window / (5 * limit)
		}},
		{name: "light spells and bursts", every: func(r *rand.Rand, at time.Duration) time.Duration {
			if at%(window/2) < window/2-window/20 {
				return time.Duration(r.Int64N(int64(4*window/limit))) + time.Millisecond // about half the limit
			}
			return time.Duration(r.Int64N(int64(window/(20*limit)))) + time.Millisecond // 20x
		}},
	}
	for pi, pat := range patterns {
		t.Run(pat.name, func(t *testing.T) {
			c, p, clk := setup(t)
			cfg := limiter.Config{Now: clk.Now, Timeout: 5 * time.Second, LocalCacheSize: -1, Lease: limiter.LeaseConfig{MaxOvershoot: overshot}}
			bound := limit + uint64(overshot*limit)
			var replicas [3]*limiter.Limiter
			for i := range replicas {
				replicas[i] = newLimiter(t, c, cfg)
			}
			item := limiter.Item{Key: p + "{shared}", Limit: limit, Window: window, Hits: 1, Mode: limiter.Lease}
			r := rand.New(rand.NewPCG(uint64(pi), 3))
			var admitted hitLog
			for at := time.Duration(0); at < span; at += pat.every(r, at) {
				clk.Set(epoch.Add(at))
				res, ok := do(t, replicas[r.IntN(len(replicas))], item)
				if ok {
					admitted.add(at, 1)
				}
				if !res[0].Leased {
					t.Fatalf("at %v: %+v, want a leased decision", at, res[0])
				}
			}
			most := admitted.maxInAnyWindow(window)
			t.Logf("admitted %d in %v; most in any window %d; bound %d (limit %d + %.0f%%)",
				admitted.total(), span, most, bound, limit, 100*overshot)
			if most > bound {
				t.Errorf("%d hits admitted in one window, bound %d", most, bound)
			}
		})
	}
}

// TestLeaseRegistryCap has three replicas decide one key from many goroutines, on Redis's
// clock, while another reads the key's registry of leases: what is leased across replicas and
// not expired never exceeds floor(MaxOvershoot*Limit). Afterwards the counter holds every hit
// admitted, and at most that many more.
func TestLeaseRegistryCap(t *testing.T) {
	ctx := t.Context()
	c, p := redistest.Client(t), redistest.Prefix(t)
	const limit = 1_000_000
	capHits := uint64(limiter.DefaultLeaseMaxOvershoot * limit)
	item := limiter.Item{Key: p + "{cap}", Limit: limit, Window: time.Minute, Hits: 1, Mode: limiter.Lease}
	counter := p + "{cap}:sw:60000:10"
	var replicas [3]*limiter.Limiter
	for i := range replicas {
		l, err := limiter.New(c, limiter.Config{Timeout: 5 * time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		replicas[i] = l
	}
	var (
		admitted atomic.Int64
		wg       sync.WaitGroup
		stop     = make(chan struct{})
	)
	for i := range 12 {
		wg.Go(func() {
			l := replicas[i%len(replicas)]
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, ok, err := l.Do(ctx, []limiter.Item{item})
				if err != nil {
					t.Errorf("Do: %v", err)
					return
				}
				if ok {
					admitted.Add(1)
				}
			}
		})
	}
	var most uint64
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		entries := registry(t, c, counter, 10)
		redisNow, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		var total uint64
		for _, e := range entries {
			if e.expires > redisNow.UnixMilli() {
				total += e.hits
			}
		}
		most = max(most, total)
		if total > capHits {
			t.Errorf("leased across replicas: %d hits (%v), cap %d", total, entries, capHits)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	for _, l := range replicas {
		_ = l.Close() // gives the leases back
	}
	res, _, err := newLimiter(t, c, limiter.Config{}).Do(ctx, []limiter.Item{{Key: item.Key, Limit: limit, Window: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	used, n := res[0].Used, uint64(admitted.Load())
	t.Logf("%d decisions admitted; counter %d; most leased at once across replicas %d (cap %d)", n, used, most, capHits)
	if used < n || used > n+capHits {
		t.Errorf("counter %d after %d admitted hits: want at least those and at most %d more", used, n, capHits)
	}
}

// TestLeaseReplicaCrash kills one of two replicas holding leases on a key: what it leased and
// did not use stays counted (never handed out twice), the other replica loses nothing more,
// and once the dead replica's lease expires its share goes to the live one.
func TestLeaseReplicaCrash(t *testing.T) {
	c, p, clk := setup(t)
	const (
		limit  = 1000
		window = time.Minute
	)
	cfg := limiter.Config{Now: clk.Now, Timeout: 5 * time.Second, LocalCacheSize: -1, Lease: limiter.LeaseConfig{MaxOvershoot: 0.1}}
	dead, live := newLimiter(t, c, cfg), newLimiter(t, c, cfg)
	item := limiter.Item{Key: p + "{crash}", Limit: limit, Window: window, Hits: 1, Mode: limiter.Lease}
	counter := p + "{crash}:sw:60000:10"
	// Both replicas busy (a decision every simulated millisecond, in turn) until both hold leases.
	var deadAdmitted, liveAdmitted uint64
	for i := range 200 {
		clk.Advance(time.Millisecond)
		l, n := live, &liveAdmitted
		if i%2 == 0 {
			l, n = dead, &deadAdmitted
		}
		if _, ok := do(t, l, item); ok {
			*n++
		}
	}
	waitFor(t, "both replicas in the registry", func() bool { return len(registry(t, c, counter, 10)) == 2 })
	entries := registry(t, c, counter, 10)
	limiter.Crash(dead)
	t.Logf("registry when one replica dies: %v", entries)
	deadLease := entries[limiter.ID(dead)].hits
	if deadLease == 0 {
		t.Fatalf("the dying replica holds no lease: %v", entries)
	}
	// The live replica uses the rest of the window's quota.
	for range 2 * limit {
		clk.Advance(time.Millisecond)
		if _, ok := do(t, live, item); ok {
			liveAdmitted++
		}
	}
	total := deadAdmitted + liveAdmitted
	t.Logf("admitted in the window: %d by the dead replica, %d by the live one; the dead one held %d", deadAdmitted, liveAdmitted, deadLease)
	if total > limit || total+deadLease < limit {
		t.Errorf("admitted %d hits in one window with a lease of %d lost: want between %d and %d", total, deadLease, limit-deadLease, limit)
	}
	// Once the window has passed, the live replica asks again; the dead replica's entry, past its
	// time, counts for nothing and goes.
	clk.Advance(window + time.Second)
	do(t, live, item)
	waitFor(t, "the dead replica's entry removed", func() bool {
		_, ok := registry(t, c, counter, 10)[limiter.ID(dead)]
		return !ok
	})
}

// TestLeaseRedisDown kills Redis under a replica holding a lease: decisions go on from the
// lease, until it is used up (then they fail, and the caller's failure mode applies) or
// expires; after Redis comes back, leases are taken again.
func TestLeaseRedisDown(t *testing.T) {
	srv := redistest.StartServer(t)
	c := srv.Client(t)
	clk := newClock(epoch)
	reg := metricstest.NewRegistry()
	cfg := limiter.Config{Now: clk.Now, Timeout: 200 * time.Millisecond, BreakerFailures: 2, BreakerOpenFor: 300 * time.Millisecond, LocalCacheSize: -1}
	l, err := limiter.New(c, cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	item := limiter.Item{Key: "{down}", Limit: 1_000_000, Window: time.Minute, Hits: 1, Mode: limiter.Lease}
	for range 1000 {
		clk.Advance(time.Millisecond)
		do(t, l, item)
	}
	srv.Kill()
	local := 0
	for {
		clk.Advance(time.Millisecond)
		res, ok, err := l.Do(context.Background(), []limiter.Item{item})
		if err != nil {
			t.Logf("with Redis down: %d decisions from the lease, then %v", local, err)
			break
		}
		if !ok || !res[0].Leased {
			t.Fatalf("with Redis down, decision %d: %v %+v", local, ok, res[0])
		}
		local++
		if local > 100_000 {
			t.Fatal("the lease never ran out")
		}
	}
	if local == 0 {
		t.Error("no decision from the lease once Redis was down")
	}
	if v := metric(t, reg, "sluice_ratelimit_redis_errors_total", "unavailable") + metric(t, reg, "sluice_ratelimit_redis_errors_total", "error") +
		metric(t, reg, "sluice_ratelimit_redis_errors_total", "timeout"); v == 0 {
		t.Error("no Redis error counted")
	}
	srv.Restart()
	waitFor(t, "decisions again after the restart", func() bool {
		clk.Advance(time.Millisecond)
		_, ok, err := l.Do(context.Background(), []limiter.Item{item})
		return err == nil && ok
	})
}

// TestLeaseExpires checks that a lease is not used past its time (twice the horizon after it
// was asked for), on the replica's clock: a decision then waits for a new lease.
func TestLeaseExpires(t *testing.T) {
	c, p, clk := setup(t)
	reg := metricstest.NewRegistry()
	l, err := limiter.New(c, limiter.Config{Now: clk.Now, Timeout: 5 * time.Second}, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	item := limiter.Item{Key: p + "{expires}", Limit: 1_000_000, Window: time.Hour, Hits: 1, Mode: limiter.Lease}
	for range 100 {
		clk.Advance(time.Millisecond)
		do(t, l, item)
	}
	if limiter.Leased(l, item) == 0 {
		t.Fatal("no lease held")
	}
	need := metric(t, reg, "sluice_ratelimit_lease_calls_total", "need")
	clk.Advance(2*limiter.DefaultLeaseHorizon + time.Millisecond)
	do(t, l, item)
	if got := metric(t, reg, "sluice_ratelimit_lease_calls_total", "need"); got != need+1 {
		t.Errorf("a decision past the lease's time: %v decisions waited, want %v", got, need+1)
	}
}

// TestLeaseIdleReturn checks that a key idle for a horizon gives its lease back: its registry
// entry goes and the counter keeps only the hits admitted.
func TestLeaseIdleReturn(t *testing.T) {
	c, p, clk := setup(t)
	l := newLimiter(t, c, limiter.Config{Now: clk.Now})
	item := limiter.Item{Key: p + "{idle}", Limit: 1_000_000, Window: time.Hour, Hits: 1, Mode: limiter.Lease}
	counter := p + "{idle}:sw:3600000:10"
	const admitted = 50
	for range admitted {
		clk.Advance(time.Millisecond)
		do(t, l, item)
	}
	waitFor(t, "a lease beyond the decisions", func() bool { return len(registry(t, c, counter, 10)) == 1 && limiter.Leased(l, item) > 0 })
	clk.Advance(limiter.DefaultLeaseHorizon)
	limiter.Sweep(l, clk.Now())
	waitFor(t, "the lease given back", func() bool { return len(registry(t, c, counter, 10)) == 0 })
	check := limiter.Item{Key: item.Key, Limit: item.Limit, Window: item.Window}
	res, _ := do(t, newLimiter(t, c, limiter.Config{Now: clk.Now}), check)
	if res[0].Used != admitted {
		t.Errorf("counter %d after the lease went back, want the %d hits admitted", res[0].Used, admitted)
	}
}

// TestLeaseMixedRequest checks all-or-nothing across leased and exact items: a request denied
// by its exact item takes nothing from the lease, and one denied by its leased item charges
// nothing in Redis (its exact item is left for the caller to read).
func TestLeaseMixedRequest(t *testing.T) {
	c, p, clk := setup(t)
	l := newLimiter(t, c, limiter.Config{Now: clk.Now, LocalCacheSize: -1})
	leased := limiter.Item{Key: p + "{mixed-lease}", Limit: 1000, Window: time.Minute, Hits: 1, Mode: limiter.Lease}
	exact := limiter.Item{Key: p + "{mixed-exact}", Limit: 2, Window: time.Minute, Hits: 1}
	for i := range 2 {
		if _, ok := do(t, l, leased, exact); !ok {
			t.Fatalf("request %d denied", i)
		}
	}
	before := limiter.Leased(l, leased)
	res, ok := do(t, l, leased, exact)
	if ok || !res[1].Over || res[0].Over {
		t.Fatalf("third request: allowed %v %+v, want denied by the exact item", ok, res)
	}
	if after := limiter.Leased(l, leased); after != before {
		t.Errorf("lease held %d hits before the denied request, %d after: want them given back", before, after)
	}

	full := limiter.Item{Key: p + "{mixed-full}", Limit: 100, Window: time.Minute, Hits: 101, Mode: limiter.Lease}
	other := limiter.Item{Key: p + "{mixed-other}", Limit: 10, Window: time.Minute, Hits: 1}
	res, ok = do(t, l, full, other)
	if ok || !res[0].Over || !res[0].Leased {
		t.Fatalf("a leased item over its limit: allowed %v %+v", ok, res)
	}
	check := other
	check.Hits = 0
	got, _ := do(t, l, check)
	if got[0].Used != 0 {
		t.Errorf("the exact item of a request denied by its lease was charged: used %d", got[0].Used)
	}
}

// TestLeasePortable plays one sequence of lease requests, script calls with simulated times,
// on a real Redis and on miniredis, and requires the same replies: sluice dev's embedded
// server runs lease mode too.
func TestLeasePortable(t *testing.T) {
	ctx := t.Context()
	real, prefix, _ := setup(t)
	mini := miniredis.RunT(t)
	mc := redis.NewClient(&redis.Options{Addr: mini.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { mc.Close() })
	src := limiter.ScriptSource()
	rng := rand.New(rand.NewPCG(5, 6))
	at := epoch.UnixMilli()
	var lastGrant int64
	for step := range 300 {
		at += rng.Int64N(3000)
		in := limiter.LeaseInput{
			Key: prefix + "{portable}", Limit: 200, Window: time.Minute, Need: rng.Uint64N(3), Want: rng.Uint64N(40),
			Held: rng.Uint64N(5), Cap: 30, TTL: 2 * time.Second,
		}
		if rng.IntN(4) == 0 && lastGrant > 0 {
			in.Return, in.ReturnAt = rng.Uint64N(10), lastGrant
		}
		keys, input := limiter.LeaseScriptCall(in)
		replica := fmt.Sprintf("r%d", rng.IntN(3))
		var replies [2][]int64
		for i, cl := range []*redis.Client{real, mc} {
			v, err := cl.Eval(ctx, src, keys, strconv.FormatInt(at, 10), input, replica).Int64Slice()
			if err != nil {
				t.Fatalf("step %d on %s: %v", step, []string{"Redis", "miniredis"}[i], err)
			}
			replies[i] = v
		}
		if !slices.Equal(replies[0], replies[1]) {
			t.Fatalf("step %d (%+v, %s): Redis %v, miniredis %v", step, in, replica, replies[0], replies[1])
		}
		if replies[0][5] > 0 { // hits leased: the next return goes to this grant
			lastGrant = at
		}
	}
}

// leaseEntry is one replica's entry in a counter's registry of leases.
type leaseEntry struct {
	hits    uint64
	expires int64 // Redis ms
}

// registry reads the registry of leases of a sliding counter of subs sub-windows: the entries
// "<replica>=<hits>@<expiry ms>;" after the ring.
func registry(t *testing.T, c redis.Cmdable, counter string, subs int) map[string]leaseEntry {
	t.Helper()
	v, err := c.Get(t.Context(), counter).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	ring := 90 + 29*(subs+1)
	if len(v) < ring {
		t.Fatalf("%s: %d bytes, shorter than its ring (%d)", counter, len(v), ring)
	}
	out := map[string]leaseEntry{}
	for _, e := range strings.Split(strings.TrimSuffix(v[ring:], ";"), ";") {
		if e == "" {
			continue
		}
		var (
			id  string
			ent leaseEntry
		)
		id, rest, ok := strings.Cut(e, "=")
		if _, err := fmt.Sscanf(rest, "%d@%d", &ent.hits, &ent.expires); !ok || err != nil {
			t.Fatalf("%s: registry entry %q: %v", counter, e, err)
		}
		out[id] = ent
	}
	return out
}

// waitFor polls cond every 5ms for up to 5s, for outcomes of lease calls in the background.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLeaseCluster runs lease mode on a three-master Redis Cluster: a request with leased items
// on all three masters and an exact one is decided, each counter and its registry of leases
// live in its tag's slot, and later decisions come from the leases.
func TestLeaseCluster(t *testing.T) {
	ctx := t.Context()
	cl := redistest.StartCluster(t)
	cc := cl.Client(t)
	hook := &counter{}
	cc.AddHook(hook)
	clk := newClock(epoch)
	l := newLimiter(t, cc, limiter.Config{Now: clk.Now})
	// {a}, {b} and {c} are served by the three different masters.
	items := []limiter.Item{
		{Key: "lease:{a}", Limit: 100_000, Window: time.Minute, Hits: 1, Mode: limiter.Lease},
		{Key: "lease:{b}", Limit: 100_000, Window: time.Minute, Hits: 1, Mode: limiter.Lease},
		{Key: "lease:{c}", Limit: 100_000, Window: time.Minute, Hits: 1, Mode: limiter.Lease},
		{Key: "exact:{a}", Limit: 100_000, Window: time.Minute, Hits: 1},
	}
	const calls = 2000
	for i := range calls {
		clk.Advance(time.Millisecond)
		res, ok := do(t, l, items...)
		if !ok || !res[0].Leased || !res[1].Leased || !res[2].Leased || res[3].Leased || res[3].Used != uint64(i+1) {
			t.Fatalf("call %d: allowed %v %+v", i, ok, res)
		}
	}
	for _, tag := range []string{"a", "b", "c"} {
		counter := "lease:{" + tag + "}:sw:60000:10"
		if n, err := cc.Exists(ctx, counter).Result(); err != nil || n != 1 {
			t.Errorf("%s: Exists = %d, %v", counter, n, err)
		}
		if len(registry(t, cc, counter, 10)) != 1 {
			t.Errorf("%s: no lease in its registry", counter)
		}
	}
	// One exact pipeline per call; lease calls besides: three first leases and renewals.
	t.Logf("%d calls: %d pipelines, %d commands in all", calls, hook.pipelines.Load(), hook.cmds.Load())
	if extra := hook.cmds.Load() - calls; extra > calls/20 {
		t.Errorf("%d commands besides the %d exact ones: want leases to decide most", extra, calls)
	}
}
