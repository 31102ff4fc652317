// Command streams measures what held-open ext_proc streams cost one Sluice
// process. Envoy keeps a request's ext_proc stream open from its request
// headers until its response phase, so a gateway with N requests in flight
// holds N streams on Sluice.
//
// It opens -n streams to the Sluice at -addr, spread over -conns gRPC
// connections (Envoy keeps one HTTP/2 connection per worker thread to a
// cluster host, so a few), sends each the request_headers message Envoy's
// ext_proc filter sends (protocol_config on the first message, raw_value
// headers, pseudo-headers first, the tenant header), reads the reply and
// keeps the stream open. It then completes every stream as Envoy does at the
// end of the response: response_headers, a response body if Sluice asks for
// one, half-close, and waits for Sluice to end the stream with OK.
//
// Around that it reads the Sluice process (-pid, -admin): VmRSS from
// /proc/PID/status, goroutines from /metrics, and the live heap from
// /debug/pprof/heap?gc=1&debug=1 (net/http/pprof forces a GC first), at
// three points: before opening, with all streams open, after all are
// closed. It prints memory and goroutines per stream, the time to open all,
// and errors, which must be 0.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/devstack"
)

func main() {
	var (
		addr    = flag.String("addr", "127.0.0.1:8081", "Sluice gRPC address")
		admin   = flag.String("admin", "http://127.0.0.1:9091", "Sluice admin base URL")
		pid     = flag.Int("pid", 0, "PID of the Sluice process (for VmRSS); required")
		n       = flag.Int("n", 10000, "streams to hold open at once")
		conns   = flag.Int("conns", 8, "gRPC connections the streams are spread over")
		par     = flag.Int("p", 64, "streams opened (and completed) in parallel")
		warm    = flag.Int("warm", 1000, "streams opened and completed before the baseline reading")
		timeout = flag.Duration("timeout", 10*time.Second, "limit for each reply")
		settle  = flag.Duration("settle", 2*time.Second, "wait before each memory reading")
		drain   = flag.Duration("drain", 60*time.Second, "after closing, how long to wait for RSS to come back near the baseline")
	)
	flag.Parse()
	if *pid <= 0 || *n < 1 || *conns < 1 || *par < 1 {
		fmt.Fprintln(os.Stderr, "streams: need -pid, and -n, -conns, -p ≥ 1")
		os.Exit(2)
	}
	b := &bench{admin: strings.TrimRight(*admin, "/"), pid: *pid, timeout: *timeout, http: &http.Client{Timeout: 30 * time.Second}}
	if err := b.run(*addr, *n, *conns, *par, *warm, *settle, *drain); err != nil {
		fmt.Fprintln(os.Stderr, "streams:", err)
		os.Exit(1)
	}
}

// bench holds what the phases share. Not safe for concurrent use except
// for the counters.
type bench struct {
	admin   string
	pid     int
	timeout time.Duration
	http    *http.Client

	openErrs, doneErrs atomic.Int64
	immediate          atomic.Int64 // streams Sluice answered at once (not held)
	firstErr           atomic.Value // string: the first error seen
}

func (b *bench) fail(counter *atomic.Int64, err error) {
	counter.Add(1)
	b.firstErr.CompareAndSwap(nil, err.Error())
}

// reading is the Sluice process at one moment.
type reading struct {
	rss, heapAlloc, heapInuse float64 // bytes; heap figures right after a GC
	goroutines                float64
	streams                   map[string]float64 // sluice_extproc_streams_total by result
}

func (r reading) String() string {
	return fmt.Sprintf("rss=%.1fMB live_heap=%.1fMB heap_inuse=%.1fMB goroutines=%.0f", r.rss/mb, r.heapAlloc/mb, r.heapInuse/mb, r.goroutines)
}

const mb = 1 << 20

// held is one open stream.
type held struct {
	c      extprocv3.ExternalProcessor_ProcessClient
	cancel context.CancelFunc
}

