// Command loadmix drives a realistic HTTP request mix through Sluice's
// gateway path (Envoy emulator → ext_proc + rate limit service → Redis →
// demo API) and measures it: throughput, p50/p95/p99 latency overall and per
// class (get, write, batch, anon), status codes, errors Sluice caused,
// cache hits by layer and rate-limit decisions. In the same run it sends the
// same mix straight to the demo API, so the gateway path's cost reads as a
// ratio against that baseline.
//
// The mix: Zipf-distributed GETs over each demo tenant's contacts, list
// pages and dashboard (all tiers of devstack.DemoTiers, half of them with a
// user id), writes (POST, PUT, PATCH, DELETE) that invalidate cached
// entries, batch requests of GETs, and anonymous callers spread over
// several loopback source addresses. Callers are closed-loop: each sends
// its next request when the last one is answered.
//
// By default it starts a dev stack in this process on the machine's Redis
// under a private key prefix (deleted at exit); -url targets a gateway
// already running (-admin and -upstream add metrics and the baseline).
//
// With -soak it instead runs the gateway mix for -d, samples goroutines,
// heap and RSS of the process under test every -sample, and fails (exit 1)
// when goroutines or the live heap grow steadily after the warm-up. With
// -pid the sampled process is that Sluice process (read through /proc and
// its admin endpoint); without it, the sampled process is this one, which
// holds the load generator as well as the stack.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/devstack"
)

// flags are the command line.
type flags struct {
	d, warmup, timeout, sample, idleWait           time.Duration
	c, contacts, pages, users, batchMax, maxErrors int
	anonIPs, goroutineTol                          int
	pct                                            [numClasses]int
	seed                                           uint64
	zipfS, userShare, warmFrac, heapGrowth         float64
	url, admin, upstream, redisAddr                string
	pid                                            int
	baseline, soak                                 bool
}

func main() {
	var f flags
	flag.DurationVar(&f.d, "d", 10*time.Second, "measured time of each phase (the soak's whole duration with -soak)")
	flag.DurationVar(&f.warmup, "warmup", 2*time.Second, "unmeasured time before each phase's measurement (not with -soak)")
	flag.DurationVar(&f.timeout, "timeout", 10*time.Second, "per-request timeout")
	flag.IntVar(&f.c, "c", 32, "concurrent closed-loop callers")
	flag.IntVar(&f.maxErrors, "max-errors", 0, "errors caused by the gateway path tolerated before the exit status is 1")
	flag.IntVar(&f.pct[classGet], "get", 75, "percent of identified GETs")
	flag.IntVar(&f.pct[classWrite], "write", 10, "percent of writes (POST/PUT/PATCH/DELETE)")
	flag.IntVar(&f.pct[classBatch], "batch", 5, "percent of batch requests")
	flag.IntVar(&f.pct[classAnon], "anon", 10, "percent of anonymous GETs")
	flag.Uint64Var(&f.seed, "seed", 1, "random seed (same seed, same request sequence per caller)")
	flag.Float64Var(&f.zipfS, "zipf", 1.1, "Zipf exponent s (> 1) of the GET key popularity")
	flag.IntVar(&f.contacts, "contacts", 100, "contacts per tenant (topped up directly on the demo API when -upstream is known)")
	flag.IntVar(&f.pages, "pages", 50, "list pages per tenant (?limit=1..pages)")
	flag.IntVar(&f.users, "users", 20, "user ids per tenant (x-user-id u0..uN-1); 0 sends none")
	flag.Float64Var(&f.userShare, "user-share", 0.5, "share of identified requests that carry a user id")
	flag.IntVar(&f.batchMax, "batch-items", 6, "items per batch: uniform in 2..batch-items")
	flag.IntVar(&f.anonIPs, "anon-ips", 32, "loopback source addresses (127.0.1.x) anonymous callers dial from")
	flag.StringVar(&f.url, "url", "", "gateway base URL of a running stack; empty starts a dev stack in this process")
	flag.StringVar(&f.admin, "admin", "", "Sluice admin base URL (with -url) for /metrics")
	flag.StringVar(&f.upstream, "upstream", "", "demo API base URL (with -url) for seeding and the direct baseline")
	flag.IntVar(&f.pid, "pid", 0, "with -soak: PID of the Sluice process to sample (needs -admin)")
	flag.BoolVar(&f.baseline, "baseline", true, "also run the mix straight against the demo API and print ratios")
	flag.StringVar(&f.redisAddr, "redis", "127.0.0.1:6379", "Redis of the in-process dev stack")
	flag.BoolVar(&f.soak, "soak", false, "soak mode: run the gateway mix for -d and judge goroutine and heap growth")
	flag.DurationVar(&f.sample, "sample", 0, "with -soak: sampling interval (0: d/30 within 1s..10s)")
	flag.Float64Var(&f.warmFrac, "warm-frac", 0.25, "with -soak: leading share of the run left out of the verdicts")
	flag.IntVar(&f.goroutineTol, "goroutine-tol", 20, "with -soak: goroutine growth tolerated after the warm-up")
	flag.Float64Var(&f.heapGrowth, "heap-growth", 10, "with -soak: live-heap growth tolerated over the judged window, percent")
	flag.DurationVar(&f.idleWait, "idle-wait", 35*time.Second, "with -soak: quiet time after the load before the idle goroutine check (0 skips it)")
	flag.Parse()
	os.Exit(run(f))
}

