package cachefilter

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/redisconn"
)

// Layer is where Lookup found an entry. The zero value is Miss.
type Layer uint8

const (
	// Miss: no layer holds a usable entry.
	Miss Layer = iota
	// L1: the in-process cache of this replica.
	L1
	// L2: Redis, shared by the replicas.
	L2
)

// String returns "miss", "l1" or "l2", the values of the layer label of
// sluice_cache_requests_total.
func (l Layer) String() string {
	switch l {
	case Miss:
		return "miss"
	case L1:
		return "l1"
	case L2:
		return "l2"
	}
	return "Layer(" + strconv.Itoa(int(l)) + ")"
}

var (
	// ErrInvalid is returned, wrapped with the reason, for a key, tag, path or entry the Store
	// cannot take. Nothing is read or written.
	ErrInvalid = errors.New("cachefilter: invalid argument")
	// ErrUnavailable is returned, wrapped, by purges and HotKeys while the circuit breaker in
	// front of Redis is open.
	ErrUnavailable = errors.New("cachefilter: redis unavailable (circuit breaker open)")
	// ErrUnconfirmed is returned, wrapped, by a purge or invalidation that Redis carried out but
	// that some replica did not acknowledge within StoreConfig.PurgeTimeout. See Store.
	ErrUnconfirmed = errors.New("cachefilter: invalidation not acknowledged by every replica")
)

// Errors of calls the circuit breaker refused.
var (
	errBreakerOpen    = fmt.Errorf("%w: %w", ErrUnavailable, gobreaker.ErrOpenState)
	errBreakerProbing = fmt.Errorf("%w: %w", ErrUnavailable, gobreaker.ErrTooManyRequests)
)

