package limiter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/sluicehq/sluice/internal/redisconn"
)

// Algorithm is how a limit counts hits over its window. The zero value is SlidingWindow.
type Algorithm uint8

const (
	// SlidingWindow counts the hits of the last Window at any moment, in sub-windows: no span of
	// length Window ever holds more than Limit admitted hits.
	SlidingWindow Algorithm = iota
	// FixedWindow counts hits in windows aligned to the Unix epoch, as envoyproxy/ratelimit
	// does: up to 2*Limit hits can pass around a window boundary.
	FixedWindow
)

// ParseAlgorithm parses "sliding_window" or "fixed_window", in any case.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch strings.ToLower(s) {
	case "sliding_window":
		return SlidingWindow, nil
	case "fixed_window":
		return FixedWindow, nil
	}
	return 0, fmt.Errorf("limiter: unknown algorithm %q (want sliding_window or fixed_window)", s)
}

// String returns "sliding_window" or "fixed_window", the names ParseAlgorithm accepts.
func (a Algorithm) String() string {
	switch a {
	case SlidingWindow:
		return "sliding_window"
	case FixedWindow:
		return "fixed_window"
	}
	return "Algorithm(" + strconv.Itoa(int(a)) + ")"
}

// Mode is how an item is decided. The zero value is Exact.
type Mode uint8

const (
	// Exact asks Redis for every decision (one round trip per Do, shared with concurrent calls).
	Exact Mode = iota
	// Lease decides from a lease of the counter's quota that this replica holds, asking Redis
	// only to renew it in the background, and to take the first lease of a key (see Lease mode
	// in the package doc). Sliding windows only: a fixed-window item is decided exactly, and so
	// is a limit whose share of Config.Lease.MaxOvershoot is below one hit.
	Lease
	// LeaseWhenHot decides exactly until the counter is a hot key (Config.HotKeyThreshold), then
	// in lease mode until it cools.
	LeaseWhenHot
)

