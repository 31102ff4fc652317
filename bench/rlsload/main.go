// Command rlsload drives ShouldRateLimit calls at a RateLimitService for a
// fixed time with a fixed number of concurrent callers, and prints
// decisions/s and latency percentiles on one line, for comparison between
// servers measured in the same run.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	var (
		addr     = flag.String("addr", "127.0.0.1:8081", "RateLimitService address")
		label    = flag.String("label", "", "name printed on the result line")
		domain   = flag.String("domain", "bench", "rate limit domain")
		descs    = flag.Int("descriptors", 1, "descriptors per request (1..8)")
		conc     = flag.Int("c", 32, "concurrent callers")
		conns    = flag.Int("conns", 4, "gRPC connections (callers are spread over them)")
		dur      = flag.Duration("d", 5*time.Second, "measurement time (after 1s warm-up)")
		tenants  = flag.Int("tenants", 1000, "distinct tenant values (spreads keys like real traffic)")
		warm     = flag.Duration("warmup", time.Second, "warm-up time, not measured")
		rpcLimit = flag.Duration("timeout", time.Second, "per-call timeout")
		pids     = flag.String("pids", "", "name=pid,... of processes whose CPU time per call to report (Linux /proc), e.g. server=123,redis=456")
	)
	flag.Parse()
	if *descs < 1 || *descs > 8 || *conc < 1 || *conns < 1 {
		log.Fatal("rlsload: bad flags")
	}
	clients := make([]rlsv3.RateLimitServiceClient, *conns)
	for i := range clients {
		cc, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			log.Fatal(err)
		}
		defer cc.Close()
		clients[i] = rlsv3.NewRateLimitServiceClient(cc)
	}
	keys := []string{"tenant_id", "user_id", "remote_address", "k3", "k4", "k5", "k6", "k7"}
	mkReq := func(n int) *rlsv3.RateLimitRequest {
		req := &rlsv3.RateLimitRequest{Domain: *domain}
		for d := 0; d < *descs; d++ {
			req.Descriptors = append(req.Descriptors, &commonrl.RateLimitDescriptor{Entries: []*commonrl.RateLimitDescriptor_Entry{
				{Key: "tier", Value: "pro"},
				{Key: keys[d], Value: fmt.Sprintf("v%d", n%*tenants)},
			}})
		}
		return req
	}

	var (
		mu      sync.Mutex
		lat     []time.Duration
		errs    int
		over    int
		measure = time.Now().Add(*warm)
		stop    = measure.Add(*dur)
		wg      sync.WaitGroup
	)
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := clients[w%len(clients)]
			local := make([]time.Duration, 0, 1<<16)
			var le, lo int
			for n := w; ; n += *conc {
				start := time.Now()
				if start.After(stop) {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), *rpcLimit)
				resp, err := c.ShouldRateLimit(ctx, mkReq(n))
				cancel()
				el := time.Since(start)
				if start.Before(measure) {
					continue
				}
				switch {
				case err != nil:
					le++
				case resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT:
					lo++
				}
				local = append(local, el)
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += le
			over += lo
			mu.Unlock()
		}(w)
	}
	// CPU accounting over the measured window only: the servers' from /proc, the load
	// generator's own from getrusage. Per call, it is comparable across runs even when the
	// machine is noisy, where decisions/s is not.
	watched, err := parsePids(*pids)
	if err != nil {
		log.Fatal(err)
	}
	time.Sleep(time.Until(measure))
	cpu0, self0 := cpuTimes(watched), selfCPU()
	time.Sleep(time.Until(stop))
	cpu1, self1 := cpuTimes(watched), selfCPU()
	wg.Wait()
	if len(lat) == 0 {
		fmt.Fprintln(os.Stderr, "rlsload: no calls completed")
		os.Exit(1)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Printf("%-28s descriptors=%d c=%d calls=%d decisions/s=%.0f p50=%v p99=%v errors=%d over_limit=%d\n",
		*label, *descs, *conc, len(lat), float64(len(lat))/dur.Seconds(), pct(0.50), pct(0.99), errs, over)
	if len(watched) > 0 {
		perCall := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(len(lat)) }
		line := fmt.Sprintf("%-28s cpu_us_per_call:", "")
		total := 0.0
		for i, p := range watched {
			v := perCall(cpu1[i] - cpu0[i])
			total += v
			line += fmt.Sprintf(" %s=%.1f", p.name, v)
		}
		v := perCall(self1 - self0)
		total += v
		fmt.Printf("%s loadgen=%.1f total=%.1f\n", line, v, total)
	}
}

type proc struct {
	name string
	pid  int
}

func parsePids(s string) ([]proc, error) {
	var out []proc
	for _, f := range strings.Split(s, ",") {
		if f == "" {
			continue
		}
		name, pid, ok := strings.Cut(f, "=")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || n <= 0 {
			return nil, fmt.Errorf("rlsload: -pids: %q is not name=pid", f)
		}
		out = append(out, proc{name, n})
	}
	return out, nil
}

// cpuTimes returns the user+system CPU time of each process so far, from /proc/PID/stat
// (fields 14 and 15, in clock ticks of 1/100 s: USER_HZ is 100 on Linux). A process that
// cannot be read counts as 0.
func cpuTimes(ps []proc) []time.Duration {
	out := make([]time.Duration, len(ps))
	for i, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces: fields are counted after its ')'.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		out[i] = time.Duration(u+s) * 10 * time.Millisecond
	}
	return out
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
