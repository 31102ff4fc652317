package devstack_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/envoy/emulator"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/devstack"
	"github.com/sluicehq/sluice/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// miniredis and net/http keep these briefly after Close.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// echo is an upstream that answers with the request headers it received.
func echo(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(srv.Close)
	return srv
}

type stack struct {
	*devstack.Stack
	client *http.Client
}

// external is the real gateway the end-to-end tests run against instead of
// the emulator when SLUICE_E2E_GATEWAY is set (scripts/envoy-e2e.sh).
var external = devstack.ExternalFromEnv(os.Getenv)

// externalInUse counts the stacks behind the external gateway: it fronts
// one Sluice at a time.
var externalInUse atomic.Int32

// start runs a dev stack on loopback ports. realRedis uses the machine's
// Redis under a private prefix; otherwise the embedded server runs, as in a
// plain `sluice dev`. With SLUICE_E2E_GATEWAY set the requests go through
// that gateway (a real Envoy) instead of the emulator.
func start(t *testing.T, upstream string, realRedis bool, mutate func(*config.Config), stages ...extproc.Option) *stack {
	t.Helper()
	return startWith(t, devstack.Options{Upstream: upstream, RedisSet: realRedis, Stages: stages}, mutate)
}

// startWith is start with every devstack option (an Envoy config of a
// test's own, say); Listen, the Sluice config's addresses and Redis are
// set here.
func startWith(t *testing.T, o devstack.Options, mutate func(*config.Config)) *stack {
	t.Helper()
	if external.Gateway != "" {
		if externalInUse.Add(1) > 1 {
			externalInUse.Add(-1)
			t.Skip("SLUICE_E2E_GATEWAY: the real gateway fronts one Sluice at a time; this test runs two")
		}
		t.Cleanup(func() { externalInUse.Add(-1) })
	}
	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.ShutdownGrace = time.Second
	if o.RedisSet {
		cfg.Redis.URL = "redis://" + redistest.Addr()
		cfg.Redis.KeyPrefix = redistest.Prefix(t)
	}
	if mutate != nil {
		mutate(&cfg)
	}
	o.Listen, o.Sluice = "127.0.0.1:0", cfg
	external.Apply(&o)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := devstack.Start(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		client.CloseIdleConnections()
	})
	return &stack{Stack: s, client: client}
}

// demoPolicy gives a stack with an upstream the demo API's tenants and tiered
// rules (config/ratelimit/tiers.yaml), which `sluice dev` uses only in front
// of its demo API: tests of tiers and limits need them.
func demoPolicy(c *config.Config) {
	c.RateLimit.ConfigPath = "../../config/ratelimit/tiers.yaml"
	c.ExtProc.Identity.Tiers = devstack.DemoTiers
}

func (s *stack) get(t *testing.T, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.URL()+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1]) // Add: a name given twice is sent twice
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func upstreamSaw(t *testing.T, body string) http.Header {
	t.Helper()
	var h http.Header
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("upstream body %q: %v", body, err)
	}
	return h
}

func TestEnrichmentAndSpoofedHeaders(t *testing.T) {
	s := start(t, echo(t).URL, true, demoPolicy)
	tests := []struct {
		name       string
		hdr        []string
		wantTenant string
		wantTier   string
		wantUser   string
	}{
		{"known tenant", []string{"x-tenant-id", "initech"}, "initech", "free", ""},
		{"tier from the store, not the client", []string{"x-tenant-id", "initech", "x-sluice-tier", "enterprise", "x-sluice-tenant", "acme"}, "initech", "free", ""},
		{"user", []string{"x-tenant-id", "acme", "x-user-id", "u1", "x-sluice-user", "admin"}, "acme", "pro", "u1"},
		{"unknown tenant gets the default tier", []string{"x-tenant-id", "newco"}, "newco", "free", ""},
		{"no identity is anonymous", []string{"x-sluice-tenant", "acme", "x-sluice-tier", "enterprise"}, "anonymous", "anonymous", ""},
		{"spoofed cost is replaced", []string{"x-tenant-id", "acme", "x-sluice-cost", "0"}, "acme", "pro", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := s.get(t, "/anything", tt.hdr...)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			h := upstreamSaw(t, body)
			if got := h.Values("X-Sluice-Tenant"); len(got) != 1 || got[0] != tt.wantTenant {
				t.Errorf("upstream x-sluice-tenant = %q, want [%s]", got, tt.wantTenant)
			}
			if got := h.Values("X-Sluice-Tier"); len(got) != 1 || got[0] != tt.wantTier {
				t.Errorf("upstream x-sluice-tier = %q, want [%s]", got, tt.wantTier)
			}
			if got := h.Get("X-Sluice-User"); got != tt.wantUser {
				t.Errorf("upstream x-sluice-user = %q, want %q", got, tt.wantUser)
			}
			if got := h.Values("X-Sluice-Cost"); len(got) != 1 || got[0] != "1" {
				t.Errorf("upstream x-sluice-cost = %q, want [1]", got)
			}
			if !strings.Contains(resp.Header.Get("Ratelimit-Policy"), "q=") && tt.wantTier != "anonymous" {
				t.Errorf("no RateLimit-Policy on the response: %v", resp.Header)
			}
		})
	}
}