// String returns "exact", "lease" or "lease_when_hot".
func (m Mode) String() string {
	switch m {
	case Exact:
		return "exact"
	case Lease:
		return "lease"
	case LeaseWhenHot:
		return "lease_when_hot"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

const (
	// DefaultSubWindows is the sliding window precision when Item.SubWindows is 0.
	DefaultSubWindows = 10
	// MaxSubWindows is the largest Item.SubWindows.
	MaxSubWindows = 120
	// MaxCount is the largest Hits an item may carry. Larger limits are treated as MaxCount
	// (unlimited in practice). Redis Lua numbers are doubles, exact up to 2^53.
	MaxCount = 1<<53 - 1
)

// Item is one limit to check and charge within a Do call.
type Item struct {
	// Key is the counter's identity, unique per descriptor and limit. It contains exactly one
	// non-empty {hash tag}, chosen by the caller: items whose tags hash to the same Redis Cluster
	// slot are decided atomically together. The limiter appends ":f:<window ms>:<window start ms>"
	// (fixed) or ":sw:<window ms>:<sub-windows>" (sliding) to make the Redis key.
	Key string
	// Limit is the number of hits allowed per Window; 0 means every hit is over.
	Limit uint64
	// Window is the span the limit applies to: positive, whole milliseconds.
	Window time.Duration
	// Algorithm is how hits are counted over Window.
	Algorithm Algorithm
	// SubWindows is the sliding window's precision: 0 means DefaultSubWindows, else 1 to
	// MaxSubWindows. A larger value lags an exact sliding log less (at most Window/SubWindows)
	// and costs more fields per counter. Fixed windows ignore it.
	SubWindows int
	// Hits is how many hits this request adds: the descriptor's hits_addend, else the request's
	// (envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.hits_addend overrides
	// envoy.service.ratelimit.v3.RateLimitRequest.hits_addend). 0 checks without charging.
	Hits uint64
	// Refund subtracts Hits from the current window (sliding: from the newest non-empty
	// sub-windows), never below 0: RateLimitDescriptor.is_negative_hits, which "refills
	// previously consumed rate limit tokens". A refund is never over, never denies, and applies
	// even when the request is denied: it returns quota of an earlier request.
	Refund bool
	// Shadow reports being over the limit without denying the request (the limit's shadow_mode
	// in envoyproxy/ratelimit configuration). A shadow item is charged like any other, except a
	// leased one over its limit, which is not charged.
	Shadow bool
	// Mode is how the item is decided: Exact (the default), Lease or LeaseWhenHot. A refund is
	// always exact.
	Mode Mode
}

// Result is the outcome of one Item.
type Result struct {
	// Over reports that this item alone is over its limit: Used+Hits > Limit before charging, or
	// Used >= Limit for a check-only item. Refunds are never over.
	Over bool
	// Used is the number of hits counted in the window after this call, including this call's
	// Hits if they were charged. From the local cache it is Limit (at least that many were used).
	Used uint64
	// Remaining is Limit-Used, or 0 if Used exceeds Limit.
	Remaining uint64
	// ResetAfter is when quota next frees: for a fixed window, when it ends; for a sliding window,
	// when the hits of its oldest counted sub-window leave it (0 if nothing is counted).
	ResetAfter time.Duration
	// FromCache reports that Do denied the request without asking Redis (the local over-limit
	// cache, or a lease, knew an item to be over): the items it did not decide are left empty.
	FromCache bool
	// Leased reports that this replica's lease decided the item, without a round trip unless it
	// had to wait for a lease. Used, Remaining and ResetAfter are then Redis's figures as of the
	// last lease call, less what this replica leased and has not used: what other replicas
	// admitted since is not in them.
	Leased bool
	// NewlyHot reports that the item's counter is a hot key (Config.HotKeyThreshold) and that
	// this is the first result to say so since it became hot: the caller may log it, once.
	NewlyHot bool
	// HotRate is the counter's rate at this replica, in decisions per second, when NewlyHot.
	HotRate float64
}

var (
	// ErrUnavailable is returned, wrapped, when the circuit breaker is open: Redis failed
	// repeatedly, and Do fails at once without calling it.
	ErrUnavailable = errors.New("limiter: redis unavailable (circuit breaker open)")
	// ErrInvalidItem is returned, wrapped with the item's index and the reason, when Do is given
	// an item it cannot evaluate. No Redis call is made.
	ErrInvalidItem = errors.New("invalid rate-limit item")
	// ErrClosed is returned by Do after Close.
	ErrClosed = errors.New("limiter: closed")
)

// Limiter decides rate limits over Redis, at most one round trip per Do call, shared with
// concurrent calls on a single Redis (see Coalescing in the package doc; on a cluster: one
// pipeline per call). It is safe for concurrent use. Create it with New and stop it with Close;
// the zero value is not usable.
type Limiter struct {
	client  redis.UniversalClient
	cluster *redis.ClusterClient // client, when it is a cluster: calls are split by hash slot
	cfg     Config
	cache   *localCache // nil when disabled
	batch   *batcher    // coalesces concurrent calls (on a cluster, those of one slot each)
	breaker *gobreaker.CircuitBreaker[struct{}]
	metrics *metrics
	id      string         // this replica's name in lease registries: random, per Limiter
	leases  *leases        // lease mode state
	hot     *hotKeys       // nil when detection is off
	flights sync.WaitGroup // the lease sweeper

	closed    atomic.Bool
	closeOnce sync.Once
}

// New returns a Limiter over client: a *redis.Client, a failover client or a
// *redis.ClusterClient (a *redis.Ring cannot run multi-key scripts and is refused). The client
// must have ContextTimeoutEnabled set, so that Config.Timeout bounds its socket reads; New
// refuses it otherwise. It registers its metrics on reg unless reg is nil; Close unregisters
// them. Redis 5 or newer is needed (the script reads TIME before writing).
func New(client redis.UniversalClient, cfg Config, reg prometheus.Registerer) (*Limiter, error) {
	if client == nil {
		return nil, errors.New("limiter: nil redis client")
	}
	if _, ok := client.(*redis.Ring); ok {
		return nil, errors.New("limiter: a redis.Ring cannot run multi-key scripts; use a Client or a ClusterClient")
	}
	if !redisconn.HonoursContext(client) {
		return nil, errors.New("limiter: the redis client must set ContextTimeoutEnabled: true, " +
			"else go-redis ignores context deadlines on its sockets and Config.Timeout cannot bound a call")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	l := &Limiter{client: client, cfg: cfg}
	l.cluster, _ = client.(*redis.ClusterClient)
	var err error
	if l.metrics, err = newMetrics(reg); err != nil {
		return nil, err
	}
	if cfg.LocalCacheSize > 0 {
		if l.cache, err = newLocalCache(cfg.LocalCacheSize); err != nil {
			_ = l.Close()
			return nil, err
		}
	}
	l.breaker = redisconn.NewBreaker("sluice-ratelimit-redis", cfg.BreakerFailures, cfg.BreakerOpenFor, func(open bool) {
		if open {
			l.metrics.breakerOpen.Set(1)
		} else {
			l.metrics.breakerOpen.Set(0)
		}
	})
	l.batch = newBatcher(l.sendBatch)
	var id [8]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand documents it)
	l.id = hex.EncodeToString(id[:])
	if cfg.HotKeyThreshold > 0 {
		l.hot = newHotKeys(cfg.HotKeyThreshold, l.metrics)
	}
	l.leases = newLeases(l, cfg.Lease)
	l.flights.Go(l.leases.sweep)
	return l, nil
}

// Close makes later Do calls fail with ErrClosed, waits for the calls already queued to be sent
// and answered (each within its timeout), then stops the goroutines of the Limiter and
// unregisters the metrics. It does not close the Redis client, which the caller owns and must
// close after. It is safe to call more than once, and on a Limiter that New did not finish.
func (l *Limiter) Close() error {
	if l == nil {
		return nil
	}
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		if l.leases != nil {
			l.leases.close() // gives leases back through the batcher: before it closes
			l.flights.Wait()
		}
		if l.batch != nil {
			l.batch.close()
		}
		if l.cache != nil {
			l.cache.close()
		}
		l.metrics.unregister()
	})
	return nil
}

