// Command extprocload measures what `sluice serve`'s ext_proc path carries
// with its default stages (identity, cache, metrics), against a minimal
// ext_proc server that answers CONTINUE to every message, in alternating
// rounds of one run so that drift in machine load hits both alike.
//
// It plays Envoy's ext_proc filter with the default processing mode of
// envoy/envoy.yaml: request headers (protocol_config on the first message,
// raw_value headers, pseudo-headers first), the response headers, a
// response body only when the server asks for it (mode_override), then the
// half-close. -c streams run at once, spread over -conns gRPC connections.
//
// Traffic shapes (-shape):
//
//	uncacheable  GET of a new URL each time, answered 200 with no-store
//	hit          GET of one URL, stored before the rounds (hits end at the request headers)
//	zipf         GETs of -keys URLs drawn Zipf(1.1), answered max-age=60, and 10% POSTs
//	             to the same URLs (each invalidates its URL)
//
// It prints, per round and as medians, streams/s and p99 stream time for
// both servers and their ratios; for Sluice also the hit ratio and, with
// -redis (a Redis that only this Sluice uses), Redis commands per request
// from INFO's total_commands_processed.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluicehq/sluice/extproc/extproctest"
)

func main() {
	var (
		serveContinue = flag.String("serve-continue", "", "run the CONTINUE server on this address and nothing else")
		sluiceAddr    = flag.String("sluice", "127.0.0.1:18210", "Sluice gRPC address")
		baseAddr      = flag.String("continue", "127.0.0.1:18212", "CONTINUE server address")
		redisAddr     = flag.String("redis", "", "address of a Redis only this Sluice uses, for commands per request")
		shape         = flag.String("shape", "uncacheable", "uncacheable, hit or zipf")
		conc          = flag.Int("c", 32, "streams at once")
		conns         = flag.Int("conns", 4, "gRPC connections the streams are spread over")
		dur           = flag.Duration("d", 3*time.Second, "length of each round")
		rounds        = flag.Int("rounds", 3, "rounds per server, alternating")
		keys          = flag.Int("keys", 2000, "URLs of the zipf shape")
		sluicePid     = flag.Int("sluice-pid", 0, "PID of the Sluice process, for its CPU time per stream")
		basePid       = flag.Int("continue-pid", 0, "PID of the CONTINUE server, for its CPU time per stream")
	)
	flag.Parse()
	if *serveContinue != "" {
		if err := runContinue(*serveContinue); err != nil {
			fmt.Fprintln(os.Stderr, "extprocload:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*sluiceAddr, *baseAddr, *redisAddr, *shape, *conc, *conns, *dur, *rounds, *keys, *sluicePid, *basePid); err != nil {
		fmt.Fprintln(os.Stderr, "extprocload:", err)
		os.Exit(1)
	}
}

func runContinue(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	g := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(g, extproctest.Continue{})
	return g.Serve(lis)
}

// target is one server under load.
type target struct {
	name    string
	clients []extprocv3.ExternalProcessorClient
}

func dial(name, addr string, n int) (*target, func(), error) {
	t := &target{name: name}
	var cs []*grpc.ClientConn
	for range n {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		cs = append(cs, c)
		t.clients = append(t.clients, extprocv3.NewExternalProcessorClient(c))
	}
	return t, func() {
		for _, c := range cs {
			_ = c.Close()
		}
	}, nil
}

// result is one round against one server.
type result struct {
	streams  int
	errors   int
	elapsed  time.Duration
	p50, p99 time.Duration
	hits     int // GETs answered with an ImmediateResponse
	gets     int
	redisCmd int64         // commands Redis processed during the round, -1 unknown
	cpu      time.Duration // CPU time of the server process during the round, -1 unknown
}

// cpuPerStream is the server's CPU time per stream, 0 if unknown.
func (r result) cpuPerStream() time.Duration {
	if r.cpu < 0 || r.streams == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.streams)
}

func (r result) rate() float64 { return float64(r.streams) / r.elapsed.Seconds() }

// workload makes the messages of one request.
type workload struct {
	shape string
	keys  int
	seq   atomic.Uint64
}

var body512 = []byte(strings.Repeat("x", 512))

// request returns the request headers message, the response headers
// message, and whether it is a GET.
func (w *workload) request(rng *rand.Rand, zipf *rand.Zipf) (req, res *extprocv3.ProcessingRequest, get bool) {
	common := []string{"user-agent", "curl/8.5.0", "accept", "application/json", "accept-encoding", "gzip, br",
		"x-forwarded-proto", "https", "x-request-id", strconv.FormatUint(rng.Uint64(), 16), "x-tenant-id", "acme"}
	switch w.shape {
	case "uncacheable":
		path := "/api/v1/items/" + strconv.FormatUint(w.seq.Add(1), 10)
		return headers(true, "GET", path, common), headers(false, "200", "", []string{"content-type", "application/json",
			"content-length", "512", "cache-control", "no-store"}), true
	case "hit":
		return headers(true, "GET", "/api/v1/hot", common), cacheable(), true
	default: // zipf
		path := "/api/v1/items/" + strconv.FormatUint(zipf.Uint64(), 10)
		if rng.IntN(10) == 0 {
			return headers(true, "POST", path, append(common, "content-type", "application/json", "content-length", "2")),
				headers(false, "200", "", []string{"content-type", "application/json", "content-length", "512"}), false
		}
		return headers(true, "GET", path, common), cacheable(), true
	}
}

func cacheable() *extprocv3.ProcessingRequest {
	return headers(false, "200", "", []string{"content-type", "application/json", "content-length", "512",
		"cache-control", "max-age=60", "etag", `"v1"`})
}

// headers builds a headers message: a request's (method, path) or a
// response's (status).
func headers(request bool, methodOrStatus, path string, kv []string) *extprocv3.ProcessingRequest {
	var all []string
	if request {
		all = append([]string{":authority", "api.example.com", ":path", path, ":method", methodOrStatus, ":scheme", "https"}, kv...)
	} else {
		all = append([]string{":status", methodOrStatus}, kv...)
	}
	hm := &corev3.HeaderMap{}
	for i := 0; i < len(all); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: all[i], RawValue: []byte(all[i+1])})
	}
	h := &extprocv3.HttpHeaders{Headers: hm, EndOfStream: request && methodOrStatus == "GET"}
	r := &extprocv3.ProcessingRequest{MetadataContext: &corev3.Metadata{}}
	if request {
		r.Request = &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: h}
		r.ProtocolConfig = &extprocv3.ProtocolConfiguration{
			RequestBodyMode: procmodev3.ProcessingMode_NONE, ResponseBodyMode: procmodev3.ProcessingMode_NONE,
		}
	} else {
		r.Request = &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: h}
	}
	return r
}

