package cachefilter_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
)

// TestRedisKilled kills Redis under a running Store: lookups keep being answered from the L1
// and puts keep working, without errors; once the breaker is open, Redis costs no latency at
// all; after a restart the Store uses Redis again and its L1 is trusted again, without a new
// Store.
func TestRedisKilled(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	clk := newClock()
	reg := metricstest.NewRegistry()
	cfg := cachefilter.StoreConfig{
		RedisTimeout:      100 * time.Millisecond,
		BreakerFailures:   3,
		BreakerOpenFor:    300 * time.Millisecond,
		SubscriptionLease: 200 * time.Millisecond,
	}
	s := newStore(t, cfg, rdb, "sluice:", clk, reg)
	run(t, s)
	ctx := context.Background()
	keys := make([]string, 10)
	for i := range keys {
		keys[i] = primaryKey(tenantA, fmt.Sprintf("/k/%d", i))
		put(t, s, keys[i], "/k", nil, newEntry(clk.Now(), keys[i], time.Hour))
	}
	for _, k := range keys {
		if e, layer := lookup(t, s, k, nil); layer != cachefilter.L1 || body(e) != k {
			t.Fatalf("before the kill: %q from %v", body(e), layer)
		}
	}

	srv.Kill()
	waitFor(t, 5*time.Second, "the store to notice its subscription is gone", func() bool { return !s.Trusted() })
	// Every lookup is answered from the L1; the first ones try Redis first (bounded by the
	// timeout), until the breaker opens.
	deadline := time.Now().Add(5 * time.Second)
	for gauge(t, reg, "sluice_cache_breaker_open", nil) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the breaker did not open")
		}
		for _, k := range keys {
			start := time.Now()
			e, layer := lookup(t, s, k, nil)
			if took := time.Since(start); took > cfg.RedisTimeout+slack {
				t.Errorf("lookup took %v with the %v timeout", took, cfg.RedisTimeout)
			}
			if layer != cachefilter.L1 || body(e) != k {
				t.Fatalf("Redis down: %q from %v, want from l1", body(e), layer)
			}
		}
	}
	// Breaker open: no added latency. Compare with lookups of an L1-only Store.
	l1only := newStore(t, cachefilter.StoreConfig{}, nil, "", clk, nil)
	for _, k := range keys {
		put(t, l1only, k, "/k", nil, newEntry(clk.Now(), k, time.Hour))
	}
	measure := func(s *cachefilter.Store) (worst time.Duration, mean time.Duration) {
		const n = 2000
		start := time.Now()
		for i := range n {
			t0 := time.Now()
			if _, layer := lookup(t, s, keys[i%len(keys)], nil); layer != cachefilter.L1 {
				t.Fatalf("breaker open: from %v, want l1", layer)
			}
			worst = max(worst, time.Since(t0))
		}
		return worst, time.Since(start) / n
	}
	worst, mean := measure(s)
	_, base := measure(l1only)
	t.Logf("breaker open: lookup mean %v (L1-only store: %v), worst %v", mean, base, worst)
	// Bounds, not a benchmark: while open the breaker makes no Redis call; every
	// BreakerOpenFor one half-open probe may pay one failed attempt, bounded by
	// the timeout. Loose enough for a loaded 2-core machine under -race.
	if worst > cfg.RedisTimeout+50*time.Millisecond || mean > 20*base+100*time.Microsecond {
		t.Errorf("breaker open: lookup mean %v, worst %v (an L1-only store: mean %v); want no Redis latency", mean, worst, base)
	}
	// Puts keep working, into the L1.
	extra := primaryKey(tenantA, "/during-outage")
	put(t, s, extra, "/x", nil, newEntry(clk.Now(), "outage", time.Hour))
	if e, layer := lookup(t, s, extra, nil); layer != cachefilter.L1 || body(e) != "outage" {
		t.Errorf("put during the outage: %q from %v", body(e), layer)
	}
	if v := gauge(t, reg, "sluice_cache_redis_errors_total", map[string]string{"op": "lookup"}); v == 0 {
		t.Error("no lookup errors counted")
	}

	srv.Restart() // an empty Redis
	waitFor(t, 10*time.Second, "the store to trust its L1 again", s.Trusted)
	// The new subscription cleared the L1 (invalidations may have been missed). Redis works
	// again once the breaker's probe succeeds.
	fresh := primaryKey(tenantA, "/after")
	waitFor(t, 5*time.Second, "Redis to take puts again", func() bool {
		put(t, s, fresh, "/after", nil, newEntry(clk.Now(), "after", time.Hour))
		return rdb.Exists(ctx, "sluice:c:{"+tenantA+"}:k:"+fresh[len(tenantA)+1:]).Val() == 1
	})
	if e, layer := lookup(t, s, keys[0], nil); e != nil {
		t.Errorf("entry from before the restart: %q from %v, want a miss (L1 cleared, Redis empty)", body(e), layer)
	}
	other := newStore(t, cfg, rdb, "sluice:", clk, nil)
	if e, layer := lookup(t, other, fresh, nil); layer != cachefilter.L2 || body(e) != "after" {
		t.Errorf("after the restart, another replica: %q from %v, want from l2", body(e), layer)
	}
	if v := gauge(t, reg, "sluice_cache_breaker_open", nil); v != 0 {
		t.Errorf("breaker_open = %v after recovery", v)
	}
}

