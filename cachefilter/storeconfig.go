package cachefilter

import (
	"errors"
	"fmt"
	"time"
)

// Defaults applied by StoreConfig.WithDefaults.
const (
	DefaultL1MaxBytes       = 64 << 20
	DefaultStaleRetention   = 10 * time.Minute
	DefaultRedisTimeout     = 20 * time.Millisecond
	DefaultMaxTTL           = 24 * time.Hour
	DefaultMaxEntryBytes    = 4 << 20
	DefaultMaxKeysPerTenant = 100_000
	DefaultBreakerFailures  = 5
	DefaultBreakerOpenFor   = time.Second
	DefaultPurgeTimeout     = 3 * time.Second
	DefaultLease            = time.Second
	DefaultHotSampleRate    = 16
	DefaultHotMaxKeys       = 1000
	DefaultHotHalfLife      = 10 * time.Minute
	DefaultCollapseTimeout  = 10 * time.Second
	DefaultCollapseMaxKeys  = 10_000
	DefaultPassTTL          = 10 * time.Second
	DefaultPassMaxKeys      = 100_000
)

// minLease is the shortest SubscriptionLease: heartbeats run every quarter lease and must fit a
// Redis round trip and a PING over the subscription.
const minLease = 50 * time.Millisecond

// StoreConfig configures a Store: the `cache.store` part of the config file. The zero value is
// valid: every field has a default, applied by WithDefaults.
type StoreConfig struct {
	// L1MaxBytes bounds the in-process cache in bytes, as weighed by entrySize (Entry.Size plus
	// the keys and bookkeeping of an item). Default 64 MiB; negative disables the L1.
	L1MaxBytes int64 `yaml:"l1_max_bytes"`
	// RedisTimeout bounds each Redis call of Lookup and Put. Default 20ms. A call that runs out
	// counts against the circuit breaker and degrades the call to L1 only.
	RedisTimeout time.Duration `yaml:"redis_timeout"`
	// L2Enabled stores entries in Redis too. Default true. With false, Redis (if a client is
	// given) only carries invalidations between replicas.
	L2Enabled *bool `yaml:"l2_enabled"`
	// StaleRetention keeps an entry this long after its freshness and stale windows end: one
	// with a validator (ETag or Last-Modified) to be revalidated with a conditional request (a
	// 304 costs the origin no body) instead of refetched (RFC 9111 §4.3), and any that may be
	// served stale to be served when the origin cannot be reached (RFC 9111 §4.2.4; never
	// must-revalidate, proxy-revalidate, s-maxage or no-cache ones). Default 10m; negative
	// disables.
	StaleRetention time.Duration `yaml:"stale_retention"`
	// MaxTTL caps how long an entry is kept, in both layers. Default 24h.
	MaxTTL time.Duration `yaml:"max_ttl"`
	// MaxEntryBytes is the largest Entry.Size that Put stores; larger entries are skipped.
	// Default 4 MiB.
	MaxEntryBytes int `yaml:"max_entry_bytes"`
	// MaxKeysPerTenant bounds the primary keys one tenant keeps in Redis (and so its purge
	// indexes); beyond it, Put evicts the tenant's keys that expire soonest. Default 100000.
	MaxKeysPerTenant int `yaml:"max_keys_per_tenant"`
	// Channel is the Redis pub/sub channel for invalidations. Default: the key prefix followed by
	// "c:inv". Every replica sharing a cache must use the same one.
	Channel string `yaml:"pubsub_channel"`
	// BreakerFailures is how many consecutive failed Redis calls open the circuit breaker.
	// Default 5.
	BreakerFailures uint32 `yaml:"breaker_failures"`
	// BreakerOpenFor is how long the breaker stays open (Redis is not called at all) before one
	// probe call tests it again. Default 1s.
	BreakerOpenFor time.Duration `yaml:"breaker_open_for"`
	// PurgeTimeout bounds a purge or invalidation call: the Redis work plus the wait for every
	// replica's acknowledgement. Default 3s; keep it above SubscriptionLease, so that a replica
	// that died without deregistering drops out of the wait before the timeout.
	PurgeTimeout time.Duration `yaml:"purge_timeout"`
	// SubscriptionLease is how long a replica trusts its L1 after proving (by a heartbeat over its
	// pub/sub connection) that it receives invalidations. Default 1s; minimum 50ms.
	SubscriptionLease time.Duration `yaml:"subscription_lease"`
	// ServeL1WhenRedisDown serves the L1 when neither the subscription nor Redis calls work.
	// Default true: a Redis outage degrades to L1-only caching. Then a replica cut off from Redis
	// while others reach it may serve entries purged meanwhile (see Store). With false, the L1
	// is only served while the subscription is proven live.
	ServeL1WhenRedisDown *bool `yaml:"serve_l1_when_redis_down"`
	// SoleReplica says that no other replica uses this Redis: `sluice dev`'s embedded server,
	// which lives in this process and listens on loopback for it alone. No invalidation can
	// then come from elsewhere, so the L1 is trusted without a lease and a new subscription
	// keeps it: a busy process whose heartbeat or a Redis call runs late keeps its hits.
	// Not a file setting; never set it for a Redis that another process can reach.
	SoleReplica bool `yaml:"-"`
	// HotSampleRate counts one in HotSampleRate hits (L1 or L2) per key in Redis, for HotKeys.
	// Default 16; 1 counts every hit; negative disables the counting.
	HotSampleRate int `yaml:"hot_sample_rate"`
	// HotMaxKeys is how many keys per tenant the hot-key counter keeps (the hottest). Default
	// 1000.
	HotMaxKeys int `yaml:"hot_max_keys"`
	// HotHalfLife halves the hot-key counts of a tenant this often, so that they rank recent hits.
	// Default 10m.
	HotHalfLife time.Duration `yaml:"hot_half_life"`
	// CollapseTimeout ends a collapse whose leader neither stored nor failed within it (its
	// stream died without a word): its followers go upstream. Keep it at least the policy's
	// collapse_wait, which bounds each follower's own wait. Default 10s.
	CollapseTimeout time.Duration `yaml:"collapse_timeout"`
	// CollapseMaxKeys bounds the misses being collapsed at once; beyond it every caller is a
	// leader. Default 10000; negative disables collapsing.
	CollapseMaxKeys int `yaml:"collapse_max_keys"`
	// PassTTL is how long a key whose response was not storable is marked hit-for-pass: its
	// requests skip the lookup and the collapse, and the first storable response clears the
	// mark (pass.go). Default 10s; negative disables the marks.
	PassTTL time.Duration `yaml:"pass_ttl"`
	// PassMaxKeys bounds the keys marked hit-for-pass per replica. Default 100000.
	PassMaxKeys int `yaml:"pass_max_keys"`
	// PresenceSlots sizes the presence filter that answers lookups of keys absent from Redis
	// without a round trip (presence.go): 4 bytes a slot. Default 1048576 (4 MiB); negative
	// disables the filter (every L1 miss asks Redis).
	PresenceSlots int `yaml:"presence_slots"`
}

