package ratelimitsvc

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// Header formats for the rate-limit headers Sluice asks Envoy to add to
// responses (RateLimitResponse.response_headers_to_add).
const (
	// HeadersIETF is draft-ietf-httpapi-ratelimit-headers (-09 and later):
	// `RateLimit-Policy: "burst";q=100;w=60` and `RateLimit: "burst";r=7;t=12`.
	HeadersIETF = "ietf"
	// HeadersIETFDraft07 is the older draft's RateLimit-Limit, -Remaining,
	// -Reset and RateLimit-Policy fields, which many clients still parse.
	HeadersIETFDraft07 = "ietf-draft07"
	// HeadersXRateLimit is the de-facto X-RateLimit-Limit/-Remaining/-Reset.
	HeadersXRateLimit = "x-ratelimit"
	// HeadersOff adds no headers (for example when Envoy's own
	// enable_x_ratelimit_headers is used instead).
	HeadersOff = "off"
)

// DefaultTimeout is Config.Timeout's default: the ratelimit filter's own
// default timeout in Envoy.
const DefaultTimeout = 20 * time.Millisecond

// Config is the `ratelimit` section of the Sluice config file. Use
// WithDefaults before Validate; New does both.
type Config struct {
	// ConfigPath is an envoyproxy/ratelimit YAML file or a directory of them.
	// Required to serve limits; --ratelimit-config overrides it.
	ConfigPath string `yaml:"config_path"`
	// Watch reloads ConfigPath when it changes (fsnotify on its directory, which
	// also sees Kubernetes ConfigMap symlink swaps, plus a poll). Default true.
	Watch *bool `yaml:"watch"`
	// PollInterval re-reads ConfigPath even without a file event, in case the
	// watcher missed one. Default 10s; negative disables polling.
	PollInterval time.Duration `yaml:"poll_interval"`
	// Timeout bounds the Redis work of one ShouldRateLimit call. Keep it below
	// the ratelimit filter's own timeout (Envoy default 20ms). Default 20ms.
	Timeout time.Duration `yaml:"timeout"`
	// FailureModeDeny answers OVER_LIMIT instead of OK when Redis is unavailable,
	// for domains that do not set failure_mode_deny themselves. Default false
	// (fail open).
	FailureModeDeny bool `yaml:"failure_mode_deny"`
	// NearLimitRatio marks a decision near_limit in metrics once the count
	// passes floor(NearLimitRatio * limit), as envoyproxy/ratelimit's
	// NEAR_LIMIT_RATIO does. Default 0.8 (as envoyproxy/ratelimit).
	NearLimitRatio float64 `yaml:"near_limit_ratio"`
	// Headers selects the response header format: ietf (default),
	// ietf-draft07, x-ratelimit or off.
	Headers string `yaml:"headers"`
	// RetryAfter adds Retry-After (seconds) to over-limit responses unless
	// Headers is off. Default true.
	RetryAfter *bool `yaml:"retry_after"`
	// LocalCacheSize bounds the in-process cache of counters known to be
	// exhausted, which answers without Redis until they reset. Default 100000
	// entries; negative disables it.
	LocalCacheSize int `yaml:"local_cache_size"`
	// BreakerFailures consecutive Redis failures open the circuit breaker, so
	// calls fail fast instead of each waiting Timeout. Default 5.
	BreakerFailures uint32 `yaml:"breaker_failures"`
	// BreakerOpenFor is how long the breaker stays open before one probe call
	// tries Redis again. Default 1s.
	BreakerOpenFor time.Duration `yaml:"breaker_open_for"`
	// MaxDescriptors bounds the descriptors of one request. Default 64.
	MaxDescriptors int `yaml:"max_descriptors"`
	// Lease configures lease mode (algorithm: sliding_window_lease, or
	// on_hot_key: lease while a key is hot): max_overshoot (default 0.02),
	// horizon (1s), max_keys (100000); see limiter.LeaseConfig.
	Lease limiter.LeaseConfig `yaml:"lease"`
	// HotKeyThreshold is the rate, in decisions per second of one counter at
	// this replica, that makes it a hot key: logged once, counted in
	// sluice_ratelimit_hot_keys, and moved to lease mode where its rule says
	// on_hot_key: lease. Default 1000; negative disables detection.
	HotKeyThreshold float64 `yaml:"hot_key_threshold"`
}

// WithDefaults returns c with every unset field given its documented default.
func (c Config) WithDefaults() Config {
	t := true
	if c.Watch == nil {
		c.Watch = &t
	}
	if c.RetryAfter == nil {
		c.RetryAfter = &t
	}
	if c.PollInterval == 0 {
		c.PollInterval = 10 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.NearLimitRatio == 0 {
		c.NearLimitRatio = 0.8
	}
	if c.Headers == "" {
		c.Headers = HeadersIETF
	}
	if c.LocalCacheSize == 0 {
		c.LocalCacheSize = 100_000
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerOpenFor == 0 {
		c.BreakerOpenFor = time.Second
	}
	if c.MaxDescriptors == 0 {
		c.MaxDescriptors = 64
	}
	return c
}

// Validate reports every problem with a defaulted c. It changes nothing.
func (c Config) Validate() error {
	var errs []error
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("ratelimit: timeout must be positive"))
	}
	if c.NearLimitRatio <= 0 || c.NearLimitRatio > 1 {
		errs = append(errs, fmt.Errorf("ratelimit: near_limit_ratio %v must be in (0, 1]", c.NearLimitRatio))
	}
	switch c.Headers {
	case HeadersIETF, HeadersIETFDraft07, HeadersXRateLimit, HeadersOff:
	default:
		errs = append(errs, fmt.Errorf("ratelimit: headers %q must be one of ietf, ietf-draft07, x-ratelimit, off", c.Headers))
	}
	if c.BreakerOpenFor < 0 {
		errs = append(errs, errors.New("ratelimit: breaker_open_for must not be negative"))
	}
	if c.MaxDescriptors < 1 {
		errs = append(errs, errors.New("ratelimit: max_descriptors must be at least 1"))
	}
	if err := c.LimiterConfig().Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// LimiterConfig is the limiter.Config these settings describe.
func (c Config) LimiterConfig() limiter.Config {
	return limiter.Config{
		Timeout:         c.Timeout,
		LocalCacheSize:  c.LocalCacheSize,
		BreakerFailures: c.BreakerFailures,
		BreakerOpenFor:  c.BreakerOpenFor,
		Lease:           c.Lease,
		HotKeyThreshold: c.HotKeyThreshold,
	}.WithDefaults()
}
