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
	// Now, if set, is the clock of the limits: its time is sent to Redis with each call. Nil (the
	// default, for production) makes the script read the Redis server's TIME, and the local
	// cache use time.Now. Tests set it to drive simulated time.
	Now func() time.Time `yaml:"-"`
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
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
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("limiter: config: %w", err)
	}
	return nil
}