// WithDefaults returns c with every zero field set to its default. Channel stays empty: NewStore
// derives it from the key prefix.
func (c StoreConfig) WithDefaults() StoreConfig {
	if c.L1MaxBytes == 0 {
		c.L1MaxBytes = DefaultL1MaxBytes
	}
	if c.RedisTimeout == 0 {
		c.RedisTimeout = DefaultRedisTimeout
	}
	if c.L2Enabled == nil {
		c.L2Enabled = ptr(true)
	}
	if c.StaleRetention == 0 {
		c.StaleRetention = DefaultStaleRetention
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = DefaultMaxTTL
	}
	if c.MaxEntryBytes == 0 {
		c.MaxEntryBytes = DefaultMaxEntryBytes
	}
	if c.MaxKeysPerTenant == 0 {
		c.MaxKeysPerTenant = DefaultMaxKeysPerTenant
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = DefaultBreakerFailures
	}
	if c.BreakerOpenFor == 0 {
		c.BreakerOpenFor = DefaultBreakerOpenFor
	}
	if c.PurgeTimeout == 0 {
		c.PurgeTimeout = DefaultPurgeTimeout
	}
	if c.SubscriptionLease == 0 {
		c.SubscriptionLease = DefaultLease
	}
	if c.ServeL1WhenRedisDown == nil {
		c.ServeL1WhenRedisDown = ptr(true)
	}
	if c.HotSampleRate == 0 {
		c.HotSampleRate = DefaultHotSampleRate
	}
	if c.HotMaxKeys == 0 {
		c.HotMaxKeys = DefaultHotMaxKeys
	}
	if c.HotHalfLife == 0 {
		c.HotHalfLife = DefaultHotHalfLife
	}
	if c.CollapseTimeout == 0 {
		c.CollapseTimeout = DefaultCollapseTimeout
	}
	if c.CollapseMaxKeys == 0 {
		c.CollapseMaxKeys = DefaultCollapseMaxKeys
	}
	if c.PassTTL == 0 {
		c.PassTTL = DefaultPassTTL
	}
	if c.PassMaxKeys == 0 {
		c.PassMaxKeys = DefaultPassMaxKeys
	}
	if c.PresenceSlots == 0 {
		c.PresenceSlots = DefaultPresenceSlots
	}
	return c
}