// stream runs one request as Envoy's filter would; hit reports an
// ImmediateResponse at the request headers.
func stream(ctx context.Context, c extprocv3.ExternalProcessorClient, req, res *extprocv3.ProcessingRequest) (hit bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.Process(ctx)
	if err != nil {
		return false, err
	}
	recv := func() (*extprocv3.ProcessingResponse, error) {
		for {
			r, err := s.Recv()
			if err != nil || r.GetOverrideMessageTimeout() == nil || r.GetResponse() != nil {
				return r, err
			}
		}
	}
	if err := s.Send(req); err != nil {
		return false, err
	}
	r, err := recv()
	if err != nil {
		return false, err
	}
	if r.GetImmediateResponse() != nil {
		// Envoy sends the local reply and closes the stream.
		_ = s.CloseSend()
		for {
			if _, err := s.Recv(); err != nil {
				return true, nil
			}
		}
	}
	if err := s.Send(res); err != nil {
		return false, err
	}
	if r, err = recv(); err != nil {
		return false, err
	}
	if mo := r.GetModeOverride(); mo != nil && mo.GetResponseBodyMode() != procmodev3.ProcessingMode_NONE {
		b := &extprocv3.ProcessingRequest{MetadataContext: &corev3.Metadata{}, Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: body512, EndOfStream: true}}}
		if err := s.Send(b); err != nil {
			return false, err
		}
		if _, err := recv(); err != nil {
			return false, err
		}
	}
	if err := s.CloseSend(); err != nil {
		return false, err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return false, nil
			}
			return false, err
		}
	}
}