// Store is the two-level response cache: a bounded in-process L1 (otter, W-TinyLFU, bounded in
// bytes) in front of a Redis L2 shared by every replica, with invalidations that reach every
// replica's L1, hot-key counting and miss collapsing. It is safe for concurrent use; create it
// with NewStore (the zero value is not usable), run Run for as long as it serves, then Close.
//
// # Lookups and Vary
//
// A primary key ("<tenant tag>:<hash>", from the policy) names a resource; its record holds the
// Vary names of the responses stored for it. Lookup reads the record, asks the caller for the
// variant key of the request (variantOf(names)) and returns that variant's entry: from the L1,
// else from Redis in one round trip (a pipeline of three reads) when the names are the ones
// guessed (those the L1 knows, or none), and two otherwise. An L2 hit is copied into the L1
// until the entry's expiry. Entries are kept for their remaining freshness plus
// max(stale-while-revalidate, stale-if-error) (neither when MustRevalidate) plus
// StaleRetention, at most MaxTTL after their ResponseTime; Lookup returns an entry until then,
// and the policy decides whether it is fresh, stale-servable or needs validation.
//
// # Redis failures
//
// Lookup and Put never fail because of Redis: each call is bounded by RedisTimeout, and on
// failure Lookup answers from the L1 (when ServeL1WhenRedisDown) and Put stores in the L1 only.
// Failures are counted (sluice_cache_redis_errors_total) and logged at most every 10s. A circuit
// breaker opens after BreakerFailures consecutive failures; while open, Redis is not called, so
// a dead Redis adds no latency; after BreakerOpenFor one call probes it again.
//
// # Invalidation guarantee
//
// Invalidate, PurgeTag, PurgePrefix and PurgeTenant delete the matching entries from Redis (one
// script per batch, atomic per batch), invalidate this replica's L1, publish the invalidation on
// the pub/sub channel and wait until every replica registered in Redis has acknowledged it, or
// has left the registry. Each replica applies an invalidation to its L1 before acknowledging it.
// When such a call returns nil, no replica serves a matching entry from its L1 any more, and
// none is in Redis: later lookups miss, unless the entry was stored again after the purge
// (including by an upstream fetch that started before it: the guarantee is about stored entries,
// not about responses in flight).
//
// What makes "every replica" hold: a replica serves its L1 only while it holds a lease it
// renews every SubscriptionLease/4. Renewing writes its registry entry (lease counted on
// Redis's clock from that write), then PINGs through its subscription connection and waits for
// the PONG: so the subscription delivered everything published before that point, in order. The
// lease runs from before the registry write, so it ends before the registry entry expires. A
// purger reads the registry after publishing, so a replica missing from it either registers
// later (and its PING then follows the publication) or holds no lease. When the subscription
// drops, the replica stops serving its L1 at once; when it is re-established, the replica
// clears its L1 before it registers again under a new name and removes the old one. Fills of the
// L1 that race an invalidation are discarded (see l1).
//
// When the guarantee does not hold, the purge says so:
//   - a replica registered but not acknowledging (it crashed, or its subscription is stuck):
//     the purge waits until it leaves the registry (within SubscriptionLease, by which time its
//     lease has ended) or until PurgeTimeout, then fails with ErrUnconfirmed. With PurgeTimeout
//     above SubscriptionLease (the defaults), a crashed replica only delays purges. A replica
//     whose subscription comes back while a purge waits for it may also cause ErrUnconfirmed:
//     its L1 was cleared, but that cannot be told apart;
//   - Redis down or the breaker open: the purge fails (ErrUnavailable or a Redis error) without
//     touching Redis; only this replica's L1 is invalidated. The Store keeps it and Run retries it
//     until Redis takes it (or MaxTTL has passed); meanwhile this replica reads the L2 entries it
//     covers as misses, so its own callers never get the old version back from Redis. Another
//     replica may, until the retry succeeds, if it still reaches Redis while this one does not.
//
// The one exception is ServeL1WhenRedisDown (default true): a replica that can reach neither its
// subscription nor Redis keeps serving its L1, up to each entry's expiry, rather than nothing.
// If every replica is cut off, no purge can succeed meanwhile, so nothing is lost. If only this
// replica is cut off (a partition), purges made elsewhere meanwhile do not reach its L1 until
// its subscription is back (which clears its L1), and they still return nil once its lease has
// run out of the registry (within SubscriptionLease). Set ServeL1WhenRedisDown to false where
// that matters more than hit ratio: the L1 is then served only under a lease, and the guarantee
// holds in partitions too.
//
// Run must be running for the L1 to be served when a Redis client is given; without Run, every
// lookup goes to Redis (and to the L1 only when Redis fails, as above). Run must also be
// running on a purging replica: acknowledgements arrive through its subscription (else the
// purge fails with ErrUnconfirmed if other replicas are registered). Without a Redis client the
// Store is one replica's L1 and every method works locally.
//
// # Redis layout
//
// See l2 (l2.go) for the keys. Every key of a tenant carries its tag as a Redis Cluster hash
// tag, so each operation is one script call or one pipeline, in one slot.
type Store struct {
	cfg       StoreConfig
	rdb       redis.UniversalClient // nil: L1 only, no invalidation traffic
	redisKeys *l2                   // Redis key space (the registry even with L2 disabled); nil without rdb
	l2        *l2                   // redisKeys, or nil with L2 disabled
	l1        *l1
	log       *slog.Logger
	now       func() time.Time
	metrics   *metrics
	breaker   *gobreaker.CircuitBreaker[struct{}]
	collapse  *collapser
	passes    *passSet       // hit-for-pass marks (pass.go); nil: none
	presence  *presence      // keys that may be in the L2 (presence.go); nil: every miss asks Redis
	hot       chan hotSample // sampled hits for Run's hot-key worker; nil: no counting
	sweeps    chan sweep     // purged tenant generations for Run to delete

	// Invalidation state: see invalidate.go.
	replica     string        // random name of this Store; its registry members are replica.N
	channel     string        // invalidations
	ackChannel  string        // acknowledgements to this replica
	start       time.Time     // trust times are monotonic offsets from it
	trustUntil  atomic.Int64  // ns after start until which the L1 is trusted; 0: not trusted
	incarnation atomic.Uint64 // subscriptions established so far; 0: none yet
	errSeq      atomic.Uint64 // subscription errors so far
	pongs       chan string   // PONG payloads from the subscription, for the heartbeat
	kick        chan struct{} // a new subscription: the heartbeat runs a round now
	waitMu      sync.Mutex    // guards waiters
	waiters     map[string]*waiter
	pending     pendingSet // invalidations Redis did not take, for Run to retry (pending.go)
	races       raceLog    // invalidations applied lately, for PutSince and L1 fills (racelog.go)
	running     atomic.Bool

	lastLog   atomic.Int64 // Unix ns of the last Redis error logged
	closeOnce sync.Once
}

// hotSample is one sampled hit.
type hotSample struct{ tenant, primary string }

// StoreOptions are a Store's dependencies. The zero value is an L1-only
// Store that logs nothing, registers no metrics and reads time.Now.
type StoreOptions struct {
	// Redis is the L2 and the invalidation channel; nil makes an L1-only
	// Store. It must be a *redis.Client, a failover client or a
	// *redis.ClusterClient with ContextTimeoutEnabled set, so that
	// StoreConfig.RedisTimeout bounds its socket reads (a *redis.Ring is
	// refused: it cannot run multi-key scripts).
	Redis redis.UniversalClient
	// KeyPrefix starts every Redis key and the default channel (e.g.
	// "sluice:"; no '{' or '}'). Empty means no prefix.
	KeyPrefix string
	// Registerer gets the Store's metrics, unregistered by Close; nil
	// registers none.
	Registerer prometheus.Registerer
	// Log gets the Store's warnings; nil discards them.
	Log *slog.Logger
	// Now is the clock of entry freshness and expiry; nil means time.Now.
	Now func() time.Time
}

