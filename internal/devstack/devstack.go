// Package devstack runs `sluice dev`: the whole Sluice path in one process —
// an Envoy emulator as the HTTP gateway, Sluice's gRPC services, Redis (the
// configured one, or an embedded Redis-protocol server) and an upstream API
// (the built-in demo, or --upstream). Production runs Envoy instead of the
// emulator; every other piece is the production code.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluicehq/sluice/batch"
	"github.com/sluicehq/sluice/cachefilter"
	examples "github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/envoy/emulator"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/internal/app"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/demoapi"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

// embeddedRedisTimeout is the cache's Redis budget with the embedded server.
const embeddedRedisTimeout = 100 * time.Millisecond

// DemoTiers is the static tier map `sluice dev` uses when the config names no
// tiers: a few demo tenants in each tier.
var DemoTiers = map[string]string{
	"initech":  "free",
	"hooli":    "free",
	"globex":   "basic",
	"acme":     "pro",
	"umbrella": "enterprise",
}

// Options configure a dev stack.
type Options struct {
	// Listen is the gateway's address (default ":8080").
	Listen string
	// Upstream is the API behind the gateway; "" runs the built-in demo API.
	Upstream string
	// Sluice is the Sluice config (defaults applied). Its Redis URL is used
	// when RedisSet; otherwise an embedded Redis-protocol server runs.
	Sluice   config.Config
	RedisSet bool
	// EnvoyConfig is the bootstrap the emulator follows; nil = envoy.yaml.
	EnvoyConfig []byte
	// NoCompression runs the gateway without the bootstrap's compressor
	// filters, as an envoy.yaml without them would (`sluice dev
	// --compression=false`): responses reach clients as the upstream and the
	// cache produce them, the way HTTP caches are usually compared.
	NoCompression bool
	// Stages are extra ext_proc pipeline options (tests add stages here).
	Stages []extproc.Option
}

// Stack is a running dev stack. Build it with Start; stop it by cancelling
// Run's context.
type Stack struct {
	opts     Options
	log      *slog.Logger
	app      *app.App
	mini     *miniredis.Miniredis
	demo     *http.Server
	demoLn   net.Listener
	gw       *emulator.Gateway
	gwSrv    *http.Server
	gwLn     net.Listener
	conn     *grpc.ClientConn
	upstream string
	// rulesFile names the embedded rate-limit rules in force, "" when the
	// config names its own.
	rulesFile string
}

