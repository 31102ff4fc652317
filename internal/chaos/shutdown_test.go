package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/faultproxy"
)

// rpc is one RLS call or ext_proc stream of the shutdown test.
type rpc struct {
	start, end time.Time
	// sent is when the request (an ext_proc stream's first message) was
	// sent; answered, when a stream's request headers were answered.
	sent, answered time.Time
	err            error
	step           string // where a stream failed
}

// rateLimitCall asks for one decision, enterprise tier, and reports an
// error unless Redis counted it (RateLimit headers on an OK).
func rateLimitCall(rls rlsv3.RateLimitServiceClient, tenant string) rpc {
	c := rpc{start: time.Now()}
	c.sent = c.start
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{
		Domain: "sluice",
		Descriptors: []*commonrl.RateLimitDescriptor{{Entries: []*commonrl.RateLimitDescriptor_Entry{
			{Key: "tier", Value: "enterprise"}, {Key: "tenant_id", Value: tenant},
		}}},
	})
	c.end = time.Now()
	switch {
	case err != nil:
		c.err = err
	case resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || len(resp.GetResponseHeadersToAdd()) == 0:
		c.err = fmt.Errorf("answer %v with %d headers; want an OK counted in Redis", resp.GetOverallCode(), len(resp.GetResponseHeadersToAdd()))
	}
	return c
}

