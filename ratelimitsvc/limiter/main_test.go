package limiter_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// epoch is the simulated start time: a whole hour (500000 h after the Unix epoch).
var epoch = time.UnixMilli(1_800_000_000_000)

// clock is a simulated clock for Config.Now. Safe for concurrent use.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// counter is a go-redis hook counting the commands and pipelines a client sends.
type counter struct {
	cmds, pipelines atomic.Int64
}

func (h *counter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.cmds.Add(1)
		return next(ctx, cmd)
	}
}

func (h *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipelines.Add(1)
		h.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// newLimiter returns a limiter closed when the test ends. Tests get a generous timeout: the
// race detector on two cores is slow, and timeouts are tested on purpose elsewhere.
func newLimiter(t testing.TB, c redis.UniversalClient, cfg limiter.Config) *limiter.Limiter {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	l, err := limiter.New(c, cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// setup returns a client to the shared Redis, a key prefix of the test's own and a simulated
// clock at epoch.
func setup(t testing.TB) (*redis.Client, string, *clock) {
	t.Helper()
	return redistest.Client(t), redistest.Prefix(t), newClock(epoch)
}

// do calls l.Do and fails the test on error.
func do(t testing.TB, l *limiter.Limiter, items ...limiter.Item) ([]limiter.Result, bool) {
	t.Helper()
	res, ok, err := l.Do(context.Background(), items)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	return res, ok
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// metric returns the value of the counter or gauge name registered on reg,
// the series whose reason label is reason if that is not empty.
func metric(t testing.TB, reg *metricstest.Registry, name, reason string) float64 {
	t.Helper()
	var labels prometheus.Labels
	if reason != "" {
		labels = prometheus.Labels{"reason": reason}
	}
	return reg.Value(t, name, labels)
}
