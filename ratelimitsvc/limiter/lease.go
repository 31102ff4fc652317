package limiter

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Reply layout of a lease request: replyPerReq, then these per lease item.
const replyPerLease = 5 // over, used, reset after ms, hits leased beyond the need, replicas holding leases

// flagLease marks a lease item in ARGV[2] (see the lease function of the script).
const flagLease = 8

// Bounds of what a lease remembers of its grants: the unused hits of each grant it holds, and
// the unused hits it is to give back. Past them, the oldest are forgotten: their hits stay
// counted until they leave the window (never more admitted, a little less).
const (
	maxGrants         = 16
	maxPendingReturns = 32
	maxReturnsPerCall = 8
)

// leases holds this replica's leases, one per counter in lease mode. It is safe for concurrent
// use.
type leases struct {
	l   *Limiter
	cfg LeaseConfig
	ttl time.Duration // how long a lease may be used after it was asked for: 2*Horizon

	mu   sync.RWMutex // guards keys
	keys map[string]*lease

	flyMu  sync.RWMutex // guards closed; held for reading while a flight starts
	closed bool         // no more flights: Close waits for those started

	stop chan struct{} // closed by close: the sweeper returns
}

// lease is this replica's share of one counter's quota. Its fields are guarded by mu.
type lease struct {
	counter string // the sliding counter's Redis key, which holds the registry of leases too
	slot    uint16 // its Redis Cluster hash slot
	limit   uint64
	window  time.Duration
	subs    int

	mu        sync.Mutex // guards the fields below
	remaining uint64     // hits this replica may admit without asking: the sum of grants
	grants    []grant    // the unused hits of each grant held, oldest first (used first)
	expires   time.Time  // local time past which remaining may not be used
	returns   []grant    // unused hits to give back with the next lease calls
	known     bool       // a lease call answered: the fields below hold its figures
	used      uint64     // the counter's count after the last lease call
	resetAt   time.Time  // local time when quota next frees, as of the last lease call
	exhausted time.Time  // local time until which no quota is left (over until then)
	replicas  int        // replicas holding leases, as of the last lease call
	flight    *flight    // the lease call in progress, or nil
	rate      float64    // hits per second asked of this lease recently
	demand    uint64     // hits asked since rateSince
	rateSince time.Time
	lastUse   time.Time
}

// grant is hits charged at a Redis time, in Unix ms (0: unknown, they cannot go back).
type grant struct {
	hits uint64
	at   int64
}

// takeLocked takes hits (at most remaining) from the oldest grants and appends what it took
// from each to debits.
func (le *lease) takeLocked(hits uint64, debits []grant) []grant {
	le.remaining -= hits
	for hits > 0 {
		g := &le.grants[0]
		d := min(g.hits, hits)
		debits = append(debits, grant{d, g.at})
		g.hits -= d
		hits -= d
		if g.hits == 0 {
			le.grants = append(le.grants[:0], le.grants[1:]...)
		}
	}
	return debits
}

// addLocked adds hits charged at a Redis time to the grants, in time order.
func (le *lease) addLocked(g grant) {
	if g.hits == 0 {
		return
	}
	le.remaining += g.hits
	i := len(le.grants)
	for i > 0 && le.grants[i-1].at > g.at {
		i--
	}
	if i > 0 && le.grants[i-1].at == g.at {
		le.grants[i-1].hits += g.hits
		return
	}
	le.grants = slices.Insert(le.grants, i, g)
	if len(le.grants) > maxGrants {
		// Forget where the two oldest were charged: still usable, no longer returnable.
		le.grants[1] = grant{le.grants[0].hits + le.grants[1].hits, 0}
		le.grants = le.grants[1:]
	}
}

// flight is one lease call. done is closed once the lease holds its outcome; need and over are
// the share of its owner, the decision that started it (need 0: a renewal or a return).
type flight struct {
	done    chan struct{}
	need    uint64
	over    bool  // the need did not fit in the quota
	grantAt int64 // Redis ms at which the need was charged
	err     error // the call failed: the lease is unchanged
}