// streamCall runs one ext_proc stream as Envoy does for a GET whose upstream
// takes upstream to answer.
func streamCall(client extprocv3.ExternalProcessorClient, tenant, path string, upstream time.Duration) rpc {
	c := rpc{start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fail := func(step string, err error) rpc {
		c.step, c.err, c.end = step, err, time.Now()
		return c
	}
	s, err := client.Process(ctx)
	if err != nil {
		return fail("open", err)
	}
	if err := s.Send(extproctest.RequestHeaders("GET", path, true, "x-tenant-id", tenant)); err != nil {
		return fail("send request headers", err)
	}
	c.sent = time.Now()
	resp, err := recvReply(s.Recv)
	if err != nil {
		return fail("request headers", err)
	}
	if got := setHeader(resp, "x-sluice-tenant"); resp.GetRequestHeaders() == nil || got != tenant {
		return fail("request headers", fmt.Errorf("reply %T with x-sluice-tenant %q", resp.GetResponse(), got))
	}
	c.answered = time.Now()
	time.Sleep(upstream)
	if err := s.Send(extproctest.ResponseHeaders(200, true, "cache-control", "no-store")); err != nil {
		return fail("send response headers", err)
	}
	if resp, err = recvReply(s.Recv); err != nil || resp.GetResponseHeaders() == nil {
		return fail("response headers", fmt.Errorf("reply %T: %w", resp.GetResponse(), err))
	}
	if err := s.CloseSend(); err != nil {
		return fail("close send", err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		return fail("end of stream", err)
	}
	c.end = time.Now()
	return c
}

// TestGracefulShutdownUnderLoad shuts Sluice down (as on SIGTERM) while RLS
// calls and ext_proc streams are in flight — many, each slowed by a Redis
// 2×100ms away, so that shutdown always finds work in progress. Every call
// the server had accepted completes normally (RLS decisions still counted in
// Redis, streams answered to the end); calls after the shutdown began are
// refused with Unavailable, never cut with another error; Run returns once
// the last one finished, well within the shutdown grace.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	st := monitorStalls(t)
	px := faultproxy.Start(t, sharedRedis(t))
	const latency = 100 * time.Millisecond
	px.SetLatency(latency, latency)
	r := startApp(t, px.Addr(), func(c *config.Config) {
		c.Server.ShutdownGrace = 3 * time.Second
		// Budgets above the round trip: nothing may fail open here.
		c.RateLimit.Timeout = 2 * time.Second
		c.Cache.Store.RedisTimeout = 2 * time.Second
		c.Redis.ReadTimeout, c.Redis.WriteTimeout = 3*time.Second, 3*time.Second
	})
	rls := rlsv3.NewRateLimitServiceClient(r.conn)
	ep := extprocv3.NewExternalProcessorClient(r.conn)
	if c := rateLimitCall(rls, "warm"); c.err != nil { // loads the script
		t.Fatal(c.err)
	}

	const workers = 8
	var (
		mu      sync.Mutex // guards calls and streams
		calls   []rpc
		streams []rpc
		stop    atomic.Bool
		n       atomic.Int64
		wg      sync.WaitGroup
	)
	// Workers start staggered and streams wait 50-150ms for their upstream,
	// so that the shutdown finds them at every step, not in lockstep.
	for w := range workers {
		wg.Go(func() {
			time.Sleep(time.Duration(w) * 37 * time.Millisecond)
			for !stop.Load() {
				c := rateLimitCall(rls, fmt.Sprintf("t%d", w))
				mu.Lock()
				calls = append(calls, c)
				mu.Unlock()
				if c.err != nil {
					time.Sleep(10 * time.Millisecond) // refused: do not spin
				}
			}
		})
		wg.Go(func() {
			time.Sleep(time.Duration(w) * 41 * time.Millisecond)
			for !stop.Load() {
				i := n.Add(1)
				c := streamCall(ep, "acme", fmt.Sprintf("/n/%d", i), time.Duration(50+i*37%100)*time.Millisecond)
				mu.Lock()
				streams = append(streams, c)
				mu.Unlock()
				if c.err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(1500 * time.Millisecond)
	shutdownAt := time.Now()
	grace := r.cfg.Server.ShutdownGrace
	returned, runErr := r.shutdown(grace + 5*time.Second)
	drain := time.Since(shutdownAt)
	time.Sleep(300 * time.Millisecond) // new calls meet a stopped server
	stop.Store(true)
	wg.Wait()
	stoppedAt := shutdownAt.Add(drain)

	if !returned || runErr != nil {
		t.Fatalf("Run: returned %v, err %v, %v after the shutdown began", returned, runErr, drain)
	}
	if drain >= grace {
		t.Errorf("Run returned %v after the shutdown began: the %v grace ran out, RPCs were cut", drain, grace)
	}
	// check classifies rpcs: sure tells the ones the server surely had
	// when the shutdown began.
	check := func(kind string, rpcs []rpc, sure func(rpc) bool) (inFlight, refused int) {
		t.Helper()
		var bad []string
		after := 0
		for _, c := range rpcs {
			if sure(c) && c.end.After(shutdownAt) {
				inFlight++
			}
			switch {
			case c.err == nil:
			case sure(c):
				bad = append(bad, fmt.Sprintf("sent %v before the shutdown, then %s: %v", shutdownAt.Sub(c.sent).Round(time.Millisecond), c.step, c.err))
			case status.Code(c.err) != codes.Unavailable:
				bad = append(bad, fmt.Sprintf("%s: %v; want Unavailable", c.step, c.err))
			default:
				refused++
			}
			if c.start.After(stoppedAt) {
				after++
				if c.err == nil {
					bad = append(bad, "answered after Run returned")
				}
			}
		}
		if len(bad) > 0 {
			t.Errorf("%s: %d of %d failed; first: %s", kind, len(bad), len(rpcs), strings.Join(bad[:min(len(bad), 3)], "; "))
		}
		if inFlight == 0 || after == 0 {
			t.Errorf("%s: %d in flight at the shutdown, %d sent after Run returned; the test shows nothing", kind, inFlight, after)
		}
		return inFlight, refused
	}
	// A request sent 50ms before the shutdown (more if the process stalled
	// meanwhile) has reached the server.
	sure := func(c rpc) bool {
		return !c.sent.IsZero() && c.sent.Before(shutdownAt.Add(-50*time.Millisecond-st.worst(c.sent, shutdownAt)))
	}
	callsInFlight, callsRefused := check("RLS", calls, sure)
	streamsInFlight, streamsRefused := check("ext_proc", streams, sure)
	between := 0 // streams answered once before the shutdown, sending again after it
	for _, c := range streams {
		if c.err == nil && !c.answered.IsZero() && c.answered.Before(shutdownAt) && c.end.After(shutdownAt) {
			between++
		}
	}
	t.Logf("FIGURE: graceful shutdown under load (Redis +%v each way): %d RLS calls, %d in flight at shutdown and all answered, %d refused (Unavailable); %d ext_proc streams, %d in flight at shutdown (%d of them between messages) and all completed, %d refused; Run returned nil %s after the shutdown began (grace %s)",
		latency, len(calls), callsInFlight, callsRefused, len(streams), streamsInFlight, between, streamsRefused, ms(drain), grace)
}
