package limiter_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// BenchmarkDo measures one Do call against the machine's Redis, the script reading the
// server's TIME as in production, the local cache off (every call goes to Redis, but in lease
// mode, where a lease decides). The ping case is the baseline: one round trip doing nothing.
func BenchmarkDo(b *testing.B) {
	c := redistest.Client(b)
	p := redistest.Prefix(b)
	l := newLimiter(b, c, limiter.Config{LocalCacheSize: -1})
	ctx := context.Background()
	b.Run("ping", func(b *testing.B) {
		for b.Loop() {
			if err := c.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lease/items=1", func(b *testing.B) {
		item := limiter.Item{Key: p + "{bench}lease", Limit: limiter.MaxCount, Window: time.Minute, Hits: 1, Mode: limiter.Lease}
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := l.Do(ctx, []limiter.Item{item}); err != nil || !ok {
				b.Fatalf("Do: %v, allowed %v", err, ok)
			}
		}
	})
	for _, alg := range []limiter.Algorithm{limiter.FixedWindow, limiter.SlidingWindow} {
		for _, n := range []int{1, 3} {
			b.Run(fmt.Sprintf("%v/items=%d", alg, n), func(b *testing.B) {
				items := make([]limiter.Item, n)
				for i := range items {
					items[i] = limiter.Item{Key: fmt.Sprintf("%s{bench}%v:%d", p, alg, i), Limit: limiter.MaxCount, Window: time.Minute, Algorithm: alg, Hits: 1}
				}
				for b.Loop() {
					if _, ok, err := l.Do(ctx, items); err != nil || !ok {
						b.Fatalf("Do: %v, allowed %v", err, ok)
					}
				}
			})
		}
	}
}
