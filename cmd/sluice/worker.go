package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/redisconn"
	"github.com/sluicehq/sluice/internal/warm"
)

const workerUsage = `Usage:
  sluice worker [flags]                 migrate the database once, then stay up until SIGTERM
  sluice worker migrate [--dry-run] [flags]
                                        apply pending migrations and rebuild INVALID indexes, then exit;
                                        --dry-run lists them and changes nothing

Several workers may start at once: migration runners take turns on an advisory lock.
With --redis-url (or REDIS_URL) and --envoy-url (or ENVOY_URL), 'sluice worker' then warms
the cache: every --warm-interval it re-requests, through the Envoy listener, the hot entries
of each --warm-tenants tenant whose freshness is about to run out. Without both, it only
migrates and waits.

Flags:
`

// worker runs `sluice worker` and `sluice worker migrate`.
func worker(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	migrateOnly := len(args) > 0 && args[0] == "migrate"
	if migrateOnly {
		args = args[1:]
	}
	fs := flag.NewFlagSet("sluice worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, workerUsage); fs.PrintDefaults() }
	url := fs.String("database-url", "", "PostgreSQL primary URL (env DATABASE_URL)")
	dryRun := fs.Bool("dry-run", false, "with migrate: list pending migrations and invalid indexes, change nothing")
	timeout := fs.Duration("migrate-timeout", 30*time.Minute, "give up migrating after this long")
	redisURL := fs.String("redis-url", "", "Redis of the cache, for warming (env REDIS_URL)")
	keyPrefix := fs.String("redis-key-prefix", envOr(getenv, "REDIS_KEY_PREFIX", "sluice:"), "key prefix of the cache in Redis (env REDIS_KEY_PREFIX)")
	envoyURL := fs.String("envoy-url", getenv("ENVOY_URL"), "Envoy listener warming requests go through, e.g. "+warm.DefaultEnvoyURL+" (env ENVOY_URL)")
	tenants := fs.String("warm-tenants", getenv("WARM_TENANTS"), "comma-separated tenant identities to warm (env WARM_TENANTS)")
	tenantHeader := fs.String("warm-tenant-header", envOr(getenv, "WARM_TENANT_HEADER", warm.DefaultTenantHeader), "request header carrying the tenant identity (env WARM_TENANT_HEADER)")
	warmHost := fs.String("warm-host", getenv("WARM_HOST"), "Host header of warming requests, when clients use another authority than --envoy-url's (env WARM_HOST)")
	interval := fs.Duration("warm-interval", envDuration(getenv, "WARM_INTERVAL", warm.DefaultInterval), "time between warming rounds (env WARM_INTERVAL)")
	topN := fs.Int("warm-top-n", envInt(getenv, "WARM_TOP_N", warm.DefaultTopN), "hot keys per tenant considered each round (env WARM_TOP_N)")
	concurrency := fs.Int("warm-concurrency", envInt(getenv, "WARM_CONCURRENCY", warm.DefaultConcurrency), "warming requests in flight at most (env WARM_CONCURRENCY)")
	early := fs.Float64("warm-early-refresh", envFloat(getenv, "WARM_EARLY_REFRESH", warm.DefaultEarlyRefresh), "refresh once less than this fraction of an entry's freshness lifetime is left (env WARM_EARLY_REFRESH)")
	metricsAddr := fs.String("metrics-addr", getenv("WORKER_METRICS_ADDR"), "serve the warmer's /metrics on this address, e.g. :9092 (env WORKER_METRICS_ADDR)")
	templates := fs.String("warm-templates", getenv("WARM_TEMPLATES"), "comma-separated paths warmed for the most active tenants, {tenant} substituted (env WARM_TEMPLATES)")
	activeN := fs.Int("warm-active-tenants", envInt(getenv, "WARM_ACTIVE_TENANTS", 20), "how many of the most active tenants (activities in the last day) get --warm-templates (env WARM_ACTIVE_TENANTS)")
	reqTimeout := fs.Duration("warm-request-timeout", envDuration(getenv, "WARM_REQUEST_TIMEOUT", warm.DefaultRequestTimeout), "timeout of each warming request (env WARM_REQUEST_TIMEOUT)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// The URLs' environment variables are read after parsing, not as flag
	// defaults: -h would print a password they carry.
	if *url == "" {
		*url = getenv("DATABASE_URL")
	}
	if *redisURL == "" {
		*redisURL = getenv("REDIS_URL")
	}
	if !migrateOnly && fs.Arg(0) == "migrate" { // flags before the subcommand
		migrateOnly = true
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return 2
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice worker: unexpected argument %q\n\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	if *dryRun && !migrateOnly {
		fmt.Fprintln(stderr, "sluice worker: --dry-run goes with 'sluice worker migrate'")
		return 2
	}
	warming := !migrateOnly && *redisURL != "" && *envoyURL != ""
	var tenantList []string
	for t := range strings.SplitSeq(*tenants, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tenantList = append(tenantList, t)
		}
	}
	var templateList []string
	for p := range strings.SplitSeq(*templates, ",") {
		if p = strings.TrimSpace(p); p != "" {
			if !strings.HasPrefix(p, "/") {
				fmt.Fprintf(stderr, "sluice worker: --warm-templates path %q must start with /\n", p)
				return 2
			}
			templateList = append(templateList, p)
		}
	}
	if warming && len(tenantList) == 0 && len(templateList) == 0 {
		fmt.Fprintln(stderr, "sluice worker: cache warming (--redis-url and --envoy-url) needs --warm-tenants or --warm-templates")
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	d, err := db.Open(ctx, db.Config{URL: *url, MaxConns: 2}, nil, log)
	if err != nil {
		log.Error("sluice worker: open database", "err", err)
		return 1
	}
	defer d.Close()
	mctx, cancel := context.WithTimeout(ctx, *timeout)
	rep, err := db.Migrate(mctx, d.Primary(), db.MigrateOptions{DryRun: *dryRun, Log: log})
	cancel()
	if err != nil {
		log.Error("sluice worker: migrate", "err", err)
		return 1
	}
	if *dryRun {
		for _, m := range rep.Pending {
			fmt.Fprintln(stdout, "pending migration:", m)
		}
		for _, ix := range rep.Invalid {
			fmt.Fprintln(stdout, "invalid index:", ix)
		}
		fmt.Fprintf(stdout, "%d pending migrations, %d invalid indexes\n", len(rep.Pending), len(rep.Invalid))
		return 0
	}
	if migrateOnly {
		return 0
	}
	if warming {
		if err := runWarmer(ctx, log, *redisURL, *keyPrefix, *metricsAddr, warm.Config{
			EnvoyURL: *envoyURL, Host: *warmHost, Tenants: tenantList, TenantHeader: *tenantHeader,
			Interval: *interval, TopN: *topN, Concurrency: *concurrency, EarlyRefresh: *early,
			RequestTimeout: *reqTimeout, Templates: templateList,
			ActiveTenants: activeTenants(d.Primary(), *activeN, len(templateList) > 0),
		}); err != nil {
			log.Error("sluice worker: cache warming", "err", err)
			return 1
		}
	} else {
		log.Info("sluice worker: migrated; waiting for SIGTERM (no cache warming: set --redis-url and --envoy-url)")
		<-ctx.Done()
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("sluice worker stopped", "err", err)
		return 1
	}
	log.Info("sluice worker stopped")
	return 0
}

// activeTenants returns the query the warmer uses to find the most active
// tenants (by activities in the last day), or nil when no templates need it.
func activeTenants(pool *pgxpool.Pool, n int, needed bool) func(context.Context) ([]string, error) {
	if !needed || n <= 0 {
		return nil
	}
	return func(ctx context.Context) ([]string, error) {
		rows, err := pool.Query(ctx, `SELECT tenant_id FROM activities
			WHERE created_at > now() - interval '1 day'
			GROUP BY tenant_id ORDER BY count(*) DESC, tenant_id LIMIT $1`, n)
		if err != nil {
			return nil, fmt.Errorf("active tenants: %w", err)
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
}

// runWarmer warms the cache until ctx ends.
func runWarmer(ctx context.Context, log *slog.Logger, redisURL, keyPrefix, metricsAddr string, cfg warm.Config) error {
	rc := redisconn.Config{URL: redisURL, KeyPrefix: keyPrefix}.WithDefaults()
	if err := rc.Validate(); err != nil {
		return err
	}
	rdb, err := redisconn.New(rc)
	if err != nil {
		return err
	}
	defer rdb.Close()
	// Only HotPaths is used: the Store is not run, and its L1 stays empty.
	store, err := cachefilter.NewStore(cachefilter.StoreConfig{}, rdb, rc.KeyPrefix, nil, log, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	reg := metrics.NewRegistry(buildVersion())
	w, err := warm.New(cfg, store, reg, log)
	if err != nil {
		return err
	}
	defer w.Close()
	if metricsAddr != "" {
		ln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler(reg))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		served := make(chan struct{})
		go func() { defer close(served); _ = srv.Serve(ln) }()
		defer func() { _ = srv.Close(); <-served }()
	}
	log.Info("sluice worker: migrated; warming the cache", "redis", rc.Redacted(), "envoy", cfg.EnvoyURL, "tenants", len(cfg.Tenants))
	return w.Run(ctx)
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

func envDuration(getenv func(string) string, name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(getenv(name)); err == nil {
		return d
	}
	return def
}

func envInt(getenv func(string) string, name string, def int) int {
	if n, err := strconv.Atoi(getenv(name)); err == nil {
		return n
	}
	return def
}

func envFloat(getenv func(string) string, name string, def float64) float64 {
	if f, err := strconv.ParseFloat(getenv(name), 64); err == nil {
		return f
	}
	return def
}
