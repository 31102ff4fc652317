package cachefilter_test

import (
	"container/list"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
)

// benchKeys returns n primary keys and a 1 KiB entry.
func benchKeys(n int) ([]string, *httpcache.Entry) {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = primaryKey(tenantA, fmt.Sprintf("/bench/%d", i))
	}
	return keys, newEntry(epoch, strings.Repeat("x", 1024), time.Hour)
}

// BenchmarkLookupL1 measures L1 hits of a Store that holds a lease over the machine's Redis.
func BenchmarkLookupL1(b *testing.B) {
	rdb, prefix, clk := redistest.Client(b), redistest.Prefix(b), newClock()
	s := newStore(b, testConfig(), rdb, prefix, clk, nil)
	run(b, s)
	keys, e := benchKeys(1000)
	vs := make([]func([]string) string, len(keys))
	for i, k := range keys {
		put(b, s, k, "/bench", nil, e)
		vs[i] = variants(k, nil)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, layer, _ := s.Lookup(ctx, keys[i%len(keys)], vs[i%len(keys)]); layer != cachefilter.L1 {
				b.Fatalf("from %v", layer)
			}
			i++
		}
	})
}

// BenchmarkLookupL2 measures L2 hits (1 KiB entries, one round trip to the local Redis) of a
// Store without an L1.
func BenchmarkLookupL2(b *testing.B) {
	rdb, prefix, clk := redistest.Client(b), redistest.Prefix(b), newClock()
	cfg := testConfig()
	cfg.L1MaxBytes = -1
	s := newStore(b, cfg, rdb, prefix, clk, nil)
	keys, e := benchKeys(1000)
	for _, k := range keys {
		put(b, s, k, "/bench", nil, e)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		k := keys[i%len(keys)]
		if _, layer, _ := s.Lookup(ctx, k, variants(k, nil)); layer != cachefilter.L2 {
			b.Fatalf("from %v", layer)
		}
	}
}

