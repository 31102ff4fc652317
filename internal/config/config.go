// Package config loads the Sluice config file: one YAML document with a
// section per component, each a component-owned struct with defaults and
// Validate. cmd/sluice passes the flags and environment variables that
// override it (Overrides). Like the rate limit rule loader, it reports
// every problem of a file in one run, each as "file:line: message".
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/batch"
	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/pgtier"
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
	Database Database `yaml:"database"`
	// Batch configures POST /api/v1/batch fan-out through the Envoy listener.
	Batch batch.Config `yaml:"batch"`

	src        *source  // the file read by Load or Parse, for Validate's lines
	overridden []string // paths set by Overrides.Apply
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

// Database is the `database` section: the connection pools (the fields of
// db.Config, inline) and the tier store's timing under `database.tiers`
// (pgtier.Config).
type Database struct {
	db.Config `yaml:",inline"`
	Tiers     pgtier.Config `yaml:"tiers"`
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

// Load reads the config file at path (an empty path reads nothing: the
// defaults), applies the defaults, then the overrides, and validates the
// result. Every problem found (YAML syntax, unknown fields, values of the
// wrong type, invalid settings) comes back at once in an *Error, each as
// "file:line: message"; a file that cannot be read is a plain error.
func Load(path string, o Overrides) (Config, error) {
	var (
		c        Config
		problems []Problem
	)
	if path != "" {
		data, err := readFile(path)
		if err != nil {
			return Config{}, err
		}
		c.src, problems = parse(path, data, &c)
	}
	c = o.Apply(c.WithDefaults())
	if err := c.Validate(); err != nil {
		var ve *Error
		if !errors.As(err, &ve) {
			return c, err
		}
		problems = append(problems, ve.Problems...)
	}
	if len(problems) > 0 {
		// In line order; those of flags and the environment last.
		slices.SortStableFunc(problems, func(a, b Problem) int {
			if (a.File == "") != (b.File == "") {
				if a.File == "" {
					return 1
				}
				return -1
			}
			return a.Line - b.Line
		})
		return c, &Error{Problems: problems}
	}
	return c, nil
}

// readFile reads at most maxFileBytes of path.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("config: %s is larger than %d bytes", path, maxFileBytes)
	}
	return data, nil
}

// Parse decodes one YAML document, named name in problems, strictly: the
// problems (syntax, unknown fields, wrong types) come back together in an
// *Error, and the fields that decoded are set. It applies no defaults and
// does not validate.
func Parse(name string, data []byte) (Config, error) {
	var c Config
	var problems []Problem
	c.src, problems = parse(name, data, &c)
	if len(problems) > 0 {
		return c, &Error{Problems: problems}
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
	c.Database.Config = c.Database.Config.WithDefaults()
	c.Database.Tiers = c.Database.Tiers.WithDefaults()
	c.Batch = c.Batch.WithDefaults()
	c.Cache.Store = c.Cache.Store.WithDefaults()
	return c
}

// Validate reports every problem with a defaulted c as an *Error. When c
// was read from a file, each problem carries the line that sets the value
// it is about; one about a value a flag or the environment set says so.
func (c Config) Validate() error {
	var problems []Problem
	add := func(section string, err error) {
		for _, msg := range leaves(err) {
			if section == "cache.store" {
				msg = "cache.store: " + strings.TrimPrefix(msg, "cachefilter: store config: ")
			}
			problems = append(problems, c.locate(section, msg))
		}
	}
	if c.Server.ShutdownGrace < 0 {
		add("server", errors.New("server: shutdown_grace must not be negative"))
	}
	if c.Server.MaxRecvMsgBytes < 1024 {
		add("server", errors.New("server: max_recv_msg_bytes must be at least 1024"))
	}
	if c.Server.AdminToken != "" && c.Server.AdminTokenFile != "" {
		add("server", errors.New("server: set the admin token once: SLUICE_ADMIN_TOKEN or admin_token_file"))
	}
	if c.Server.AdminToken != "" && len(c.Server.AdminToken) < minAdminToken {
		add("server", fmt.Errorf("server: SLUICE_ADMIN_TOKEN must be at least %d bytes", minAdminToken))
	}
	if t := c.Server.GRPCTLS; t.Enabled() && (t.CertFile == "" || t.KeyFile == "") {
		add("server", errors.New("server: grpc_tls needs cert_file and key_file (client_ca_file alone cannot serve TLS)"))
	}
	if _, err := c.Log.level(); err != nil {
		add("log", err)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		add("log", fmt.Errorf("log: format %q must be json or text", c.Log.Format))
	}
	add("redis", c.Redis.Validate())
	add("ratelimit", c.RateLimit.Validate())
	add("extproc", c.ExtProc.Validate())
	add("cache", c.Cache.Config.Validate())
	add("cache.store", c.Cache.Store.Validate())
	if c.Database.URL != "" {
		add("database", c.Database.Config.Validate())
		add("database", c.Database.Tiers.Validate())
	}
	add("batch", c.Batch.Validate())
	if len(problems) == 0 {
		return nil
	}
	sortProblems(problems)
	return &Error{Problems: problems}
}

// leaves splits err into its messages: the errors it joins, and the lines
// of each.
func leaves(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return strings.Split(err.Error(), "\n")
}

// pathToken matches what may name a setting in a message: "timeout",
// "identity.tenant_header", "metrics.routes[2]".
var pathToken = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*|\[[0-9]+\])*$`)

// locate places a validation message of section: on the line of the first
// setting the message names that the file sets, else on the section's line.
// A setting a flag or the environment overrode has no line in the file.
func (c Config) locate(section, msg string) Problem {
	p := Problem{Msg: msg}
	rest := strings.TrimPrefix(msg, section+": ")
	for _, tok := range strings.FieldsFunc(rest, func(r rune) bool { return r == ' ' || r == ':' || r == ',' || r == '(' || r == ')' }) {
		if !pathToken.MatchString(tok) {
			continue
		}
		path := section + "." + tok
		if slices.Contains(c.overridden, path) {
			p.Msg += " (set by a flag or an environment variable)"
			return p
		}
		if c.src == nil {
			continue
		}
		if line, ok := c.src.lines[path]; ok {
			p.File, p.Line = c.src.file, line
			return p
		}
	}
	if c.src == nil {
		return p
	}
	p.File = c.src.file
	p.Line = c.src.lines[section]
	return p
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
	c.overridden = slices.Clone(c.overridden)
	set := func(path string, dst *string, v string) {
		if v != "" {
			*dst = v
			c.overridden = append(c.overridden, path)
		}
	}
	set("server.grpc_addr", &c.Server.GRPCAddr, o.GRPCAddr)
	set("server.admin_addr", &c.Server.AdminAddr, o.AdminAddr)
	set("ratelimit.config_path", &c.RateLimit.ConfigPath, o.RateLimitConfig)
	set("redis.url", &c.Redis.URL, o.RedisURL)
	set("database.url", &c.Database.URL, o.DatabaseURL)
	set("database.read_url", &c.Database.ReadURL, o.DatabaseReadURL)
	set("server.admin_token", &c.Server.AdminToken, o.AdminToken)
	set("server.admin_token_file", &c.Server.AdminTokenFile, o.AdminTokenFile)
	return c
}
