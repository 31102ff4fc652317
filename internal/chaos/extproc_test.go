package chaos_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/sluicehq/sluice/extproc/extproctest"
)

// Where a stream is cancelled: after the step named, before the next one.
const (
	cancelBeforeSend         = iota // nothing sent yet
	cancelAfterRequestSent          // request headers in flight, no reply read
	cancelAfterRequestReply         // the upstream is "working"
	cancelAfterResponseSent         // response headers in flight
	cancelAfterResponseReply        // the cache asked for the body, none sent
	cancelAfterBodySent             // the body in flight (the cache stores it)
	cancelAfterCloseSend            // half-closed, the server not yet done
	complete                        // never cancelled
)

var cancelNames = [...]string{
	"before sending", "after the request headers", "after their reply", "after the response headers",
	"after their reply", "after the body", "after the half-close", "complete",
}

// bodyOf is the response body of the origin the streams play.
func bodyOf(tenant, path string) string { return "body of " + tenant + " " + path }

// exchange drives s as Envoy does for a GET of path that the upstream
// answers cacheably, and cancels it at the point at (complete: never),
// after jitter. It returns an error when a reply is wrong or the stream
// fails before its cancellation.
func exchange(s *extproctest.Stream, tenant, path string, at int, jitter func()) error {
	cancel := func(point int) bool {
		if at != point {
			return false
		}
		jitter()
		s.Cancel()
		return true
	}
	if cancel(cancelBeforeSend) {
		return nil
	}
	if err := s.Send(extproctest.RequestHeaders("GET", path, true, "x-tenant-id", tenant)); err != nil {
		return fmt.Errorf("send request headers: %w", err)
	}
	if cancel(cancelAfterRequestSent) {
		return nil
	}
	resp, err := recvReply(s.Recv)
	if err != nil {
		return fmt.Errorf("request headers: %w", err)
	}
	body := bodyOf(tenant, path)
	if ir := resp.GetImmediateResponse(); ir != nil {
		// A cache hit: the stream ends here.
		if string(ir.GetBody()) != body {
			return fmt.Errorf("cache hit for %s %s: body %q", tenant, path, ir.GetBody())
		}
		if at != complete {
			s.Cancel()
			return nil
		}
		return s.Finish()
	}
	if resp.GetRequestHeaders() == nil {
		return fmt.Errorf("reply %T to the request headers", resp.GetResponse())
	}
	if got := setHeader(resp, "x-sluice-tenant"); got != tenant {
		return fmt.Errorf("x-sluice-tenant %q, want %q", got, tenant)
	}
	if cancel(cancelAfterRequestReply) {
		return nil
	}
	if err := s.Send(extproctest.ResponseHeaders(200, false, "cache-control", "max-age=60",
		"content-type", "text/plain", "content-length", strconv.Itoa(len(body)))); err != nil {
		return fmt.Errorf("send response headers: %w", err)
	}
	if cancel(cancelAfterResponseSent) {
		return nil
	}
	if resp, err = recvReply(s.Recv); err != nil {
		return fmt.Errorf("response headers: %w", err)
	}
	if resp.GetResponseHeaders() == nil {
		return fmt.Errorf("reply %T to the response headers", resp.GetResponse())
	}
	wantBody := resp.GetModeOverride().GetResponseBodyMode() == procmodev3.ProcessingMode_BUFFERED
	if cancel(cancelAfterResponseReply) {
		return nil
	}
	if wantBody {
		if err := s.Send(extproctest.ResponseBody([]byte(body), true)); err != nil {
			return fmt.Errorf("send body: %w", err)
		}
		if cancel(cancelAfterBodySent) {
			return nil
		}
		if resp, err = recvReply(s.Recv); err != nil {
			return fmt.Errorf("response body: %w", err)
		}
		if resp.GetResponseBody() == nil {
			return fmt.Errorf("reply %T to the response body", resp.GetResponse())
		}
	} else if cancel(cancelAfterBodySent) {
		return nil
	}
	if err := s.CloseSend(); err != nil {
		return fmt.Errorf("close send: %w", err)
	}
	if cancel(cancelAfterCloseSend) {
		return nil
	}
	if err := s.Wait(); err != nil {
		return fmt.Errorf("end of stream: %w", err)
	}
	return nil
}

// job is one stream to drive.
type job struct {
	s            *extproctest.Stream
	tenant, path string
	at           int
}