// Validate reports every invalid field of c; zero fields are valid (they take defaults). It
// changes nothing.
func (c StoreConfig) Validate() error {
	var errs []error
	negative := func(name string, d time.Duration) {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", name, d))
		}
	}
	negative("redis_timeout", c.RedisTimeout)
	negative("max_ttl", c.MaxTTL)
	negative("breaker_open_for", c.BreakerOpenFor)
	negative("purge_timeout", c.PurgeTimeout)
	negative("hot_half_life", c.HotHalfLife)
	negative("collapse_timeout", c.CollapseTimeout)
	if c.SubscriptionLease != 0 && c.SubscriptionLease < minLease {
		errs = append(errs, fmt.Errorf("subscription_lease %v is below %v", c.SubscriptionLease, minLease))
	}
	if c.MaxTTL != 0 && c.MaxTTL < time.Millisecond {
		errs = append(errs, fmt.Errorf("max_ttl %v is below 1ms", c.MaxTTL))
	}
	if c.MaxEntryBytes < 0 || c.MaxEntryBytes > maxEntryBytesLimit {
		errs = append(errs, fmt.Errorf("max_entry_bytes %d not in 0..%d", c.MaxEntryBytes, maxEntryBytesLimit))
	}
	if c.MaxKeysPerTenant < 0 {
		errs = append(errs, fmt.Errorf("max_keys_per_tenant %d is negative", c.MaxKeysPerTenant))
	}
	if c.PassMaxKeys < 0 {
		errs = append(errs, fmt.Errorf("pass_max_keys %d is negative", c.PassMaxKeys))
	}
	if c.PresenceSlots > 1<<28 {
		errs = append(errs, fmt.Errorf("presence_slots %d above %d", c.PresenceSlots, 1<<28))
	}
	if c.HotMaxKeys < 0 {
		errs = append(errs, fmt.Errorf("hot_max_keys %d is negative", c.HotMaxKeys))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cachefilter: store config: %w", err)
	}
	return nil
}

// l2 reports whether entries go to Redis (given a client).
func (c StoreConfig) l2() bool { return c.L2Enabled == nil || *c.L2Enabled }

// degradedL1 reports whether the L1 is served when Redis cannot be reached.
func (c StoreConfig) degradedL1() bool {
	return c.ServeL1WhenRedisDown == nil || *c.ServeL1WhenRedisDown
}

func ptr[T any](v T) *T { return &v }