// BenchmarkRedisGet is the baseline of BenchmarkLookupL2: a plain GET of a 1 KiB value.
func BenchmarkRedisGet(b *testing.B) {
	rdb, prefix := redistest.Client(b), redistest.Prefix(b)
	ctx := context.Background()
	if err := rdb.Set(ctx, prefix+"k", strings.Repeat("x", 1024), time.Hour).Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := rdb.Get(ctx, prefix+"k").Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisSet is the baseline of BenchmarkPut: a plain SET with a TTL of a 1 KiB value.
func BenchmarkRedisSet(b *testing.B) {
	rdb, prefix := redistest.Client(b), redistest.Prefix(b)
	ctx := context.Background()
	v := strings.Repeat("x", 1024)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := rdb.Set(ctx, prefix+"k"+fmt.Sprint(i%10000), v, time.Hour).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPut measures Put of 1 KiB entries with one tag into both layers.
func BenchmarkPut(b *testing.B) {
	rdb, prefix, clk := redistest.Client(b), redistest.Prefix(b), newClock()
	s := newStore(b, testConfig(), rdb, prefix, clk, nil)
	keys, e := benchKeys(10000)
	e.Tags = []string{"bench"}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		k := keys[i%len(keys)]
		if err := s.Put(ctx, k, k, "/bench", e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInvalidate measures an invalidation of one key with two replicas running: the Redis
// script, the publication, the registry read and the other replica's acknowledgement.
func BenchmarkInvalidate(b *testing.B) {
	rdb, prefix, clk := redistest.Client(b), redistest.Prefix(b), newClock()
	a := newStore(b, testConfig(), rdb, prefix, clk, nil)
	other := newStore(b, testConfig(), rdb, prefix, clk, nil)
	run(b, a)
	run(b, other)
	keys, e := benchKeys(100)
	for _, k := range keys {
		put(b, a, k, "/bench", nil, e)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := a.Invalidate(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
	}
}

// zipf draws ranks 0..n-1 with P(k) ∝ 1/(k+1)^theta, theta < 1 allowed (math/rand's Zipf needs
// s > 1): the generator of Gray et al., "Quickly generating billion-record synthetic databases"
// (SIGMOD 1994), as YCSB uses it.
type zipf struct {
	r                        *rand.Rand
	n                        float64
	theta, alpha, zetan, eta float64
}

func newZipf(r *rand.Rand, n int, theta float64) *zipf {
	zeta := func(n int) float64 {
		s := 0.0
		for i := 1; i <= n; i++ {
			s += 1 / math.Pow(float64(i), theta)
		}
		return s
	}
	z := &zipf{r: r, n: float64(n), theta: theta, alpha: 1 / (1 - theta), zetan: zeta(n)}
	z.eta = (1 - math.Pow(2/z.n, 1-theta)) / (1 - zeta(2)/z.zetan)
	return z
}

func (z *zipf) next() int {
	u := z.r.Float64()
	uz := u * z.zetan
	switch {
	case uz < 1:
		return 0
	case uz < 1+math.Pow(0.5, z.theta):
		return 1
	}
	return int(z.n * math.Pow(z.eta*u-z.eta+1, z.alpha))
}

// lru is the baseline: a byte-bounded LRU (container/list), weighing items like the L1.
type lru struct {
	max, size int
	ll        *list.List
	items     map[string]*list.Element
}

type lruItem struct {
	key    string
	weight int
}

func (c *lru) get(k string) bool {
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		return true
	}
	return false
}

func (c *lru) add(k string, weight int) {
	c.items[k] = c.ll.PushFront(&lruItem{key: k, weight: weight})
	c.size += weight
	for c.size > c.max {
		last := c.ll.Back()
		it := last.Value.(*lruItem)
		c.ll.Remove(last)
		delete(c.items, it.key)
		c.size -= it.weight
	}
}

// BenchmarkHitRatio replays one Zipf(0.99) trace of 1M requests over 100k keys (1 KiB entries)
// through the Store's L1 (otter, W-TinyLFU) and through an LRU, both bounded to 10% of the
// keys' bytes, storing on every miss, and reports both hit ratios.
func BenchmarkHitRatio(b *testing.B) {
	const keys, requests = 100_000, 1_000_000
	ks, e := benchKeys(keys)
	trace := make([]int, requests)
	z := newZipf(rand.New(rand.NewPCG(42, 42)), keys, 0.99)
	for i := range trace {
		trace[i] = z.next()
	}
	weight := int(cachefilter.ItemWeight(ks[0], "/bench", e))
	capacity := keys / 10 * weight
	for b.Loop() {
		clk := newClock()
		s, err := cachefilter.NewStore(cachefilter.StoreConfig{L1MaxBytes: int64(capacity)}, cachefilter.StoreOptions{Now: clk.Now})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		otterHits := 0
		for _, k := range trace {
			key := ks[k]
			if _, layer, _ := s.Lookup(ctx, key, variants(key, nil)); layer == cachefilter.L1 {
				otterHits++
			} else {
				_ = s.Put(ctx, key, key, "/bench", e)
			}
		}
		_ = s.Close()

		baseline := &lru{max: capacity, ll: list.New(), items: map[string]*list.Element{}}
		lruHits := 0
		for _, k := range trace {
			if baseline.get(ks[k]) {
				lruHits++
			} else {
				baseline.add(ks[k], weight)
			}
		}
		b.ReportMetric(100*float64(otterHits)/requests, "l1-hit-%")
		b.ReportMetric(100*float64(lruHits)/requests, "lru-hit-%")
	}
}

// BenchmarkStoredPuts measures the share of fetched responses that get stored in one busy
// tenant: 16 callers each look a key up (Epoch), "fetch" it for a millisecond and PutSince it;
// with writes=10%, one operation in ten is instead a write that invalidates a key of the same
// tenant (1000 keys, uniform). It reports stored/put (1 minus sluice_cache_raced_puts_total
// over the puts): the ratio of writes=10% to writes=0% is the cost of the race guard in a
// tenant whose writes never stop (goal ≥ 0.95; a guard on the whole tenant scored far below).
// bench/racedputs.sh prints that ratio.
func BenchmarkStoredPuts(b *testing.B) {
	for _, writes := range []int{0, 10} {
		b.Run(fmt.Sprintf("writes=%d%%", writes), func(b *testing.B) {
			rdb, prefix, clk := redistest.Client(b), redistest.Prefix(b), newClock()
			reg := metricstest.NewRegistry()
			s := newStore(b, testConfig(), rdb, prefix, clk, reg)
			run(b, s)
			keys, e := benchKeys(1000)
			ctx := context.Background()
			var puts atomic.Int64
			b.SetParallelism(16 / max(1, runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 0))
				for pb.Next() {
					k := keys[r.IntN(len(keys))]
					if r.IntN(100) < writes {
						if err := s.Invalidate(ctx, k); err != nil {
							b.Error(err)
						}
						continue
					}
					since := s.Epoch(k)
					time.Sleep(time.Millisecond) // the upstream fetch
					if err := s.PutSince(ctx, since, k, k, "/bench", e); err != nil {
						b.Error(err)
					}
					puts.Add(1)
				}
			})
			b.StopTimer()
			if n := puts.Load(); n > 0 {
				raced := gauge(b, reg, "sluice_cache_raced_puts_total", nil)
				b.ReportMetric((float64(n)-raced)/float64(n), "stored/put")
			}
		})
	}
}
