// Command sluice is the Sluice sidecar: `sluice serve` runs the gRPC services
// Envoy calls, `sluice check-config` validates config files, `sluice version`
// prints the build.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/internal/app"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/crosscheck"
	"github.com/sluicehq/sluice/internal/devstack"
	"github.com/sluicehq/sluice/internal/redisconn"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

const usage = `Sluice: rate limits, caching and batching beside Envoy.

Usage:
  sluice dev          [flags]   one-process local stack: Envoy emulator gateway + Sluice + Redis + demo API
  sluice serve        [flags]   serve the gRPC services (ext_proc, rate limit service) and the admin endpoints
  sluice check-config [flags]   validate the Sluice config and the rate limit rules, then exit
  sluice worker [migrate]       apply PostgreSQL migrations (--dry-run lists them); without migrate, then wait
  sluice version                print the version

Run 'sluice <command> -h' for the flags of a command.
`

// setDefaultLogger makes a command's logger slog's default, which gets the
// log lines of libraries that know no logger of ours (go-redis's about no
// client in particular: internal/redisconn). Only main sets it: tests run
// commands with a no-op, so that none changes the process-wide default for
// the tests after it.
var setDefaultLogger = func(*slog.Logger) {}

func main() {
	setDefaultLogger = slog.SetDefault
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// run is main without the process exit, for tests. It returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "dev":
		return dev(ctx, args[1:], stdout, stderr, getenv)
	case "serve":
		return serve(ctx, args[1:], stdout, stderr, getenv)
	case "check-config":
		return checkConfig(args[1:], stdout, stderr, getenv)
	case "worker":
		return worker(ctx, args[1:], stdout, stderr, getenv)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "sluice", buildVersion())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// newFlagSet returns the flag set of a command, whose usage starts with