// call is an Item validated and turned into script input.
type call struct {
	item    *Item
	counter string // KEYS entry: Key plus the algorithm's suffix
	subs    int    // sub-windows after defaulting
	slot    uint16 // Redis Cluster hash slot of Key's tag
	lease   *lease // the lease that decides it, nil when exact
	hot     bool   // the counter is newly hot (Result.NewlyHot)
	hotRate float64
}

// Do checks every item and, only if no non-shadow item is over, charges all of them
// (all-or-nothing: a denied request consumes no quota). allowed reports that. results are
// index-aligned with items. Refund items apply in any case and never deny.
//
// On a single Redis the decision is atomic. On a cluster, items are split by hash slot and each
// slot's share is decided atomically; when one slot denies, the slots that charged are refunded
// in a second round trip (see the package doc). An empty items is allowed without Redis.
//
// If an item that can deny is known to be exhausted from an earlier call, Do denies from the
// local cache without asking Redis, unless the request carries refunds. Errors: ErrInvalidItem
// (wrapped) for bad input, ErrUnavailable (wrapped) while the breaker is open, ctx or timeout
// errors, and Redis errors; with an error, results and allowed mean nothing.
func (l *Limiter) Do(ctx context.Context, items []Item) (results []Result, allowed bool, err error) {
	if l.closed.Load() {
		return nil, false, ErrClosed
	}
	if len(items) == 0 {
		return nil, true, nil
	}
	calls := make([]call, len(items))
	for i := range items {
		if err := prepare(&items[i], &calls[i], l.cluster != nil); err != nil {
			return nil, false, fmt.Errorf("limiter: item %d: %w", i, err)
		}
	}
	now := l.now()
	results = make([]Result, len(items))
	leased := false
	for i := range calls {
		l.classify(&calls[i], now)
		leased = leased || calls[i].lease != nil
	}
	if leased {
		allowed, err = l.doLeased(ctx, calls, results, now)
	} else {
		allowed, err = l.exact(ctx, calls, results, now)
	}
	if err != nil {
		return nil, false, err
	}
	for i := range calls {
		if calls[i].hot {
			results[i].NewlyHot, results[i].HotRate = true, calls[i].hotRate
		}
	}
	return results, allowed, nil
}

