package extproc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/tier"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// epoch is the simulated start time.
var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is a simulated clock for WithClock. Safe for concurrent use.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logs captures JSON log lines. Safe for concurrent use.
type logs struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the decoded log lines whose msg is msg.
func (l *logs) lines(t testing.TB, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// harness is a Server behind a real gRPC loopback connection.
type harness struct {
	srv   *extproc.Server
	conn  *grpc.ClientConn
	reg   *metricstest.Registry
	logs  *logs
	clock *clock
}

type harnessOpts struct {
	tiers      tier.Store
	stages     []extproc.Stage
	serverOpts []grpc.ServerOption
}

func newHarness(t testing.TB, cfg extproc.Config, o harnessOpts) *harness {
	t.Helper()
	h := &harness{reg: metricstest.NewRegistry(), logs: &logs{}, clock: &clock{t: epoch}}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := extproc.New(cfg, o.tiers, h.reg, log, extproc.WithStages(o.stages...), extproc.WithClock(h.clock.Now))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.srv = srv
	h.conn = extproctest.Serve(t, srv.Register, o.serverOpts...)
	return h
}

func (h *harness) open(t testing.TB) *extproctest.Stream {
	t.Helper()
	return extproctest.Open(t, h.conn)
}

// streamsEnded waits until n streams ended with result.
func (h *harness) waitStreams(t testing.TB, result string, n float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := counter(t, h.reg, "sluice_extproc_streams_total", map[string]string{"result": result})
		if got >= n {
			if got > n {
				t.Fatalf("streams{result=%s} = %v, want %v", result, got, n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("streams{result=%s} = %v, want %v (timed out); logs:\n%s", result, got, n, h.logs)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// counter returns the value of the counter (or gauge) name{labels} (every
// label named; nil for a metric without labels) registered on reg.
func counter(t testing.TB, reg *metricstest.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	return reg.Value(t, name, labels)
}

// probe is a test stage implementing every hook; nil funcs do nothing.
type probe struct {
	name            string
	requestHeaders  func(ctx context.Context, x *extproc.Exchange) error
	requestBody     func(ctx context.Context, x *extproc.Exchange, body []byte, eos bool) error
	responseHeaders func(ctx context.Context, x *extproc.Exchange) error
	responseBody    func(ctx context.Context, x *extproc.Exchange, body []byte, eos bool) error

	mu    sync.Mutex // guards calls, last
	calls []string
	last  extproc.Exchange // copy taken in Done
}

func (p *probe) Name() string { return p.name }

func (p *probe) record(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, s)
}

func (p *probe) Calls() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.calls...)
}

func (p *probe) RequestHeaders(ctx context.Context, x *extproc.Exchange) error {
	p.record("request_headers")
	if p.requestHeaders != nil {
		return p.requestHeaders(ctx, x)
	}
	return nil
}

func (p *probe) RequestBody(ctx context.Context, x *extproc.Exchange, body []byte, eos bool) error {
	p.record("request_body")
	if p.requestBody != nil {
		return p.requestBody(ctx, x, body, eos)
	}
	return nil
}

func (p *probe) ResponseHeaders(ctx context.Context, x *extproc.Exchange) error {
	p.record("response_headers")
	if p.responseHeaders != nil {
		return p.responseHeaders(ctx, x)
	}
	return nil
}

func (p *probe) ResponseBody(ctx context.Context, x *extproc.Exchange, body []byte, eos bool) error {
	p.record("response_body")
	if p.responseBody != nil {
		return p.responseBody(ctx, x, body, eos)
	}
	return nil
}

func (p *probe) Done(_ context.Context, x *extproc.Exchange) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, "done")
	p.last = *x
}

func (p *probe) Last() extproc.Exchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}
