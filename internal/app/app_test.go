package app_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/internal/app"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const rules = `
domain: sluice
descriptors:
  - key: tenant_id
    rate_limit: {unit: hour, requests_per_unit: 2}
`

type running struct {
	app    *app.App
	rls    rlsv3.RateLimitServiceClient
	health healthpb.HealthClient
	admin  string
	stop   func() error
}

// start runs a whole Sluice process in-process on loopback ports.
func start(t *testing.T, redisURL string, mutate func(*config.Config)) *running {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr = "127.0.0.1:0"
	cfg.Server.AdminAddr = "127.0.0.1:0"
	cfg.Server.ShutdownGrace = 2 * time.Second
	cfg.Redis.URL = redisURL
	cfg.Redis.KeyPrefix = redistest.Prefix(t)
	cfg.RateLimit.ConfigPath = path
	cfg.RateLimit.BreakerOpenFor = 200 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler), "test", app.Options{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := a.Listen(ctx); err != nil {
		a.Close()
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	conn, err := grpc.NewClient(a.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		err := <-done
		conn.Close()
		a.Close()
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return &running{
		app:    a,
		rls:    rlsv3.NewRateLimitServiceClient(conn),
		health: healthpb.NewHealthClient(conn),
		admin:  "http://" + a.AdminAddr().String(),
		stop:   stop,
	}
}

func (r *running) decide(t *testing.T, tenant string) rlsv3.RateLimitResponse_Code {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := r.rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{
		Domain: "sluice",
		Descriptors: []*commonrl.RateLimitDescriptor{{Entries: []*commonrl.RateLimitDescriptor_Entry{
			{Key: "tenant_id", Value: tenant},
		}}},
	})
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	return resp.OverallCode
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeEndToEnd(t *testing.T) {
	r := start(t, "redis://"+redistest.Addr(), nil)

	hc, err := r.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.ratelimit.v3.RateLimitService"})
	if err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hc, err)
	}
	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		if got := r.decide(t, "acme"); got != want {
			t.Fatalf("call %d: %v, want %v", i, got, want)
		}
	}

	if code, body := get(t, r.admin+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d %s", code, body)
	}
	if code, body := get(t, r.admin+"/readyz"); code != 200 || !strings.Contains(body, `"redis":"ok"`) {
		t.Errorf("/readyz = %d %s", code, body)
	}
	code, body := get(t, r.admin+"/metrics")
	if code != 200 || !strings.Contains(body, `sluice_ratelimit_decisions_total{code="over_limit",domain="sluice",rule="tenant_id#0"} 1`) {
		t.Errorf("/metrics lacks the over_limit decision:\n%s", grepLines(body, "sluice_ratelimit_decisions_total"))
	}
	code, body = get(t, r.admin+"/debug/ratelimit")
	var dbg map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &dbg) != nil || !strings.Contains(body, "tenant_id") {
		t.Errorf("/debug/ratelimit = %d %s", code, body)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRedisKilledAndRestarted: with Redis gone the service fails open quickly
// (the breaker stops calls from each waiting the timeout), and it counts again
// after Redis returns, without a restart.
func TestRedisKilledAndRestarted(t *testing.T) {
	srv := redistest.StartServer(t)
	r := start(t, "redis://"+srv.Addr(), nil)
	if got := r.decide(t, "k1"); got != rlsv3.RateLimitResponse_OK {
		t.Fatalf("before kill: %v", got)
	}
	srv.Kill()
	start := time.Now()
	for i := 0; i < 50; i++ {
		if got := r.decide(t, "k1"); got != rlsv3.RateLimitResponse_OK {
			t.Fatalf("Redis down, call %d: %v; want fail-open OK", i, got)
		}
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("50 calls with Redis down took %v", el)
	}
	_, body := get(t, r.admin+"/metrics")
	if !strings.Contains(body, `code="fail_open"`) {
		t.Errorf("no fail_open decisions in metrics")
	}

	srv.Restart()
	// Redis restarted empty: k2 gets its 2 requests, then over limit, once the
	// breaker lets calls through again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		codes := []rlsv3.RateLimitResponse_Code{r.decide(t, "k2"), r.decide(t, "k2"), r.decide(t, "k2")}
		if codes[2] == rlsv3.RateLimitResponse_OVER_LIMIT {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("limits not enforced 5s after Redis returned: %v", codes)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRedisDownAtStart(t *testing.T) {
	srv := redistest.StartServer(t)
	srv.Kill()
	r := start(t, "redis://"+srv.Addr(), nil)
	// The check names why Redis cannot be reached, not only that the
	// ping's time ran out.
	if code, body := get(t, r.admin+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "redis") || !strings.Contains(body, "connection refused") {
		t.Errorf("/readyz with Redis down at start = %d %s", code, body)
	}
	if got := r.decide(t, "x"); got != rlsv3.RateLimitResponse_OK {
		t.Errorf("fail open at start: %v", got)
	}
	srv.Restart()
	if code, body := get(t, r.admin+"/readyz"); code != 200 {
		t.Errorf("/readyz after Redis came up = %d %s", code, body)
	}
}

func TestInvalidRulesRefuseToStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.yaml")
	os.WriteFile(path, []byte("domain: x\ndescriptors:\n  - key: k\n    rate_limit: {unit: eon, requests_per_unit: 1}\n"), 0o644)
	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.RateLimit.ConfigPath = path
	_, err := app.New(context.Background(), cfg, slog.New(slog.DiscardHandler), "test", app.Options{})
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:4") {
		t.Fatalf("New with invalid rules: %v; want an error naming bad.yaml:4", err)
	}
}

// TestGracefulShutdownDrains: an RPC in flight when shutdown starts completes;
// new RPCs are refused afterwards.
func TestGracefulShutdownDrains(t *testing.T) {
	// A Redis that answers slowly keeps one RPC in flight.
	srv := redistest.StartServer(t)
	r := start(t, "redis://"+srv.Addr(), func(c *config.Config) {
		c.RateLimit.Timeout = 2 * time.Second
		c.Redis.ReadTimeout = 3 * time.Second
	})
	if got := r.decide(t, "warm"); got != rlsv3.RateLimitResponse_OK {
		t.Fatal(got)
	}
	slow := srv.Client(t)
	go slow.Do(context.Background(), "DEBUG", "SLEEP", "0.5")
	time.Sleep(50 * time.Millisecond)

	result := make(chan error, 1)
	go func() {
		_, err := r.rls.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{
			Domain: "sluice",
			Descriptors: []*commonrl.RateLimitDescriptor{{Entries: []*commonrl.RateLimitDescriptor_Entry{
				{Key: "tenant_id", Value: "inflight"},
			}}},
		})
		result <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := r.stop(); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	if err := <-result; err != nil {
		t.Fatalf("in-flight RPC failed during graceful shutdown: %v", err)
	}
}

// TestNewBindsNoPort: New builds an App without listening (here on
// addresses another listener holds, which Listen must then refuse), and
// Listen binds the ports GRPCAddr and AdminAddr report.
func TestNewBindsNoPort(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = held.Addr().String(), held.Addr().String()
	cfg.Redis.URL = "redis://" + redistest.Addr()
	cfg.Redis.KeyPrefix = redistest.Prefix(t)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler), "test", app.Options{})
	if err != nil {
		t.Fatalf("New on a taken port: %v; want no error (New binds nothing)", err)
	}
	defer a.Close()
	if a.GRPCAddr() != nil || a.AdminAddr() != nil {
		t.Fatalf("addresses before Listen: %v %v; want nil", a.GRPCAddr(), a.AdminAddr())
	}
	if err := a.Listen(ctx); err == nil || !strings.Contains(err.Error(), "listen grpc") {
		t.Fatalf("Listen on a taken port: %v; want a listen grpc error", err)
	}

	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	b, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler), "test", app.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(ctx); err == nil {
		t.Error("second Listen succeeded; want an error")
	}
	for _, addr := range []net.Addr{b.GRPCAddr(), b.AdminAddr()} {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatalf("dial %v after Listen: %v", addr, err)
		}
		c.Close()
	}
}

// TestNoFlowControlPings speaks HTTP/2 to the gRPC port as Envoy does (RFC 9113: the client
// preface, SETTINGS, then a HEADERS and a DATA frame per call, and a PING acknowledged as
// §6.7 asks) and checks that the server, with its static windows, sends no PING while calls
// flow: gRPC's dynamic windows would send one per round trip (a bandwidth probe that small
// messages never end), each costing both sides system calls. It also checks the windows the
// server advertises and that every call is answered with grpc-status 0.
func TestNoFlowControlPings(t *testing.T) {
	r := start(t, "redis://"+redistest.Addr(), nil)
	conn, err := net.DialTimeout("tcp", r.app.GRPCAddr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var (
		hbuf    bytes.Buffer
		enc     = hpack.NewEncoder(&hbuf)
		pings   int
		window  = uint32(0)
		updates []string // WINDOW_UPDATEs: "stream+increment"
	)
	const calls = 20
	for i := range calls {
		id := uint32(2*i + 1)
		hbuf.Reset()
		for _, f := range [][2]string{
			{":method", "POST"}, {":scheme", "http"}, {":authority", "sluice"},
			{":path", "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"},
			{"content-type", "application/grpc"}, {"te", "trailers"},
		} {
			if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
				t.Fatal(err)
			}
		}
		msg, err := proto.Marshal(&rlsv3.RateLimitRequest{Domain: "sluice", Descriptors: []*commonrl.RateLimitDescriptor{
			{Entries: []*commonrl.RateLimitDescriptor_Entry{{Key: "tenant_id", Value: fmt.Sprintf("t%d", i)}}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		body := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if err := fr.WriteData(id, true, append(body, msg...)); err != nil {
			t.Fatal(err)
		}
		status := ""
		for status == "" {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if f.IsAck() {
					break
				}
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
					window = v
				}
				if err := fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					pings++
					if err := fr.WritePing(true, f.Data); err != nil {
						t.Fatal(err)
					}
				}
			case *http2.WindowUpdateFrame:
				updates = append(updates, fmt.Sprintf("%d+%d", f.StreamID, f.Increment))
			case *http2.MetaHeadersFrame:
				if f.StreamID == id && f.StreamEnded() {
					status = f.PseudoValue("status") // set on a trailers-only answer; else the trailers'
					for _, hf := range f.RegularFields() {
						if hf.Name == "grpc-status" {
							status = "grpc-status " + hf.Value
						}
					}
				}
			case *http2.RSTStreamFrame:
				t.Fatalf("call %d: RST_STREAM %v", i, f.ErrCode)
			case *http2.GoAwayFrame:
				t.Fatalf("call %d: GOAWAY %v", i, f.ErrCode)
			}
		}
		if status != "grpc-status 0" {
			t.Fatalf("call %d answered with %q, want grpc-status 0", i, status)
		}
	}
	// The one WINDOW_UPDATE expected raises the connection's window from the 65535 bytes every
	// HTTP/2 connection starts with (RFC 9113 §6.9.2) to the server's 8 MiB.
	if want := fmt.Sprintf("[0+%d]", 8<<20-65535); pings != 0 || fmt.Sprint(updates) != want {
		t.Errorf("over %d calls the server sent %d PINGs and WINDOW_UPDATEs %v, want no PING and %s", calls, pings, updates, want)
	}
	if window != 1<<20 {
		t.Errorf("advertised SETTINGS_INITIAL_WINDOW_SIZE = %d, want %d", window, 1<<20)
	}
}
