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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

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

// embeddedRedisTimeout is the cache's and the rate limiter's Redis budget
// with the embedded server.
const embeddedRedisTimeout = 100 * time.Millisecond

// devRateLimitTimeout is the least timeout the emulated ratelimit filter
// gets. The gateway, Sluice and (embedded) Redis share this process and its
// cores, so a client flooding the gateway starves the rate limit call it
// waits for; past envoy.yaml's 20 ms the filter fails open
// (failure_mode_deny: false) and the flood goes through undecided: 1,068 of
// 10,000 requests from one anonymous address (60 a minute) did. It stays
// above the rate limiter's own Redis budget, so Sluice answers first.
const devRateLimitTimeout = 250 * time.Millisecond

// devMessageTimeout is the least ext_proc message_timeout the emulated
// gateway gets, for the same reason: with everything in one process, 100
// concurrent requests under the race detector kept Sluice's answers past
// envoy.yaml's 200 ms, the filter failed open (failure_mode_allow) and the
// requests reached the origin without identity or cache. It stays below
// max_message_timeout, which bounds the cache's collapse wait.
const devMessageTimeout = time.Second

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
	// Listen is the gateway's address (default ":8080"): envoy.yaml's
	// ingress listener.
	Listen string
	// InternalListen is where envoy.yaml's internal listener (batch items,
	// warming) is emulated (default "127.0.0.1:0"). Batch items go there
	// unless the Sluice config names another batch.listener_url.
	InternalListen string
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
	// Gateway, when set, is the base URL of a gateway this stack does not
	// start: a real Envoy running envoy.yaml, for the end-to-end tests on a
	// machine with Docker (scripts/envoy-e2e.sh). No emulator runs; Sluice's
	// gRPC listens on Sluice.Server.GRPCAddr and the upstream is served on
	// AppAddr, the addresses that gateway's `sluice` and `app` clusters name.
	Gateway string
	// MaxConnections bounds the gateway's open client connections; one past
	// it is closed at once, as Envoy's overload manager closes connections
	// past global_downstream_max_connections. 0: 50,000 (Envoy's edge
	// guidance), at most half the process's file descriptor limit, so that
	// held connections cannot leave none for Redis, gRPC and the upstream.
	MaxConnections int
	// AppAddr is where the upstream is served when Gateway is set (default
	// 127.0.0.1:8000, envoy.yaml's `app` cluster as scripts/envoy-e2e.sh maps it).
	AppAddr string
}

// External is the end-to-end tests' switch from the emulator to a real
// gateway, as scripts/envoy-e2e.sh sets it in the environment. The zero value
// (SLUICE_E2E_GATEWAY unset) keeps the emulator.
type External struct {
	Gateway    string // SLUICE_E2E_GATEWAY: the gateway's base URL, e.g. http://127.0.0.1:8080
	SluiceAddr string // SLUICE_E2E_SLUICE_ADDR (default 127.0.0.1:8081): its `sluice` cluster
	AppAddr    string // SLUICE_E2E_APP_ADDR (default 127.0.0.1:8000): its `app` cluster
}

// ExternalFromEnv reads External from getenv (os.Getenv in tests).
func ExternalFromEnv(getenv func(string) string) External {
	e := External{Gateway: getenv("SLUICE_E2E_GATEWAY"), SluiceAddr: getenv("SLUICE_E2E_SLUICE_ADDR"), AppAddr: getenv("SLUICE_E2E_APP_ADDR")}
	if e.Gateway == "" {
		return External{}
	}
	if e.SluiceAddr == "" {
		e.SluiceAddr = "127.0.0.1:8081"
	}
	if e.AppAddr == "" {
		e.AppAddr = "127.0.0.1:8000"
	}
	return e
}

// Apply points o at the external gateway, when there is one: Sluice's gRPC
// and the upstream go where its clusters point. It leaves o alone otherwise.
func (e External) Apply(o *Options) {
	if e.Gateway == "" {
		return
	}
	o.Gateway, o.AppAddr = e.Gateway, e.AppAddr
	o.Sluice.Server.GRPCAddr = e.SluiceAddr
}

// Stack is a running dev stack. Build it with Start; stop it by cancelling
// Run's context.
type Stack struct {
	opts   Options
	log    *slog.Logger
	app    *app.App
	mini   *miniredis.Miniredis
	demo   *http.Server
	demoLn net.Listener
	gw     *emulator.Gateway
	gwSrv  *http.Server
	gwLn   net.Listener
	fwd    *forwarder // the upstream at AppAddr, with an external gateway
	// The internal listener's gateway; nil when the Envoy config has none.
	inGW     *emulator.Gateway
	inSrv    *http.Server
	inLn     net.Listener
	conn     *grpc.ClientConn
	upstream string
	// rulesFile names the embedded rate-limit rules in force, "" when the
	// config names its own.
	rulesFile string
}