func (b *bench) run(addr string, n, nconns, par, warm int, settle, drain time.Duration) error {
	ctx := context.Background()
	clients := make([]extprocv3.ExternalProcessorClient, nconns)
	for i := range clients {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("dial %s: %w", addr, err)
		}
		defer cc.Close()
		if err := connect(ctx, cc, b.timeout); err != nil {
			return err
		}
		clients[i] = extprocv3.NewExternalProcessorClient(cc)
	}
	if warm > 0 {
		// First use allocates what stays for the process's life (metric
		// series, pools, buffers); a round of streams before the baseline
		// keeps that out of the per-stream figures.
		if err := b.round(clients, min(warm, n), par); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	base, err := b.drain(ctx, "", 0, settle, drain)
	if err != nil {
		return err
	}
	fmt.Printf("== %d ext_proc streams held open on one Sluice process (pid %d), over %d gRPC connections, opened %d at a time\n", n, b.pid, nconns, par)
	fmt.Printf("before:     %v\n", base)

	tenants := make([]string, 0, len(devstack.DemoTiers))
	for t := range devstack.DemoTiers {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	streams := make([]*held, n)
	openLat := make([]time.Duration, n)
	start := time.Now()
	parallel(n, par, func(i int) {
		t0 := time.Now()
		h, err := b.open(clients[i%nconns], i, "/api/v1/contacts/"+strconv.Itoa(i+1)+"?fields=all", tenants[i%len(tenants)], &b.immediate)
		openLat[i] = time.Since(t0)
		if err != nil {
			b.fail(&b.openErrs, err)
			return
		}
		streams[i] = h
	})
	openAll := time.Since(start)
	heldN := 0
	for _, h := range streams {
		if h != nil {
			heldN++
		}
	}
	slices.Sort(openLat)
	fmt.Printf("opened:     %d streams held in %v (%.0f streams/s); open+first reply p50=%v p99=%v max=%v; open errors=%d immediate replies=%d\n",
		heldN, openAll.Round(time.Millisecond), float64(n)/openAll.Seconds(), openLat[n/2].Round(time.Microsecond),
		openLat[min(n-1, n*99/100)].Round(time.Microsecond), openLat[n-1].Round(time.Microsecond), b.openErrs.Load(), b.immediate.Load())

	time.Sleep(settle)
	open, err := b.read(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("all open:   %v\n", open)

	start = time.Now()
	parallel(n, par, func(i int) {
		if h := streams[i]; h != nil {
			if err := b.complete(h); err != nil {
				b.fail(&b.doneErrs, err)
			}
		}
	})
	closeAll := time.Since(start)
	fmt.Printf("completed:  %d streams in %v (response_headers, half-close, OK from Sluice); errors=%d\n", heldN, closeAll.Round(time.Millisecond), b.doneErrs.Load())

	// The runtime hands freed pages (heap and goroutine stacks) back to the
	// OS in the background scavenger, not at once.
	after, err := b.drain(ctx, "after:     ", base.rss+0.1*(open.rss-base.rss), settle, drain)
	if err != nil {
		return err
	}

	per := func(a, z float64) float64 { return (z - a) / float64(max(1, heldN)) }
	fmt.Printf("\n== per held stream (all open − before, / %d)\n", heldN)
	fmt.Printf("RSS %.1f KB   live heap %.1f KB   heap in use %.1f KB   goroutines %.2f\n",
		per(base.rss, open.rss)/1024, per(base.heapAlloc, open.heapAlloc)/1024, per(base.heapInuse, open.heapInuse)/1024, per(base.goroutines, open.goroutines))
	fmt.Printf("\n== after closing, against before\n")
	fmt.Printf("RSS %+.1f MB (%.0f%% of the increase kept)   live heap %+.2f MB   goroutines %+.0f\n",
		(after.rss-base.rss)/mb, 100*(after.rss-base.rss)/max(1, open.rss-base.rss), (after.heapAlloc-base.heapAlloc)/mb, after.goroutines-base.goroutines)
	fmt.Println("(the runtime keeps the g structs of exited goroutines for reuse, ~0.5 KB each: part of the live heap kept)")
	results := map[string]float64{}
	for k, v := range after.streams {
		if d := v - base.streams[k]; d != 0 {
			results[k] = d
		}
	}
	fmt.Printf("sluice_extproc_streams_total Δ by result: %v\n", results)
	errs := b.openErrs.Load() + b.doneErrs.Load()
	fmt.Printf("errors: %d", errs)
	if msg, ok := b.firstErr.Load().(string); ok {
		fmt.Printf(" (first: %s)", msg)
	}
	fmt.Println()
	if errs > 0 {
		return fmt.Errorf("%d stream errors", errs)
	}
	return nil
}

// drain reads the process after settle, then every 5 s until its RSS is
// at most target, stops falling (less than 1 MB over 10 s) or limit has
// passed since the call. A label prints each reading.
func (b *bench) drain(ctx context.Context, label string, target float64, settle, limit time.Duration) (reading, error) {
	start := time.Now()
	time.Sleep(settle)
	var rss []float64
	for {
		r, err := b.read(ctx)
		if err != nil {
			return r, err
		}
		if label != "" {
			fmt.Printf("%s %v  (+%v)\n", label, r, time.Since(start).Round(time.Second))
		}
		rss = append(rss, r.rss)
		k := len(rss)
		if r.rss <= target || time.Since(start) >= limit || k >= 3 && rss[k-3]-rss[k-1] < mb {
			return r, nil
		}
		time.Sleep(5 * time.Second)
	}
}

// round opens n streams, then completes them, counting nothing.
func (b *bench) round(clients []extprocv3.ExternalProcessorClient, n, par int) error {
	var failed atomic.Int64
	var first atomic.Value
	streams := make([]*held, n)
	parallel(n, par, func(i int) {
		h, err := b.open(clients[i%len(clients)], i, "/api/v1/warmup/"+strconv.Itoa(i), "acme", new(atomic.Int64))
		if err != nil {
			failed.Add(1)
			first.CompareAndSwap(nil, err.Error())
		}
		streams[i] = h
	})
	parallel(n, par, func(i int) {
		if h := streams[i]; h != nil {
			if err := b.complete(h); err != nil {
				failed.Add(1)
				first.CompareAndSwap(nil, err.Error())
			}
		}
	})
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d streams failed (first: %v)", f, n, first.Load())
	}
	return nil
}

// connect waits until cc is READY.
func connect(ctx context.Context, cc *grpc.ClientConn, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cc.Connect()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			return fmt.Errorf("connect %s: %w", cc.Target(), ctx.Err())
		}
	}
	return nil
}