func newLeases(l *Limiter, cfg LeaseConfig) *leases {
	return &leases{l: l, cfg: cfg, ttl: 2 * cfg.Horizon, keys: make(map[string]*lease), stop: make(chan struct{})}
}

// capOf is the most hits leased across replicas for a limit: floor(MaxOvershoot * limit).
func (ls *leases) capOf(limit uint64) uint64 {
	return uint64(math.Floor(ls.cfg.MaxOvershoot * float64(limit)))
}

// get returns the lease of c's counter, creating it, or nil when MaxKeys leases are held.
func (ls *leases) get(c *call) *lease {
	ls.mu.RLock()
	le := ls.keys[c.counter]
	ls.mu.RUnlock()
	if le != nil {
		return le
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if le := ls.keys[c.counter]; le != nil {
		return le
	}
	if len(ls.keys) >= ls.cfg.MaxKeys {
		return nil
	}
	le = &lease{counter: c.counter, slot: c.slot, limit: c.item.Limit, window: c.item.Window, subs: c.subs}
	ls.keys[c.counter] = le
	ls.l.metrics.leases.Set(float64(len(ls.keys)))
	return le
}

// outcome of a reservation.
type outcome uint8

const (
	taken   outcome = iota // the hits came out of the lease
	refused                // over the limit: nothing taken
	wait                   // wait for the flight, then try again (or, as its owner, read its outcome)
)

// reserve takes hits out of the lease for one decision at now, recording in debits what it took
// from which grant, or says why not. A wait comes with the flight to wait for; owner reports
// that the flight was started for these hits (its need), so that once it lands they are charged
// or refused without another reservation.
func (ls *leases) reserve(le *lease, limit, hits uint64, now time.Time, debits *[]grant) (o outcome, f *flight, owner bool) {
	le.mu.Lock()
	defer le.mu.Unlock()
	if le.limit != limit {
		// The rules changed the limit: what is leased was sized for the old one.
		le.expireLocked()
		le.limit, le.known, le.exhausted = limit, false, time.Time{}
	}
	le.demand += hits
	le.lastUse = now
	if !le.expires.After(now) && le.remaining > 0 {
		le.expireLocked()
	}
	switch {
	case hits == 0 && le.known:
		// A check: over once the quota is used up, as in exact mode.
		if now.Before(le.exhausted) {
			return refused, nil, false
		}
		return taken, nil, false
	case hits > 0 && now.Before(le.exhausted):
		return refused, nil, false
	case hits > 0 && le.remaining >= hits:
		*debits = le.takeLocked(hits, (*debits)[:0])
		ls.maybeRenewLocked(le, now)
		return taken, nil, false
	case le.flight != nil:
		return wait, le.flight, false
	}
	return wait, ls.flyLocked(le, hits, now, leaseNeed), hits > 0
}

// release puts back what a reservation took, for a request denied by another item.
func (le *lease) release(debits []grant) {
	le.mu.Lock()
	for _, g := range debits {
		le.addLocked(g)
	}
	le.mu.Unlock()
}

// giveBack queues hits a flight charged for its owner, which did not use them (its request was
// denied by another item), to be refunded where they were charged with the next lease call.
func (le *lease) giveBack(hits uint64, at int64) {
	le.mu.Lock()
	le.addReturnLocked(grant{hits, at})
	le.mu.Unlock()
}

func (le *lease) addReturnLocked(g grant) {
	if g.hits == 0 || g.at == 0 {
		return
	}
	for i := range le.returns {
		if le.returns[i].at == g.at {
			le.returns[i].hits += g.hits
			return
		}
	}
	if len(le.returns) == maxPendingReturns {
		le.returns = append(le.returns[:0], le.returns[1:]...)
	}
	le.returns = append(le.returns, g)
}

// expireLocked stops using what is left of the lease: its unused hits go back, each to the
// sub-window that counted it, with the next lease calls.
func (le *lease) expireLocked() {
	for _, g := range le.grants {
		le.addReturnLocked(g)
	}
	le.grants = le.grants[:0]
	le.remaining = 0
}

// takeReturnsLocked moves up to maxReturnsPerCall pending returns into one lease call.
func (le *lease) takeReturnsLocked() []grant {
	n := min(len(le.returns), maxReturnsPerCall)
	out := slices.Clone(le.returns[:n])
	le.returns = append(le.returns[:0], le.returns[n:]...)
	return out
}

// target is the lease to hold: the recent rate times the horizon, at least one hit.
func (ls *leases) target(le *lease) uint64 {
	return max(1, uint64(math.Ceil(le.rate*ls.cfg.Horizon.Seconds())))
}

// maybeRenewLocked starts a background lease call when a quarter of the target is left or the
// lease is about to expire, so that decisions keep finding hits in it.
func (ls *leases) maybeRenewLocked(le *lease, now time.Time) {
	if le.flight != nil {
		return
	}
	if le.remaining*4 < ls.target(le) || le.expires.Sub(now) < ls.cfg.Horizon/2 {
		ls.flyLocked(le, 0, now, leaseRenew)
	}
}

// flyLocked starts a lease call for need hits (0 for a renewal or a return) in its own
// goroutine and returns its flight.
func (ls *leases) flyLocked(le *lease, need uint64, now time.Time, reason string) *flight {
	ls.l.metrics.leaseCalls.WithLabelValues(reason).Inc()
	f := &flight{done: make(chan struct{}), need: need}
	le.flight = f
	ls.updateRateLocked(le, now)
	in := leaseInput{need: need, held: le.remaining, cap: ls.capOf(le.limit), ttl: ls.ttl}
	in.want = max(ls.target(le), in.held)
	ls.startLocked(le, f, in, now)
	return f
}

// startLocked sends the lease call of f in a goroutine of its own, giving back the oldest
// pending return with it, unless the limiter is closing: then f fails at once.
func (ls *leases) startLocked(le *lease, f *flight, in leaseInput, now time.Time) {
	ls.flyMu.RLock()
	defer ls.flyMu.RUnlock()
	if ls.closed {
		le.flight, f.err = nil, ErrClosed
		close(f.done)
		return
	}
	in.ret = le.takeReturnsLocked()
	// Queued for the next batch, landed by the flusher when answered: no goroutine waits for
	// it.
	l := ls.l
	r := getRequest()
	r.slot = le.slot
	r.keys = append(r.keys, le.counter)
	r.input = appendLease(r.input, le, in)
	r.replyLen = replyPerReq + replyPerLease
	r.nowArg, r.deadline = l.nowArg(l.now()), time.Now().Add(l.leaseTimeout())
	r.then = func(r *request) { ls.land(le, f, in, now, r.reply, r.now, r.err) }
	if !l.batch.enqueue(r) {
		putRequest(r)
		le.flight, f.err = nil, ErrClosed
		close(f.done)
	}
}

// giveUpLocked returns what the lease holds (an idle key, or Close): nothing stays leased.
func (ls *leases) giveUpLocked(le *lease, now time.Time) *flight {
	ls.l.metrics.leaseCalls.WithLabelValues(leaseReturn).Inc()
	le.expireLocked()
	f := &flight{done: make(chan struct{})}
	le.flight = f
	in := leaseInput{cap: ls.capOf(le.limit), ttl: ls.ttl}
	ls.startLocked(le, f, in, now)
	return f
}

// updateRateLocked folds the hits asked since the last lease call into the rate (half the
// weight to the new figure). The first figure is taken over at least a tenth of the horizon,
// so that one decision does not look like a torrent.
func (ls *leases) updateRateLocked(le *lease, now time.Time) {
	if le.rateSince.IsZero() {
		le.rateSince = now.Add(-ls.cfg.Horizon / 10)
	}
	el := now.Sub(le.rateSince)
	if el < ls.cfg.Horizon/10 && le.known {
		return
	}
	el = max(el, ls.cfg.Horizon/10)
	r := float64(le.demand) / el.Seconds()
	if le.known {
		r = (le.rate + r) / 2
	}
	le.rate, le.demand, le.rateSince = r, 0, now
}

// leaseInput is one lease call's input for one counter.
type leaseInput struct {
	need, want, held uint64
	ret              []grant // unused hits given back, each where it was charged
	cap              uint64
	ttl              time.Duration
}

// land applies the answer to the lease call of flight f, sent at local time sent: reply and
// the batch's Redis time now, or err. It must not block: on a single Redis the flusher runs it.
func (ls *leases) land(le *lease, f *flight, in leaseInput, sent time.Time, reply []int64, now int64, err error) {
	var out leaseOut
	if err == nil {
		out, err = parseLease(reply, le.counter)
	} else {
		// The lease call is the limiter's own: its deadline passing is a Redis timeout.
		err = ls.l.failure(context.Background(), err)
	}
	local := ls.l.now()
	le.mu.Lock()
	defer le.mu.Unlock()
	defer close(f.done)
	le.flight = nil
	if err != nil {
		f.err = err
		for _, g := range in.ret {
			le.addReturnLocked(g) // not given back: try again next time
		}
		return
	}
	le.known = true
	le.used, le.replicas = out.used, out.replicas
	le.resetAt = local.Add(out.reset)
	f.over = out.over
	le.addLocked(grant{out.leased, now})
	if le.remaining > 0 {
		// The registry keeps this replica's entry until now+ttl on Redis's clock; sent is
		// earlier on ours.
		le.expires = sent.Add(ls.ttl)
	}
	if out.used >= le.limit && le.remaining == 0 {
		le.exhausted = local.Add(out.reset)
	} else {
		le.exhausted = time.Time{}
	}
	if !out.over && f.need > 0 {
		f.grantAt = now
	}
}

// leaseOut is one lease call's outcome.
type leaseOut struct {
	over     bool
	used     uint64
	reset    time.Duration
	leased   uint64
	replicas int
}

// leaseTimeout bounds a lease call: the longer of Config.Timeout and a quarter of the horizon.
// No decision waits for a lease call longer than Config.Timeout, and a lease that lands after
// its waiters gave up still serves the decisions after them, where failing it would make them
// ask again.
func (l *Limiter) leaseTimeout() time.Duration { return max(l.cfg.Timeout, l.cfg.Lease.Horizon/4) }

// parseLease reads a lease request's share of a script reply.
func parseLease(reply []int64, counter string) (leaseOut, error) {
	if len(reply) != replyPerReq+replyPerLease {
		return leaseOut{}, fmt.Errorf("limiter: lease reply of %d values", len(reply))
	}
	if reply[0] < 0 {
		return leaseOut{}, fmt.Errorf("limiter: counter %q holds a value of another type or format", counter)
	}
	r := reply[replyPerReq:]
	return leaseOut{
		over:     r[0] == 1,
		used:     uint64(max(r[1], 0)),
		reset:    time.Duration(r[2]) * time.Millisecond,
		leased:   uint64(max(r[3], 0)),
		replicas: int(r[4]),
	}, nil
}

// appendLease appends the ARGV[2] share of one lease request to b: one sliding-window item with
// the lease flag and the lease fields.
func appendLease(b []byte, le *lease, in leaseInput) []byte {
	b = append(b, 1, 0, 0, 0) // one item
	b = append(b, flagLease, byte(le.subs))
	b = appendUint(b, min(le.limit, MaxCount), 7)
	b = appendUint(b, uint64(le.window.Milliseconds()), 6)
	b = appendUint(b, in.need, 7)
	b = appendUint(b, min(in.want, MaxCount), 7)
	b = appendUint(b, in.held, 7)
	b = appendUint(b, in.cap, 7)
	b = appendUint(b, uint64(in.ttl.Milliseconds()), 6)
	b = append(b, byte(len(in.ret)))
	for _, g := range in.ret {
		b = appendUint(b, g.hits, 7)
		b = appendUint(b, uint64(max(g.at, 0)), 6)
	}
	return b
}

// sweep gives back the leases of keys idle for a horizon and forgets the state of keys idle
// for four, every half horizon until close.
func (ls *leases) sweep() {
	t := time.NewTicker(ls.cfg.Horizon / 2)
	defer t.Stop()
	for {
		select {
		case <-ls.stop:
			return
		case <-t.C:
			now := ls.l.now()
			ls.sweepOnce(now)
			if ls.l.hot != nil {
				ls.l.hot.tick(now)
			}
		}
	}
}

// sweepOnce is one pass of sweep at now.
func (ls *leases) sweepOnce(now time.Time) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for key, le := range ls.keys {
		le.mu.Lock()
		idle := now.Sub(le.lastUse)
		switch {
		case le.flight != nil:
		case idle >= ls.cfg.Horizon && (le.remaining > 0 || len(le.returns) > 0):
			ls.giveUpLocked(le, now)
		case idle >= 4*ls.cfg.Horizon:
			delete(ls.keys, key)
		}
		le.mu.Unlock()
	}
	ls.l.metrics.leases.Set(float64(len(ls.keys)))
}