// round runs conc workers against t for d.
func round(t *target, w *workload, conc int, d time.Duration, redisAddr string, pid int) result {
	before := redisCommands(redisAddr)
	cpu0 := cpuTime(pid)
	ctx := context.Background()
	var mu sync.Mutex
	var lat []time.Duration
	res := result{}
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range conc {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			zipf := rand.NewZipf(rng, 1.1, 1, uint64(w.keys-1))
			c := t.clients[i%len(t.clients)]
			var my []time.Duration
			var r result
			for time.Now().Before(stop) {
				req, resp, get := w.request(rng, zipf)
				t0 := time.Now()
				hit, err := stream(ctx, c, req, resp)
				my = append(my, time.Since(t0))
				r.streams++
				if err != nil {
					r.errors++
				}
				if get {
					r.gets++
					if hit {
						r.hits++
					}
				}
			}
			mu.Lock()
			lat = append(lat, my...)
			res.streams += r.streams
			res.errors += r.errors
			res.gets += r.gets
			res.hits += r.hits
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p50 = lat[len(lat)/2]
		res.p99 = lat[len(lat)*99/100]
	}
	res.cpu = -1
	if cpu1 := cpuTime(pid); cpu0 >= 0 && cpu1 >= 0 {
		res.cpu = cpu1 - cpu0
	}
	res.redisCmd = -1
	if after := redisCommands(redisAddr); before >= 0 && after >= 0 {
		res.redisCmd = after - before - 1 // the second INFO
	}
	return res
}

// cpuTime returns the user and system CPU time of process pid so far
// (/proc/PID/stat fields 14 and 15, in clock ticks of 10ms), -1 if unknown.
func cpuTime(pid int) time.Duration {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// The command name may hold spaces: fields count from after its ')'.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(u+s) * 10 * time.Millisecond
}

// redisCommands reads total_commands_processed from INFO stats, -1 if it
// cannot.
func redisCommands(addr string) int64 {
	if addr == "" {
		return -1
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return -1
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n")); err != nil {
		return -1
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return -1
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
}

func run(sluiceAddr, baseAddr, redisAddr, shape string, conc, conns int, d time.Duration, rounds, keys, sluicePid, basePid int) error {
	switch shape {
	case "uncacheable", "hit", "zipf":
	default:
		return fmt.Errorf("unknown shape %q", shape)
	}
	base, closeBase, err := dial("continue", baseAddr, conns)
	if err != nil {
		return err
	}
	defer closeBase()
	sl, closeSluice, err := dial("sluice", sluiceAddr, conns)
	if err != nil {
		return err
	}
	defer closeSluice()
	w := &workload{shape: shape, keys: keys}
	// Warm both, and for the hit shape store the entry.
	round(base, w, conc, d/4, "", 0)
	round(sl, w, conc, d/4, "", 0)

	var ratios, p99s []float64
	var bs, ss []result
	for i := range rounds {
		b := round(base, w, conc, d, "", basePid)
		s := round(sl, w, conc, d, redisAddr, sluicePid)
		bs, ss = append(bs, b), append(ss, s)
		ratio := s.rate() / b.rate()
		p99 := float64(s.p99) / float64(b.p99)
		ratios, p99s = append(ratios, ratio), append(p99s, p99)
		line := fmt.Sprintf("%s round %d: continue %.0f streams/s p99 %v | sluice %.0f streams/s p99 %v | ratio %.2fx, p99 %.2fx",
			shape, i+1, b.rate(), b.p99.Round(10*time.Microsecond), s.rate(), s.p99.Round(10*time.Microsecond), ratio, p99)
		if b.cpuPerStream() > 0 && s.cpuPerStream() > 0 {
			line += fmt.Sprintf(" | CPU/stream continue %v sluice %v", b.cpuPerStream().Round(100*time.Nanosecond), s.cpuPerStream().Round(100*time.Nanosecond))
		}
		if s.gets > 0 {
			line += fmt.Sprintf(" | hit ratio %.3f", float64(s.hits)/float64(s.gets))
		}
		if s.redisCmd >= 0 {
			line += fmt.Sprintf(" | redis commands/request %.2f", float64(s.redisCmd)/float64(s.streams))
		}
		if b.errors+s.errors > 0 {
			line += fmt.Sprintf(" | ERRORS continue %d sluice %d", b.errors, s.errors)
		}
		fmt.Println(line)
	}
	fmt.Printf("%s median: streams/s %.2fx the CONTINUE server (min %.2f, max %.2f), p99 %.2fx (min %.2f, max %.2f), %d rounds of %v, %d streams at once\n",
		shape, median(ratios), slices.Min(ratios), slices.Max(ratios), median(p99s), slices.Min(p99s), slices.Max(p99s), rounds, d, conc)
	for _, r := range append(bs, ss...) {
		if r.errors > 0 {
			return errors.New("streams failed")
		}
	}
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