// exact decides calls with Redis (or the local over-limit cache) and fills results.
func (l *Limiter) exact(ctx context.Context, calls []call, results []Result, now time.Time) (allowed bool, err error) {
	if l.cache != nil {
		refunds := false
		for i := range calls {
			if calls[i].item.Refund {
				refunds = true
				l.cache.forget(calls[i].counter)
			}
		}
		if !refunds && l.cache.answer(calls, now, results) {
			l.metrics.cacheHits.Inc()
			return false, nil
		}
	}

	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("limiter: eval script: %w", err)
	}
	nowArg := l.nowArg(now)
	if l.cluster != nil && !oneSlot(calls) {
		tctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
		defer cancel()
		_, err = l.breaker.Execute(func() (struct{}, error) {
			var err error
			allowed, err = l.evalCluster(tctx, calls, nowArg, results)
			if err != nil && ctx.Err() != nil {
				// The caller gave up: says nothing about Redis's health.
				err = redisconn.CallerGone{Err: err}
			}
			return struct{}{}, err
		})
	} else {
		allowed, err = l.evalOne(ctx, calls, nowArg, results)
	}
	if err != nil {
		return false, l.failure(ctx, err)
	}
	if l.cache != nil {
		l.cache.remember(calls, results, now)
	}
	return allowed, nil
}

// failure counts a failed Do in the metrics and wraps its error.
func (l *Limiter) failure(ctx context.Context, err error) error {
	var gone redisconn.CallerGone
	switch {
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		l.metrics.errors.WithLabelValues(reasonUnavailable).Inc()
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case errors.As(err, &gone):
		return fmt.Errorf("limiter: eval script: %w", gone.Err)
	case ctx.Err() != nil:
		// The caller gave up first: not counted, like a request Redis never saw.
	case redisconn.IsTimeout(err):
		l.metrics.errors.WithLabelValues(reasonTimeout).Inc()
	default:
		l.metrics.errors.WithLabelValues(reasonError).Inc()
	}
	return fmt.Errorf("limiter: eval script: %w", err)
}

// nowArg is ARGV[1]: now, when it comes from Config.Now, or "" for the Redis server's TIME.
func (l *Limiter) nowArg(now time.Time) string {
	if l.cfg.Now != nil {
		return formatInt(now.UnixMilli())
	}
	return ""
}

func (l *Limiter) now() time.Time {
	if l.cfg.Now != nil {
		return l.cfg.Now()
	}
	return time.Now()
}

// oneSlot reports whether every call's key is in the first one's hash slot.
func oneSlot(calls []call) bool {
	for i := 1; i < len(calls); i++ {
		if calls[i].slot != calls[0].slot {
			return false
		}
	}
	return true
}

// evalOne decides calls on a single Redis, or in one hash slot of a cluster: queued as one
// request, sent in the next batch.
func (l *Limiter) evalOne(ctx context.Context, calls []call, nowArg string, results []Result) (bool, error) {
	r := getRequest()
	r.slot = calls[0].slot
	for i := range calls {
		r.keys = append(r.keys, calls[i].counter)
	}
	r.input = appendRequest(r.input, calls, nil)
	r.replyLen = replyPerReq + replyPerItem*len(calls)
	r.nowArg, r.deadline = nowArg, time.Now().Add(l.cfg.Timeout)
	answered, err := l.batch.do(ctx, r)
	if !answered {
		return false, err // r may still be in a batch: not recycled
	}
	allowed := false
	if err == nil {
		allowed, err = parseReply(r.reply, calls, nil, results)
	}
	putRequest(r)
	return allowed, err
}

