package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/internal/admin"
	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/redisconn"
	"github.com/sluicehq/sluice/internal/warm"
)

// defaultWorkerAdminAddr is serve's admin port: the image's HEALTHCHECK
// (Dockerfile) probes http://127.0.0.1:9091/readyz whichever command runs.
const defaultWorkerAdminAddr = "127.0.0.1:9091"

const workerUsage = `Usage:
  sluice worker [flags]                 migrate the database once, then stay up until SIGTERM
  sluice worker migrate [--dry-run] [flags]
                                        apply pending migrations and rebuild INVALID indexes, then exit;
                                        --dry-run lists them and changes nothing

Several workers may start at once: migration runners take turns on an advisory lock.
'sluice worker' serves /healthz (live), /readyz (migrations applied) and /metrics on
--admin-addr (default 127.0.0.1:9091, the port the image's HEALTHCHECK probes; set :9091
where Prometheus or a kubelet must reach it).
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
	fs.Usage = func() { fmt.Fprint(fs.Output(), workerUsage); fs.PrintDefaults() }
	url := fs.String("database-url", "", "PostgreSQL primary URL (env DATABASE_URL)")
	readURL := fs.String("database-read-url", "", "PostgreSQL read replica for the warmer's queries; the primary answers while it is unusable (env DATABASE_READ_URL)")
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
	adminAddr := fs.String("admin-addr", envOr(getenv, "WORKER_ADMIN_ADDR", envOr(getenv, "WORKER_METRICS_ADDR", defaultWorkerAdminAddr)),
		"serve /healthz, /readyz and /metrics on this address; not with migrate (env WORKER_ADMIN_ADDR)")
	fs.StringVar(adminAddr, "metrics-addr", *adminAddr, "old name of --admin-addr (env WORKER_METRICS_ADDR)")
	templates := fs.String("warm-templates", getenv("WARM_TEMPLATES"), "comma-separated paths warmed for the most active tenants, {tenant} substituted (env WARM_TEMPLATES)")
	activeN := fs.Int("warm-active-tenants", envInt(getenv, "WARM_ACTIVE_TENANTS", 20), "how many of the most active tenants (activities in the last day) get --warm-templates (env WARM_ACTIVE_TENANTS)")
	reqTimeout := fs.Duration("warm-request-timeout", envDuration(getenv, "WARM_REQUEST_TIMEOUT", warm.DefaultRequestTimeout), "timeout of each warming request (env WARM_REQUEST_TIMEOUT)")
	if code, ok := parseFlags(fs, args, true, stdout, stderr); !ok {
		return code
	}
	// The URLs' environment variables are read after parsing, not as flag
	// defaults: -h would print a password they carry.
	if *url == "" {
		*url = getenv("DATABASE_URL")
	}
	if *redisURL == "" {
		*redisURL = getenv("REDIS_URL")
	}
	if *readURL == "" {
		*readURL = getenv("DATABASE_READ_URL")
	}
	if !migrateOnly && fs.Arg(0) == "migrate" { // flags before the subcommand
		migrateOnly = true
		if code, ok := parseFlags(fs, fs.Args()[1:], true, stdout, stderr); !ok {
			return code
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
	setDefaultLogger(log)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// The long-running worker answers its probes from the start: live while
	// migrations run (an index built CONCURRENTLY can take long), ready once
	// they are applied.
	reg := metrics.NewRegistry(buildVersion())
	var migrated atomic.Bool
	if !migrateOnly {
		srv := admin.New(log, admin.Options{})
		srv.Handle("GET /metrics", metrics.Handler(reg))
		srv.AddCheck("migrations", func(context.Context) error {
			if !migrated.Load() {
				return errors.New("not applied yet")
			}
			return nil
		})
		ln, err := net.Listen("tcp", *adminAddr)
		if err != nil {
			log.Error("sluice worker: admin listener", "err", err)
			return 1
		}
		log.Info("sluice worker: admin listening", "addr", ln.Addr().String())
		actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		served := make(chan error, 1)
		go func() { served <- srv.Serve(actx, ln, time.Second) }()
		defer func() {
			cancel()
			if err := <-served; err != nil {
				log.Error("sluice worker: admin server", "err", err)
			}
		}()
	}

	d, err := db.Open(ctx, db.Config{URL: *url, ReadURL: *readURL, MaxConns: 2, ReadMaxConns: 2}, nil, log)
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
	migrated.Store(true)
	if warming {
		// The replica's lag check runs beside the warmer, whose reads go
		// through it.
		checkCtx, stopChecks := context.WithCancel(ctx)
		checks := make(chan struct{})
		go func() { defer close(checks); _ = d.Run(checkCtx) }()
		defer func() { stopChecks(); <-checks }()
		if err := runWarmer(ctx, log, reg, *redisURL, *keyPrefix, warm.Config{
			EnvoyURL: *envoyURL, Host: *warmHost, Tenants: tenantList, TenantHeader: *tenantHeader,
			Interval: *interval, TopN: *topN, Concurrency: *concurrency, EarlyRefresh: *early,
			RequestTimeout: *reqTimeout, Templates: templateList,
			ActiveTenants: activeTenants(d, *activeN, len(templateList) > 0),
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

// reader runs reads that tolerate replica lag (db.DB.Read).
type reader interface {
	Read(ctx context.Context, fn func(ctx context.Context, q db.Querier) error) error
}

// activeTenants returns the query the warmer uses to find the most active
// tenants (by activities in the last day), or nil when no templates need it.
// It reads the replica when one is usable: a ranking a few seconds old
// warms the same entries.
func activeTenants(r reader, n int, needed bool) func(context.Context) ([]string, error) {
	if !needed || n <= 0 {
		return nil
	}
	return func(ctx context.Context) ([]string, error) {
		var tenants []string
		err := r.Read(ctx, func(ctx context.Context, q db.Querier) error {
			rows, err := q.Query(ctx, `SELECT tenant_id FROM activities
				WHERE created_at > now() - interval '1 day'
				GROUP BY tenant_id ORDER BY count(*) DESC, tenant_id LIMIT $1`, n)
			if err != nil {
				return err
			}
			tenants, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("active tenants: %w", err)
		}
		return tenants, nil
	}
}

// runWarmer warms the cache until ctx ends, counting into reg.
func runWarmer(ctx context.Context, log *slog.Logger, reg *prometheus.Registry, redisURL, keyPrefix string, cfg warm.Config) error {
	rc := redisconn.Config{URL: redisURL, KeyPrefix: keyPrefix}.WithDefaults()
	if err := rc.Validate(); err != nil {
		return err
	}
	rdb, err := redisconn.New(rc, log)
	if err != nil {
		return err
	}
	defer rdb.Close()
	// Only HotPaths is used: the Store is not run, and its L1 stays empty.
	store, err := cachefilter.NewStore(cachefilter.StoreConfig{}, cachefilter.StoreOptions{Redis: rdb, KeyPrefix: rc.KeyPrefix, Log: log})
	if err != nil {
		return err
	}
	defer store.Close()
	w, err := warm.New(cfg, store, reg, log)
	if err != nil {
		return err
	}
	defer w.Close()
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