// TestStrictL1 checks ServeL1WhenRedisDown: false: with Redis gone, the L1 is not served.
func TestStrictL1(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	clk := newClock()
	cfg := cachefilter.StoreConfig{
		RedisTimeout: 100 * time.Millisecond, SubscriptionLease: 200 * time.Millisecond,
		ServeL1WhenRedisDown: new(bool),
	}
	s := newStore(t, cfg, rdb, "sluice:", clk, nil)
	run(t, s)
	k := primaryKey(tenantA, "/strict")
	put(t, s, k, "/strict", nil, newEntry(clk.Now(), "v", time.Hour))
	if _, layer := lookup(t, s, k, nil); layer != cachefilter.L1 {
		t.Fatalf("before the kill: from %v", layer)
	}
	srv.Kill()
	waitFor(t, 5*time.Second, "the store to notice its subscription is gone", func() bool { return !s.Trusted() })
	if e, layer := lookup(t, s, k, nil); e != nil {
		t.Errorf("strict, Redis down: %q from %v, want a miss", body(e), layer)
	}
}

// slack is what the race detector on two shared cores may add to a deadline.
const slack = 150 * time.Millisecond

// TestSubscriptionLost kills only the pub/sub connections (Redis keeps answering): the replica
// stops serving its L1 at once, clears it when it subscribes again (invalidations may have been
// missed meanwhile), and a purge made meanwhile either is confirmed, and then no replica serves
// the entry, or fails with ErrUnconfirmed.
func TestSubscriptionLost(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	clk := newClock()
	cfg := testConfig()
	cfg.SubscriptionLease = 200 * time.Millisecond
	cfg.PurgeTimeout = time.Second
	a := newStore(t, cfg, rdb, "sluice:", clk, nil)
	b := newStore(t, cfg, rdb, "sluice:", clk, nil)
	run(t, a)
	run(t, b)
	ctx := context.Background()
	for round := range 5 {
		k := primaryKey(tenantA, fmt.Sprintf("/lost/%d", round))
		e := newEntry(clk.Now(), "v", time.Hour)
		e.Tags = []string{fmt.Sprint(round)}
		put(t, a, k, "/lost", nil, e)
		waitFor(t, 10*time.Second, "B to trust its L1", b.Trusted)
		learned(t, b, k)
		lookup(t, b, k, nil)
		if _, layer := lookup(t, b, k, nil); layer != cachefilter.L1 {
			t.Fatalf("round %d: B serves from %v before the kill", round, layer)
		}
		if err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		// Purge while B (and A) may be resubscribing.
		err := a.PurgeTag(ctx, tenantA, fmt.Sprint(round))
		switch {
		case err == nil:
			if e, layer := lookup(t, b, k, nil); e != nil {
				t.Errorf("round %d: purge confirmed, B still serves it from %v", round, layer)
			}
		case errors.Is(err, cachefilter.ErrUnconfirmed):
			t.Logf("round %d: %v", round, err)
		default:
			t.Fatalf("round %d: PurgeTag: %v", round, err)
		}
		waitFor(t, 10*time.Second, "B to trust its L1 again", b.Trusted)
		if b.InL1(k, k) {
			t.Errorf("round %d: B's L1 survived a new subscription", round)
		}
	}
}