// CheckUpstream reports why raw cannot be the API behind the gateway. It
// must be an origin, scheme://host[:port], with no path, query, fragment or
// credentials: the gateway forwards each request's path unchanged to it, as
// Envoy forwards to a cluster, whose endpoints are addresses and have no
// path (a path prefix is a route's prefix_rewrite in envoy.yaml).
func CheckUpstream(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "":
		return fmt.Errorf("--upstream %q must be an http:// or https:// URL", raw)
	case u.User != nil:
		return fmt.Errorf("--upstream %q carries credentials; the gateway sends none of its own: give scheme://host[:port]", u.Redacted())
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return fmt.Errorf("--upstream %q has a path or query: requests keep their own path on the way to the upstream, as with an Envoy cluster; give scheme://host[:port] (for a prefix, use a route's prefix_rewrite in envoy.yaml)", raw)
	}
	return nil
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
		// Likewise the rate limiter's (20 ms): a Redis call past it fails the
		// decision open.
		if cfg.RateLimit.Timeout == ratelimitsvc.DefaultTimeout {
			cfg.RateLimit.Timeout = embeddedRedisTimeout
		}
		// This process is the embedded server's only client: no other replica can
		// invalidate, so the L1 needs no lease (a heartbeat that runs late on a
		// loaded machine would otherwise turn hits into misses).
		cfg.Cache.Store.SoleReplica = true
	}
	if len(cfg.ExtProc.Identity.Tiers) == 0 && o.Upstream == "" {
		// The demo API's tenants; in front of the user's API every tenant
		// has the default tier unless the config maps it.
		cfg.ExtProc.Identity.Tiers = DemoTiers
	}
	external := o.Gateway != ""
	if external && o.AppAddr == "" {
		o.AppAddr = "127.0.0.1:8000"
		s.opts.AppAddr = o.AppAddr
	}
	envoyYAML := o.EnvoyConfig
	if envoyYAML == nil {
		envoyYAML = envoy.DefaultConfig
	}
	listeners, err := envoy.ParseListeners(envoyYAML)
	if err != nil {
		return s, fmt.Errorf("dev: envoy config: %w", err)
	}
	ingress, internal := envoy.Find(listeners, envoy.IngressListener), envoy.Find(listeners, envoy.InternalListener)
	if ingress == nil {
		ingress = listeners[0]
	}
	defaultItems := cfg.Batch.ListenerURL == batch.DefaultListenerURL || cfg.Batch.ListenerURL == ""
	if external {
		// Batch items go to the external gateway's internal listener: the
		// gateway's host at the port envoy.yaml gives that listener.
		if defaultItems {
			cfg.Batch.ListenerURL = strings.TrimSuffix(o.Gateway, "/")
			if u, perr := url.Parse(o.Gateway); perr == nil && internal != nil {
				if _, port, serr := net.SplitHostPort(internal.Address); serr == nil {
					cfg.Batch.ListenerURL = u.Scheme + "://" + net.JoinHostPort(u.Hostname(), port)
				}
			}
		}
	} else {
		// The gateways listen first: batch sub-requests go back through the
		// internal one (or, in a config without it, the ingress one), so they
		// meet the same filters as a direct call (the batch issue's rule).
		if s.gwLn, err = net.Listen("tcp", o.Listen); err != nil {
			return s, fmt.Errorf("dev: listen %s: %w", o.Listen, err)
		}
		s.gwLn = newLimitListener(s.gwLn, maxConnections(o.MaxConnections, nofile()))
		itemsLn := s.gwLn
		if internal != nil {
			if o.InternalListen == "" {
				o.InternalListen = "127.0.0.1:0"
			}
			if s.inLn, err = net.Listen("tcp", o.InternalListen); err != nil {
				return s, fmt.Errorf("dev: listen %s: %w", o.InternalListen, err)
			}
			itemsLn = s.inLn
		}
		if defaultItems {
			cfg.Batch.ListenerURL = "http://127.0.0.1:" + strconv.Itoa(itemsLn.Addr().(*net.TCPAddr).Port)
		}
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
	if err = s.app.Listen(ctx); err != nil {
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
		demoAddr := "127.0.0.1:0"
		if external {
			demoAddr = o.AppAddr
		}
		if s.demoLn, err = net.Listen("tcp", demoAddr); err != nil {
			return s, fmt.Errorf("dev: demo api: %w", err)
		}
		s.demo = &http.Server{Handler: demoapi.New(store), ReadHeaderTimeout: 5 * time.Second}
		s.upstream = "http://" + s.demoLn.Addr().String()
	} else if err := CheckUpstream(s.upstream); err != nil {
		return s, fmt.Errorf("dev: %w", err)
	} else if external {
		// The external gateway's `app` cluster is plain HTTP at AppAddr.
		u, _ := url.Parse(s.upstream)
		if u.Scheme != "http" {
			return s, fmt.Errorf("dev: an external gateway reaches the upstream over plain HTTP; %s is not", o.Upstream)
		}
		port := u.Port()
		if port == "" {
			port = "80"
		}
		if s.fwd, err = newForwarder(o.AppAddr, net.JoinHostPort(u.Hostname(), port)); err != nil {
			return s, err
		}
	}
	if external {
		return s, nil
	}

	if o.NoCompression {
		withoutCompressors(ingress)
		if internal != nil {
			withoutCompressors(internal)
		}
	}
	for _, l := range []*envoy.Settings{ingress, internal} {
		if l != nil && l.RateLimit != nil {
			if d := l.RateLimit.GetTimeout(); d != nil && d.AsDuration() > 0 && d.AsDuration() < devRateLimitTimeout {
				l.RateLimit = proto.CloneOf(l.RateLimit)
				l.RateLimit.Timeout = durationpb.New(devRateLimitTimeout)
			}
		}
		if l != nil && l.ExtProc != nil {
			if d := l.ExtProc.GetMessageTimeout(); d != nil && d.AsDuration() > 0 && d.AsDuration() < devMessageTimeout {
				l.ExtProc = proto.CloneOf(l.ExtProc)
				l.ExtProc.MessageTimeout = durationpb.New(devMessageTimeout)
			}
		}
	}
	if err := cfg.Cache.Config.CheckEnvoy(ingress.ExtProc.GetMaxMessageTimeout().AsDuration()); err != nil {
		return s, fmt.Errorf("dev: envoy config: %w", err)
	}
	if s.conn, err = grpc.NewClient(s.app.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return s, fmt.Errorf("dev: grpc client: %w", err)
	}
	gateway := func(settings *envoy.Settings) (*emulator.Gateway, error) {
		g, err := emulator.New(emulator.Options{
			Settings:  settings,
			ExtProc:   extprocsvc.NewExternalProcessorClient(s.conn),
			RateLimit: rlsv3.NewRateLimitServiceClient(s.conn),
			Upstreams: map[string]string{"app": s.upstream},
			Logger:    log,
		})
		if err != nil {
			return nil, fmt.Errorf("dev: emulator, listener %s: %w", settings.Listener, err)
		}
		return g, nil
	}
	if s.gw, err = gateway(ingress); err != nil {
		return s, err
	}
	s.gwSrv = s.gw.NewServer()
	if internal != nil {
		if s.inGW, err = gateway(internal); err != nil {
			return s, err
		}
		s.inSrv = s.inGW.NewServer()
	}
	return s, nil
}

