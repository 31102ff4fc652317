package cachefilter_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/internal/redistest"
)

// readCalls returns how many HMGET and GET calls (the reads of a lookup) srv has run.
func readCalls(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range []string{"cmdstat_hmget:", "cmdstat_get:"} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
				calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
				v, _ := strconv.ParseInt(calls, 10, 64)
				n += v
			}
		}
	}
	return n
}

// presenceConfig has no L1, so that every lookup shows what the L2 side does.
func presenceConfig() cachefilter.StoreConfig {
	cfg := testConfig()
	cfg.L1MaxBytes = -1
	return cfg
}

// TestPresenceSkipsRedisForAbsentKeys checks that once the filter is ready, lookups of keys
// that were never stored make no Redis call, and that keys stored by this replica or another
// one are still read from Redis.
func TestPresenceSkipsRedisForAbsentKeys(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	clk := newClock()
	// The filter is believed only while the replica holds its lease, which real time renews:
	// a lease long enough that a loaded CI machine cannot let it lapse between the checks
	// (with 1 s, a stalled heartbeat sent one lookup to Redis, as it should).
	cfg := presenceConfig()
	cfg.SubscriptionLease = 20 * time.Second
	a := newStore(t, cfg, srv.Client(t), "sluice:", clk, nil)
	b := newStore(t, cfg, srv.Client(t), "sluice:", clk, nil)
	run(t, a)
	run(t, b)
	waitFor(t, 10*time.Second, "the presence filters", func() bool { return a.PresenceReady() && b.PresenceReady() })

	before := readCalls(t, rdb)
	for i := range 100 {
		if _, layer := lookup(t, a, primaryKey(tenantA, fmt.Sprintf("/absent/%d", i)), nil); layer != cachefilter.Miss {
			t.Fatalf("absent key %d from %v", i, layer)
		}
	}
	if got := readCalls(t, rdb) - before; got != 0 {
		t.Errorf("100 lookups of absent keys ran %d Redis reads, want 0", got)
	}

	k := primaryKey(tenantA, "/present")
	put(t, a, k, "/present", nil, newEntry(clk.Now(), "v", time.Hour))
	replicas := map[string]*cachefilter.Store{"the writer": a, "another replica": b}
	for name, s := range replicas {
		learned(t, s, k)
		if e, layer := lookup(t, s, k, nil); layer != cachefilter.L2 || body(e) != "v" {
			t.Errorf("%s: %q from %v, want v from l2", name, body(e), layer)
		}
	}

	// An invalidation of the key clears its slot on every replica once applied (Invalidate
	// returns when each acknowledged it): the next lookups ask Redis nothing.
	if err := a.Invalidate(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	before = readCalls(t, rdb)
	for name, s := range replicas {
		if e, layer := lookup(t, s, k, nil); layer != cachefilter.Miss || e != nil {
			t.Errorf("%s after the invalidation: %q from %v, want a miss", name, body(e), layer)
		}
	}
	if got := readCalls(t, rdb) - before; got != 0 {
		t.Errorf("lookups of an invalidated key ran %d Redis reads, want 0", got)
	}
}

// TestPresenceRestartFailover plays what may make a presence filter wrong: keys stored while a
// replica was not running or not subscribed, an announcement that never came, a FLUSHALL, and a
// Redis that restarts empty (a failover to a replica that lost writes). In every case a lookup
// answers what Redis holds, or misses; never an entry that is gone.
func TestPresenceRestartFailover(t *testing.T) {
	tests := []struct {
		name string
		// run gets a running writer and reader (no L1) on srv; it checks what it wants.
		run func(t *testing.T, srv *redistest.Server, w, r *cachefilter.Store, clk *clock)
	}{
		{
			name: "keys stored before the replica started are found by its scan",
			run: func(t *testing.T, srv *redistest.Server, w, _ *cachefilter.Store, clk *clock) {
				k := primaryKey(tenantA, "/before")
				put(t, w, k, "/before", nil, newEntry(clk.Now(), "before", time.Hour))
				late := newStore(t, presenceConfig(), srv.Client(t), "sluice:", clk, nil)
				run(t, late)
				waitFor(t, 10*time.Second, "the late replica's filter", late.PresenceReady)
				if e, layer := lookup(t, late, k, nil); layer != cachefilter.L2 || body(e) != "before" {
					t.Errorf("late replica: %q from %v, want before from l2", body(e), layer)
				}
			},
		},
		{
			name: "an announcement that never came costs a miss, and the next subscription's scan finds the key",
			run: func(t *testing.T, srv *redistest.Server, _, r *cachefilter.Store, clk *clock) {
				// A Store without Run writes Redis but announces nothing.
				silent := newStore(t, presenceConfig(), srv.Client(t), "sluice:", clk, nil)
				k := primaryKey(tenantA, "/silent")
				put(t, silent, k, "/silent", nil, newEntry(clk.Now(), "silent", time.Hour))
				if e, layer := lookup(t, r, k, nil); layer != cachefilter.Miss || e != nil {
					t.Fatalf("unannounced key: %q from %v, want a miss", body(e), layer)
				}
				killPubSub(t, srv)
				waitFor(t, 10*time.Second, "the reader's filter after resubscribing", func() bool { return r.PresenceReady() && r.Announced(k) })
				if e, layer := lookup(t, r, k, nil); layer != cachefilter.L2 || body(e) != "silent" {
					t.Errorf("after the rescan: %q from %v, want silent from l2", body(e), layer)
				}
			},
		},
		{
			name: "a key stored while the reader's subscription was down is found",
			run: func(t *testing.T, srv *redistest.Server, w, r *cachefilter.Store, clk *clock) {
				killPubSub(t, srv)
				k := primaryKey(tenantA, "/during")
				put(t, w, k, "/during", nil, newEntry(clk.Now(), "during", time.Hour))
				waitFor(t, 10*time.Second, "the reader's filter", func() bool { return r.PresenceReady() && r.Announced(k) })
				if e, layer := lookup(t, r, k, nil); layer != cachefilter.L2 || body(e) != "during" {
					t.Errorf("%q from %v, want during from l2", body(e), layer)
				}
			},
		},
		{
			name: "FLUSHALL: the filter says maybe, Redis says no",
			run: func(t *testing.T, srv *redistest.Server, w, r *cachefilter.Store, clk *clock) {
				k := primaryKey(tenantA, "/flushed")
				put(t, w, k, "/flushed", nil, newEntry(clk.Now(), "flushed", time.Hour))
				learned(t, r, k)
				if err := srv.Client(t).FlushAll(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
				if e, layer := lookup(t, r, k, nil); layer != cachefilter.Miss || e != nil {
					t.Fatalf("after FLUSHALL: %q from %v, want a miss", body(e), layer)
				}
				put(t, w, k, "/flushed", nil, newEntry(clk.Now(), "again", time.Hour))
				if e, layer := lookup(t, r, k, nil); layer != cachefilter.L2 || body(e) != "again" {
					t.Errorf("stored again: %q from %v, want again from l2", body(e), layer)
				}
			},
		},
		{
			name: "Redis restarts empty (a failover that lost writes)",
			run: func(t *testing.T, srv *redistest.Server, w, r *cachefilter.Store, clk *clock) {
				old := primaryKey(tenantA, "/lost")
				put(t, w, old, "/lost", nil, newEntry(clk.Now(), "lost", time.Hour))
				learned(t, r, old)
				srv.Restart()
				waitFor(t, 15*time.Second, "both filters after the restart", func() bool { return w.PresenceReady() && r.PresenceReady() })
				if e, layer := lookup(t, r, old, nil); layer != cachefilter.Miss || e != nil {
					t.Fatalf("lost key: %q from %v, want a miss", body(e), layer)
				}
				k := primaryKey(tenantA, "/after")
				put(t, w, k, "/after", nil, newEntry(clk.Now(), "after", time.Hour))
				learned(t, r, k)
				if e, layer := lookup(t, r, k, nil); layer != cachefilter.L2 || body(e) != "after" {
					t.Errorf("stored after the restart: %q from %v, want after from l2", body(e), layer)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.StartServer(t)
			clk := newClock()
			w := newStore(t, presenceConfig(), srv.Client(t), "sluice:", clk, nil)
			r := newStore(t, presenceConfig(), srv.Client(t), "sluice:", clk, nil)
			run(t, w)
			run(t, r)
			waitFor(t, 10*time.Second, "the presence filters", func() bool { return w.PresenceReady() && r.PresenceReady() })
			tt.run(t, srv, w, r, clk)
		})
	}
}

// killPubSub closes every subscription connection of srv, as a Redis failover or a full
// client-output-buffer does.
func killPubSub(t *testing.T, srv *redistest.Server) {
	t.Helper()
	if err := srv.Client(t).Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
}
