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
	"sync"
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
	wg.Wait()
	if len(lat) == 0 {
		fmt.Fprintln(os.Stderr, "rlsload: no calls completed")
		os.Exit(1)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Printf("%-28s descriptors=%d c=%d calls=%d decisions/s=%.0f p50=%v p99=%v errors=%d over_limit=%d\n",
		*label, *descs, *conc, len(lat), float64(len(lat))/dur.Seconds(), pct(0.50), pct(0.99), errs, over)
}
