// Package app wires Sluice's components into one running process: the gRPC
// server (rate limit service, ext_proc server, health, reflection) and the
// admin HTTP server.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/sluicehq/sluice/batch"
	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/internal/admin"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/grpccodec"
	"github.com/sluicehq/sluice/internal/metrics"
	"github.com/sluicehq/sluice/internal/pgtier"
	"github.com/sluicehq/sluice/internal/redisconn"
	"github.com/sluicehq/sluice/internal/tier"
	"github.com/sluicehq/sluice/internal/tlsfiles"
	"github.com/sluicehq/sluice/ratelimitsvc"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// rlsServiceName is the gRPC service name Envoy calls and health-checks.
const rlsServiceName = "envoy.service.ratelimit.v3.RateLimitService"

// The gRPC server's HTTP/2 flow-control windows (static: see GRPCTuning).
const (
	streamWindow = 1 << 20
	connWindow   = 8 << 20
)

// GRPCTuning returns the gRPC server options that cut Sluice's CPU per call, the same for
// every deployment (bench/rlsfloor -tuned serves with them too, to tell them apart from
// the rest of Sluice in the benchmarks).
func GRPCTuning() []grpc.ServerOption {
	return []grpc.ServerOption{
		// A pool of stream workers instead of a goroutine per RPC: measured
		// 7-10 µs less CPU per ShouldRateLimit (no per-call stack growth);
		// RPCs beyond the pool still get their own goroutine. An ext_proc
		// stream holds its worker for the whole HTTP request, upstream time
		// included, so the pool is sized for concurrent streams rather than
		// cores: with 4 per core, 32 streams at once ran mostly on fresh
		// goroutines and stack growth took 4.9% of the CPU of cache hits
		// (1.1% with 32 per core).
		grpc.NumStreamWorkers(uint32(32 * runtime.GOMAXPROCS(0))),
		// Envoy's messages marshaled by go-control-plane's vtprotobuf code when built with
		// -tags vtprotobuf (measured 1.4µs less per RateLimitResponse); gRPC's codec otherwise.
		grpc.ForceServerCodecV2(grpccodec.New()),
		// Static flow-control windows. With gRPC's default dynamic windows the server
		// estimates the link's bandwidth-delay product by sending Envoy a PING (and a
		// WINDOW_UPDATE) whenever data arrives and none is outstanding: with small messages
		// (every RLS call, most ext_proc messages) the estimate never grows and never stops,
		// so about one PING per round trip per connection, each to be acknowledged by Envoy.
		// Sluice sits beside Envoy (a round trip of microseconds), where a fixed window of
		// 1 MiB per stream (a whole default batch body) and 8 MiB per connection is never
		// the bottleneck, and bounds what a stream can push unread (dynamic windows grow to
		// 16 MiB). Measured with bench/rlsload, exact mode, against the build before: at 32
		// callers server reads per decision 0.74 -> 0.61 and client writes 0.34 -> 0.25, CPU
		// per decision of server, Redis and client 0-4% lower; at 4 callers 5-11% lower and
		// 1.04-1.13x the decisions/s (TestNoFlowControlPings counts the frames).
		grpc.StaticStreamWindowSize(streamWindow),
		grpc.StaticConnWindowSize(connWindow),
	}
}

// App is one Sluice process. Build it with New (no sockets are bound), bind
// its ports with Listen, serve with Run, and Close it; Close releases what New
// and Listen acquired and is safe after a failed or partial New. Run calls
// Listen itself when it was not called. Not safe for concurrent use, except
// that Close may be called while Run returns.
type App struct {
	cfg      config.Config
	log      *slog.Logger
	Registry metrics.Registry // where components register their metrics; served on /metrics

	rdb       redis.UniversalClient
	lim       *limiter.Limiter
	RLS       *ratelimitsvc.Service
	DB        *db.DB // nil without a database section
	batch     *batch.Runner
	tiers     *pgtier.Store
	ExtProc   *extproc.Server
	Cache     *cachefilter.Store     // nil when cache.enabled is false
	refresher *cachefilter.Refresher // nil without the cache or background refresh
	reloader  *ratelimitsvc.Reloader
	health    *health.Server
	grpc      *grpc.Server
	admin     *admin.Server

	grpcLn, adminLn net.Listener
	redisOK         atomic.Bool // Redis answered at least once
}