// close stops the sweeper, gives every lease back (each call bounded by Config.Timeout) and
// starts no flight after; the caller waits for the flights.
func (ls *leases) close() {
	close(ls.stop)
	now := ls.l.now()
	ls.mu.Lock()
	for _, le := range ls.keys {
		le.mu.Lock()
		if le.flight == nil && (le.remaining > 0 || len(le.returns) > 0) {
			ls.giveUpLocked(le, now)
		}
		le.mu.Unlock()
	}
	ls.mu.Unlock()
	ls.flyMu.Lock()
	ls.closed = true
	ls.flyMu.Unlock()
}

// classify picks how c is decided at now: from a lease (c.lease) or exactly, and notes whether
// its counter is newly hot. Exact and LeaseWhenHot decisions are sampled for hot-key detection
// whichever way they are decided, so that a hot key moved to lease mode stays hot while busy.
func (l *Limiter) classify(c *call, now time.Time) {
	it := c.item
	if it.Refund {
		return
	}
	sliding := it.Algorithm == SlidingWindow
	if it.Mode == Lease {
		if sliding {
			c.lease = l.leaseFor(c)
		}
		return
	}
	if l.hot == nil {
		return
	}
	leasable := it.Mode == LeaseWhenHot && sliding
	l.hot.saw(c.counter, leasable, now)
	k := l.hot.get(c.counter)
	if k == nil {
		return
	}
	if k.reported.CompareAndSwap(false, true) {
		c.hot, c.hotRate = true, k.rate
	}
	if leasable {
		c.lease = l.leaseFor(c)
	}
}