// URL is the gateway's base URL.
func (s *Stack) URL() string {
	if s.gwLn == nil {
		return strings.TrimSuffix(s.opts.Gateway, "/")
	}
	return "http://" + hostPort(s.gwLn.Addr())
}

// InternalURL is the internal listener's base URL (batch items, warming), or
// URL when the Envoy config has no internal listener.
func (s *Stack) InternalURL() string {
	if s.inLn == nil {
		return s.URL()
	}
	return "http://" + hostPort(s.inLn.Addr())
}

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
	if s.gwSrv != nil {
		serve(s.gwSrv, s.gwLn)
	}
	if s.inSrv != nil {
		serve(s.inSrv, s.inLn)
	}
	if s.demo != nil {
		serve(s.demo, s.demoLn)
	}
	if s.mini != nil {
		g.Go(func() error { s.expireEmbedded(gctx); return nil })
	}
	err := g.Wait()
	s.Close()
	return err
}

// embeddedTick is how often the embedded Redis's TTLs advance: keys expire
// at most this late.
const embeddedTick = 250 * time.Millisecond

// expireEmbedded advances the embedded Redis's TTLs with the wall clock
// until ctx ends. miniredis counts TTLs down only when told (FastForward;
// its ClockTTL would walk every key on every command), so without this no
// key ever expired: every cache entry, tag set and rate-limit window stayed
// for the life of the process, and a client requesting distinct URLs grew
// its memory without bound.
func (s *Stack) expireEmbedded(ctx context.Context) {
	t := time.NewTicker(embeddedTick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.mini.FastForward(now.Sub(last))
			last = now
		}
	}
}

// Close releases everything Start acquired; safe on a partial Stack.
func (s *Stack) Close() {
	if s.gw != nil {
		s.gw.Close()
	}
	if s.inGW != nil {
		s.inGW.Close()
	}
	if s.inLn != nil {
		s.inLn.Close()
	}
	if s.conn != nil {
		s.conn.Close()
	}
	if s.gwLn != nil {
		s.gwLn.Close()
	}
	if s.fwd != nil {
		s.fwd.Close()
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
  internal  %s   (batch items and warming only; trusts the client address Sluice sets)
  upstream  %s
  sluice    grpc %s, admin %s (/metrics, /readyz, /debug/ratelimit)
  redis     %s

`, s.URL(), s.InternalURL(), upstream, s.app.GRPCAddr(), s.AdminURL(), redis)
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
