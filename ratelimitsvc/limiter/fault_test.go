package limiter_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// slack is what the race detector on two cores may add to a deadline.
const slack = 150 * time.Millisecond

// TestRedisKilled kills Redis mid-test: calls fail within the timeout, then the breaker opens
// and calls fail at once with ErrUnavailable; after a restart the breaker's probe closes it
// again, without a new Limiter.
func TestRedisKilled(t *testing.T) {
	srv := redistest.StartServer(t)
	c := srv.Client(t)
	reg := metricstest.NewRegistry()
	cfg := limiter.Config{Timeout: 100 * time.Millisecond, BreakerFailures: 3, BreakerOpenFor: 500 * time.Millisecond, LocalCacheSize: -1}
	l, err := limiter.New(c, cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	item := limiter.Item{Key: "{k}", Limit: 1000, Window: time.Minute, Hits: 1}
	do(t, l, item)

	srv.Kill()
	failures := 0
	for {
		start := time.Now()
		_, _, err := l.Do(context.Background(), []limiter.Item{item})
		took := time.Since(start)
		if err == nil {
			t.Fatal("Do succeeded with Redis killed")
		}
		if errors.Is(err, limiter.ErrUnavailable) {
			if took > cfg.Timeout/5 {
				t.Errorf("ErrUnavailable took %v, want an immediate answer, far below the %v timeout", took, cfg.Timeout)
			}
			break
		}
		failures++
		if took > cfg.Timeout+slack {
			t.Errorf("failed after %v, want within the %v timeout: %v", took, cfg.Timeout, err)
		}
		if failures > int(cfg.BreakerFailures) {
			t.Fatalf("%d failures and the breaker is still closed (BreakerFailures %d)", failures, cfg.BreakerFailures)
		}
	}
	if failures != int(cfg.BreakerFailures) {
		t.Errorf("breaker opened after %d failures, want %d", failures, cfg.BreakerFailures)
	}
	if v := metric(t, reg, "sluice_ratelimit_breaker_open", ""); v != 1 {
		t.Errorf("breaker_open = %v while open, want 1", v)
	}
	if v := metric(t, reg, "sluice_ratelimit_redis_errors_total", "unavailable"); v != 1 {
		t.Errorf(`errors_total{reason="unavailable"} = %v, want 1`, v)
	}
	if v := metric(t, reg, "sluice_ratelimit_redis_errors_total", "error") + metric(t, reg, "sluice_ratelimit_redis_errors_total", "timeout"); v != float64(failures) {
		t.Errorf(`errors_total{reason="error"|"timeout"} = %v, want %d`, v, failures)
	}

	srv.Restart()
	restarted := time.Now()
	for {
		_, _, err := l.Do(context.Background(), []limiter.Item{item})
		if err == nil {
			break
		}
		if time.Since(restarted) > cfg.BreakerOpenFor+2*time.Second {
			t.Fatalf("still failing %v after the restart: %v", time.Since(restarted), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("working again %v after the restart (breaker open for %v)", time.Since(restarted).Round(time.Millisecond), cfg.BreakerOpenFor)
	if v := metric(t, reg, "sluice_ratelimit_breaker_open", ""); v != 0 {
		t.Errorf("breaker_open = %v after recovery, want 0", v)
	}
}

// TestRedisStalls pauses Redis (CLIENT PAUSE): a call gives up at the timeout, counted as a
// timeout.
func TestRedisStalls(t *testing.T) {
	srv := redistest.StartServer(t)
	c := srv.Client(t)
	reg := metricstest.NewRegistry()
	cfg := limiter.Config{Timeout: 100 * time.Millisecond, LocalCacheSize: -1}
	l, err := limiter.New(c, cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	item := limiter.Item{Key: "{k}", Limit: 1000, Window: time.Minute, Hits: 1}
	do(t, l, item)
	admin := srv.Client(t)
	if err := admin.ClientPause(context.Background(), time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err = l.Do(context.Background(), []limiter.Item{item})
	took := time.Since(start)
	if err == nil {
		t.Fatal("Do succeeded while Redis was paused")
	}
	if took < cfg.Timeout-10*time.Millisecond || took > cfg.Timeout+slack {
		t.Errorf("gave up after %v, want about the %v timeout", took, cfg.Timeout)
	}
	if v := metric(t, reg, "sluice_ratelimit_redis_errors_total", "timeout"); v != 1 {
		t.Errorf(`errors_total{reason="timeout"} = %v, want 1 (err %v)`, v, err)
	}
}

// TestBreakerIgnores checks what must not open the breaker: callers giving up, a lost script
// cache, and error replies of a working Redis.
func TestBreakerIgnores(t *testing.T) {
	srv := redistest.StartServer(t)
	c := srv.Client(t)
	l := newLimiter(t, c, limiter.Config{BreakerFailures: 1, BreakerOpenFor: time.Hour, LocalCacheSize: -1})
	item := limiter.Item{Key: "{k}", Limit: 1000, Window: time.Minute, Hits: 1}
	do(t, l, item)
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{name: "cancelled by the caller", run: func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, _, err := l.Do(ctx, []limiter.Item{item}); !errors.Is(err, context.Canceled) {
				t.Errorf("Do with a cancelled context: %v, want context.Canceled", err)
			}
		}},
		{name: "caller deadline", run: func(t *testing.T) {
			ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			defer cancel()
			if _, _, err := l.Do(ctx, []limiter.Item{item}); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Do with an expired context: %v, want context.DeadlineExceeded", err)
			}
		}},
		{name: "script cache flushed", run: func(t *testing.T) {
			if err := c.ScriptFlush(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			do(t, l, item) // EVALSHA gets NOSCRIPT, EVAL runs it
		}},
		{name: "key of the wrong type", run: func(t *testing.T) {
			if err := c.Set(context.Background(), "{w}:sw:60000:10", "x", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			_, _, err := l.Do(context.Background(), []limiter.Item{{Key: "{w}", Limit: 1, Window: time.Minute, Hits: 1}})
			if err == nil || errors.Is(err, limiter.ErrUnavailable) {
				t.Errorf("Do on a string key used as a hash: %v, want a WRONGTYPE error", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t)
			for range 2 { // a second failure would be refused if the first had opened the breaker
				if _, _, err := l.Do(context.Background(), []limiter.Item{item}); err != nil {
					t.Fatalf("Do afterwards: %v", err)
				}
			}
		})
	}
}