func TestTierLimits(t *testing.T) {
	for _, embedded := range []bool{false, true} {
		name := "real redis"
		if embedded {
			name = "embedded redis"
		}
		t.Run(name, func(t *testing.T) {
			s := start(t, echo(t).URL, !embedded, demoPolicy)
			// free: 10 per second per tenant; pro: 200.
			count := func(tenant string, n int) (ok, limited int, last *http.Response) {
				for i := 0; i < n; i++ {
					resp, _ := s.get(t, "/x", "x-tenant-id", tenant)
					switch resp.StatusCode {
					case 200:
						ok++
					case 429:
						limited++
						last = resp
					default:
						t.Fatalf("status %d", resp.StatusCode)
					}
				}
				return ok, limited, last
			}
			ok, limited, last := count("initech", 15)
			if limited == 0 || ok > 10 {
				t.Fatalf("free tenant: %d ok, %d limited; want at most 10 ok", ok, limited)
			}
			if last.Header.Get("X-Envoy-Ratelimited") != "true" || last.Header.Get("Retry-After") == "" ||
				!strings.Contains(last.Header.Get("Ratelimit-Policy"), `"free_tenant_burst";q=10;w=1`) {
				t.Errorf("429 headers: %v", last.Header)
			}
			if ok, limited, _ := count("acme", 15); limited != 0 || ok != 15 {
				t.Errorf("pro tenant: %d ok, %d limited; want all 15 ok", ok, limited)
			}

			// A request is counted when its ext_proc stream ends, which can
			// be just after the client has its response: poll a while.
			wants := []string{
				`sluice_http_requests_total{method="GET",route="other",status_class="4xx",tier="free"}`,
				`sluice_http_requests_total{method="GET",route="other",status_class="2xx",tier="pro"} 15`,
				`sluice_ratelimit_decisions_total{code="over_limit",domain="sluice",rule="free_tenant_burst"}`,
			}
			var missing []string
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				resp, err := http.Get(s.AdminURL() + "/metrics")
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				missing = missing[:0]
				for _, want := range wants {
					if !strings.Contains(string(b), want) {
						missing = append(missing, want)
					}
				}
				if len(missing) == 0 || time.Now().After(deadline) {
					break
				}
			}
			for _, m := range missing {
				t.Errorf("metrics lack %s", m)
			}
		})
	}
}

// TestAnonymousLimitedPerIP: 62 requests of one anonymous address within a
// minute, against 60 per minute per IP, get exactly 2 refusals. Only a round
// the rate limit service decided in full counts: on a loaded machine Envoy's
// 20 ms ratelimit budget can run out (the filter then fails open, and the
// answer carries no RateLimit-Policy); such a round is run again from a new
// address.
func TestAnonymousLimitedPerIP(t *testing.T) {
	s := start(t, echo(t).URL, true, demoPolicy)
	for round := range 5 {
		c := s.from(t, "127.0.0."+strconv.Itoa(60+round))
		limited, undecided := 0, 0
		for range 62 {
			resp, _ := c.do(t, "GET", s.URL()+"/x", "")
			switch {
			case !decided(resp):
				undecided++
			case resp.StatusCode == 429:
				limited++
			}
		}
		if undecided > 0 {
			t.Logf("round %d: %d answers undecided (failed open); again from another address", round, undecided)
			continue
		}
		if limited != 2 {
			t.Errorf("anonymous caller: %d of 62 limited, want 2 (60 per minute per IP)", limited)
		}
		return
	}
	t.Fatal("no round of 62 requests was decided in full by the rate limit service")
}

