package limiter

import "time"

// Queued returns how many requests wait for a flusher, for tests that need a batch to form.
func Queued(l *Limiter) int {
	l.batch.mu.Lock()
	defer l.batch.mu.Unlock()
	return len(l.batch.queue)
}

// MaxInFlight and MaxBatchRequests expose the coalescing limits to tests.
const (
	MaxInFlight      = maxInFlight
	MaxBatchRequests = maxBatchRequests
)

// Sweep runs one pass of the lease sweeper at now: idle keys give their leases back.
func Sweep(l *Limiter, now time.Time) { l.leases.sweepOnce(now) }

// Crash makes l stop as a killed process would: no lease goes back, no call is sent; Close
// afterwards only waits for what is in flight.
func Crash(l *Limiter) {
	l.leases.mu.Lock()
	l.leases.keys = map[string]*lease{}
	l.leases.mu.Unlock()
	l.leases.flyMu.Lock()
	l.leases.closed = true
	l.leases.flyMu.Unlock()
	l.closed.Store(true)
}

// SampleEveryDecision makes hot-key detection count every decision instead of a sample. Call
// it before the first Do.
func SampleEveryDecision(l *Limiter) { l.hot.every = 1 }

// LeaseInput is one lease request as the script takes it.
type LeaseInput struct {
	Key        string // the item's Key: counter and registry are derived from it
	Limit      uint64
	Window     time.Duration
	SubWindows int
	Need, Want uint64
	Held       uint64
	Return     uint64
	ReturnAt   int64 // Redis ms
	Cap        uint64
	TTL        time.Duration
}

// LeaseScriptCall returns the KEYS and ARGV[2] of one lease request, for tests that call the
// script themselves (ARGV[1] is the time, ARGV[3] the replica).
func LeaseScriptCall(in LeaseInput) (keys []string, input []byte) {
	c := call{item: &Item{Key: in.Key, Limit: in.Limit, Window: in.Window, SubWindows: in.SubWindows}}
	if err := prepare(c.item, &c, false); err != nil {
		panic(err)
	}
	le := &lease{counter: c.counter, limit: in.Limit, window: in.Window, subs: c.subs}
	var ret []grant
	if in.Return > 0 {
		ret = []grant{{in.Return, in.ReturnAt}}
	}
	return []string{le.counter}, appendLease(nil, le, leaseInput{
		need: in.Need, want: in.Want, held: in.Held, ret: ret, cap: in.Cap, ttl: in.TTL,
	})
}

// ID returns the replica id of l in lease registries.
func ID(l *Limiter) string { return l.id }

// Leased returns the hits l holds in its lease of item's counter (0 without one).
func Leased(l *Limiter, it Item) uint64 {
	var c call
	if err := prepare(&it, &c, false); err != nil {
		panic(err)
	}
	l.leases.mu.Lock()
	le := l.leases.keys[c.counter]
	l.leases.mu.Unlock()
	if le == nil {
		return 0
	}
	le.mu.Lock()
	defer le.mu.Unlock()
	return le.remaining
}
