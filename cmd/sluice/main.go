// Command sluice is the Sluice sidecar: `sluice serve` runs the gRPC services
// Envoy calls, `sluice check-config` validates config files, `sluice version`
// prints the build.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/sluicehq/sluice/envoy"
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

func main() {
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

// common holds the deployment flags shared by serve and check-config. Flags
// beat environment variables, which beat the config file.
type common struct {
	configPath, grpcAddr, adminAddr, rlConfig, redisURL string
	databaseURL, databaseReadURL                        string
}

func (c *common) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&c.configPath, "config", getenv("SLUICE_CONFIG"), "Sluice config file (YAML; env SLUICE_CONFIG); defaults apply without one")
	fs.StringVar(&c.grpcAddr, "grpc-addr", "", "gRPC listen address (default :8081)")
	fs.StringVar(&c.adminAddr, "admin-addr", "", "admin HTTP listen address for /metrics, /healthz, /readyz, /debug (default :9091)")
	fs.StringVar(&c.rlConfig, "ratelimit-config", "", "rate limit rules: an envoyproxy/ratelimit YAML file or a directory of them")
	fs.StringVar(&c.databaseURL, "database-url", getenv("DATABASE_URL"), "PostgreSQL URL (env DATABASE_URL); when set, tenant tiers come from the tenants table")
	c.databaseReadURL = getenv("DATABASE_READ_URL")
	fs.StringVar(&c.redisURL, "redis-url", getenv("REDIS_URL"), "Redis URL (env REDIS_URL; default redis://127.0.0.1:6379/0; redis+cluster://host:port?addr=host2:port for Cluster)")
}

func (c *common) load() (config.Config, error) {
	cfg, err := config.Load(c.configPath)
	if err != nil {
		return cfg, err
	}
	cfg = config.Overrides{
		GRPCAddr: c.grpcAddr, AdminAddr: c.adminAddr, RateLimitConfig: c.rlConfig,
		RedisURL: c.redisURL, DatabaseURL: c.databaseURL, DatabaseReadURL: c.databaseReadURL,
	}.Apply(cfg)
	return cfg, cfg.Validate()
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("sluice serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := c.load()
	if err != nil {
		fmt.Fprintln(stderr, "sluice:", err)
		return 1
	}
	log := cfg.Log.Logger(stdout)
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

func dev(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("sluice dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, getenv)
	listen := fs.String("listen", ":8080", "gateway (Envoy emulator) listen address")
	upstream := fs.String("upstream", "", "API to put behind the gateway (default: the built-in demo API)")
	compression := fs.Bool("compression", true, "run envoy.yaml's compressor filters (false: responses go out as the upstream and the cache produce them)")
	envoyConfig := fs.String("envoy-config", "", "Envoy bootstrap the gateway emulates (default: the built-in envoy/envoy.yaml)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Local-only defaults for the gRPC and admin ports.
	if c.grpcAddr == "" {
		c.grpcAddr = "127.0.0.1:8081"
	}
	if c.adminAddr == "" {
		c.adminAddr = "127.0.0.1:9091"
	}
	redisSet := c.redisURL != ""
	cfg, err := c.load()
	if err != nil {
		fmt.Fprintln(stderr, "sluice:", err)
		return 1
	}
	if c.configPath != "" && cfg.Redis.URL != redisconn.DefaultURL {
		redisSet = true
	}
	if cfg.Log.Format == "json" && c.configPath == "" {
		cfg.Log.Format = "text"
	}
	log := cfg.Log.Logger(stderr)
	var bootstrap []byte
	if *envoyConfig != "" {
		if bootstrap, err = os.ReadFile(*envoyConfig); err != nil {
			fmt.Fprintln(stderr, "sluice:", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := devstack.Start(ctx, devstack.Options{Listen: *listen, Upstream: *upstream, Sluice: cfg, RedisSet: redisSet,
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
	fs := flag.NewFlagSet("sluice check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, getenv)
	envoyConfig := fs.String("envoy-config", "", "also check the Sluice config against this Envoy bootstrap (the waits Sluice asks the ext_proc filter for)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Positional arguments are extra rule files or directories to check.
	cfg, err := c.load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	paths := fs.Args()
	if cfg.RateLimit.ConfigPath != "" {
		paths = append([]string{cfg.RateLimit.ConfigPath}, paths...)
	}
	failed := false
	for _, p := range paths {
		rules, err := ratelimitsvc.LoadRules(p)
		if err != nil {
			fmt.Fprintln(stderr, err)
			failed = true
			continue
		}
		fmt.Fprintf(stdout, "%s: ok (%d domains)\n", p, len(rules.Domains()))
	}
	if *envoyConfig != "" {
		if err := checkAgainstEnvoy(cfg, *envoyConfig); err != nil {
			fmt.Fprintln(stderr, err)
			failed = true
		} else {
			fmt.Fprintf(stdout, "%s: ok against the Sluice config\n", *envoyConfig)
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

// checkAgainstEnvoy checks that what Sluice asks the ext_proc filter for fits
// its max_message_timeout in the bootstrap at path: a collapsed follower's
// wait and a batch's.
func checkAgainstEnvoy(cfg config.Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	st, err := envoy.ParseSettings(b)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if st.ExtProc == nil {
		return fmt.Errorf("%s: no ext_proc filter", path)
	}
	limit := st.ExtProc.GetMaxMessageTimeout().AsDuration()
	var errs []error
	if err := cfg.Cache.Config.CheckEnvoy(limit); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}
	if bm := cfg.Batch.WithDefaults().MaxMessageTimeout; bm > limit {
		errs = append(errs, fmt.Errorf("%s: batch.max_message_timeout %v exceeds the ext_proc filter's max_message_timeout %v", path, bm, limit))
	}
	return errors.Join(errs...)
}
