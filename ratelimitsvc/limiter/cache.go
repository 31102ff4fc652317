package limiter

import (
	"fmt"
	"time"

	"github.com/maypok86/otter/v2"
)

// localCache remembers counters that Redis reported exhausted (Remaining 0) until their quota
// next frees, so requests that would surely be denied are denied without a round trip. It is
// bounded in size and safe for concurrent use.
//
// Staleness: quota that frees early, by a refund sent through another Sluice instance, is seen
// here only at the remembered reset time. A refund through this instance forgets the counter.
type localCache struct {
	c *otter.Cache[string, exhausted]
}

// exhausted is a cache entry.
type exhausted struct {
	until int64         // Unix ns, on the limiter's clock, when quota next frees
	ttl   time.Duration // lifetime in the cache: the ResetAfter it was remembered with
	limit uint64        // the limit it is exhausted for: an entry for another limit is ignored
}

func newLocalCache(size int) (*localCache, error) {
	c, err := otter.New(&otter.Options[string, exhausted]{
		MaximumSize: size,
		// Entries also carry their own deadline, checked on the limiter's clock (which tests
		// set); otter's expiry, on the wall clock, only frees the memory.
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, exhausted]) time.Duration {
			return e.Value.ttl
		}),
	})
	if err != nil {
		return nil, fmt.Errorf("limiter: local cache: %w", err)
	}
	return &localCache{c: c}, nil
}

// answer fills results without Redis and returns true if some item that can deny (neither
// shadow nor refund) is known exhausted at now: those items are Over, the others empty, all
// FromCache.
func (lc *localCache) answer(calls []call, now time.Time, results []Result) bool {
	hit := false
	for i := range calls {
		it := calls[i].item
		if it.Shadow || it.Refund {
			continue
		}
		e, ok := lc.c.GetIfPresent(calls[i].counter)
		if !ok || e.limit != it.Limit || now.UnixNano() >= e.until {
			continue
		}
		hit = true
		results[i] = Result{Over: true, Used: it.Limit, ResetAfter: time.Duration(e.until - now.UnixNano())}
	}
	if !hit {
		return false
	}
	for i := range results {
		results[i].FromCache = true
	}
	return true
}

// remember records the items that Redis left without quota. now is the time taken before the
// call, so the entry expires no later than the counter.
func (lc *localCache) remember(calls []call, results []Result, now time.Time) {
	for i := range calls {
		it, r := calls[i].item, &results[i]
		if it.Shadow || it.Refund || r.Remaining > 0 || r.ResetAfter <= 0 {
			continue
		}
		lc.c.Set(calls[i].counter, exhausted{until: now.Add(r.ResetAfter).UnixNano(), ttl: r.ResetAfter, limit: it.Limit})
	}
}

// forget drops a counter, after a refund made quota free.
func (lc *localCache) forget(counter string) { lc.c.Invalidate(counter) }

// close stops the cache's clean-up goroutine.
func (lc *localCache) close() { lc.c.StopAllGoroutines() }
