package limiter

import (
	"errors"
	"fmt"
	"time"
)

// Defaults applied by Config.WithDefaults.
const (
	DefaultTimeout         = 20 * time.Millisecond // Envoy's ratelimit filter gives up after 20 ms
	DefaultLocalCacheSize  = 100_000
	DefaultBreakerFailures = 5
	DefaultBreakerOpenFor  = time.Second

	DefaultLeaseMaxOvershoot = 0.02
	DefaultLeaseHorizon      = time.Second
	DefaultLeaseMaxKeys      = 100_000
	DefaultHotKeyThreshold   = 1000
)

// Config configures a Limiter. The zero value is valid: every field has a default.
type Config struct {
	// Timeout bounds a whole Do call, retries included. Default 20ms, Envoy's own ratelimit
	// filter timeout (envoy.extensions.filters.http.ratelimit.v3.RateLimit.timeout), past which
	// Envoy stops waiting anyway.
	Timeout time.Duration `yaml:"timeout"`
	// LocalCacheSize is the most counters the local over-limit cache remembers. Default 100000;
	// negative disables the cache.
	LocalCacheSize int `yaml:"local_cache_size"`
	// BreakerFailures is how many consecutive failed Redis calls open the circuit breaker.
	// Default 5.
	BreakerFailures uint32 `yaml:"breaker_failures"`
	// BreakerOpenFor is how long the breaker stays open, failing calls at once with
	// ErrUnavailable, before it lets one probe call through. Default 1s.
	BreakerOpenFor time.Duration `yaml:"breaker_open_for"`
	// Lease configures lease mode (Item.Mode Lease, or LeaseWhenHot once a key is hot).
	Lease LeaseConfig `yaml:"lease"`
	// HotKeyThreshold is the rate, in decisions per second at this replica, past which an exact
	// counter is a hot key: reported once (Result.NewlyHot), counted in sluice_ratelimit_hot_keys
	// and, for LeaseWhenHot items, decided in lease mode until it cools below half the rate.
	// Default 1000; negative disables detection.
	HotKeyThreshold float64 `yaml:"hot_key_threshold"`
	// Now, if set, is the clock of the limits: its time is sent to Redis with each call. Nil (the
	// default, for production) makes the script read the Redis server's TIME, and the local
	// cache use time.Now. Tests set it to drive simulated time.
	Now func() time.Time `yaml:"-"`
}

// LeaseConfig configures lease mode. The zero value takes the defaults.
type LeaseConfig struct {
	// MaxOvershoot bounds the hits leased to all replicas and not yet used, as a share of the
	// limit: a lease call never leaves more than floor(MaxOvershoot*Limit) hits leased across
	// replicas, and each of R replicas holding leases at most 1/R of that. Hits admitted in any
	// window stay within Limit plus that many. Default 0.02; a limit whose share is below one
	// hit is decided exactly.
	MaxOvershoot float64 `yaml:"max_overshoot"`
	// Horizon is how long a lease should last at this replica's recent rate: its size is the
	// rate times Horizon, within its share. A lease is renewed in the background when a quarter
	// of that is left, may be used for 2*Horizon after it was asked for, and goes back to Redis
	// once its key has been idle for Horizon. Default 1s.
	Horizon time.Duration `yaml:"horizon"`
	// MaxKeys bounds the counters this replica holds lease state for; past it, new keys are
	// decided exactly until idle ones are dropped. Default 100000.
	MaxKeys int `yaml:"max_keys"`
}

// WithDefaults returns c with every zero field set to its default.
func (c LeaseConfig) WithDefaults() LeaseConfig {
	if c.MaxOvershoot == 0 {
		c.MaxOvershoot = DefaultLeaseMaxOvershoot
	}
	if c.Horizon == 0 {
		c.Horizon = DefaultLeaseHorizon
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultLeaseMaxKeys
	}
	return c
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Lease = c.Lease.WithDefaults()
	if c.HotKeyThreshold == 0 {
		c.HotKeyThreshold = DefaultHotKeyThreshold
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.LocalCacheSize == 0 {
		c.LocalCacheSize = DefaultLocalCacheSize
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = DefaultBreakerFailures
	}
	if c.BreakerOpenFor == 0 {
		c.BreakerOpenFor = DefaultBreakerOpenFor
	}
	return c
}

// Validate reports every invalid field of c; zero fields are valid (they take defaults). It
// changes nothing.
func (c Config) Validate() error {
	var errs []error
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v is negative", c.Timeout))
	}
	if c.BreakerOpenFor < 0 {
		errs = append(errs, fmt.Errorf("breaker_open_for %v is negative", c.BreakerOpenFor))
	}
	if o := c.Lease.MaxOvershoot; o < 0 || o > 1 {
		errs = append(errs, fmt.Errorf("lease.max_overshoot %v is not in [0, 1]", o))
	}
	if h := c.Lease.Horizon; h < 0 || h%time.Millisecond != 0 {
		errs = append(errs, fmt.Errorf("lease.horizon %v is not a whole number of milliseconds, or negative", h))
	}
	if c.Lease.MaxKeys < 0 {
		errs = append(errs, fmt.Errorf("lease.max_keys %d is negative", c.Lease.MaxKeys))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("limiter: config: %w", err)
	}
	return nil
}
