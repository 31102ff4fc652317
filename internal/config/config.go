// Package config loads the Sluice config file: one YAML document with a
// section per component, each a component-owned struct with defaults and
// Validate. Flags and environment variables are applied by cmd/sluice.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/batch"
	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/redisconn"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

// Config is the whole Sluice config file. The zero value, after WithDefaults,
// is a working local configuration.
type Config struct {
	Server    Server              `yaml:"server"`
	Log       Log                 `yaml:"log"`
	Redis     redisconn.Config    `yaml:"redis"`
	RateLimit ratelimitsvc.Config `yaml:"ratelimit"`
	ExtProc   extproc.Config      `yaml:"extproc"`
	Cache     Cache               `yaml:"cache"`
	// Database is optional: with a url, tenant tiers come from PostgreSQL
	// (LISTEN/NOTIFY) instead of extproc.identity.tiers, and the worker
	// migrates it. DATABASE_URL / DATABASE_READ_URL override the urls.
	Database db.Config `yaml:"database"`
	// Batch configures POST /api/v1/batch fan-out through the Envoy listener.
	Batch batch.Config `yaml:"batch"`
}

// Cache is the `cache` section: the response cache's policy (the fields of
// cachefilter.Config, inline) and its storage under `cache.store`
// (cachefilter.StoreConfig). The cache uses the `redis` section's client and
// key prefix. Enabled (default true) adds the cache stage to the ext_proc
// pipeline; false leaves it out entirely.
type Cache struct {
	cachefilter.Config `yaml:",inline"`
	Store              cachefilter.StoreConfig `yaml:"store"`
}

// Server holds the listen addresses and process-level settings.
type Server struct {
	// GRPCAddr serves the rate limit (and later ext_proc) gRPC services.
	// Default ":8081"; --grpc-addr overrides.
	GRPCAddr string `yaml:"grpc_addr"`
	// AdminAddr serves /metrics, /healthz, /readyz and /debug/*. Default
	// ":9091"; --admin-addr overrides.
	AdminAddr string `yaml:"admin_addr"`
	// ShutdownGrace is how long in-flight RPCs may run after SIGTERM before
	// they are cut. Default 15s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// MaxRecvMsgBytes bounds one gRPC message. Default 4 MiB (gRPC's default).
	MaxRecvMsgBytes int `yaml:"max_recv_msg_bytes"`
}

// Log configures structured logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json or text. Default json.
	Format string `yaml:"format"`
}

// maxFileBytes bounds the config file; anything larger is a mistake.
const maxFileBytes = 4 << 20

// Load reads the file at path (strict: unknown keys are errors with their
// line) and applies defaults. An empty path yields the defaults.
func Load(path string) (Config, error) {
	var c Config
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
		if err != nil {
			return Config{}, fmt.Errorf("config: read %s: %w", path, err)
		}
		if len(data) > maxFileBytes {
			return Config{}, fmt.Errorf("config: %s is larger than %d bytes", path, maxFileBytes)
		}
		if c, err = Parse(data); err != nil {
			return Config{}, fmt.Errorf("config: %s: %w", path, err)
		}
	}
	return c.WithDefaults(), nil
}

// Parse decodes one YAML document strictly. It does not apply defaults.
func Parse(data []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	return c, nil
}

// WithDefaults returns c with every unset field given its documented default.
func (c Config) WithDefaults() Config {
	if c.Server.GRPCAddr == "" {
		c.Server.GRPCAddr = ":8081"
	}
	if c.Server.AdminAddr == "" {
		c.Server.AdminAddr = ":9091"
	}
	if c.Server.ShutdownGrace == 0 {
		c.Server.ShutdownGrace = 15 * time.Second
	}
	if c.Server.MaxRecvMsgBytes == 0 {
		c.Server.MaxRecvMsgBytes = 4 << 20
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	c.Redis = c.Redis.WithDefaults()
	c.RateLimit = c.RateLimit.WithDefaults()
	c.ExtProc = c.ExtProc.WithDefaults()
	c.Cache.Config = c.Cache.Config.WithDefaults()
	c.Database = c.Database.WithDefaults()
	c.Batch = c.Batch.WithDefaults()
	c.Cache.Store = c.Cache.Store.WithDefaults()
	return c
}

// Validate reports every problem with a defaulted c.
func (c Config) Validate() error {
	var errs []error
	if c.Server.ShutdownGrace < 0 {
		errs = append(errs, errors.New("server: shutdown_grace must not be negative"))
	}
	if c.Server.MaxRecvMsgBytes < 1024 {
		errs = append(errs, errors.New("server: max_recv_msg_bytes must be at least 1024"))
	}
	if _, err := c.Log.level(); err != nil {
		errs = append(errs, err)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		errs = append(errs, fmt.Errorf("log: format %q must be json or text", c.Log.Format))
	}
	errs = append(errs, c.Redis.Validate(), c.RateLimit.Validate(), c.ExtProc.Validate(), c.Cache.Config.Validate(), c.Cache.Store.Validate())
	if c.Database.URL != "" {
		errs = append(errs, c.Database.Validate())
	}
	errs = append(errs, c.Batch.Validate())
	return errors.Join(errs...)
}

func (l Log) level() (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(l.Level))); err != nil {
		return 0, fmt.Errorf("log: level %q must be debug, info, warn or error", l.Level)
	}
	return lv, nil
}

// Logger returns the process logger writing to w.
func (l Log) Logger(w io.Writer) *slog.Logger {
	lv, _ := l.level()
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// Overrides are the deployment settings flags and environment variables may
// set over the file. Empty fields leave the file's value.
type Overrides struct {
	GRPCAddr, AdminAddr, RateLimitConfig, RedisURL, DatabaseURL, DatabaseReadURL string
}

// Apply returns c with every non-empty override set.
func (o Overrides) Apply(c Config) Config {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&c.Server.GRPCAddr, o.GRPCAddr)
	set(&c.Server.AdminAddr, o.AdminAddr)
	set(&c.RateLimit.ConfigPath, o.RateLimitConfig)
	set(&c.Redis.URL, o.RedisURL)
	set(&c.Database.URL, o.DatabaseURL)
	set(&c.Database.ReadURL, o.DatabaseReadURL)
	return c
}