// Start builds every piece and opens every listener, so the addresses are
// known before Run.
func Start(ctx context.Context, o Options, log *slog.Logger) (s *Stack, err error) {
	if o.Listen == "" {
		o.Listen = ":8080"
	}
	s = &Stack{opts: o, log: log}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()

	cfg := o.Sluice
	if !o.RedisSet {
		s.mini = miniredis.NewMiniRedis()
		if err := s.mini.StartAddr("127.0.0.1:0"); err != nil {
			return s, fmt.Errorf("dev: embedded redis: %w", err)
		}
		cfg.Redis.URL = "redis://" + s.mini.Addr()
		// The embedded server answers from this process's own goroutines, so a
		// busy machine delays it like a GC pause, not like a network: the cache's
		// per-call budget left at its default (20 ms, sized for a Redis a network
		// hop away) becomes 100 ms, so that a loaded laptop does not trip the
		// breaker and drop the in-process cache at start.
		if cfg.Cache.Store.RedisTimeout == cachefilter.DefaultRedisTimeout {
			cfg.Cache.Store.RedisTimeout = embeddedRedisTimeout
		}
	}
	if len(cfg.ExtProc.Identity.Tiers) == 0 && o.Upstream == "" {
		// The demo API's tenants; in front of the user's API every tenant
		// has the default tier unless the config maps it.
		cfg.ExtProc.Identity.Tiers = DemoTiers
	}
	// The gateway listens first: batch sub-requests go back through it, so
	// they meet the same filters as a direct call (the batch issue's rule).
	if s.gwLn, err = net.Listen("tcp", o.Listen); err != nil {
		return s, fmt.Errorf("dev: listen %s: %w", o.Listen, err)
	}
	if cfg.Batch.ListenerURL == batch.DefaultListenerURL {
		cfg.Batch.ListenerURL = "http://127.0.0.1:" + strconv.Itoa(s.gwLn.Addr().(*net.TCPAddr).Port)
	}
	appOpts := app.Options{Stages: o.Stages}
	if cfg.RateLimit.ConfigPath == "" {
		// The demo API gets the tiered example rules, so that its tour can
		// show a 429; the user's own API gets loose ones (config/ratelimit/
		// dev.yaml), so that a browser or a test suite is not refused.
		file := ratelimitsvc.File{Name: "config/ratelimit/tiers.yaml", Data: examples.RateLimitTiers}
		if o.Upstream != "" {
			file = ratelimitsvc.File{Name: "config/dev/ratelimit.yaml", Data: examples.RateLimitDev}
		}
		rules, err := ratelimitsvc.ParseRules([]ratelimitsvc.File{file})
		if err != nil {
			return s, fmt.Errorf("dev: embedded rules: %w", err)
		}
		appOpts.Rules = rules
		s.rulesFile = file.Name
	}
	if s.app, err = app.New(ctx, cfg, log, "dev", appOpts); err != nil {
		return s, err
	}

	s.upstream = o.Upstream
	if s.upstream == "" {
		store := demoapi.NewMemory(nil)
		tenants := make([]string, 0, len(DemoTiers))
		for t := range DemoTiers {
			tenants = append(tenants, t)
		}
		sort.Strings(tenants)
		store.Seed(append(tenants, "anonymous")...)
		if s.demoLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return s, fmt.Errorf("dev: demo api: %w", err)
		}
		s.demo = &http.Server{Handler: demoapi.New(store), ReadHeaderTimeout: 5 * time.Second}
		s.upstream = "http://" + s.demoLn.Addr().String()
	} else if u, err := url.Parse(s.upstream); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return s, fmt.Errorf("dev: --upstream %q must be an http:// or https:// URL", o.Upstream)
	}

	envoyYAML := o.EnvoyConfig
	if envoyYAML == nil {
		envoyYAML = envoy.DefaultConfig
	}
	settings, err := envoy.ParseSettings(envoyYAML)
	if err != nil {
		return s, fmt.Errorf("dev: envoy config: %w", err)
	}
	if o.NoCompression {
		withoutCompressors(settings)
	}
	if err := cfg.Cache.Config.CheckEnvoy(settings.ExtProc.GetMaxMessageTimeout().AsDuration()); err != nil {
		return s, fmt.Errorf("dev: envoy config: %w", err)
	}
	if s.conn, err = grpc.NewClient(s.app.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return s, fmt.Errorf("dev: grpc client: %w", err)
	}
	s.gw, err = emulator.New(emulator.Options{
		Settings:  settings,
		ExtProc:   extprocsvc.NewExternalProcessorClient(s.conn),
		RateLimit: rlsv3.NewRateLimitServiceClient(s.conn),
		Upstreams: map[string]string{"app": s.upstream},
		Logger:    log,
	})
	if err != nil {
		return s, fmt.Errorf("dev: emulator: %w", err)
	}
	s.gwSrv = &http.Server{
		Handler:           s.gw,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    60 << 10, // Envoy's max_request_headers_kb default
	}
	return s, nil
}

// URL is the gateway's base URL.
func (s *Stack) URL() string { return "http://" + hostPort(s.gwLn.Addr()) }

// AdminURL is Sluice's admin base URL.
func (s *Stack) AdminURL() string { return "http://" + hostPort(s.app.AdminAddr()) }

// Upstream is the API the gateway forwards to.
func (s *Stack) Upstream() string { return s.upstream }

// withoutCompressors removes the compressor filters from the emulated chain.
func withoutCompressors(st *envoy.Settings) {
	drop := map[string]bool{}
	for _, c := range st.Compressors {
		drop[c.Name] = true
	}
	st.Compressors = nil
	filters := st.Filters[:0:0]
	for _, f := range st.Filters {
		if !drop[f] {
			filters = append(filters, f)
		}
	}
	st.Filters = filters
}

func hostPort(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		return fmt.Sprintf("localhost:%d", ta.Port)
	}
	return a.String()
}

// Run serves until ctx ends, then shuts every piece down.
func (s *Stack) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.app.Run(gctx) })
	serve := func(srv *http.Server, ln net.Listener) {
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			// Connections that never carried a request (a client's spare
			// dials, e.g. the batch runner's) count as active for 5 s in
			// Shutdown; after a short grace the rest are closed.
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				_ = srv.Close()
			}
			return nil
		})
	}
	serve(s.gwSrv, s.gwLn)
	if s.demo != nil {
		serve(s.demo, s.demoLn)
	}
	err := g.Wait()
	s.Close()
	return err
}