// TestExtProcStreamsCancelledUnderLoad cancels ext_proc streams at every
// point of the exchange while others run to completion, many at once, some
// on the same hot cache keys (a cancelled collapse leader must release its
// followers). No completed stream may fail or get a wrong reply; the
// server's goroutines return to their baseline; the cancellations are
// counted in sluice_extproc_streams_total, and no stream ends as an error.
func TestExtProcStreamsCancelledUnderLoad(t *testing.T) {
	r := startApp(t, sharedRedis(t), nil)
	never := func() {}
	for i := range 10 { // warm up the connection, the stream workers and the cache
		if err := exchange(extproctest.Open(t, r.conn), "acme", fmt.Sprintf("/warm/%d", i), complete, never); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	baseline := runtime.NumGoroutine()
	before := r.streamsTotal(t)

	const streams, workers = 1200, 16
	seed := uint64(time.Now().UnixNano())
	rnd := rand.New(rand.NewPCG(seed, 0))
	tenantList := []string{"acme", "umbrella", "globex", "initech"}
	var (
		jobs     = make(chan job)
		failures atomic.Int64
		mu       sync.Mutex // guards errs and took
		errs     []string
		took     []time.Duration
		planned  [complete + 1]int
		peak     atomic.Int64
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			wr := rand.New(rand.NewPCG(seed, uint64(w)+1))
			jitter := func() { time.Sleep(time.Duration(wr.IntN(1000)) * time.Microsecond) }
			for j := range jobs {
				start := time.Now()
				if err := exchange(j.s, j.tenant, j.path, j.at, jitter); err != nil {
					failures.Add(1)
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%s %s cancelled %s: %v", j.tenant, j.path, cancelNames[j.at], err))
					mu.Unlock()
				}
				if j.at == complete {
					mu.Lock()
					took = append(took, time.Since(start))
					mu.Unlock()
				}
				peak.Store(max(peak.Load(), int64(runtime.NumGoroutine())))
			}
		})
	}
	start := time.Now()
	for i := range streams {
		j := job{tenant: tenantList[i%len(tenantList)], at: complete}
		if rnd.Float64() < 0.6 {
			j.at = rnd.IntN(complete)
		}
		if i%3 == 0 {
			j.path = fmt.Sprintf("/hot/%d", rnd.IntN(3)) // shared cache keys
		} else {
			j.path = fmt.Sprintf("/s/%d", i)
		}
		planned[j.at]++
		j.s = extproctest.Open(t, r.conn)
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)

	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d streams failed; first: %s", n, streams, strings.Join(errs[:min(len(errs), 5)], "; "))
	}
	// Every handler returns: the goroutines go back to the baseline.
	settled := time.Now()
	goroutines := runtime.NumGoroutine()
	for deadline := time.Now().Add(5 * time.Second); goroutines > baseline+2; goroutines = runtime.NumGoroutine() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines 5s after the streams ended, %d before:\n%s", goroutines, baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	settle := time.Since(settled)

	after := r.streamsTotal(t)
	delta := map[string]int{}
	total := 0
	for k, v := range after {
		if d := int(v - before[k]); d > 0 {
			delta[k] = d
			total += d
		}
	}
	completed := planned[complete]
	if delta["cancelled"] == 0 || total > streams || delta["ok"]+delta["immediate_response"] < completed {
		t.Errorf("streams by result %v for %d streams (%d completed): want cancellations counted and every completed stream ok", delta, streams, completed)
	}
	for _, bad := range []string{"protocol_error", "stage_error", "body_too_large", "message_too_large"} {
		if delta[bad] > 0 {
			t.Errorf("%d streams ended as %s", delta[bad], bad)
		}
	}
	var cancels []string
	for at := range complete {
		cancels = append(cancels, fmt.Sprintf("%d %s", planned[at], cancelNames[at]))
	}
	t.Logf("FIGURE: ext_proc streams cancelled under load: %d streams (%d concurrent) in %s, %d completed (p50/p99 %s/%s), %d cancelled (%s); %d failed; streams_total %v; goroutines %d before, peak %d, back to %d within %s (seed %d)",
		streams, workers, elapsed.Round(time.Millisecond), completed, ms(quantile(took, 0.5)), ms(quantile(took, 0.99)),
		streams-completed, strings.Join(cancels, ", "), failures.Load(), delta, baseline, peak.Load(), goroutines, settle.Round(time.Millisecond), seed)
}