// synopsis and what (one line each).
func newFlagSet(name, synopsis, what string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s\n\nFlags:\n", synopsis, what)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses a command's args. -h or --help prints the usage on
// stdout and ends the command with 0; a bad flag, or an argument left over
// when the command takes none (positional false), prints the problem and
// the usage on stderr and ends it with 2. ok reports that the command may
// go on.
func parseFlags(fs *flag.FlagSet, args []string, positional bool, stdout, stderr io.Writer) (code int, ok bool) {
	// The flag package prints its message and the usage to the flag set's
	// output before Parse returns; which stream gets them depends on why.
	var out bytes.Buffer
	fs.SetOutput(&out)
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, _ = stdout.Write(out.Bytes())
		return 0, false
	case err != nil:
		_, _ = stderr.Write(out.Bytes())
		return 2, false
	case !positional && fs.NArg() > 0:
		// Parsing stops at the first argument that is not a flag, so the
		// flags after it were never read: refuse rather than ignore them.
		fmt.Fprintf(stderr, "%s: unexpected argument %q (flags after it would not be read)\n\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2, false
	}
	return 0, true
}

// common holds the deployment flags shared by serve and check-config. Flags
// beat environment variables, which beat the config file. URLs that may
// carry a password never get a flag default from the environment (flag
// help would print it) and can come from a file (--*-url-file, *_URL_FILE),
// so that they need not appear on a command line, which every user of the
// host can read.
type common struct {
	configPath, grpcAddr, adminAddr, rlConfig, redisURL string
	databaseURL, databaseReadURL                        string
	redisURLFile, databaseURLFile, adminTokenFile       string
	getenv                                              func(string) string
	// redisSet: a Redis URL came from a flag, the environment or a file.
	redisSet bool
}

// register defines the flags; grpcDefault and adminDefault describe the
// listen addresses used when neither a flag nor the config file sets them.
func (c *common) register(fs *flag.FlagSet, getenv func(string) string, grpcDefault, adminDefault string) {
	c.getenv = getenv
	fs.StringVar(&c.configPath, "config", getenv("SLUICE_CONFIG"), "Sluice config file (YAML; env SLUICE_CONFIG); defaults apply without one")
	fs.StringVar(&c.grpcAddr, "grpc-addr", "", "gRPC listen address (default "+grpcDefault+")")
	fs.StringVar(&c.adminAddr, "admin-addr", "", "admin HTTP listen address for /metrics, /healthz, /readyz, /debug (default "+adminDefault+")")
	fs.StringVar(&c.rlConfig, "ratelimit-config", "", "rate limit rules: an envoyproxy/ratelimit YAML file or a directory of them")
	fs.StringVar(&c.databaseURL, "database-url", "", "PostgreSQL URL (env DATABASE_URL); when set, tenant tiers come from the tenants table. A password here is visible to every user of the host: prefer --database-url-file")
	fs.StringVar(&c.databaseURLFile, "database-url-file", "", "file holding the PostgreSQL URL (env DATABASE_URL_FILE)")
	fs.StringVar(&c.redisURL, "redis-url", "", "Redis URL (env REDIS_URL; default redis://127.0.0.1:6379/0; redis+cluster://host:port?addr=host2:port for Cluster). A password here is visible to every user of the host: prefer --redis-url-file")
	fs.StringVar(&c.redisURLFile, "redis-url-file", "", "file holding the Redis URL (env REDIS_URL_FILE)")
	fs.StringVar(&c.adminTokenFile, "admin-token-file", "", "file holding the bearer token of the admin port's purge and /debug endpoints (env SLUICE_ADMIN_TOKEN gives the token itself)")
}

// printLoadError prints the problems of a config, one "file:line: message"
// per line, or another error of loading it.
func printLoadError(w io.Writer, err error) {
	var ce *config.Error
	if errors.As(err, &ce) {
		fmt.Fprintln(w, err)
		return
	}
	fmt.Fprintln(w, "sluice:", err)
}

func (c *common) load() (config.Config, error) {
	redisURL, err := urlSetting("redis-url", c.redisURL, c.redisURLFile, c.getenv("REDIS_URL"), c.getenv("REDIS_URL_FILE"))
	if err != nil {
		return config.Config{}, err
	}
	c.redisSet = redisURL != ""
	dbURL, err := urlSetting("database-url", c.databaseURL, c.databaseURLFile, c.getenv("DATABASE_URL"), c.getenv("DATABASE_URL_FILE"))
	if err != nil {
		return config.Config{}, err
	}
	dbReadURL, err := urlSetting("database-read-url", "", "", c.getenv("DATABASE_READ_URL"), c.getenv("DATABASE_READ_URL_FILE"))
	if err != nil {
		return config.Config{}, err
	}
	return config.Load(c.configPath, config.Overrides{
		GRPCAddr: c.grpcAddr, AdminAddr: c.adminAddr, RateLimitConfig: c.rlConfig,
		RedisURL: redisURL, DatabaseURL: dbURL, DatabaseReadURL: dbReadURL,
		AdminToken: c.getenv("SLUICE_ADMIN_TOKEN"), AdminTokenFile: c.adminTokenFile,
	})
}

// urlSetting picks a URL setting: the flag, else the file the flag names,
// else the environment variable, else the file it names. Errors name files,
// never contents.
func urlSetting(name, flagValue, flagFile, envValue, envFile string) (string, error) {
	if flagValue != "" && flagFile != "" {
		return "", fmt.Errorf("give --%s or --%s-file, not both", name, name)
	}
	read := func(path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("--%s-file: %w", name, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	switch {
	case flagValue != "":
		return flagValue, nil
	case flagFile != "":
		return read(flagFile)
	case envValue != "":
		return envValue, nil
	case envFile != "":
		return read(envFile)
	}
	return "", nil
}

// warnCommandLineSecrets logs when a URL given as a flag carries a
// password: /proc/<pid>/cmdline and ps show it to every user of the host.
func (c *common) warnCommandLineSecrets(log *slog.Logger) {
	for _, f := range []struct{ flag, value, instead string }{
		{"--redis-url", c.redisURL, "REDIS_URL_FILE or --redis-url-file"},
		{"--database-url", c.databaseURL, "DATABASE_URL_FILE or --database-url-file"},
	} {
		if u, err := url.Parse(f.value); err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				log.Warn("a password given in "+f.flag+" is visible to every user of this host; use "+f.instead, "flag", f.flag)
			}
		}
	}
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("sluice serve", "sluice serve [flags]",
		"Serves the gRPC services Envoy calls (ext_proc, rate limit service) and the admin endpoints.")
	var c common
	c.register(fs, getenv, config.DefaultGRPCAddr+", or the config file's server.grpc_addr", config.DefaultAdminAddr+", or the config file's server.admin_addr")
	if code, ok := parseFlags(fs, args, false, stdout, stderr); !ok {
		return code
	}
	cfg, err := c.load()
	if err != nil {
		printLoadError(stderr, err)
		return 1
	}
	log := cfg.Log.Logger(stdout)
	setDefaultLogger(log)
	c.warnCommandLineSecrets(log)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := app.New(ctx, cfg, log, buildVersion(), app.Options{})
	if err != nil {
		log.Error("sluice failed to start", "err", err)
		return 1
	}
	defer a.Close()
	if err := a.Listen(ctx); err != nil {
		log.Error("sluice failed to start", "err", err)
		return 1
	}
	if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("sluice stopped with an error", "err", err)
		return 1
	}
	log.Info("sluice stopped")
	return 0
}