// Close releases everything Start acquired; safe on a partial Stack.
func (s *Stack) Close() {
	if s.gw != nil {
		s.gw.Close()
	}
	if s.conn != nil {
		s.conn.Close()
	}
	if s.gwLn != nil {
		s.gwLn.Close()
	}
	if s.demoLn != nil {
		s.demoLn.Close()
	}
	if s.app != nil {
		s.app.Close()
	}
	if s.mini != nil {
		s.mini.Close()
	}
}

// Banner writes what a newcomer needs: the addresses, who the callers are
// (the demo tenants by tier, or how callers of the user's API are told
// apart), the rate limits in force and a few commands to try.
func (s *Stack) Banner(w io.Writer) {
	redis := "embedded Redis-protocol server (miniredis; set REDIS_URL to use a real Redis)"
	if s.mini == nil {
		redis = s.opts.Sluice.Redis.Redacted()
	}
	upstream := s.upstream + "   (the built-in demo contacts API)"
	if s.opts.Upstream != "" {
		upstream = s.upstream + "   (your API: every method, body and header passes through)"
	}
	fmt.Fprintf(w, `
  Sluice dev: one process standing in for Envoy + Sluice + Redis in front of an API.
  Production runs real Envoy in front of 'sluice serve'; this gateway only
  emulates Envoy's filters as envoy/envoy.yaml configures them.

  gateway   %s   (send requests here)
  upstream  %s
  sluice    grpc %s, admin %s (/metrics, /readyz, /debug/ratelimit)
  redis     %s

`, s.URL(), upstream, s.app.GRPCAddr(), s.AdminURL(), redis)
	if s.opts.Upstream == "" {
		s.demoCallers(w)
	} else {
		fmt.Fprintf(w, `  Callers: a request without x-tenant-id is the tenant "anonymous", whose
  cache every anonymous caller shares; x-tenant-id: NAME makes it tenant NAME
  (tier %q unless --config maps it in extproc.identity.tiers), and
  x-user-id: ID a user of it. The cache follows your API's Cache-Control,
  Expires and Vary (docs/cache.md).

`, s.opts.Sluice.ExtProc.Identity.DefaultTier)
	}
	s.rateLimits(w)
	if s.opts.Upstream == "" {
		fmt.Fprintf(w, `  Try:
    curl -i %s/api/v1/contacts -H 'x-tenant-id: acme'
    curl -i %s/api/v1/dashboard/stats -H 'x-tenant-id: initech'
    for i in $(seq 1 30); do curl -s -o /dev/null -w '%%{http_code} ' %s/api/v1/contacts; done; echo
    curl -s %s/metrics | grep '^sluice_'

`, s.URL(), s.URL(), s.URL(), s.AdminURL())
		return
	}
	fmt.Fprintf(w, `  Try (twice: a response your API lets shared caches store comes back
  with x-cache: HIT-L1, Age and Cache-Status the second time):
    curl -si %s/ | grep -iE '^(HTTP|x-cache|age|cache-status|ratelimit)'
    curl -s %s/metrics | grep '^sluice_cache'

`, s.URL(), s.AdminURL())
}

// demoCallers lists the demo tenants by tier.
func (s *Stack) demoCallers(w io.Writer) {
	byTier := map[string][]string{}
	tiers := s.opts.Sluice.ExtProc.Identity.Tiers
	if len(tiers) == 0 {
		tiers = DemoTiers
	}
	for t, tier := range tiers {
		byTier[tier] = append(byTier[tier], t)
	}
	fmt.Fprintln(w, "  Demo tenants (send x-tenant-id; optional x-user-id; none = anonymous):")
	for _, tier := range []string{"free", "basic", "pro", "enterprise"} {
		if ts := byTier[tier]; len(ts) > 0 {
			sort.Strings(ts)
			fmt.Fprintf(w, "    %-11s %s\n", tier, strings.Join(ts, ", "))
		}
	}
	fmt.Fprintln(w)
}

// rateLimits lists the rules in force, one line per limited descriptor.
func (s *Stack) rateLimits(w io.Writer) {
	source := "from " + s.opts.Sluice.RateLimit.ConfigPath
	switch s.rulesFile {
	case "":
	case "config/dev/ratelimit.yaml":
		source = "config/dev/ratelimit.yaml, loose for development; --ratelimit-config FILE for others"
	default:
		source = s.rulesFile + "; --ratelimit-config FILE for others"
	}
	fmt.Fprintf(w, "  Rate limits in force (%s):\n", source)
	lines := RuleLines(s.app.RLS.Rules())
	if len(lines) == 0 {
		lines = []string{"none: every request is let through"}
	}
	for _, l := range lines {
		fmt.Fprintf(w, "    %s\n", l)
	}
	fmt.Fprintln(w)
}