// Options are the parts of an App that are not configuration: alternative
// dependencies and extra pipeline stages. The zero value is the production setup.
type Options struct {
	// Tiers resolves tenants to tiers; nil uses the config's static map.
	Tiers tier.Store
	// Stages are extra ext_proc pipeline options (extproc.WithStages, ...).
	Stages []extproc.Option
	// Rules serve when the config names no rules file (sluice dev's embedded
	// example); nil means no limits.
	Rules *ratelimitsvc.Rules
	// Registry is where components register their metrics, served on
	// /metrics; nil means metrics.NewRegistry (with the Go, process and
	// build-info collectors). Tests pass a metricstest.Registry to read it.
	Registry metrics.Registry
}

// New builds every component and loads the rate limit rules (an invalid rule
// file is an error: Sluice does not start on a config it cannot serve). It
// binds no port: Listen does. Redis being down is not an error: Sluice
// starts, fails open and picks Redis up when it returns.
func New(ctx context.Context, cfg config.Config, log *slog.Logger, version string, opts Options) (a *App, err error) {
	a = &App{cfg: cfg, log: log, Registry: opts.Registry}
	if a.Registry == nil {
		a.Registry = metrics.NewRegistry(version)
	}
	defer func() {
		if err != nil {
			_ = a.Close()
			a = nil
		}
	}()
	if a.rdb, err = redisconn.New(cfg.Redis, log); err != nil {
		return a, err
	}
	if a.lim, err = limiter.New(a.rdb, cfg.RateLimit.LimiterConfig(), a.Registry); err != nil {
		return a, fmt.Errorf("app: limiter: %w", err)
	}
	if a.RLS, err = ratelimitsvc.New(cfg.RateLimit, a.lim, cfg.Redis.KeyPrefix, a.Registry, log); err != nil {
		return a, fmt.Errorf("app: ratelimit: %w", err)
	}
	if cfg.RateLimit.ConfigPath != "" {
		a.reloader = ratelimitsvc.NewReloader(cfg.RateLimit.ConfigPath, a.RLS, cfg.RateLimit.PollInterval, log)
		if err = a.reloader.Load(); err != nil {
			return a, fmt.Errorf("app: rate limit rules: %w", err)
		}
	} else if opts.Rules != nil {
		a.RLS.SetRules(opts.Rules)
	} else {
		log.Warn("no rate limit rules configured (--ratelimit-config); every descriptor is answered OK")
		a.RLS.SetRules(&ratelimitsvc.Rules{})
	}

	if err := redisconn.Ping(ctx, a.rdb, cfg.Redis.DialTimeout+cfg.Redis.ReadTimeout); err != nil {
		log.Warn("redis not reachable at start; rate limits fail open until it is", "redis", cfg.Redis.Redacted(), "err", err)
	} else {
		a.redisOK.Store(true)
	}

	tiers := opts.Tiers
	if tiers == nil && cfg.Database.URL != "" {
		// Tenant tiers from PostgreSQL: held in memory, refreshed by
		// LISTEN/NOTIFY (Run), never a query per request.
		if a.DB, err = db.Open(ctx, cfg.Database.Config, a.Registry, log); err != nil {
			return a, fmt.Errorf("app: database: %w", err)
		}
		if a.tiers, err = pgtier.New(a.DB, cfg.Database.Tiers, log); err != nil {
			return a, fmt.Errorf("app: tier store: %w", err)
		}
		tiers = a.tiers
	}

	stages := opts.Stages
	if cfg.Cache.Enabled == nil || *cfg.Cache.Enabled {
		// The cache stage goes first among the extra stages: extproc.New
		// runs identity → WithStages… → metrics, so the cache sees the
		// tenant and metrics see cached answers.
		if a.Cache, err = cachefilter.NewStore(cfg.Cache.Store, cachefilter.StoreOptions{Redis: a.rdb, KeyPrefix: cfg.Redis.KeyPrefix, Registerer: a.Registry, Log: log}); err != nil {
			return a, fmt.Errorf("app: cache store: %w", err)
		}
		stageOpts := cachefilter.StageOptions{Log: log}
		if rc := cfg.Cache.Refresh; rc.On() {
			// Background refreshes go through the Envoy listener, like batch
			// items (the batch section names it unless cache.refresh does).
			if rc.ListenerURL == "" {
				rc.ListenerURL = cfg.Batch.ListenerURL
			}
			if a.refresher, err = cachefilter.NewRefresher(rc, a.Registry, log); err != nil {
				return a, fmt.Errorf("app: cache refresh: %w", err)
			}
			stageOpts.Refresher = a.refresher
		}
		stage, err := cachefilter.NewStage(cfg.Cache.Config, a.Cache, stageOpts)
		if err != nil {
			return a, fmt.Errorf("app: cache: %w", err)
		}
		stages = append([]extproc.Option{extproc.WithStages(stage)}, stages...)
	}
	// The batch stage runs before the cache: a batch is answered whole
	// (identity → batch → cache → metrics); its sub-requests come back
	// through Envoy and meet the cache and the rate limits one by one.
	if a.batch, err = batch.New(cfg.Batch); err != nil {
		return a, fmt.Errorf("app: batch: %w", err)
	}
	stages = append([]extproc.Option{extproc.WithStages(batch.NewStage(a.batch, log))}, stages...)
	if a.ExtProc, err = extproc.New(cfg.ExtProc, tiers, a.Registry, log, stages...); err != nil {
		return a, fmt.Errorf("app: extproc: %w", err)
	}

	a.health = health.NewServer()
	grpcOpts := []grpc.ServerOption{
		// ext_proc carries bodies (BUFFERED batch requests, cached responses):
		// the larger of the two limits applies to the whole server.
		grpc.MaxRecvMsgSize(max(cfg.Server.MaxRecvMsgBytes, cfg.ExtProc.MaxRecvMsgBytes(), int(cfg.Batch.MaxRequestBytes)+1<<20)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	grpcOpts = append(grpcOpts, GRPCTuning()...)
	if t := cfg.Server.GRPCTLS; t.Enabled() {
		// TLS, and mutual TLS with a client CA, from files read again when
		// they change (certificate rotation without a restart).
		files, err := tlsfiles.New(tlsfiles.Files{Cert: t.CertFile, Key: t.KeyFile, ClientCA: t.ClientCAFile}, log)
		if err != nil {
			return a, fmt.Errorf("app: grpc_tls: %w", err)
		}
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(files.Config())))
	}
	a.grpc = grpc.NewServer(grpcOpts...)
	a.RLS.Register(a.grpc)
	a.ExtProc.Register(a.grpc)
	healthpb.RegisterHealthServer(a.grpc, a.health)
	reflection.Register(a.grpc)

	token, err := cfg.Server.Token()
	if err != nil {
		return a, fmt.Errorf("app: %w", err)
	}
	a.admin = admin.New(log, admin.Options{Token: token, Pprof: cfg.Server.Pprof})
	a.admin.Handle("GET /metrics", metrics.Handler(a.Registry))
	a.admin.HandleProtected("GET /debug/ratelimit", a.RLS.DebugHandler())
	if a.Cache != nil {
		a.admin.HandleProtected("POST /cache/purge", cachefilter.PurgeHandler(cfg.Cache.Config, a.Cache, cfg.Cache.Store.PurgeTimeout+time.Second))
	}
	if !loopback(cfg.Server.AdminAddr) && token == "" {
		log.Warn("the admin port listens beyond loopback without a token: anyone who reaches it can purge any tenant's cache (set SLUICE_ADMIN_TOKEN or server.admin_token_file)", "admin", cfg.Server.AdminAddr)
	}
	if !loopback(cfg.Server.GRPCAddr) && cfg.Server.GRPCTLS.ClientCAFile == "" {
		log.Warn("the gRPC port listens beyond loopback without client certificates: anyone who reaches it can read any tenant's cached answers and spend any tenant's quota; restrict it to Envoy (network policy, server.grpc_tls.client_ca_file)", "grpc", cfg.Server.GRPCAddr)
	}
	a.admin.AddCheck("ratelimit_rules", a.RLS.Ready)
	a.admin.AddCheck("redis", a.redisReady)
	if a.tiers != nil {
		a.admin.AddCheck("tiers", func(context.Context) error {
			select {
			case <-a.tiers.Loaded():
				return nil
			default:
				return errors.New("tenant tiers not loaded from PostgreSQL yet")
			}
		})
	}
	return a, nil
}

