// Package redisconn builds the Redis client every Sluice component shares from one
// configuration section: a single server, a Redis Cluster, or an embedded test server.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config is the `redis` section of the Sluice config file. The zero value is
// usable after WithDefaults.
type Config struct {
	// URL of the server: redis://[user:pass@]host:port/db, rediss:// for TLS,
	// unix:///path. For Redis Cluster use redis+cluster://host:port?addr=host2:port
	// (or set Cluster). Default redis://127.0.0.1:6379/0; the REDIS_URL
	// environment variable and --redis-url flag override it.
	URL string `yaml:"url"`
	// Cluster treats URL as a Redis Cluster seed (go-redis ParseClusterURL form).
	// Default false, or true when the scheme is redis+cluster / rediss+cluster.
	Cluster bool `yaml:"cluster"`
	// KeyPrefix starts every key Sluice writes. Default "sluice:". It must not
	// contain '{' or '}', which Sluice reserves for Cluster hash tags.
	KeyPrefix string `yaml:"key_prefix"`
	// DialTimeout bounds connection setup. Default 250ms.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ReadTimeout and WriteTimeout bound socket I/O when a caller's context has
	// no earlier deadline. Default 100ms each.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// PoolSize is the connection pool size per node. Default 0 = go-redis'
	// default of 10 per GOMAXPROCS.
	PoolSize int `yaml:"pool_size"`
}

// DefaultURL is the Redis URL used when none is configured.
const DefaultURL = "redis://127.0.0.1:6379/0"

// WithDefaults returns c with every unset field given its documented default.
func (c Config) WithDefaults() Config {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = "sluice:"
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 250 * time.Millisecond
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 100 * time.Millisecond
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 100 * time.Millisecond
	}
	return c
}

// Validate reports the first problem with c. It does not connect.
func (c Config) Validate() error {
	if strings.ContainsAny(c.KeyPrefix, "{}") {
		return fmt.Errorf("redis: key_prefix %q must not contain '{' or '}'", c.KeyPrefix)
	}
	if c.DialTimeout < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0 {
		return errors.New("redis: timeouts must not be negative")
	}
	if c.PoolSize < 0 {
		return errors.New("redis: pool_size must not be negative")
	}
	if c.URL == "" {
		return nil
	}
	if _, _, err := c.options(); err != nil {
		return err
	}
	return nil
}

func (c Config) isCluster() (bool, string) {
	u := c.URL
	for _, s := range []string{"redis+cluster://", "rediss+cluster://"} {
		if strings.HasPrefix(u, s) {
			return true, strings.Replace(u, "+cluster", "", 1)
		}
	}
	return c.Cluster, u
}

func (c Config) options() (*redis.Options, *redis.ClusterOptions, error) {
	cluster, u := c.isCluster()
	if cluster {
		o, err := redis.ParseClusterURL(u)
		if err != nil {
			return nil, nil, fmt.Errorf("redis: parse cluster url %s: %w", redact(u), withoutURL(err))
		}
		return nil, o, nil
	}
	o, err := redis.ParseURL(u)
	if err != nil {
		return nil, nil, fmt.Errorf("redis: parse url %s: %w", redact(u), withoutURL(err))
	}
	return o, nil, nil
}

// withoutURL drops the URL a *url.Error carries (the whole string, password
// included) and keeps what went wrong.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redact hides a password in a URL for error messages and logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}

// Redacted returns the configured URL with any password hidden, for logs.
func (c Config) Redacted() string { return redact(c.URL) }

// New returns a client for c (already defaulted and validated). It does not
// connect; use Ping to check the server. Context deadlines bound socket I/O
// (ContextTimeoutEnabled), so a caller's 20 ms budget is never exceeded by a
// larger ReadTimeout. A call that runs out of time while Redis cannot be
// reached fails with an *UnreachableError naming the dial's error (connection
// refused, DNS). log (nil: slog.Default()) gets one warning when Redis
// becomes unreachable, with the cause, one line when it is reachable again,
// and go-redis's own lines about the client's calls (see router).
func New(c Config, log *slog.Logger) (redis.UniversalClient, error) {
	o, co, err := c.options()
	if err != nil {
		return nil, err
	}
	installRouter.Do(func() { redis.SetLogger(router{}) })
	if log == nil {
		log = slog.Default()
	}
	h := &hook{log: log}
	if co != nil {
		co.DialTimeout = c.DialTimeout
		co.ReadTimeout = c.ReadTimeout
		co.WriteTimeout = c.WriteTimeout
		co.ContextTimeoutEnabled = true
		if c.PoolSize > 0 {
			co.PoolSize = c.PoolSize
		}
		cc := redis.NewClusterClient(co)
		// Calls go through the cluster client's hooks; dials happen in the
		// node clients.
		cc.AddHook(h)
		cc.OnNewNode(func(n *redis.Client) { n.AddHook(dialOnly{h}) })
		return cc, nil
	}
	o.DialTimeout = c.DialTimeout
	o.ReadTimeout = c.ReadTimeout
	o.WriteTimeout = c.WriteTimeout
	o.ContextTimeoutEnabled = true
	if c.PoolSize > 0 {
		o.PoolSize = c.PoolSize
	}
	rc := redis.NewClient(o)
	rc.AddHook(h)
	return rc, nil
}

// dialOnly is the part of a hook a cluster's node clients need: their calls
// are the cluster client's, already explained there.
type dialOnly struct{ h *hook }

func (d dialOnly) DialHook(next redis.DialHook) redis.DialHook { return d.h.DialHook(next) }
func (dialOnly) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (dialOnly) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Ping checks that the server (every master, for a cluster) answers within timeout.
func Ping(ctx context.Context, c redis.UniversalClient, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if cc, ok := c.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			return n.Ping(ctx).Err()
		})
		if err != nil {
			return fmt.Errorf("redis: ping cluster: %w", err)
		}
		return nil
	}
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: ping: %w", err)
	}
	return nil
}
