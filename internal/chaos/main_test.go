package chaos_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	examples "github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/app"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/devstack"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the tests fail Redis on purpose.
	redis.SetLogger(quiet{})
	goleak.VerifyTestMain(m,
		// net/http and pgx keep a poller goroutine briefly after Close.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// tiers is the static tier map of the tests' stacks. probe is a tenant of
// its own for recovery probes: the tests find its cache entries in Redis.
var tiers = map[string]string{
	"initech":  "free",       // 10 requests per second: gets 429s while Redis counts
	"globex":   "basic",      // 50 per second
	"acme":     "pro",        // 200 per second
	"umbrella": "enterprise", // 5000 per 10 seconds
	"probe":    "enterprise",
}

// origin is the API behind the gateway. Its body names the tenant, tier and
// path it was asked for, so a client can tell a response meant for another
// tenant (or one Sluice did not enrich). The path picks the caching headers:
//
//	/c/...          max-age=60
//	/sie/...        max-age=1, stale-if-error=60, with an ETag
//	/sie-noetag/... max-age=1, stale-if-error=60, without a validator
//	anything else   no-store
//
// While failing, every answer is a 503.
type origin struct {
	*httptest.Server
	failing atomic.Bool
}

func newOrigin(t *testing.T) *origin {
	t.Helper()
	o := &origin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := fmt.Sprintf("tenant=%s tier=%s path=%s", r.Header.Get("x-sluice-tenant"), r.Header.Get("x-sluice-tier"), r.URL.Path)
		h := w.Header()
		h.Set("Content-Type", "text/plain")
		if o.failing.Load() {
			h.Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "origin down: "+body)
			return
		}
		switch {
		case strings.HasPrefix(r.URL.Path, "/c/"):
			h.Set("Cache-Control", "max-age=60")
		case strings.HasPrefix(r.URL.Path, "/sie/"):
			h.Set("Cache-Control", "max-age=1, stale-if-error=60")
			h.Set("ETag", `"v1"`)
			if r.Header.Get("If-None-Match") == `"v1"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
		case strings.HasPrefix(r.URL.Path, "/sie-noetag/"):
			h.Set("Cache-Control", "max-age=1, stale-if-error=60")
		default:
			h.Set("Cache-Control", "no-store")
		}
		io.WriteString(w, body)
	}))
	t.Cleanup(o.Close)
	return o
}

// sharedRedis returns the address of the machine's Redis after checking that
// it answers: the test fails without it (and is skipped under -short), as a
// Sluice that cannot reach Redis would fail open and prove nothing.
func sharedRedis(t *testing.T) string {
	t.Helper()
	redistest.Client(t)
	return redistest.Addr()
}

// stack is a running dev stack: the Envoy emulator in front of Sluice, with
// Redis under a key prefix of the test's own.
type stack struct {
	*devstack.Stack
	prefix string
	client *http.Client
}

// startStack runs a dev stack in front of upstream with Redis at redisAddr;
// mutate may change the config first.
func startStack(t *testing.T, upstream, redisAddr string, mutate func(*config.Config)) *stack {
	t.Helper()
	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.ShutdownGrace = time.Second
	cfg.Redis.URL = "redis://" + redisAddr
	cfg.Redis.KeyPrefix = redistest.Prefix(t)
	cfg.ExtProc.Identity.Tiers = tiers
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := devstack.Start(ctx, devstack.Options{Listen: "127.0.0.1:0", Upstream: upstream, Sluice: cfg, RedisSet: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the dev stack did not stop within 10s")
		}
		client.CloseIdleConnections()
	})
	return &stack{Stack: s, prefix: cfg.Redis.KeyPrefix, client: client}
}

// result is one request through the gateway.
type result struct {
	start  time.Time
	took   time.Duration
	tenant string
	path   string
	status int
	err    error
	// saw, tier and sawPath are what the origin saw (from the body): saw is
	// "" when Sluice did not enrich the request (ext_proc failed open).
	saw, tier, sawPath string
	xcache             string
	// decided: the answer carries RateLimit headers, which Sluice's rate
	// limit service adds only to its decisions (a fail-open answer has
	// none). A 200 with them was counted in Redis; a 429 may come from the
	// limiter's local cache of exhausted counters.
	decided bool
}

func (r result) end() time.Time { return r.start.Add(r.took) }

// wrong reports a 200 that is not the origin's answer to this tenant and
// path: another tenant's cached entry, say.
func (r result) wrong() bool {
	return r.status == http.StatusOK && (r.sawPath != r.path || r.saw != "" && r.saw != r.tenant)
}

// get sends a GET for path as tenant ("" for none) through the gateway.
func (s *stack) get(tenant, path string) result {
	r := result{start: time.Now(), tenant: tenant, path: path}
	req, err := http.NewRequest("GET", s.URL()+path, nil)
	if err != nil {
		r.err = err
		return r
	}
	if tenant != "" {
		req.Header.Set("x-tenant-id", tenant)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		r.err, r.took = err, time.Since(r.start)
		return r
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.took = time.Since(r.start)
	r.err = err
	r.status = resp.StatusCode
	r.xcache = resp.Header.Get("x-cache")
	r.decided = resp.Header.Get("Ratelimit") != ""
	body := strings.TrimPrefix(string(b), "origin down: ")
	for f := range strings.FieldsSeq(body) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "tenant":
			r.saw = v
		case "tier":
			r.tier = v
		case "path":
			r.sawPath = v
		}
	}
	return r
}

// client is one simulated client: a tenant and the path of its i-th request.
type client struct {
	tenant string
	path   func(i int) string
}

// load runs clients concurrently, each sending a request, waiting pace,
// and again, until Stop.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex // guards res
	res    []result
}

func startLoad(t *testing.T, s *stack, pace time.Duration, clients ...client) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for _, c := range clients {
		l.wg.Go(func() {
			var mine []result
			defer func() {
				l.mu.Lock()
				l.res = append(l.res, mine...)
				l.mu.Unlock()
			}()
			for i := 0; ctx.Err() == nil; i++ {
				mine = append(mine, s.get(c.tenant, c.path(i)))
				select {
				case <-ctx.Done():
				case <-time.After(pace):
				}
			}
		})
	}
	t.Cleanup(func() { l.Stop() })
	return l
}

// Stop ends the load, waits for the requests in flight, and returns every
// result in start order. Safe to call more than once.
func (l *load) Stop() []result {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.SortFunc(l.res, func(a, b result) int { return a.start.Compare(b.start) })
	return l.res
}

// fixed is a client path function that cycles over n paths under prefix.
func fixed(prefix string, n int) func(int) string {
	return func(i int) string { return fmt.Sprintf("%s%d", prefix, i%n) }
}

// unique is a client path function that never repeats a path.
func unique(prefix string) func(int) string {
	return func(i int) string { return fmt.Sprintf("%s%d", prefix, i) }
}

// phase summarises the results that started in [from, to).
type phase struct {
	n, errs, bad, wrong int
	limited             int // 429s
	decided             int // 200s counted in Redis
	unenriched          int // 200s Sluice did not enrich (ext_proc failed open)
	p50, p99            time.Duration
	firstErr            string
	from, to            time.Time
}

func summarize(rs []result, from, to time.Time) phase {
	p := phase{from: from, to: to}
	var took []time.Duration
	for _, r := range rs {
		if r.start.Before(from) || !r.start.Before(to) {
			continue
		}
		p.n++
		took = append(took, r.took)
		switch {
		case r.err != nil:
			p.errs++
			if p.firstErr == "" {
				p.firstErr = r.err.Error()
			}
			continue
		case r.status == http.StatusTooManyRequests:
			p.limited++
		case r.status != http.StatusOK:
			p.bad++
			if p.firstErr == "" {
				p.firstErr = fmt.Sprintf("status %d for %s %s", r.status, r.tenant, r.path)
			}
		}
		if r.wrong() {
			p.wrong++
		}
		if r.decided && r.status == http.StatusOK {
			p.decided++
		}
		if r.status == http.StatusOK && r.saw == "" {
			p.unenriched++
		}
	}
	p.p50, p.p99 = quantile(took, 0.5), quantile(took, 0.99)
	return p
}

// check fails the test for any request that failed or got a wrong answer.
func (p phase) check(t *testing.T, name string) {
	t.Helper()
	if p.n == 0 {
		t.Errorf("%s: no requests", name)
	}
	if p.errs+p.bad+p.wrong > 0 {
		t.Errorf("%s: %d of %d requests failed (%d transport errors, %d bad statuses, %d wrong bodies); first: %s",
			name, p.errs+p.bad+p.wrong, p.n, p.errs, p.bad, p.wrong, p.firstErr)
	}
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// ms formats d in milliseconds with one decimal.
func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// firstDecided returns when the first Redis-counted 200 that started at or
// after from was answered.
func firstDecided(rs []result, from time.Time) (time.Time, bool) {
	var first time.Time
	for _, r := range rs {
		if r.status == http.StatusOK && r.decided && !r.start.Before(from) {
			if first.IsZero() || r.end().Before(first) {
				first = r.end()
			}
		}
	}
	return first, !first.IsZero()
}

// signal records when a condition first held, polling it every 10ms.
type signal struct {
	done chan struct{}
	at   atomic.Int64 // UnixNano of the first time cond held; 0 until then
}

// watch polls cond from now until it holds or the test ends.
func watch(t *testing.T, cond func(context.Context) bool) *signal {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &signal{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			if cond(ctx) {
				w.at.Store(time.Now().UnixNano())
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

// wait waits up to d for the condition and returns when it first held.
func (w *signal) wait(d time.Duration) (time.Time, bool) {
	select {
	case <-w.done:
	case <-time.After(d):
	}
	if n := w.at.Load(); n != 0 {
		return time.Unix(0, n), true
	}
	return time.Time{}, false
}

// exists reports whether a key matches pattern (a full SCAN; errors count as
// no).
func exists(ctx context.Context, rdb *redis.Client, pattern string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return false
		}
		if len(keys) > 0 {
			return true
		}
		if cursor = next; cursor == 0 {
			return false
		}
	}
}

// running is a Sluice process (the App) serving on loopback ports.
type running struct {
	app  *app.App
	reg  *metricstest.Registry // the app's metrics
	conn *grpc.ClientConn
	cfg  config.Config
	done chan error
	stop context.CancelFunc

	once    sync.Once
	runErr  error
	stopped bool // Run returned within the wait
}

// shutdown cancels Run's context, as SIGTERM does, and waits up to within
// for Run to return. It reports whether Run returned and with what. Later
// calls return the first call's answer.
func (r *running) shutdown(within time.Duration) (returned bool, err error) {
	r.once.Do(func() {
		r.stop()
		select {
		case r.runErr = <-r.done:
			r.stopped = true
		case <-time.After(within):
		}
	})
	return r.stopped, r.runErr
}

// startApp runs an App with Redis at redisAddr, the example tier rules, the
// static tiers and the production pipeline (batch, cache); mutate may change
// the config first. It is stopped when the test ends, if the test did not.
func startApp(t *testing.T, redisAddr string, mutate func(*config.Config)) *running {
	t.Helper()
	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.ShutdownGrace = 3 * time.Second
	cfg.Redis.URL = "redis://" + redisAddr
	cfg.Redis.KeyPrefix = redistest.Prefix(t)
	cfg.ExtProc.Identity.Tiers = tiers
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rules, err := ratelimitsvc.ParseRules([]ratelimitsvc.File{{Name: "tiers.yaml", Data: examples.RateLimitTiers}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg := metricstest.NewRegistry()
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler), "chaos", app.Options{Rules: rules, Registry: reg})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := a.Listen(ctx); err != nil {
		a.Close()
		cancel()
		t.Fatal(err)
	}
	r := &running{app: a, reg: reg, cfg: cfg, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- a.Run(ctx) }()
	if r.conn, err = grpc.NewClient(a.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		cancel()
		<-r.done
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ok, _ := r.shutdown(cfg.Server.ShutdownGrace + 5*time.Second); !ok {
			t.Error("Run did not return")
		}
		r.conn.Close()
		a.Close()
	})
	return r
}

// streamResults are the result label values of sluice_extproc_streams_total
// (its help text lists them).
var streamResults = []string{"ok", "immediate_response", "response_only", "cancelled", "protocol_error",
	"body_too_large", "message_too_large", "stage_error", "overloaded"}

// streamsTotal returns sluice_extproc_streams_total by result.
func (r *running) streamsTotal(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	listed := 0.0
	for _, result := range streamResults {
		out[result] = r.reg.Value(t, "sluice_extproc_streams_total", prometheus.Labels{"result": result})
		listed += out[result]
	}
	if all := r.reg.Sum(t, "sluice_extproc_streams_total", nil); all != listed {
		t.Fatalf("sluice_extproc_streams_total: %v in all, %v under streamResults: a result is missing from the list", all, listed)
	}
	return out
}

// recvReply receives the next reply that answers a message, skipping
// override_message_timeout messages (sent ahead of a slow reply).
func recvReply(recv func() (*extprocv3.ProcessingResponse, error)) (*extprocv3.ProcessingResponse, error) {
	for {
		resp, err := recv()
		if err != nil || resp.GetResponse() != nil {
			return resp, err
		}
	}
}

// setHeader returns the value a reply's header mutation sets for name.
func setHeader(resp *extprocv3.ProcessingResponse, name string) string {
	if v := extproctest.SetHeaders(extproctest.Mutation(resp))[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// stalls measures how late the test process runs: a goroutine sleeps 5ms
// at a time and records by how much each wake-up overshot. Another process
// hogging the shared cores (a benchmark next door) shows up here; waiting on
// I/O (a slow Redis) does not. Bounds on latency and recovery add the worst
// stall seen in their window, so that a starved machine does not fail them
// while a Sluice that waits on a dead dependency still does.
type stalls struct {
	mu      sync.Mutex // guards samples
	samples []stall
}

// stallTick is the stall monitor's sleep.
const stallTick = 5 * time.Millisecond

type stall struct {
	at   time.Time
	late time.Duration
}

// monitorStalls runs a stall monitor until the test ends.
func monitorStalls(t *testing.T) *stalls {
	t.Helper()
	st := &stalls{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			start := time.Now()
			time.Sleep(stallTick)
			if late := time.Since(start) - stallTick; late > time.Millisecond {
				st.mu.Lock()
				st.samples = append(st.samples, stall{at: start, late: late})
				st.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return st
}

// worst returns the longest stall that overlapped [from, to).
func (st *stalls) worst(from, to time.Time) time.Duration {
	st.mu.Lock()
	defer st.mu.Unlock()
	var w time.Duration
	for _, s := range st.samples {
		if s.at.Before(to) && s.at.Add(stallTick+s.late).After(from) {
			w = max(w, s.late)
		}
	}
	return w
}
