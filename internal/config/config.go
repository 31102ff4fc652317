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
	// GRPCAddr serves the ext_proc and rate limit gRPC services. Default
	// "127.0.0.1:8081" (a sidecar beside Envoy); --grpc-addr overrides.
	// Whoever reaches it can read any tenant's cached answers through
	// ext_proc and spend any tenant's quota: bind it beyond loopback only to
	// a network where just Envoy reaches it, or with GRPCTLS's client CA.
	GRPCAddr string `yaml:"grpc_addr"`
	// AdminAddr serves /metrics, /healthz, /readyz, /debug/* and POST
	// /cache/purge. Default "127.0.0.1:9091"; --admin-addr overrides. Set
	// AdminTokenFile before binding it beyond loopback.
	AdminAddr string `yaml:"admin_addr"`
	// AdminTokenFile names a file holding the bearer token the admin port's
	// protected endpoints (cache purges, /debug) ask for; the
	// SLUICE_ADMIN_TOKEN environment variable gives the token itself
	// instead. At least 16 bytes; surrounding white space is trimmed.
	// Default none: no token asked.
	AdminTokenFile string `yaml:"admin_token_file"`
	// AdminToken is the token itself, from SLUICE_ADMIN_TOKEN (never from
	// the file: a config file is for settings, not secrets).
	AdminToken string `yaml:"-"`
	// Pprof serves Go's profiling endpoints under /debug/pprof/ on the admin
	// port (behind the token). Default false.
	Pprof bool `yaml:"pprof"`
	// GRPCTLS makes the gRPC port speak TLS, and with ClientCAFile ask
	// clients (Envoy) for a certificate. Default: plaintext.
	GRPCTLS TLS `yaml:"grpc_tls"`
	// ShutdownGrace is how long in-flight RPCs may run after SIGTERM before
	// they are cut. Default 15s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// MaxRecvMsgBytes bounds one gRPC message. Default 4 MiB (gRPC's default).
	MaxRecvMsgBytes int `yaml:"max_recv_msg_bytes"`
}

// TLS names the PEM files of a TLS server. The files are read again when
// they change (on the next handshake), so certificates can be rotated
// without a restart.
type TLS struct {
	// CertFile and KeyFile are the server's certificate (chain) and key;
	// both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, holds the CAs a client certificate must chain
	// to: mutual TLS, clients without one are refused.
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" }

// minAdminToken is the shortest admin token accepted.
const minAdminToken = 16

// Token returns the admin token: AdminToken, else the trimmed content of
// AdminTokenFile, else "".
func (s Server) Token() (string, error) {
	if s.AdminToken != "" || s.AdminTokenFile == "" {
		return s.AdminToken, nil
	}
	b, err := os.ReadFile(s.AdminTokenFile)
	if err != nil {
		return "", fmt.Errorf("server: admin_token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < minAdminToken {
		return "", fmt.Errorf("server: admin_token_file %s: the token must be at least %d bytes", s.AdminTokenFile, minAdminToken)
	}
	return tok, nil
}

// Log configures structured logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json or text. Default json.
	Format string `yaml:"format"`
}

// Default listen addresses: loopback, the sidecar layout. A deployment that
// puts Envoy elsewhere sets them (and reads docs/security.md).
const (
	DefaultGRPCAddr  = "127.0.0.1:8081"
	DefaultAdminAddr = "127.0.0.1:9091"
)

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
		c.Server.GRPCAddr = DefaultGRPCAddr
	}
	if c.Server.AdminAddr == "" {
		c.Server.AdminAddr = DefaultAdminAddr
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
	if c.Server.AdminToken != "" && c.Server.AdminTokenFile != "" {
		errs = append(errs, errors.New("server: set the admin token once: SLUICE_ADMIN_TOKEN or admin_token_file"))
	}
	if c.Server.AdminToken != "" && len(c.Server.AdminToken) < minAdminToken {
		errs = append(errs, fmt.Errorf("server: SLUICE_ADMIN_TOKEN must be at least %d bytes", minAdminToken))
	}
	if t := c.Server.GRPCTLS; t.Enabled() && (t.CertFile == "" || t.KeyFile == "") {
		errs = append(errs, errors.New("server: grpc_tls needs cert_file and key_file (client_ca_file alone cannot serve TLS)"))
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
	AdminToken, AdminTokenFile                                                   string
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
	set(&c.Server.AdminToken, o.AdminToken)
	set(&c.Server.AdminTokenFile, o.AdminTokenFile)
	return c
}