// Local-only listen addresses of `sluice dev`: they win over the config
// file's, which describe a deployment.
const (
	devGRPCAddr  = "127.0.0.1:8081"
	devAdminAddr = "127.0.0.1:9091"
)

func dev(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("sluice dev", "sluice dev [flags]",
		"Runs the whole stack in one process: an Envoy emulator as the HTTP gateway, Sluice, Redis (embedded\nunless --redis-url or REDIS_URL is set) and the demo API (or --upstream).")
	var c common
	c.register(fs, getenv, devGRPCAddr, devAdminAddr)
	listen := fs.String("listen", ":8080", "gateway (Envoy emulator) listen address")
	internalListen := fs.String("internal-listen", "127.0.0.1:0", "address of the emulated internal listener that batch items go through (keep it on loopback)")
	upstream := fs.String("upstream", "", "origin of the API to put behind the gateway, scheme://host[:port] (default: the built-in demo API)")
	compression := fs.Bool("compression", true, "run envoy.yaml's compressor filters (false: responses go out as the upstream and the cache produce them)")
	envoyConfig := fs.String("envoy-config", "", "Envoy bootstrap the gateway emulates (default: the built-in envoy/envoy.yaml)")
	if code, ok := parseFlags(fs, args, false, stdout, stderr); !ok {
		return code
	}
	if *upstream != "" {
		if err := devstack.CheckUpstream(*upstream); err != nil {
			fmt.Fprintln(stderr, "sluice dev:", err)
			return 2
		}
	}
	if c.grpcAddr == "" {
		c.grpcAddr = devGRPCAddr
	}
	if c.adminAddr == "" {
		c.adminAddr = devAdminAddr
	}
	cfg, err := c.load()
	if err != nil {
		printLoadError(stderr, err)
		return 1
	}
	redisSet := c.redisSet
	if c.configPath != "" && cfg.Redis.URL != redisconn.DefaultURL {
		redisSet = true
	}
	if cfg.Log.Format == "json" && c.configPath == "" {
		cfg.Log.Format = "text"
	}
	log := cfg.Log.Logger(stderr)
	setDefaultLogger(log)
	c.warnCommandLineSecrets(log)
	var bootstrap []byte
	if *envoyConfig != "" {
		if bootstrap, err = os.ReadFile(*envoyConfig); err != nil {
			fmt.Fprintln(stderr, "sluice:", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := devstack.Start(ctx, devstack.Options{Listen: *listen, InternalListen: *internalListen, Upstream: *upstream, Sluice: cfg, RedisSet: redisSet,
		EnvoyConfig: bootstrap, NoCompression: !*compression}, log)
	if err != nil {
		log.Error("sluice dev failed to start", "err", err)
		return 1
	}
	s.Banner(stdout)
	if err := s.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("sluice dev stopped with an error", "err", err)
		return 1
	}
	return 0
}

func checkConfig(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("sluice check-config", "sluice check-config [flags] [rule files or directories...]",
		"Checks the Sluice config (--config) and the rate limit rules (--ratelimit-config, the config's\nratelimit.config_path and the arguments), printing every problem as file:line: message.")
	var c common
	c.register(fs, getenv, config.DefaultGRPCAddr, config.DefaultAdminAddr)
	envoyPath := fs.String("envoy", "", "also check the Sluice config and rules against this Envoy bootstrap (envoy.yaml): body sizes, message timeouts, processing mode, the batch listener and route, and which rate limit descriptors reach which rules")
	if code, ok := parseFlags(fs, args, true, stdout, stderr); !ok {
		return code
	}
	if c.configPath == "" && c.rlConfig == "" && fs.NArg() == 0 && *envoyPath == "" {
		fmt.Fprintln(stderr, "sluice check-config: nothing to check: give --config, --ratelimit-config, --envoy or rule files")
		fmt.Fprintln(stderr)
		fs.Usage()
		return 2
	}
	// The rules are checked even when the config has problems, so that one
	// run reports them all.
	failed := false
	cfg, err := c.load()
	if err != nil {
		printLoadError(stderr, err)
		failed = true
	}
	paths := fs.Args()
	if cfg.RateLimit.ConfigPath != "" {
		paths = append([]string{cfg.RateLimit.ConfigPath}, paths...)
	}
	var first *ratelimitsvc.Rules
	for _, p := range paths {
		rules, err := ratelimitsvc.LoadRules(p)
		if err != nil {
			fmt.Fprintln(stderr, err)
			failed = true
			continue
		}
		if first == nil {
			first = rules
		}
		fmt.Fprintf(stdout, "%s: ok (%d domains)\n", p, len(rules.Domains()))
	}
	if *envoyPath != "" {
		if !crossCheck(cfg, c.configPath, first, firstOr(paths, ""), *envoyPath, stdout, stderr) {
			failed = true
		}
	}
	if failed {
		return 1
	}
	if c.configPath != "" {
		fmt.Fprintf(stdout, "%s: ok\n", c.configPath)
	}
	return 0
}

// crossCheck runs the checks of internal/crosscheck and prints each problem
// as "file:line: message"; it reports whether there were none.
func crossCheck(cfg config.Config, configPath string, rules *ratelimitsvc.Rules, rulesPath, envoyPath string, stdout, stderr io.Writer) bool {
	data, err := os.ReadFile(envoyPath)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", envoyPath, err)
		return false
	}
	listeners, err := envoy.ParseListeners(data)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", envoyPath, err)
		return false
	}
	if configPath == "" {
		configPath = "sluice config (defaults)"
	}
	problems := crosscheck.Check(crosscheck.Inputs{
		Config: cfg, ConfigFile: configPath,
		Rules: rules, RulesFile: rulesPath,
		Envoy: listeners, EnvoyFile: envoyPath,
	})
	for _, p := range problems {
		fmt.Fprintln(stderr, p)
	}
	if len(problems) > 0 {
		return false
	}
	note := ""
	if rules == nil {
		note = " (no rate limit rules given: descriptors not checked)"
	}
	fmt.Fprintf(stdout, "%s: ok against the Sluice config%s\n", envoyPath, note)
	return true
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}