// parallel runs f(0..n-1) on p goroutines.
func parallel(n, p int, f func(int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, p) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		})
	}
	wg.Wait()
}

// recv waits for the next reply at most limit; past it the stream is
// cancelled.
func recv(c extprocv3.ExternalProcessor_ProcessClient, cancel context.CancelFunc, limit time.Duration) (*extprocv3.ProcessingResponse, error) {
	t := time.AfterFunc(limit, cancel)
	defer t.Stop()
	return c.Recv()
}

// open starts stream i (for path) as Envoy does for a GET: request_headers with
// end_of_stream (no body), protocol_config on this first message (body
// modes NONE, the default route's in envoy/envoy.yaml). Each stream has its
// own path, so no stream waits for another's upstream fetch (the cache
// collapses concurrent misses of one key).
func (b *bench) open(client extprocv3.ExternalProcessorClient, i int, path, tenant string, immediate *atomic.Int64) (*held, error) {
	ctx, cancel := context.WithCancel(context.Background())
	c, err := client.Process(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open stream %d: %w", i, err)
	}
	req := extproctest.RequestHeaders("GET", path, true,
		"user-agent", "curl/8.5.0", "accept", "application/json",
		"x-forwarded-for", "192.0.2.7", "x-forwarded-proto", "http", "x-envoy-external-address", "192.0.2.7",
		"x-request-id", fmt.Sprintf("00000000-0000-4000-8000-%012d", i), "x-tenant-id", tenant, "x-user-id", "u"+strconv.Itoa(i%50))
	req.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: procmodev3.ProcessingMode_NONE, ResponseBodyMode: procmodev3.ProcessingMode_NONE}
	if err := c.Send(req); err != nil {
		cancel()
		return nil, fmt.Errorf("stream %d: send request_headers: %w", i, err)
	}
	resp, err := recv(c, cancel, b.timeout)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("stream %d: reply to request_headers: %w", i, err)
	}
	switch resp.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return &held{c: c, cancel: cancel}, nil
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		// Answered by Sluice (a cache hit): the stream is over, not held.
		immediate.Add(1)
		cancel()
		return nil, nil
	}
	cancel()
	return nil, fmt.Errorf("stream %d: unexpected reply %T to request_headers", i, resp.GetResponse())
}