func (f *flags) check() error {
	sum := 0
	for _, p := range f.pct {
		if p < 0 {
			return errors.New("percentages must not be negative")
		}
		sum += p
	}
	switch {
	case sum != 100:
		return fmt.Errorf("-get -write -batch -anon add up to %d, not 100", sum)
	case f.c < 1 || f.d <= 0 || f.warmup < 0:
		return errors.New("need -c ≥ 1, -d > 0, -warmup ≥ 0")
	case f.zipfS <= 1:
		return errors.New("-zipf must be > 1")
	case f.batchMax < 2 || f.batchMax > 20:
		return errors.New("-batch-items must be in 2..20 (the batch endpoint's default max_items is 20)")
	case f.anonIPs < 0 || f.anonIPs > 250:
		return errors.New("-anon-ips must be in 0..250")
	case f.soak && f.url != "" && (f.pid == 0 || f.admin == ""):
		return errors.New("-soak with -url needs -pid and -admin (the process to sample)")
	case f.warmFrac < 0 || f.warmFrac >= 1:
		return errors.New("-warm-frac must be in [0, 1)")
	}
	return nil
}

// stack is the system under test: where to send, where to read metrics.
type stack struct {
	gateway, admin, upstream string
	bare                     string // the emulator without Sluice's filters (in-process stacks only)
	desc                     string
	stop                     func() error
}