// NewStore returns a Store configured by cfg with the dependencies in opts
// (see StoreOptions for their zero values). Run it for as long as it
// serves, then Close it.
func NewStore(cfg StoreConfig, opts StoreOptions) (*Store, error) {
	rdb, keyPrefix, reg, log, now := opts.Redis, opts.KeyPrefix, opts.Registerer, opts.Log, opts.Now
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if strings.ContainsAny(keyPrefix, "{}") {
		return nil, fmt.Errorf("%w: key prefix %q contains '{' or '}'", ErrInvalid, keyPrefix)
	}
	if rdb != nil {
		if _, ok := rdb.(*redis.Ring); ok {
			return nil, errors.New("cachefilter: a redis.Ring cannot run multi-key scripts; use a Client or a ClusterClient")
		}
		if !redisconn.HonoursContext(rdb) {
			return nil, errors.New("cachefilter: the redis client must set ContextTimeoutEnabled: true, " +
				"else go-redis ignores context deadlines on its sockets and redis_timeout cannot bound a call")
		}
	}
	cfg = cfg.WithDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	s := &Store{
		cfg:     cfg,
		rdb:     rdb,
		log:     log,
		now:     now,
		replica: randomHex(8),
		start:   time.Now(),
		pongs:   make(chan string, 4),
		kick:    make(chan struct{}, 1),
		sweeps:  make(chan sweep, 64),
		waiters: map[string]*waiter{},
	}
	s.channel = cfg.Channel
	if s.channel == "" {
		s.channel = keyPrefix + "c:inv"
	}
	s.ackChannel = s.channel + ":ack:" + s.replica
	if rdb != nil {
		s.redisKeys = &l2{rdb: rdb, prefix: keyPrefix, maxTTL: cfg.MaxTTL.Milliseconds()}
		if cfg.l2() {
			s.l2 = s.redisKeys
		}
	}
	s.passes = newPassSet(cfg.PassTTL, cfg.PassMaxKeys)
	if s.l2 != nil {
		s.presence = newPresence(cfg.PresenceSlots)
	}
	if rdb != nil && cfg.HotSampleRate > 0 && cfg.l2() {
		s.hot = make(chan hotSample, 1024)
	}
	var err error
	s.metrics, err = newMetrics(reg,
		func() float64 { return float64(s.l1.bytes()) },
		func() float64 { return float64(s.l1.len()) },
		func() float64 {
			if s.l1Trusted() {
				return 1
			}
			return 0
		})
	if err != nil {
		return nil, err
	}
	if s.l1, err = newL1(cfg.L1MaxBytes, s.metrics.evictions.Inc); err != nil {
		_ = s.Close()
		return nil, err
	}
	s.collapse = newCollapser(max(cfg.CollapseMaxKeys, 0), cfg.CollapseTimeout, func(served bool) {
		if served {
			s.metrics.collapsed.WithLabelValues(collapseServed).Inc()
		} else {
			s.metrics.collapsed.WithLabelValues(collapseReleased).Inc()
		}
	})
	s.breaker = redisconn.NewBreaker("sluice-cache-redis", cfg.BreakerFailures, cfg.BreakerOpenFor, func(open bool) {
		if open {
			s.metrics.breakerOpen.Set(1)
		} else {
			s.metrics.breakerOpen.Set(0)
		}
	})
	return s, nil
}

// Close stops the L1's maintenance goroutine, releases every waiting follower and unregisters
// the metrics. It does not close the Redis client. It is safe to call more than once and after a
// failed NewStore; Run should have returned first.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.collapse != nil {
			s.collapse.close()
		}
		if s.l1 != nil {
			s.l1.close()
		}
		s.metrics.unregister()
	})
	return nil
}