// complete ends a held stream as Envoy does after the upstream answered: a
// 200 that may not be stored (so closing leaves no cache entry behind), the
// body only if Sluice asks for it with mode_override, then half-close
// (Filter::closeStream) and the server's OK.
func (b *bench) complete(h *held) error {
	defer h.cancel()
	body := []byte(`{"id":1,"name":"Ada Lovelace","email":"ada.lovelace@acme.example"}`)
	req := extproctest.ResponseHeaders(200, false, "content-type", "application/json", "content-length", strconv.Itoa(len(body)),
		"cache-control", "no-store", "x-envoy-upstream-service-time", "1")
	if err := h.c.Send(req); err != nil {
		return fmt.Errorf("send response_headers: %w", err)
	}
	resp, err := recv(h.c, h.cancel, b.timeout)
	if err != nil {
		return fmt.Errorf("reply to response_headers: %w", err)
	}
	if _, ok := resp.GetResponse().(*extprocv3.ProcessingResponse_ResponseHeaders); !ok {
		return fmt.Errorf("unexpected reply %T to response_headers", resp.GetResponse())
	}
	if m := resp.GetModeOverride().GetResponseBodyMode(); m != procmodev3.ProcessingMode_NONE {
		if err := h.c.Send(extproctest.ResponseBody(body, true)); err != nil {
			return fmt.Errorf("send response_body: %w", err)
		}
		if _, err := recv(h.c, h.cancel, b.timeout); err != nil {
			return fmt.Errorf("reply to response_body: %w", err)
		}
	}
	if err := h.c.CloseSend(); err != nil {
		return fmt.Errorf("half-close: %w", err)
	}
	for {
		_, err := recv(h.c, h.cancel, b.timeout)
		if errors.Is(err, io.EOF) {
			return nil // the server returned OK
		}
		if err != nil {
			return fmt.Errorf("end of stream: %w", err)
		}
	}
}

// read takes one reading of the Sluice process.
func (b *bench) read(ctx context.Context) (reading, error) {
	var r reading
	var err error
	if r.rss, err = vmRSS(b.pid); err != nil {
		return r, err
	}
	if r.heapAlloc, r.heapInuse, err = b.gcHeap(ctx); err != nil {
		return r, err
	}
	ss, err := b.metrics(ctx)
	if err != nil {
		return r, err
	}
	r.goroutines = ss["go_goroutines"][""]
	r.streams = ss["sluice_extproc_streams_total"]
	return r, nil
}

func vmRSS(pid int) (float64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("rss: %w", err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, err := strconv.ParseFloat(f[0], 64)
				if err != nil {
					return 0, fmt.Errorf("rss: %w", err)
				}
				return kb * 1024, nil
			}
		}
	}
	return 0, fmt.Errorf("rss: no VmRSS for pid %d", pid)
}

// fetch GETs an admin path and hands the body to read.
func (b *bench) fetch(ctx context.Context, path string, read func(io.Reader) error) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.admin+path, nil)
	if err != nil {
		return fmt.Errorf("admin %s: %w", path, err)
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := b.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin %s: status %d", path, resp.StatusCode)
	}
	if err := read(resp.Body); err != nil {
		return fmt.Errorf("admin %s: %w", path, err)
	}
	return nil
}

// gcHeap forces a GC in Sluice (pprof's gc=1) and returns HeapAlloc and
// HeapInuse from the runtime.MemStats the debug=1 profile ends with.
func (b *bench) gcHeap(ctx context.Context) (alloc, inuse float64, err error) {
	err = b.fetch(ctx, "/debug/pprof/heap?gc=1&debug=1", func(body io.Reader) error {
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		found := 0
		for sc.Scan() {
			for name, dst := range map[string]*float64{"# HeapAlloc = ": &alloc, "# HeapInuse = ": &inuse} {
				if v, ok := strings.CutPrefix(sc.Text(), name); ok {
					var perr error
					if *dst, perr = strconv.ParseFloat(strings.TrimSpace(v), 64); perr != nil {
						return fmt.Errorf("heap profile: %w", perr)
					}
					found++
				}
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("heap profile: %w", err)
		}
		if found != 2 {
			return errors.New("heap profile: no HeapAlloc/HeapInuse lines")
		}
		return nil
	})
	return alloc, inuse, err
}

// metrics reads go_goroutines and sluice_extproc_streams_total (by result)
// from /metrics.
func (b *bench) metrics(ctx context.Context) (map[string]map[string]float64, error) {
	out := map[string]map[string]float64{"go_goroutines": {}, "sluice_extproc_streams_total": {}}
	err := b.fetch(ctx, "/metrics", func(body io.Reader) error { return parseMetrics(body, out) })
	return out, err
}

// parseMetrics adds the samples of the names in out, keyed by their result
// label ("" without one).
func parseMetrics(body io.Reader, out map[string]map[string]float64) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		f := strings.Fields(l)
		if len(f) < 2 || strings.HasPrefix(l, "#") {
			continue
		}
		name, label := f[0], ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			if _, after, ok := strings.Cut(name[i:], `result="`); ok {
				label, _, _ = strings.Cut(after, `"`)
			}
			name = name[:i]
		}
		if m, ok := out[name]; ok {
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				return fmt.Errorf("metrics: %q: %w", l, err)
			}
			m[label] += v
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
