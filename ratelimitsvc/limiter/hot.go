package limiter

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Hot-key detection: a sample of exact decisions is counted per counter over one-second
// intervals; a counter whose estimated rate reaches the threshold is hot until it falls below
// half of it. They are constants, not Config: nothing in them is a user's trade-off.
const (
	hotInterval   = time.Second
	hotSampleRate = 8      // one decision in hotSampleRate is counted, on average
	hotMaxTracked = 10_000 // counters counted per interval; more are not counted in it
)

// hotKeys finds the counters that this replica decides exactly at a high rate: the keys that
// make one Redis shard hot whatever the number of replicas. It is safe for concurrent use; the
// zero value is not usable (newHotKeys).
type hotKeys struct {
	threshold float64 // decisions per second
	metrics   *metrics
	every     uint32 // one decision in every is counted, on average (hotSampleRate)

	mu     sync.Mutex        // guards counts and start
	counts map[string]uint32 // sampled decisions per counter this interval
	lease  map[string]bool   // counters of this interval that may move to lease mode
	start  time.Time         // of this interval; zero before the first decision

	hot atomic.Pointer[map[string]*hotKey] // the hot counters as of the last interval
}

// hotKey is one hot counter, as of one interval. Only reported changes; it is shared by the
// entries of the counter while it stays hot.
type hotKey struct {
	rate     float64      // decisions per second at this replica
	leasable bool         // its items may move to lease mode (LeaseWhenHot)
	reported *atomic.Bool // NewlyHot was returned for it
}

func newHotKeys(threshold float64, m *metrics) *hotKeys {
	h := &hotKeys{
		threshold: threshold,
		metrics:   m,
		every:     hotSampleRate,
		counts:    make(map[string]uint32),
		lease:     make(map[string]bool),
	}
	h.hot.Store(&map[string]*hotKey{})
	return h
}

// get returns the hot counter, or nil if counter is not hot.
func (h *hotKeys) get(counter string) *hotKey { return (*h.hot.Load())[counter] }

// saw counts one exact decision of counter at now (a sample of them), and closes the interval
// when it is over.
func (h *hotKeys) saw(counter string, leasable bool, now time.Time) {
	if h.every > 1 && rand.Uint32N(h.every) != 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tickLocked(now)
	if n, ok := h.counts[counter]; ok || len(h.counts) < hotMaxTracked {
		h.counts[counter] = n + 1
		h.lease[counter] = h.lease[counter] || leasable
	}
}

// tick closes the interval if it is over at now, so that a counter that stops being decided
// stops being hot.
func (h *hotKeys) tick(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tickLocked(now)
}

func (h *hotKeys) tickLocked(now time.Time) {
	if h.start.IsZero() {
		h.start = now
	}
	if el := now.Sub(h.start); el >= hotInterval {
		h.rollLocked(el)
		h.start = now
	}
}

// rollLocked turns the counts of an interval of length el into the hot set: counters at the
// threshold or more, and those already hot at half of it or more. A counter that stays hot
// keeps its entry (reported once); one that cools and comes back is reported again.
func (h *hotKeys) rollLocked(el time.Duration) {
	old := *h.hot.Load()
	next := make(map[string]*hotKey)
	leased, exact := 0, 0
	for counter, n := range h.counts {
		rate := float64(n) * float64(h.every) / el.Seconds()
		prev := old[counter]
		if rate < h.threshold && (prev == nil || rate < h.threshold/2) {
			continue
		}
		k := &hotKey{rate: rate, leasable: h.lease[counter], reported: new(atomic.Bool)}
		if prev != nil {
			k.reported = prev.reported
		}
		next[counter] = k
		if k.leasable {
			leased++
		} else {
			exact++
		}
	}
	h.hot.Store(&next)
	clear(h.counts)
	clear(h.lease)
	h.metrics.hotKeys.WithLabelValues(modeLease).Set(float64(leased))
	h.metrics.hotKeys.WithLabelValues(modeExact).Set(float64(exact))
}
