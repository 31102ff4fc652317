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
	examples "github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/envoy/emulator"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/internal/app"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/demoapi"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

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
	// Stages are extra ext_proc pipeline options (tests add stages here).
	Stages []extproc.Option
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
	// The internal listener's gateway; nil when the Envoy config has none.
	inGW     *emulator.Gateway
	inSrv    *http.Server
	inLn     net.Listener
	conn     *grpc.ClientConn
	upstream string
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
	}
	if len(cfg.ExtProc.Identity.Tiers) == 0 {
		cfg.ExtProc.Identity.Tiers = DemoTiers
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
	// The gateways listen first: batch sub-requests go back through the
	// internal one (or, in a config without it, the ingress one), so they
	// meet the same filters as a direct call (the batch issue's rule).
	if s.gwLn, err = net.Listen("tcp", o.Listen); err != nil {
		return s, fmt.Errorf("dev: listen %s: %w", o.Listen, err)
	}
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
	if cfg.Batch.ListenerURL == batch.DefaultListenerURL || cfg.Batch.ListenerURL == "" {
		cfg.Batch.ListenerURL = "http://127.0.0.1:" + strconv.Itoa(itemsLn.Addr().(*net.TCPAddr).Port)
	}
	appOpts := app.Options{Stages: o.Stages}
	if cfg.RateLimit.ConfigPath == "" {
		rules, err := ratelimitsvc.ParseRules([]ratelimitsvc.File{{Name: "config/ratelimit/tiers.yaml", Data: examples.RateLimitTiers}})
		if err != nil {
			return s, fmt.Errorf("dev: embedded rules: %w", err)
		}
		appOpts.Rules = rules
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
func (s *Stack) URL() string { return "http://" + hostPort(s.gwLn.Addr()) }

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
	if s.inSrv != nil {
		serve(s.inSrv, s.inLn)
	}
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

// Banner writes what a newcomer needs: the addresses, the demo tenants by
// tier and a few commands to try.
func (s *Stack) Banner(w io.Writer) {
	redis := "embedded Redis-protocol server (miniredis; set REDIS_URL to use a real Redis)"
	if s.mini == nil {
		redis = s.opts.Sluice.Redis.Redacted()
	}
	byTier := map[string][]string{}
	tiers := s.opts.Sluice.ExtProc.Identity.Tiers
	if len(tiers) == 0 {
		tiers = DemoTiers
	}
	for t, tier := range tiers {
		byTier[tier] = append(byTier[tier], t)
	}
	var lines []string
	for _, tier := range []string{"free", "basic", "pro", "enterprise"} {
		if ts := byTier[tier]; len(ts) > 0 {
			sort.Strings(ts)
			lines = append(lines, fmt.Sprintf("    %-11s %s", tier, strings.Join(ts, ", ")))
		}
	}
	fmt.Fprintf(w, `
  Sluice dev: one process standing in for Envoy + Sluice + Redis + an API.
  Production runs real Envoy in front of 'sluice serve'; this gateway only
  emulates Envoy's ext_proc and ratelimit filters (from envoy/envoy.yaml).

  gateway   %s   (send requests here)
  internal  %s   (batch items and warming only; trusts the client address Sluice sets)
  upstream  %s
  sluice    grpc %s, admin %s (/metrics, /readyz, /debug/ratelimit)
  redis     %s

  Demo tenants (send x-tenant-id; optional x-user-id; none = anonymous):
%s

  Try:
    curl -i %s/api/v1/contacts -H 'x-tenant-id: acme'
    curl -i %s/api/v1/dashboard/stats -H 'x-tenant-id: initech'
    for i in $(seq 1 30); do curl -s -o /dev/null -w '%%{http_code} ' %s/api/v1/contacts; done; echo
    curl -s %s/metrics | grep '^sluice_'

`, s.URL(), s.InternalURL(), s.upstream, s.app.GRPCAddr(), s.AdminURL(), redis, strings.Join(lines, "\n"),
		s.URL(), s.URL(), s.URL(), s.AdminURL())
}