// Listen binds the gRPC and admin addresses of the config (server.grpc_addr,
// server.admin_addr; ":0" picks free ports, see GRPCAddr and AdminAddr).
// Calling it twice is an error; Close releases the ports.
func (a *App) Listen(ctx context.Context) error {
	if a.grpcLn != nil {
		return errors.New("app: already listening")
	}
	var lc net.ListenConfig
	grpcLn, err := lc.Listen(ctx, "tcp", a.cfg.Server.GRPCAddr)
	if err != nil {
		return fmt.Errorf("app: listen grpc: %w", err)
	}
	adminLn, err := lc.Listen(ctx, "tcp", a.cfg.Server.AdminAddr)
	if err != nil {
		_ = grpcLn.Close()
		return fmt.Errorf("app: listen admin: %w", err)
	}
	a.grpcLn, a.adminLn = grpcLn, adminLn
	return nil
}

// loopback reports whether a listen address binds loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// redisReady passes once Redis has answered once. Later outages do not flip
// readiness: the service fails open (or closed) by design, and a flapping
// readiness probe would only move traffic around.
func (a *App) redisReady(ctx context.Context) error {
	if a.redisOK.Load() {
		return nil
	}
	if err := redisconn.Ping(ctx, a.rdb, 250*time.Millisecond); err != nil {
		return err
	}
	a.redisOK.Store(true)
	return nil
}