// TestFailedPurgeIsRetried: an invalidation that Redis does not take (here Redis is paused past
// the purge's deadline, as a slow or overloaded Redis would be) is kept and retried by Run until
// Redis takes it; meanwhile the purging replica reads the entries it covers as misses, so a
// write it acknowledged is never followed by the old version from the L2. Entries it does not
// cover are still served.
func TestFailedPurgeIsRetried(t *testing.T) {
	tests := []struct {
		name  string
		purge func(ctx context.Context, s *cachefilter.Store) error
	}{
		{"key", func(ctx context.Context, s *cachefilter.Store) error {
			return s.Invalidate(ctx, primaryKey(tenantA, "/api/v1/contacts/1"))
		}},
		{"tag", func(ctx context.Context, s *cachefilter.Store) error { return s.PurgeTag(ctx, tenantA, "contacts") }},
		{"prefix", func(ctx context.Context, s *cachefilter.Store) error {
			return s.PurgePrefix(ctx, tenantA, "/api/v1/contacts")
		}},
		{"tenant", func(ctx context.Context, s *cachefilter.Store) error { return s.PurgeTenant(ctx, tenantA) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.StartServer(t)
			rdb := srv.Client(t)
			clk := newClock()
			reg := metricstest.NewRegistry()
			cfg := testConfig()
			s := newStore(t, cfg, rdb, "sluice:", clk, reg)        // the purging replica; Run starts later
			other := newStore(t, cfg, rdb, "sluice:", clk, nil)    // another replica, reading Redis
			target := primaryKey(tenantA, "/api/v1/contacts/1")    // covered by every purge above
			bystander := primaryKey(tenantB, "/api/v1/contacts/1") // covered by none
			e := newEntry(clk.Now(), "old version", time.Hour)
			e.Tags = []string{"contacts"}
			put(t, s, target, "/api/v1/contacts/1", nil, e)
			put(t, s, bystander, "/api/v1/contacts/1", nil, newEntry(clk.Now(), "bystander", time.Hour))

			ctx := context.Background()
			if err := rdb.Do(ctx, "CLIENT", "PAUSE", "3000", "ALL").Err(); err != nil {
				t.Fatal(err)
			}
			pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			err := tt.purge(pctx, s)
			cancel()
			if err == nil {
				t.Fatal("the purge succeeded while Redis was paused")
			}
			if err := rdb.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
				t.Fatal(err)
			}
			// The old version is still in Redis (the other replica, which knows nothing, reads
			// it there), but not for the replica that acknowledged the write.
			if e, layer := lookup(t, other, target, nil); layer != cachefilter.L2 || body(e) != "old version" {
				t.Fatalf("setup: other replica got %q from %v, want the old version from L2", body(e), layer)
			}
			if e, layer := lookup(t, s, target, nil); layer != cachefilter.Miss {
				t.Fatalf("purging replica got %q from %v after its failed purge, want a miss", body(e), layer)
			}
			if e, layer := lookup(t, s, bystander, nil); layer != cachefilter.L2 || body(e) != "bystander" {
				t.Errorf("an entry the purge does not cover: %q from %v", body(e), layer)
			}

			run(t, s) // Run retries the purge now that Redis answers
			// A paused client's commands still run when the pause ends, so the first attempt may
			// land in Redis after all; the retry is counted either way (deleting is idempotent).
			waitFor(t, 10*time.Second, "the purge to be retried", func() bool {
				return gauge(t, reg, "sluice_cache_invalidations_total", map[string]string{"kind": tt.name, "result": "retried"}) == 1
			})
			if e, layer := lookup(t, other, target, nil); layer != cachefilter.Miss {
				t.Errorf("after the retry the other replica got %q from %v, want a miss", body(e), layer)
			}
			if e, layer := lookup(t, s, bystander, nil); layer == cachefilter.Miss || body(e) != "bystander" {
				t.Errorf("after the retry, an entry the purge does not cover: %q from %v", body(e), layer)
			}
		})
	}
}
