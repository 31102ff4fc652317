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
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/sluicehq/sluice/internal/app"
	"github.com/sluicehq/sluice/internal/config"
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

// common holds the deployment flags shared by serve, dev and check-config.
// Flags beat environment variables, which beat the config file.
type common struct {
	configPath, grpcAddr, adminAddr, rlConfig, redisURL string
	databaseURL, databaseReadURL                        string
}

// register defines the flags; grpcDefault and adminDefault describe the
// listen addresses used when neither a flag nor the config file sets them.
func (c *common) register(fs *flag.FlagSet, getenv func(string) string, grpcDefault, adminDefault string) {
	fs.StringVar(&c.configPath, "config", getenv("SLUICE_CONFIG"), "Sluice config file (YAML; env SLUICE_CONFIG); defaults apply without one")
	fs.StringVar(&c.grpcAddr, "grpc-addr", "", "gRPC listen address (default "+grpcDefault+")")
	fs.StringVar(&c.adminAddr, "admin-addr", "", "admin HTTP listen address for /metrics, /healthz, /readyz, /debug (default "+adminDefault+")")
	fs.StringVar(&c.rlConfig, "ratelimit-config", "", "rate limit rules: an envoyproxy/ratelimit YAML file or a directory of them")
	fs.StringVar(&c.databaseURL, "database-url", getenv("DATABASE_URL"), "PostgreSQL URL (env DATABASE_URL); when set, tenant tiers come from the tenants table")
	c.databaseReadURL = getenv("DATABASE_READ_URL")
	fs.StringVar(&c.redisURL, "redis-url", getenv("REDIS_URL"), "Redis URL (env REDIS_URL; default redis://127.0.0.1:6379/0; redis+cluster://host:port?addr=host2:port for Cluster)")
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
	return config.Load(c.configPath, config.Overrides{
		GRPCAddr: c.grpcAddr, AdminAddr: c.adminAddr, RateLimitConfig: c.rlConfig,
		RedisURL: c.redisURL, DatabaseURL: c.databaseURL, DatabaseReadURL: c.databaseReadURL,
	})
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("sluice serve", "sluice serve [flags]",
		"Serves the gRPC services Envoy calls (ext_proc, rate limit service) and the admin endpoints.")
	var c common
	c.register(fs, getenv, ":8081, or the config file's server.grpc_addr", ":9091, or the config file's server.admin_addr")
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
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := app.New(ctx, cfg, log, buildVersion(), app.Options{})
	if err != nil {
		log.Error("sluice failed to start", "err", err)
		return 1
	}
	defer a.Close()
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
	upstream := fs.String("upstream", "", "origin of the API to put behind the gateway, scheme://host[:port] (default: the built-in demo API)")
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
	redisSet := c.redisURL != ""
	cfg, err := c.load()
	if err != nil {
		printLoadError(stderr, err)
		return 1
	}
	if c.configPath != "" && cfg.Redis.URL != redisconn.DefaultURL {
		redisSet = true
	}
	if cfg.Log.Format == "json" && c.configPath == "" {
		cfg.Log.Format = "text"
	}
	log := cfg.Log.Logger(stderr)
	setDefaultLogger(log)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := devstack.Start(ctx, devstack.Options{Listen: *listen, Upstream: *upstream, Sluice: cfg, RedisSet: redisSet}, log)
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
	c.register(fs, getenv, ":8081", ":9091")
	if code, ok := parseFlags(fs, args, true, stdout, stderr); !ok {
		return code
	}
	if c.configPath == "" && c.rlConfig == "" && fs.NArg() == 0 {
		fmt.Fprintln(stderr, "sluice check-config: nothing to check: give --config, --ratelimit-config or rule files")
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
	for _, p := range paths {
		rules, err := ratelimitsvc.LoadRules(p)
		if err != nil {
			fmt.Fprintln(stderr, err)
			failed = true
			continue
		}
		fmt.Fprintf(stdout, "%s: ok (%d domains)\n", p, len(rules.Domains()))
	}
	if failed {
		return 1
	}
	if c.configPath != "" {
		fmt.Fprintf(stdout, "%s: ok\n", c.configPath)
	}
	return 0
}