// GRPCAddr is the bound gRPC address (useful with ":0"), nil before Listen.
func (a *App) GRPCAddr() net.Addr {
	if a.grpcLn == nil {
		return nil
	}
	return a.grpcLn.Addr()
}

// AdminAddr is the bound admin address, nil before Listen.
func (a *App) AdminAddr() net.Addr {
	if a.adminLn == nil {
		return nil
	}
	return a.adminLn.Addr()
}

// Run serves until ctx ends, then drains: health turns NOT_SERVING so Envoy's
// grpc_health_check stops sending, in-flight RPCs get ShutdownGrace to finish.
// It calls Listen first when the App is not listening yet.
func (a *App) Run(ctx context.Context) error {
	if a.grpcLn == nil {
		if err := a.Listen(ctx); err != nil {
			return err
		}
	}
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	a.health.SetServingStatus(rlsServiceName, healthpb.HealthCheckResponse_SERVING)
	a.health.SetServingStatus(extproc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := a.grpc.Serve(a.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("app: grpc serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		a.health.Shutdown()
		done := make(chan struct{})
		go func() { a.grpc.GracefulStop(); close(done) }()
		t := time.NewTimer(a.cfg.Server.ShutdownGrace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			a.log.Warn("shutdown grace expired; cutting remaining RPCs", "grace", a.cfg.Server.ShutdownGrace)
			a.grpc.Stop()
			<-done
		}
		return nil
	})
	g.Go(func() error { return a.admin.Serve(gctx, a.adminLn, a.cfg.Server.ShutdownGrace) })
	// Background loops end with the context; their context errors are the
	// normal way to stop, not failures.
	background := func(run func(context.Context) error) {
		g.Go(func() error {
			if err := run(gctx); err != nil && gctx.Err() == nil {
				return err
			}
			return nil
		})
	}
	if a.refresher != nil {
		background(a.refresher.Run)
	}
	if a.Cache != nil {
		background(a.Cache.Run)
	}
	if a.DB != nil {
		background(a.DB.Run)
		background(a.tiers.Run)
	}
	if a.reloader != nil && *a.cfg.RateLimit.Watch {
		background(a.reloader.Run)
	}
	a.log.Info("sluice serving", "grpc", a.GRPCAddr().String(), "admin", a.AdminAddr().String(), "redis", a.cfg.Redis.Redacted())
	return g.Wait()
}

// Close releases the Redis client, limiter and listeners. Safe to call on a
// partially built App and more than once.
func (a *App) Close() error {
	var errs []error
	if a.grpc != nil {
		// NumStreamWorkers starts the server's workers in NewServer: without
		// Run (which stops the server) they would outlive the App.
		a.grpc.Stop()
	}
	if a.grpcLn != nil {
		_ = a.grpcLn.Close()
	}
	if a.adminLn != nil {
		_ = a.adminLn.Close()
	}
	if a.refresher != nil {
		a.refresher.Close()
		a.refresher = nil
	}
	if a.Cache != nil {
		errs = append(errs, a.Cache.Close())
		a.Cache = nil
	}
	if a.lim != nil {
		errs = append(errs, a.lim.Close())
		a.lim = nil
	}
	if a.rdb != nil {
		errs = append(errs, a.rdb.Close())
		a.rdb = nil
	}
	if a.DB != nil {
		a.DB.Close()
		a.DB = nil
	}
	if a.batch != nil {
		a.batch.Close()
		a.batch = nil
	}
	return errors.Join(errs...)
}