// parseReply fills results (for the calls at idx, or all) from one request's share of a script
// reply and returns whether the script allowed it.
func parseReply(reply []int64, calls []call, idx []int, results []Result) (allowed bool, err error) {
	n := len(calls)
	if idx != nil {
		n = len(idx)
	}
	if len(reply) != replyPerReq+replyPerItem*n {
		return false, fmt.Errorf("limiter: script reply of %d values for %d items", len(reply), n)
	}
	if st := reply[0]; st < 0 {
		j := int(-st) - 1
		if j >= n {
			return false, fmt.Errorf("limiter: script reply status %d for %d items", st, n)
		}
		i := j
		if idx != nil {
			i = idx[j]
		}
		return false, fmt.Errorf("limiter: item %d: counter %q holds a value of another type or format", i, calls[i].counter)
	}
	for j := range n {
		i := j
		if idx != nil {
			i = idx[j]
		}
		r := reply[replyPerReq+replyPerItem*j:]
		used := uint64(max(r[1], 0))
		results[i] = Result{
			Over:       r[0] == 1,
			Used:       used,
			Remaining:  calls[i].item.Limit - min(used, calls[i].item.Limit),
			ResetAfter: time.Duration(r[2]) * time.Millisecond,
		}
	}
	return reply[0] == 1, nil
}

// prepare validates it and fills c.
func prepare(it *Item, c *call, cluster bool) error {
	tag, err := hashTag(it.Key)
	if err != nil {
		return err
	}
	switch {
	case it.Window <= 0:
		return fmt.Errorf("%w: key %q: window %v is not positive", ErrInvalidItem, it.Key, it.Window)
	case it.Window%time.Millisecond != 0:
		return fmt.Errorf("%w: key %q: window %v is not a whole number of milliseconds", ErrInvalidItem, it.Key, it.Window)
	case it.Algorithm > FixedWindow:
		return fmt.Errorf("%w: key %q: unknown algorithm %v", ErrInvalidItem, it.Key, it.Algorithm)
	case it.Mode > LeaseWhenHot:
		return fmt.Errorf("%w: key %q: unknown mode %v", ErrInvalidItem, it.Key, it.Mode)
	case it.SubWindows < 0 || it.SubWindows > MaxSubWindows:
		return fmt.Errorf("%w: key %q: sub-windows %d not in 1..%d (or 0 for %d)", ErrInvalidItem, it.Key, it.SubWindows, MaxSubWindows, DefaultSubWindows)
	case it.Hits > MaxCount:
		return fmt.Errorf("%w: key %q: hits %d above %d", ErrInvalidItem, it.Key, it.Hits, uint64(MaxCount))
	}
	c.item = it
	c.subs = it.SubWindows
	if c.subs == 0 {
		c.subs = DefaultSubWindows
	}
	ms := strconv.FormatInt(it.Window.Milliseconds(), 10)
	if it.Algorithm == FixedWindow {
		c.counter = it.Key + ":f:" + ms
	} else {
		c.counter = it.Key + ":sw:" + ms + ":" + strconv.Itoa(c.subs)
	}
	if cluster {
		c.slot = Slot(tag)
	}
	return nil
}

// hashTag returns the content of key's one {hash tag}, which must be non-empty.
func hashTag(key string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("%w: empty key", ErrInvalidItem)
	}
	open, end := strings.IndexByte(key, '{'), strings.IndexByte(key, '}')
	if open < 0 || end < open+2 || strings.Count(key, "{") != 1 || strings.Count(key, "}") != 1 {
		return "", fmt.Errorf("%w: key %q must contain exactly one non-empty {hash tag}", ErrInvalidItem, key)
	}
	return key[open+1 : end], nil
}

func formatInt(n int64) string { return strconv.FormatInt(n, 10) }
