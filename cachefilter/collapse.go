package cachefilter

import (
	"context"
	"sync"
	"time"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
)

// collapser collapses concurrent misses of one variant key into one upstream fetch. It is safe
// for concurrent use; memory is bounded by max flights, and a flight whose leader never
// completes is ended by a timer (no goroutine waits for it).
type collapser struct {
	max     int // flights at most; 0 disables collapsing
	timeout time.Duration
	onWait  func(served bool) // counts followers

	mu      sync.Mutex // guards flights and closed
	flights map[string]*flight
	closed  bool
}

// flight is one upstream fetch that followers wait for.
type flight struct {
	done  chan struct{}    // closed when the flight ends
	entry *httpcache.Entry // set before done is closed; nil: followers go upstream themselves
	timer *time.Timer      // ends the flight after the collapse timeout
}

func newCollapser(max int, timeout time.Duration, onWait func(served bool)) *collapser {
	return &collapser{max: max, timeout: timeout, onWait: onWait, flights: map[string]*flight{}}
}

// leaderWait is the wait function of a leader: it has nothing to wait for.
func leaderWait(context.Context) (*httpcache.Entry, bool) { return nil, false }

// Collapse joins the fetch of variantKey after a cache miss. The first caller for a key is the
// leader (leader true): it goes upstream and must then call Complete(variantKey, entry or nil)
// exactly once, whether it stored an entry or failed. Later callers, until then, are followers:
// wait blocks until the leader completes, the follower's ctx ends, or the collapse timeout
// passes since the leader started; it returns the leader's entry and true, or nil and false when
// the follower should go upstream itself (the leader failed, did not store, or took too long).
// A leader's wait returns nil, false at once.
//
// Collapsing is local to the Store. A leader should check the L1 again before going upstream
// (Lookup), in case a flight ended between its miss and its Collapse. With CollapseMaxKeys
// flights in progress, or collapsing disabled, every caller is a leader (and its Complete does
// nothing).
func (s *Store) Collapse(variantKey string) (leader bool, wait func(ctx context.Context) (*httpcache.Entry, bool)) {
	return s.collapse.join(variantKey)
}

// Complete ends the flight of variantKey: its followers get e, or are released to go upstream if
// e is nil. Completing a key without a flight (its timeout passed, or it was never collapsed)
// does nothing.
func (s *Store) Complete(variantKey string, e *httpcache.Entry) { s.collapse.complete(variantKey, e) }

func (c *collapser) join(key string) (bool, func(context.Context) (*httpcache.Entry, bool)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.flights[key]; ok {
		return false, func(ctx context.Context) (*httpcache.Entry, bool) { return c.wait(ctx, f) }
	}
	if c.closed || len(c.flights) >= c.max {
		return true, leaderWait
	}
	f := &flight{done: make(chan struct{})}
	c.flights[key] = f
	f.timer = time.AfterFunc(c.timeout, func() { c.end(key, f, nil) })
	return true, leaderWait
}

func (c *collapser) wait(ctx context.Context, f *flight) (*httpcache.Entry, bool) {
	select {
	case <-f.done:
		served := f.entry != nil
		c.onWait(served)
		return f.entry, served
	case <-ctx.Done():
		c.onWait(false)
		return nil, false
	}
}

func (c *collapser) complete(key string, e *httpcache.Entry) {
	c.mu.Lock()
	f := c.flights[key]
	c.mu.Unlock()
	if f != nil {
		c.end(key, f, e)
	}
}

// end ends f, the flight of key, with e, unless it has ended already.
func (c *collapser) end(key string, f *flight, e *httpcache.Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flights[key] != f {
		return
	}
	delete(c.flights, key)
	f.timer.Stop()
	f.entry = e
	close(f.done)
}

// close releases every follower and ends collapsing: later callers are all leaders.
func (c *collapser) close() {
	c.mu.Lock()
	flights := c.flights
	c.flights = map[string]*flight{}
	c.closed = true
	c.mu.Unlock()
	for _, f := range flights {
		f.timer.Stop()
		close(f.done)
	}
}

// size returns the flights in progress.
func (c *collapser) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.flights)
}