func run(f flags) int {
	if err := f.check(); err != nil {
		fmt.Fprintln(os.Stderr, "loadmix:", err)
		return 2
	}
	ctx := context.Background()
	st, err := start(ctx, f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadmix:", err)
		return 1
	}
	code := drive(ctx, f, st)
	if err := st.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "loadmix: cleanup:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// start brings up the in-process dev stack, or describes the one at -url.
func start(ctx context.Context, f flags) (*stack, error) {
	if f.url != "" {
		return &stack{
			gateway: strings.TrimRight(f.url, "/"), admin: strings.TrimRight(f.admin, "/"), upstream: strings.TrimRight(f.upstream, "/"),
			desc: "running stack at " + f.url, stop: func() error { return nil },
		}, nil
	}
	prefix := fmt.Sprintf("sluiceload:%d:%d:", os.Getpid(), time.Now().UnixNano())
	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.ShutdownGrace = time.Second
	cfg.Redis.URL = "redis://" + f.redisAddr
	cfg.Redis.KeyPrefix = prefix
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	runCtx, cancel := context.WithCancel(ctx)
	s, err := devstack.Start(runCtx, devstack.Options{Listen: "127.0.0.1:0", Sluice: cfg, RedisSet: true}, log)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("start dev stack: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	st := &stack{
		gateway: s.URL(), admin: s.AdminURL(), upstream: s.Upstream(),
		desc: fmt.Sprintf("in-process dev stack (redis %s, key prefix %q)", f.redisAddr, prefix),
	}
	bare, stopBare, bareErr := bareGateway(s.Upstream(), log)
	if bareErr == nil {
		st.bare = bare
	}
	st.stop = func() error {
		var bareStop error
		if stopBare != nil {
			bareStop = stopBare()
		}
		cancel()
		runErr := <-done
		if errors.Is(runErr, context.Canceled) {
			runErr = nil
		}
		return errors.Join(bareErr, bareStop, runErr, unlinkPrefix(f.redisAddr, prefix))
	}
	if err := waitReady(ctx, st.admin); err != nil {
		return nil, errors.Join(err, st.stop())
	}
	return st, nil
}

func waitReady(ctx context.Context, admin string) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("readyz: %w", err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sluice not ready after 15s (last: %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unlinkPrefix deletes every key under prefix.
func unlinkPrefix(addr, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	defer rdb.Close()
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return fmt.Errorf("redis scan %s*: %w", prefix, err)
		}
		if len(keys) > 0 {
			if err := rdb.Unlink(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("redis unlink: %w", err)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// metricNames are the Sluice series scraped around a measurement.
var metricNames = []string{
	"sluice_cache_requests_total", "sluice_cache_collapsed_total", "sluice_cache_invalidations_total",
	"sluice_ratelimit_decisions_total", "sluice_ratelimit_degraded_total", "sluice_extproc_streams_total",
	"sluice_ratelimit_redis_errors_total", "sluice_cache_redis_errors_total",
	"sluice_ratelimit_redis_duration_seconds_bucket", "sluice_cache_redis_duration_seconds_bucket",
}

func drive(ctx context.Context, f flags, st *stack) int {
	setup := newClient(4, f.timeout, nil)
	tenants, anon, err := prepare(ctx, setup, st.gateway, st.upstream, devstack.DemoTiers, f.contacts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadmix:", err)
		return 1
	}
	m := &mix{tenants: tenants, anon: anon, zipfS: f.zipfS, users: f.users, userShare: f.userShare, batchMax: f.batchMax,
		pool: &writePool{created: map[string][]int64{}, cap: 50}, versions: &versions{done: map[string]int64{}, busy: map[string]bool{}}, seed: f.seed}
	acc := 0
	for c := range numClasses {
		acc += f.pct[c]
		m.cum[c] = acc
	}
	keys := 0
	for _, t := range append(append([]*tenant(nil), tenants...), anon) {
		buildKeys(t, f.pages, f.seed)
		keys += len(t.keys)
	}
	fmt.Printf("== loadmix: %s\n", st.desc)
	fmt.Printf("   gateway %s  admin %s  upstream %s\n", st.gateway, orNone(st.admin), orNone(st.upstream))
	fmt.Printf("   c=%d d=%v warmup=%v seed=%d mix get=%d%% write=%d%% batch=%d%% anon=%d%%; %d tenants (%s) + anonymous from %d source IPs; %d GET keys, Zipf s=%.2f; users %d (share %.0f%%); batches of 2..%d GETs\n",
		f.c, f.d, f.warmup, f.seed, f.pct[classGet], f.pct[classWrite], f.pct[classBatch], f.pct[classAnon],
		len(tenants), tierList(tenants), f.anonIPs, keys, f.zipfS, f.users, 100*f.userShare, f.batchMax)

	gw := &target{base: st.gateway, client: newClient(f.c, f.timeout, nil)}
	for i := 1; i <= f.anonIPs; i++ {
		gw.anon = append(gw.anon, newClient(f.c, f.timeout, net.IPv4(127, 0, 1, byte(i))))
	}
	// The seeding connections go, so they are not in the idle baseline.
	setup.CloseIdleConnections()
	if f.soak {
		return soak(ctx, f, st, m, gw)
	}

	var direct *stats
	if f.baseline && st.upstream != "" {
		dt := &target{base: st.upstream, direct: true, client: newClient(f.c, f.timeout, nil)}
		fmt.Printf("\n== direct: the same mix straight to the demo API (no gateway, no Sluice), %d callers, %v\n", f.c, f.d)
		direct = runPhase(ctx, m, dt, f.c, f.warmup, f.d)
		direct.print("direct", f.d.Seconds())
		dt.client.CloseIdleConnections()
	}
	var bare *stats
	if f.baseline && st.bare != "" {
		bt := &target{base: st.bare, direct: true, client: newClient(f.c, f.timeout, nil)}
		fmt.Printf("\n== bare gateway: the same mix through the Envoy emulator without Sluice's filters, %d callers, %v\n", f.c, f.d)
		bare = runPhase(ctx, m, bt, f.c, f.warmup, f.d)
		bare.print("bare", f.d.Seconds())
		bt.client.CloseIdleConnections()
	}

	fmt.Printf("\n== gateway: Envoy emulator → Sluice ext_proc + RLS → Redis → demo API, %d callers, %v\n", f.c, f.d)
	var before, after []sample
	var wg sync.WaitGroup
	if st.admin != "" {
		wg.Go(func() {
			time.Sleep(f.warmup)
			var serr error
			if before, serr = scrape(ctx, setup, st.admin+"/metrics", metricNames...); serr != nil {
				fmt.Fprintln(os.Stderr, "loadmix:", serr)
			}
		})
	}
	g := runPhase(ctx, m, gw, f.c, f.warmup, f.d)
	wg.Wait()
	if st.admin != "" && before != nil {
		if after, err = scrape(ctx, setup, st.admin+"/metrics", metricNames...); err != nil {
			fmt.Fprintln(os.Stderr, "loadmix:", err)
		}
	}
	g.print("gateway", f.d.Seconds())
	printGateway(g, before, after)
	if direct != nil {
		printRatios(g, direct, "direct")
	}
	if bare != nil {
		printRatios(g, bare, "bare gateway (Sluice's own cost: ext_proc, RLS, Redis)")
	}
	if g.errors() > f.maxErrors {
		fmt.Printf("\nFAIL: %d errors caused by the gateway path (more than -max-errors %d)\n", g.errors(), f.maxErrors)
		return 1
	}
	return 0
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func tierList(ts []*tenant) string {
	var parts []string
	for _, t := range ts {
		parts = append(parts, t.name+"="+t.tier)
	}
	return strings.Join(parts, " ")
}

// runPhase runs c workers for warmup+d and merges what they measured.
func runPhase(ctx context.Context, m *mix, t *target, c int, warmup, d time.Duration) *stats {
	measure := time.Now().Add(warmup)
	stop := measure.Add(d)
	results := make([]*stats, c)
	var wg sync.WaitGroup
	for i := range c {
		wg.Go(func() {
			w := newWorker(m, t, i)
			w.run(ctx, measure, stop)
			results[i] = w.st
		})
	}
	wg.Wait()
	all := newStats()
	for _, r := range results {
		all.add(r)
	}
	return all
}

func printGateway(g *stats, before, after []sample) {
	n429 := g.status[http.StatusTooManyRequests]
	fmt.Printf("  429 answers (rate-limit decisions, not errors): %d (%.1f%% of answers)\n", n429, 100*float64(n429)/float64(max(1, g.all.n)))
	fmt.Printf("  x-cache of GET answers (get+anon, 429s left out): %s\n", shares(g.xcache))
	if len(g.items) > 0 {
		fmt.Printf("  batch items: statuses %s; x-cache %s\n", formatInts(g.items), shares(g.itemCache))
	}
	if before == nil || after == nil {
		fmt.Println("  (no admin URL: Sluice metrics not read)")
		return
	}
	d := func(name, label string) map[string]int {
		return delta(sumBy(before, name, label), sumBy(after, name, label))
	}
	fmt.Printf("  Sluice metrics over the measured window (Δ of the admin /metrics counters):\n")
	fmt.Printf("    cache lookups by layer (sluice_cache_requests_total, batch items included): %s\n", shares(d("sluice_cache_requests_total", "layer")))
	fmt.Printf("    collapsed waits (sluice_cache_collapsed_total): %s\n", shares(d("sluice_cache_collapsed_total", "result")))
	fmt.Printf("    invalidations by result (sluice_cache_invalidations_total): %s\n", shares(d("sluice_cache_invalidations_total", "result")))
	fmt.Printf("    rate-limit decisions by code (sluice_ratelimit_decisions_total: one per matched limit, several per request): %s\n", shares(d("sluice_ratelimit_decisions_total", "code")))
	fmt.Printf("    calls answered without Redis (sluice_ratelimit_degraded_total): %s\n", shares(d("sluice_ratelimit_degraded_total", "mode")))
	fmt.Printf("    ext_proc streams by result (sluice_extproc_streams_total): %s\n", shares(d("sluice_extproc_streams_total", "result")))
	fmt.Printf("    Redis: rate-limit errors by reason %s; cache errors by op %s\n",
		shares(d("sluice_ratelimit_redis_errors_total", "reason")), shares(d("sluice_cache_redis_errors_total", "op")))
	rb := d("sluice_ratelimit_redis_duration_seconds_bucket", "le")
	cb := d("sluice_cache_redis_duration_seconds_bucket", "le")
	fmt.Printf("    Redis round trips (histogram buckets): rate limit p50≤%s p99≤%s; cache p50≤%s p99≤%s\n",
		bucketQuantile(rb, .5), bucketQuantile(rb, .99), bucketQuantile(cb, .5), bucketQuantile(cb, .99))
}

func printRatios(g, direct *stats, name string) {
	// Both phases ran for the same -d, so counts compare as rates.
	ratio := func(a, b float64) string {
		if b == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	fmt.Printf("\n== gateway / %s (same run, same mix, same callers)\n", name)
	fmt.Printf("throughput req/s gateway/baseline = %s  2xx/s = %s  p50 = %s  p95 = %s  p99 = %s\n",
		ratio(float64(g.all.n), float64(direct.all.n)), ratio(float64(g.ok()), float64(direct.ok())),
		ratio(float64(g.all.quantile(.50)), float64(direct.all.quantile(.50))),
		ratio(float64(g.all.quantile(.95)), float64(direct.all.quantile(.95))),
		ratio(float64(g.all.quantile(.99)), float64(direct.all.quantile(.99))))
	for c := range numClasses {
		if g.lat[c].n == 0 || direct.lat[c].n == 0 {
			continue
		}
		fmt.Printf("  %-6s req/s = %s  p50 = %s  p99 = %s\n", classNames[c],
			ratio(float64(g.lat[c].n), float64(direct.lat[c].n)),
			ratio(float64(g.lat[c].quantile(.50)), float64(direct.lat[c].quantile(.50))),
			ratio(float64(g.lat[c].quantile(.99)), float64(direct.lat[c].quantile(.99))))
	}
	fmt.Println("  (gateway answers include fast 429s and cache hits the baselines never have; 2xx/s compares served traffic)")
}

func soak(ctx context.Context, f flags, st *stack, m *mix, gw *target) int {
	var smp sampler = selfSampler{}
	if f.pid > 0 {
		smp = procSampler{pid: f.pid, admin: st.admin, client: &http.Client{Timeout: 10 * time.Second}}
	}
	every := f.sample
	if every == 0 {
		every = min(10*time.Second, max(time.Second, f.d/30))
	}
	fmt.Printf("\n== soak: gateway mix for %v, sampling every %v\n   sampled process: %s\n", f.d, every, smp.describe())
	time.Sleep(time.Second)
	idleBefore, err := smp.sample(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadmix:", err)
		return 1
	}
	setup := &http.Client{Timeout: 10 * time.Second}
	var before, after []sample
	if st.admin != "" {
		before, _ = scrape(ctx, setup, st.admin+"/metrics", metricNames...)
	}

	begin := time.Now()
	done := make(chan *stats, 1)
	go func() { done <- runPhase(ctx, m, gw, f.c, 0, f.d) }()
	tick := time.NewTicker(every)
	defer tick.Stop()
	var series []point
	lastN, lastT := m.reqTotal.Load(), begin
	var g *stats
	for g == nil {
		select {
		case g = <-done:
		case now := <-tick.C:
			p, err := smp.sample(ctx)
			if err != nil {
				fmt.Fprintln(os.Stderr, "loadmix: sample:", err)
				continue
			}
			n := m.reqTotal.Load()
			p.at, p.reqPerSec = now.Sub(begin), float64(n-lastN)/now.Sub(lastT).Seconds()
			lastN, lastT = n, now
			series = append(series, p)
		}
	}
	if st.admin != "" {
		after, _ = scrape(ctx, setup, st.admin+"/metrics", metricNames...)
	}
	g.print("gateway", f.d.Seconds())
	printGateway(g, before, after)

	// Idle: this side's keep-alive connections closed, then quiet for longer
	// than the 30 s IdleConnTimeout of the emulator's upstream transport and
	// of the batch runner, so their pooled connections (and goroutines) go.
	gw.client.CloseIdleConnections()
	for _, c := range gw.anon {
		c.CloseIdleConnections()
	}
	var idleAfter point
	haveIdle := f.idleWait > 0
	if haveIdle {
		fmt.Printf("\n(waiting %v without traffic for the idle sample)\n", f.idleWait)
		time.Sleep(f.idleWait)
		if idleAfter, err = smp.sample(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "loadmix: idle sample:", err)
			haveIdle = false
		}
	}
	pass := verdict(series, idleBefore, idleAfter, haveIdle, f.d, soakRules{
		warmFrac: f.warmFrac, goroutineTol: f.goroutineTol, heapGrowthPct: f.heapGrowth, minR2: 0.5, idleWait: f.idleWait,
	})
	ok := g.errors() <= f.maxErrors
	fmt.Printf("errors caused by the gateway path during the soak: %d\n  rule: FAIL when more than -max-errors %d → %s\n", g.errors(), f.maxErrors, passFail(ok))
	pass = pass && ok
	if !pass {
		fmt.Println("\nsoak: FAIL")
		return 1
	}
	fmt.Println("\nsoak: PASS")
	return 0
}