// slow delays the request headers phase past Envoy's message_timeout (at
// least 1 s in the dev stack: devMessageTimeout) when asked to, to show the
// gateway failing open.
type slow struct{}

func (slow) Name() string { return "slow" }

func (slow) RequestHeaders(ctx context.Context, x *extproc.Exchange) error {
	if x.RequestHeaders.Get("x-test-slow") != "" {
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
	}
	return nil
}

func TestSlowSluiceFailsOpen(t *testing.T) {
	s := start(t, echo(t).URL, true, nil, extproc.WithStages(slow{}))
	start := time.Now()
	resp, body := s.get(t, "/x", "x-tenant-id", "acme", "x-test-slow", "1", "x-sluice-tenant", "victim")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200 (failure_mode_allow)", resp.StatusCode)
	}
	if el := time.Since(start); el < time.Second || el > 1800*time.Millisecond {
		t.Errorf("took %v; the dev stack's message_timeout is 1s", el)
	}
	// Without Sluice's answer nothing was enriched, and the client's spoofed
	// identity header must not reach the application either.
	if got := upstreamSaw(t, body).Get("X-Sluice-Tenant"); got != "" {
		t.Errorf("upstream saw x-sluice-tenant %q on a fail-open request", got)
	}
}

// broken fails the stream when asked, as a crashing stage would.
type broken struct{}

func (broken) Name() string { return "broken" }

func (broken) RequestHeaders(_ context.Context, x *extproc.Exchange) error {
	if x.RequestHeaders.Get("x-test-break") != "" {
		return errors.New("stage failed")
	}
	return nil
}

func TestStreamErrorFailsOpen(t *testing.T) {
	s := start(t, echo(t).URL, true, nil, extproc.WithStages(broken{}))
	resp, body := s.get(t, "/x", "x-tenant-id", "acme", "x-test-break", "1")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200: the ext_proc filter has failure_mode_allow", resp.StatusCode)
	}
	if got := upstreamSaw(t, body).Get("X-Sluice-Tenant"); got != "" {
		t.Errorf("upstream saw x-sluice-tenant %q although the stream failed", got)
	}
	// The next request is processed normally.
	resp, body = s.get(t, "/x", "x-tenant-id", "acme")
	if resp.StatusCode != 200 || upstreamSaw(t, body).Get("X-Sluice-Tenant") != "acme" {
		t.Fatalf("after a failed stream: %d %s", resp.StatusCode, body)
	}
	m, err := http.Get(s.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(m.Body)
	m.Body.Close()
	if !strings.Contains(string(b), `sluice_extproc_streams_total{result="stage_error"} 1`) {
		t.Errorf("stage error not counted:\n%s", b)
	}
}

// The batch route fails closed (its ExtProcPerRoute sets failure_mode_allow
// false): only Sluice answers a batch, so a failed stream must not forward
// it to the application, which has no such endpoint.
func TestBatchRouteFailsClosed(t *testing.T) {
	var reached atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(app.Close)
	s := start(t, app.URL, true, nil, extproc.WithStages(broken{}))
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/api/v1/batch", strings.NewReader(`{"requests":[{"id":"1","method":"GET","url":"/x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("x-tenant-id", "acme")
	req.Header.Set("x-test-break", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d (%s), want 500: Envoy's status_on_error on a fail-closed route", resp.StatusCode, body)
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the batch reached the application (%d requests)", n)
	}
}