// Lookup returns the entry stored for the request whose primary key is primary, and the layer
// that held it. variantOf gets the Vary names recorded for primary (lower-case, sorted; nil for
// none; it must not change them) and returns the request's variant key, which must carry the
// same tenant tag. On a miss it returns nil and Miss. Lookup fails only for invalid keys
// (ErrInvalid); Redis failures degrade it to the L1. It may call variantOf twice.
func (s *Store) Lookup(ctx context.Context, primary string, variantOf func(vary []string) string) (*httpcache.Entry, Layer, error) {
	tenant, pr, err := splitKey(primary)
	if err != nil {
		return nil, Miss, err
	}
	now := s.now()
	trusted := s.l1Trusted()
	var rec *item
	if trusted {
		var e *httpcache.Entry
		if e, rec, err = s.fromL1(tenant, primary, variantOf, now); e != nil || err != nil {
			return s.answer(tenant, primary, e, L1, err)
		}
	}
	if s.l2 != nil && !s.absentFromL2(primary, now) {
		e, err := s.fromL2(ctx, tenant, pr, primary, rec, variantOf, now, trusted)
		switch {
		case err == nil && e != nil:
			return s.answer(tenant, primary, e, L2, nil)
		case err == nil:
			return s.answer(tenant, primary, nil, Miss, nil)
		case errors.Is(err, ErrInvalid):
			return nil, Miss, err
		}
		// Redis failed: serve the L1 below, if allowed.
	}
	if !trusted && s.cfg.degradedL1() {
		e, _, err := s.fromL1(tenant, primary, variantOf, now)
		return s.answer(tenant, primary, e, L1, err)
	}
	return s.answer(tenant, primary, nil, Miss, nil)
}

// answer counts a Lookup's result and samples hits for the hot-key counter.
func (s *Store) answer(tenant, primary string, e *httpcache.Entry, layer Layer, err error) (*httpcache.Entry, Layer, error) {
	if err != nil {
		return nil, Miss, err
	}
	if e == nil {
		layer = Miss
	} else if s.hot != nil && (s.cfg.HotSampleRate == 1 || rand.IntN(s.cfg.HotSampleRate) == 0) {
		select {
		case s.hot <- hotSample{tenant: tenant, primary: primary}:
		default: // the worker is behind (or not running): drop the sample
		}
	}
	s.metrics.byLayer[layer].Inc()
	return e, layer, nil
}

// fromL1 returns the entry the L1 holds for the request, if any, and the primary's vary record,
// if the L1 holds it.
func (s *Store) fromL1(tenant, primary string, variantOf func([]string) string, now time.Time) (*httpcache.Entry, *item, error) {
	rec := s.l1.vary(primary, now)
	if rec == nil {
		return nil, nil, nil
	}
	variant, err := variantKey(tenant, variantOf(rec.names))
	if err != nil {
		return nil, nil, err
	}
	return s.l1.entry(rec, variant, now), rec, nil
}