// leaseFor returns the lease for c, or nil when c is decided exactly all the same: its limit
// allows no lease (MaxOvershoot of it is below one hit) or MaxKeys leases are held.
func (l *Limiter) leaseFor(c *call) *lease {
	if l.leases.capOf(c.item.Limit) < 1 {
		return nil
	}
	return l.leases.get(c)
}

// leaseGroup is what one request takes from one lease: the hits of its items on that counter.
type leaseGroup struct {
	le      *lease
	limit   uint64
	hits    uint64
	denies  bool    // an item of it may deny the request (not shadow)
	taken   bool    // the hits came out of the lease (give them back if the request is denied)
	debits  []grant // what was taken from which grant
	settled bool    // decided by a flight started for these hits: charged in Redis unless over
	over    bool
	grantAt int64 // a settled group's charge, Redis ms
}

// doLeased decides a request with leased items: those from their leases, waiting only for a
// lease call when a lease lacks the hits (the first lease of a key, or one used faster than it
// is renewed), then the exact items, if any, in one round trip. All or nothing: if anything
// denies, what the leases gave is given back.
func (l *Limiter) doLeased(ctx context.Context, calls []call, results []Result, now time.Time) (allowed bool, err error) {
	var (
		groups []leaseGroup
		exact  []int // indexes of the exact calls
	)
	for i := range calls {
		c := &calls[i]
		if c.lease == nil {
			exact = append(exact, i)
			continue
		}
		gi := slices.IndexFunc(groups, func(g leaseGroup) bool { return g.le == c.lease })
		if gi < 0 {
			groups = append(groups, leaseGroup{le: c.lease, limit: c.item.Limit})
			gi = len(groups) - 1
		}
		groups[gi].hits += c.item.Hits
		groups[gi].denies = groups[gi].denies || !c.item.Shadow
	}
	// The wait for leases is bounded by Config.Timeout, counted from the first wait: a timer
	// only for the decisions that wait.
	var wctx context.Context
	undo := func() {
		for gi := range groups {
			g := &groups[gi]
			switch {
			case g.taken:
				g.le.release(g.debits)
			case g.settled && !g.over && g.hits > 0:
				g.le.giveBack(g.hits, g.grantAt)
			}
			g.taken = false
		}
	}
	for {
		var (
			waitFor *flight
			owner   *leaseGroup
		)
		for gi := range groups {
			g := &groups[gi]
			if g.settled || g.taken || g.over {
				continue
			}
			o, f, own := l.leases.reserve(g.le, g.limit, g.hits, now, &g.debits)
			switch o {
			case taken:
				g.taken = true
			case refused:
				g.over = true
			case wait:
				waitFor = f
				if own {
					owner = g
				}
			}
			if waitFor != nil {
				break
			}
		}
		if waitFor == nil {
			break
		}
		// Wait with nothing taken, so that concurrent decisions on the same leases cannot hold
		// each other's hits while they wait.
		for gi := range groups {
			if g := &groups[gi]; g.taken {
				g.le.release(g.debits)
				g.taken = false
			}
		}
		if wctx == nil {
			var cancel context.CancelFunc
			wctx, cancel = context.WithTimeout(ctx, l.cfg.Timeout)
			defer cancel()
		}
		select {
		case <-waitFor.done:
		case <-wctx.Done():
			undo()
			return false, l.failure(ctx, fmt.Errorf("limiter: wait for a lease: %w", wctx.Err()))
		}
		if waitFor.err != nil {
			undo()
			return false, waitFor.err
		}
		if owner != nil {
			owner.settled, owner.over, owner.grantAt = true, waitFor.over, waitFor.grantAt
		}
	}

	allowed = true
	for _, g := range groups {
		if g.over && g.denies {
			allowed = false
		}
	}
	exactAnswered := false
	if allowed && len(exact) > 0 {
		sub := make([]call, len(exact))
		subRes := make([]Result, len(exact))
		for j, i := range exact {
			sub[j] = calls[i]
		}
		ok, err := l.exact(ctx, sub, subRes, now)
		if err != nil {
			undo()
			return false, err
		}
		for j, i := range exact {
			results[i] = subRes[j]
		}
		allowed, exactAnswered = ok, true
	}
	if !allowed {
		undo()
	}
	for i := range calls {
		c := &calls[i]
		if c.lease == nil {
			continue
		}
		gi := slices.IndexFunc(groups, func(g leaseGroup) bool { return g.le == c.lease })
		results[i] = c.lease.result(groups[gi].over, l.now())
	}
	if !allowed && !exactAnswered {
		// Denied by a lease without asking Redis: the exact items are left empty, as the
		// local over-limit cache leaves them.
		for i := range results {
			results[i].FromCache = true
		}
	}
	return allowed, nil
}

// result is the Result of an item decided by le at now.
func (le *lease) result(over bool, now time.Time) Result {
	le.mu.Lock()
	defer le.mu.Unlock()
	used := le.used - min(le.used, le.remaining)
	r := Result{
		Over:       over,
		Used:       used,
		Remaining:  le.limit - min(used, le.limit),
		ResetAfter: max(0, le.resetAt.Sub(now)),
		Leased:     true,
	}
	if over && now.Before(le.exhausted) {
		r.ResetAfter = le.exhausted.Sub(now)
	}
	return r
}