// freeAddr returns a loopback address nothing listens on (it was free a
// moment ago).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestExternalGateway runs a stack the way scripts/envoy-e2e.sh does, in
// front of a gateway it does not start. Here that gateway is an emulator
// built apart, whose `sluice` and `app` clusters point at fixed addresses as
// the real Envoy's do: requests through it reach this stack's Sluice (on
// SluiceAddr) and its upstream (served on AppAddr: the demo API, or a
// forwarder to the test's upstream).
func TestExternalGateway(t *testing.T) {
	if external.Gateway != "" {
		t.Skip("already running against SLUICE_E2E_GATEWAY")
	}
	ext := devstack.ExternalFromEnv(func(k string) string {
		return map[string]string{"SLUICE_E2E_SLUICE_ADDR": freeAddr(t), "SLUICE_E2E_APP_ADDR": freeAddr(t), "SLUICE_E2E_GATEWAY": "set below"}[k]
	})
	settings, err := envoy.ParseSettings(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(ext.SluiceAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gw, err := emulator.New(emulator.Options{
		Settings:  settings,
		ExtProc:   extprocsvc.NewExternalProcessorClient(conn),
		RateLimit: rlsv3.NewRateLimitServiceClient(conn),
		Upstreams: map[string]string{"app": "http://" + ext.AppAddr},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	gwSrv := httptest.NewServer(gw)
	defer gwSrv.Close()
	ext.Gateway = gwSrv.URL

	for _, tt := range []struct {
		name, upstream, path string
		check                func(t *testing.T, body string)
	}{
		{name: "forwarded upstream", upstream: echo(t).URL, path: "/anything", check: func(t *testing.T, body string) {
			if got := upstreamSaw(t, body).Get("X-Sluice-Tier"); got != "free" {
				t.Errorf("upstream saw x-sluice-tier %q; want free (set by this stack's ext_proc)", got)
			}
		}},
		{name: "demo API", path: "/api/v1/contacts", check: func(t *testing.T, body string) {
			if !strings.Contains(body, "initech") {
				t.Errorf("body %.200s; want initech's contacts", body)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Config{}.WithDefaults()
			cfg.Server.AdminAddr = "127.0.0.1:0"
			cfg.Server.ShutdownGrace = time.Second
			cfg.Redis.URL = "redis://" + redistest.Addr()
			cfg.Redis.KeyPrefix = redistest.Prefix(t)
			opts := devstack.Options{Upstream: tt.upstream, Sluice: cfg, RedisSet: true}
			ext.Apply(&opts)
			ctx, cancel := context.WithCancel(context.Background())
			s, err := devstack.Start(ctx, opts, slog.New(slog.DiscardHandler))
			if err != nil {
				cancel()
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
			defer func() {
				client.CloseIdleConnections()
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			if s.URL() != gwSrv.URL {
				t.Fatalf("URL() = %s; want the external gateway %s", s.URL(), gwSrv.URL)
			}
			req, _ := http.NewRequest("GET", s.URL()+tt.path, nil)
			req.Header.Set("x-tenant-id", "initech")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if resp.Header.Get("RateLimit-Policy") == "" {
				t.Errorf("no RateLimit-Policy header: the rate limit service at %s was not called", ext.SluiceAddr)
			}
			tt.check(t, string(b))
		})
	}
}

// TestUpstreamDefaults: in front of the user's API (--upstream) the built-in
// rules let a browser or a test suite through, and the banner describes that
// API and the rules in force, not the demo's tenants.
func TestUpstreamDefaults(t *testing.T) {
	s := start(t, echo(t).URL, true, nil)
	// 300 requests of one anonymous client within a few seconds: the demo's
	// rules (60 per minute per IP) would refuse 240 of them.
	for i := range 300 {
		resp, body := s.get(t, "/x")
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d: %s", i+1, resp.StatusCode, body)
		}
		if i == 0 && !strings.Contains(resp.Header.Get("Ratelimit-Policy"), `"dev_anonymous_ip";q=1000;w=1`) {
			t.Errorf("RateLimit-Policy = %q, want the dev rule's", resp.Header.Get("Ratelimit-Policy"))
		}
	}
	var b strings.Builder
	s.Banner(&b)
	banner := b.String()
	for _, want := range []string{
		s.Upstream() + "   (your API",
		"config/dev/ratelimit.yaml",
		"tier=anonymous, per remote_address: 1000 per second (dev_anonymous_ip)",
		"tier=any other, per tenant_id: 1000 per second (dev_tenant)",
		`without x-tenant-id is the tenant "anonymous"`,
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	for _, demo := range []string{"initech", "/api/v1/contacts", "Demo tenants"} {
		if strings.Contains(banner, demo) {
			t.Errorf("banner of a stack in front of another API mentions the demo's %q:\n%s", demo, banner)
		}
	}
}