// fromL2 reads the entry for the request from Redis and, if trusted, copies it into the L1. rec
// is the primary's vary record in the L1, if any: its names are the guess.
func (s *Store) fromL2(ctx context.Context, tenant, pr, primary string, rec *item, variantOf func([]string) string, now time.Time, trusted bool) (*httpcache.Entry, error) {
	var guess []string
	if rec != nil {
		guess = rec.names
	}
	variant, err := variantKey(tenant, variantOf(guess))
	if err != nil {
		return nil, err
	}
	guessNames := joinNames(guess)
	mark := s.markFill()
	var r lookupReply
	err = s.call(ctx, opLookup, s.cfg.RedisTimeout, func(ctx context.Context) error {
		var err error
		r, err = s.l2.lookup(ctx, tenant, pr, guessNames, variant[len(tenant)+1:])
		return err
	})
	if r.corrupt {
		s.metrics.redisErrors.WithLabelValues(opDecode).Inc()
		s.logRedis(opDecode, fmt.Errorf("%w: record of %q has a bad id", ErrCorrupt, primary))
	}
	if err != nil || !r.found {
		return nil, err
	}
	names := splitNames(r.names)
	data := r.entry
	if r.names != guessNames {
		if variant, err = variantKey(tenant, variantOf(names)); err != nil {
			return nil, err
		}
		err = s.call(ctx, opLookup, s.cfg.RedisTimeout, func(ctx context.Context) error {
			var err error
			data, err = s.l2.entry(ctx, tenant, pr, r.gen, r.id, variant[len(tenant)+1:])
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	if data == nil {
		return nil, nil
	}
	e, err := decodeEntry(data)
	if err != nil {
		s.metrics.redisErrors.WithLabelValues(opDecode).Inc()
		s.logRedis(opDecode, fmt.Errorf("entry of %q: %w", variant, err))
		return nil, nil
	}
	expires := s.expires(e, now)
	if !now.Before(expires) {
		return nil, nil
	}
	if s.pending.covers(tenant, primary, r.path, e.Tags) {
		return nil, nil // an invalidation of it has not reached Redis yet
	}
	if trusted {
		s.l1.fill(s.discardFill(mark, tenant, primary, r.path, e.Tags), tenant, primary, r.path, names, r.id, variant, e, now, expires)
	}
	return e, nil
}

// Put stores e, the response for the request whose keys are primary and variant, in both layers
// until its expiry (see Store). path is what PurgePrefix matches (the request's path, with its
// query if any). e.Vary must be the names variantOf was (or will be) given for variant; e must
// not change afterwards. Entries whose expiry has passed, or larger than MaxEntryBytes, are not
// stored. Put fails only for invalid arguments (ErrInvalid); Redis failures degrade it to the L1.
func (s *Store) Put(ctx context.Context, primary, variant, path string, e *httpcache.Entry) error {
	return s.put(ctx, false, 0, primary, variant, path, e)
}

// Epoch returns a mark of the invalidations this replica has applied so far (its own, and other
// replicas' received through the subscription). Read it before fetching a response, and give
// it to PutSince. primary is not used: one mark serves every key.
func (s *Store) Epoch(primary string) uint64 { return s.races.mark() }

// PutSince is Put for a response fetched after Epoch returned since: when an invalidation that
// covers the entry (its primary key, one of its tags, a prefix of path, or its whole tenant)
// has reached this replica since then, the response may predate it (the fetch raced a write)
// and nothing is stored, in either layer; sluice_cache_raced_puts_total counts it. Without it,
// a read that started before a write and finished after the write's invalidation would store
// the old version again, to be served until it expires. Invalidations of other keys, tags,
// paths or tenants do not stop the put.
func (s *Store) PutSince(ctx context.Context, since uint64, primary, variant, path string, e *httpcache.Entry) error {
	return s.put(ctx, true, since, primary, variant, path, e)
}

// fillMark is what an L1 fill notes before it reads or builds what it stores.
type fillMark struct{ clears, races uint64 }

func (s *Store) markFill() fillMark {
	return fillMark{clears: s.l1.clears(), races: s.races.mark()}
}

// discardFill returns the check an L1 fill runs once its items are stored: whether the L1 was
// cleared, or an invalidation covering the entry applied, since m.
func (s *Store) discardFill(m fillMark, tenant, primary, path string, tags []string) func() bool {
	return func() bool {
		return s.l1.clears() != m.clears || s.races.covers(m.races, tenant, primary, path, tags)
	}
}

func (s *Store) put(ctx context.Context, check bool, since uint64, primary, variant, path string, e *httpcache.Entry) error {
	tenant, pr, err := splitKey(primary)
	if err != nil {
		return err
	}
	if variant, err = variantKey(tenant, variant); err != nil {
		return err
	}
	if err := checkEntry(path, e); err != nil {
		return err
	}
	if entrySize(e) > s.cfg.MaxEntryBytes {
		return nil
	}
	now := s.now()
	if !s.keeps(e, now) {
		return nil
	}
	expires := s.expires(e, now)
	ttl := expires.Sub(now)
	mark := s.markFill() // for the L1 fill, which discards itself if an invalidation follows
	if check && s.races.covers(since, tenant, primary, path, e.Tags) {
		s.metrics.racedPuts.Inc()
		return nil
	}
	s.passes.drop(primary) // storable after all (pass.go)
	var id uint64
	if s.l2 != nil {
		// Before the write: a lookup here after it must not skip Redis (presence.go).
		s.presence.add(primary, expires)
		a := putArgs{
			tenant: tenant, pr: pr, vr: variant[len(tenant)+1:], names: joinNames(e.Vary),
			newID: randomID(), path: path, tags: e.Tags, data: appendEntry(nil, e),
			ttlMillis: ttl.Milliseconds(), maxKeys: s.cfg.MaxKeysPerTenant,
		}
		_ = s.call(ctx, opPut, s.cfg.RedisTimeout, func(ctx context.Context) error {
			var err error
			id, _, err = s.l2.put(ctx, a)
			return err
		})
		if check && id != 0 && s.races.covers(since, tenant, primary, path, e.Tags) {
			// An invalidation covering the entry began while it was written: its deletion may
			// have run before the write landed. Undo the write (a newer entry stored meanwhile
			// goes too: a miss, never an old version).
			_ = s.call(ctx, opPurge, s.cfg.RedisTimeout, func(ctx context.Context) error {
				return s.l2.purgeKeys(ctx, tenant, []string{pr})
			})
			s.metrics.racedPuts.Inc()
			return nil
		}
		if id != 0 {
			s.announce(announcement{kind: announcePresent, primary: primary, until: expires})
		}
	}
	if id == 0 {
		// No L2: the L1 record keeps its id if its names match, else gets a new one.
		if rec := s.l1.vary(primary, now); rec != nil && slices.Equal(rec.names, e.Vary) {
			id = rec.id
		} else {
			id = randomID()
		}
	}
	s.l1.fill(s.discardFill(mark, tenant, primary, path, e.Tags), tenant, primary, path, slices.Clip(e.Vary), id, variant, e, now, expires)
	return nil
}

// keeps reports whether Put would keep e at now: a response whose freshness, stale windows and
// StaleRetention are already over (max-age=0 with StaleRetention 0, say) is not stored.
func (s *Store) keeps(e *httpcache.Entry, now time.Time) bool {
	return s.expires(e, now).Sub(now) >= time.Millisecond
}

// expires returns when e stops being kept: at the end of its freshness plus its stale windows
// plus StaleRetention (unless it must be revalidated and has no validator: then nothing could use it), at most MaxTTL
// after its ResponseTime (now if that is unset). It depends on e alone, so both layers and every replica agree.
func (s *Store) expires(e *httpcache.Entry, now time.Time) time.Time {
	window := max(e.StaleWhileRevalidate, e.StaleIfError, 0)
	if e.MustRevalidate {
		window = 0 // never served stale without validation (RFC 9111 §5.2.2.2)
	}
	base := e.ResponseTime
	if base.IsZero() {
		base = now
	}
	// current_age at base is InitialAge (RFC 9111 §4.2.3), so freshness ends Lifetime-InitialAge
	// after it.
	var retain time.Duration
	validator := e.ETag != "" || e.LastModified != ""
	if s.cfg.StaleRetention > 0 && (validator || !e.MustRevalidate && !e.NoCache) {
		// Kept to be revalidated (a 304 costs the origin no body) and to be served when the
		// origin cannot be reached (RFC 9111 §4.2.4).
		retain = s.cfg.StaleRetention
	}
	return base.Add(min(e.Lifetime-e.InitialAge+window+retain, s.cfg.MaxTTL))
}

// HotKeys returns up to n primary keys of tenantTag with the most sampled hits recently (counts
// halve every HotHalfLife), hottest first. It needs Redis; errors are returned.
func (s *Store) HotKeys(ctx context.Context, tenantTag string, n int) ([]string, error) {
	if err := checkTenant(tenantTag); err != nil {
		return nil, err
	}
	if s.l2 == nil || n <= 0 {
		return nil, nil
	}
	var keys []string
	err := s.call(ctx, opHot, s.cfg.PurgeTimeout, func(ctx context.Context) error {
		var err error
		keys, err = s.l2.hotKeys(ctx, tenantTag, n)
		return err
	})
	return keys, err
}

// Hot-key counting. A hot key is sampled hundreds of times a second, so the worker adds up the
// samples per key and sends each key's sum once per hotFlushEvery: one script call a second per
// sampled key instead of one per sample (each about six Redis commands). The ranking lags by at
// most that much, against counts that halve every HotHalfLife (minutes). hotMaxPending bounds the
// keys held between flushes; reaching it flushes early.
const (
	hotFlushEvery = time.Second
	hotMaxPending = 1024
)

// countHot is Run's hot-key worker: it adds the sampled hits to Redis, summed per key (see
// hotFlushEvery). Samples still held when ctx ends are dropped, as are samples the worker was
// too slow to take (Lookup never waits for it).
func (s *Store) countHot(ctx context.Context) {
	if s.hot == nil {
		return
	}
	counts := map[hotSample]int{}
	flush := func() {
		for k, n := range counts {
			_ = s.call(ctx, opHot, 5*s.cfg.RedisTimeout, func(ctx context.Context) error {
				return s.l2.hit(ctx, k.tenant, k.primary, n*s.cfg.HotSampleRate, s.cfg.HotMaxKeys, s.cfg.HotHalfLife.Milliseconds())
			})
			delete(counts, k)
		}
	}
	tick := time.NewTicker(hotFlushEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case h := <-s.hot:
			counts[h]++
			if len(counts) >= hotMaxPending {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// call runs fn against Redis through the circuit breaker, bounded by timeout (if positive), and
// counts and logs its failure.
func (s *Store) call(ctx context.Context, op string, timeout time.Duration, fn func(context.Context) error) error {
	if s.breaker.State() == gobreaker.StateOpen {
		// Before any allocation: an open breaker must cost next to nothing.
		s.metrics.redisErrors.WithLabelValues(op).Inc()
		return errBreakerOpen
	}
	parent := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	called := false
	start := time.Now()
	_, err := s.breaker.Execute(func() (struct{}, error) {
		called = true
		err := fn(ctx)
		if err != nil && parent.Err() != nil {
			err = redisconn.CallerGone{Err: err}
		}
		return struct{}{}, err
	})
	if called {
		s.metrics.redisDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	}
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, gobreaker.ErrOpenState):
		err = errBreakerOpen
	case errors.Is(err, gobreaker.ErrTooManyRequests):
		err = errBreakerProbing
	case !errors.As(err, new(redisconn.CallerGone)):
		s.logRedis(op, err)
	}
	s.metrics.redisErrors.WithLabelValues(op).Inc()
	return err
}

// logRedis logs a Redis failure, at most one every 10s: the metric counts them all.
func (s *Store) logRedis(op string, err error) {
	now := time.Now().UnixNano()
	last := s.lastLog.Load()
	if now-last < int64(10*time.Second) || !s.lastLog.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("cache: redis call failed; serving from the in-process cache (further failures logged at most every 10s)",
		slog.String("op", op), slog.Any("error", err))
}

// splitKey splits a primary or variant key into its tenant tag and the rest.
func splitKey(key string) (tenant, rest string, err error) {
	tenant, rest, ok := strings.Cut(key, ":")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("%w: key %q is not <tenant tag>:<hash>", ErrInvalid, key)
	}
	if len(key) > maxKeyBytes {
		return "", "", fmt.Errorf("%w: key of %d bytes above %d", ErrInvalid, len(key), maxKeyBytes)
	}
	if err := checkTenant(tenant); err != nil {
		return "", "", err
	}
	return tenant, rest, nil
}

// variantKey checks that variant is a key of tenant.
func variantKey(tenant, variant string) (string, error) {
	t, _, err := splitKey(variant)
	if err != nil {
		return "", err
	}
	if t != tenant {
		return "", fmt.Errorf("%w: variant key %q is not of tenant %q", ErrInvalid, variant, tenant)
	}
	return variant, nil
}

// checkTenant accepts tenant tags of 1 to 64 letters, digits, '-' and '_' (the policy makes
// them 16 hex digits): nothing that could break a key's hash tag.
func checkTenant(tenant string) error {
	if tenant == "" || len(tenant) > 64 {
		return fmt.Errorf("%w: tenant tag %q is empty or longer than 64 bytes", ErrInvalid, tenant)
	}
	for i := 0; i < len(tenant); i++ {
		c := tenant[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: tenant tag %q has byte %q", ErrInvalid, tenant, c)
		}
	}
	return nil
}

// checkEntry checks what Put indexes and what the codec bounds.
func checkEntry(path string, e *httpcache.Entry) error {
	switch {
	case e == nil:
		return fmt.Errorf("%w: nil entry", ErrInvalid)
	case len(path) > maxPathBytes || strings.IndexByte(path, 0) >= 0:
		return fmt.Errorf("%w: path of %d bytes (at most %d, no NUL)", ErrInvalid, len(path), maxPathBytes)
	case e.Status < 100 || e.Status > 999:
		return fmt.Errorf("%w: status %d", ErrInvalid, e.Status)
	case len(e.Header) > maxHeaderFields:
		return fmt.Errorf("%w: %d header fields, at most %d", ErrInvalid, len(e.Header), maxHeaderFields)
	case len(e.Vary) > maxVaryNames:
		return fmt.Errorf("%w: %d Vary names, at most %d", ErrInvalid, len(e.Vary), maxVaryNames)
	case len(e.Tags) > maxTags:
		return fmt.Errorf("%w: %d tags, at most %d", ErrInvalid, len(e.Tags), maxTags)
	}
	for _, v := range e.Vary {
		if v == "" || strings.ContainsAny(v, ",\x00") {
			return fmt.Errorf("%w: Vary name %q", ErrInvalid, v)
		}
	}
	for _, t := range e.Tags {
		if err := checkTag(t); err != nil {
			return err
		}
	}
	return nil
}

func checkTag(tag string) error {
	if tag == "" || len(tag) > maxTagBytes || strings.IndexByte(tag, 0) >= 0 {
		return fmt.Errorf("%w: tag %q (1 to %d bytes, no NUL)", ErrInvalid, tag, maxTagBytes)
	}
	return nil
}

func joinNames(names []string) string { return strings.Join(names, ",") }

func splitNames(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// randomID returns a random non-zero id for a vary record.
func randomID() uint64 {
	for {
		if id := rand.Uint64(); id != 0 {
			return id
		}
	}
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b) // never fails (crypto/rand documents it)
	return hex.EncodeToString(b)
}

// HotEntry is one of a tenant's hot keys, as HotPaths reports it.
type HotEntry struct {
	// Key is the primary key ("<tenant tag>:<hash>").
	Key string
	// Path is the request path, with its query if any, that the key was stored for. The
	// scheme and authority are not recorded: a warmer must supply them.
	Path string
	// FreshUntil is when the stored variant that is kept longest stops being fresh
	// (ResponseTime + Lifetime - InitialAge); it may be in the past (a stale entry kept for
	// its stale windows or for revalidation).
	FreshUntil time.Time
	// Lifetime is that variant's freshness lifetime.
	Lifetime time.Duration
	// Expires is when the record stops being kept (Redis expiry of its longest-lived variant).
	Expires time.Time
}

// hotHeadBytes bounds what HotPaths reads of an entry: the encoding's version, status, flags,
// times and durations fit in it (see codec.go), so no body is read.
const hotHeadBytes = 96

// HotPaths is HotKeys with what a cache warmer needs: for each of the (up to n) hottest primary
// keys of tenantTag that are still stored in the current generation, its path and when its
// entry stops being fresh. Keys whose record is gone are left out, so fewer than n may be
// returned. It needs Redis (nil without L2); errors are returned. Three round trips.
func (s *Store) HotPaths(ctx context.Context, tenantTag string, n int) ([]HotEntry, error) {
	keys, err := s.HotKeys(ctx, tenantTag, n)
	if err != nil || len(keys) == 0 {
		return nil, err
	}
	var out []HotEntry
	err = s.call(ctx, opHot, s.cfg.PurgeTimeout, func(ctx context.Context) error {
		var err error
		out, err = s.l2.hotPaths(ctx, tenantTag, keys)
		return err
	})
	return out, err
}

// hotPaths reads the record of each primary key in keys, then the head of the longest-lived
// variant of each, in two pipelines.
func (l *l2) hotPaths(ctx context.Context, tenant string, keys []string) ([]HotEntry, error) {
	var gen *redis.SliceCmd
	recs := make([]*redis.MapStringStringCmd, len(keys))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		gen = p.MGet(ctx, l.genKey(tenant))
		for i, k := range keys {
			_, pr, _ := strings.Cut(k, ":")
			recs[i] = p.HGetAll(ctx, l.recordKey(tenant, pr))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("cachefilter: read hot records: %w", err)
	}
	g := "0"
	if v := gen.Val(); len(v) == 1 && v[0] != nil {
		g, _ = v[0].(string)
	}
	type found struct {
		e  HotEntry
		vr string
	}
	var fs []found
	for i, k := range keys {
		rec := recs[i].Val()
		if rec["g"] != g || rec["i"] == "" {
			continue
		}
		var best string
		var bestExp int64
		for f, v := range rec {
			vr, ok := strings.CutPrefix(f, "v:")
			if !ok {
				continue
			}
			if exp, err := strconv.ParseInt(v, 10, 64); err == nil && exp > bestExp {
				best, bestExp = vr, exp
			}
		}
		if best == "" {
			continue
		}
		fs = append(fs, found{e: HotEntry{Key: k, Path: rec["p"], Expires: time.UnixMilli(bestExp)}, vr: best})
	}
	if len(fs) == 0 {
		return nil, nil
	}
	heads := make([]*redis.StringCmd, len(fs))
	_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, f := range fs {
			heads[i] = p.GetRange(ctx, l.entryKey(tenant, f.vr), 0, hotHeadBytes-1)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("cachefilter: read hot entries: %w", err)
	}
	out := make([]HotEntry, 0, len(fs))
	for i, f := range fs {
		b, _ := heads[i].Bytes()
		resp, initialAge, lifetime, ok := decodeFreshness(b)
		if !ok {
			continue // gone since, or corrupt: nothing to warm
		}
		f.e.Lifetime = lifetime
		f.e.FreshUntil = resp.Add(lifetime - initialAge)
		out = append(out, f.e)
	}
	return out, nil
}

// decodeFreshness decodes the head of an encoded entry (see codec.go) up to its Lifetime: its
// ResponseTime (or RequestTime, else the zero time), InitialAge and Lifetime.
func decodeFreshness(b []byte) (resp time.Time, initialAge, lifetime time.Duration, ok bool) {
	r := reader{b: b}
	if r.byte() != codecVersion {
		return time.Time{}, 0, 0, false
	}
	_ = r.uvarint()
	flags := r.byte()
	if flags&flagRequestTime != 0 {
		resp = r.time()
	}
	if flags&flagResponseTime != 0 {
		resp = r.time()
	}
	initialAge = time.Duration(r.varint())
	lifetime = time.Duration(r.varint())
	return resp, initialAge, lifetime, r.err == nil && !resp.IsZero()
}
