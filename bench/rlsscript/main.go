// Command rlsscript prints the limiter's Lua script, or with -bench times the
// script alone: bench/ratelimit.sh runs it for the raw rate of the Lua call
// Sluice makes (one request of one sliding-window item), as redis-benchmark
// would, which cannot send the script's binary argument.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

func main() {
	var (
		bench   = flag.Bool("bench", false, "time the script instead of printing it")
		addr    = flag.String("addr", "127.0.0.1:6379", "Redis address")
		clients = flag.Int("c", 32, "concurrent clients")
		calls   = flag.Int("n", 200000, "script calls")
		keys    = flag.Int("r", 1000, "distinct counters (as redis-benchmark -r)")
		prefix  = flag.String("prefix", "sluicebench:", "key prefix")
	)
	flag.Parse()
	if !*bench {
		fmt.Print(limiter.ScriptSource())
		return
	}
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: *addr, PoolSize: *clients})
	defer c.Close()
	sha, err := c.ScriptLoad(ctx, limiter.ScriptSource()).Result()
	if err != nil {
		log.Fatal(err)
	}
	// One request of one sliding-window item per call, as the limiter sends it: limit 1e9,
	// window 1m, 10 sub-windows, 1 hit, on one of -r counters.
	type scriptCall struct {
		keys  []string
		input []byte
	}
	counters := make([]scriptCall, *keys)
	for i := range counters {
		k, in, err := limiter.ScriptCall([]limiter.Item{{
			Key: fmt.Sprintf("%srl:{%d}", *prefix, i), Limit: 1e9, Window: time.Minute, Hits: 1,
		}})
		if err != nil {
			log.Fatal(err)
		}
		counters[i] = scriptCall{k, in}
	}
	var (
		mu   sync.Mutex
		lat  []time.Duration
		wg   sync.WaitGroup
		next = make(chan int, *calls)
	)
	for i := range *calls {
		next <- i
	}
	close(next)
	start := time.Now()
	for range *clients {
		wg.Go(func() {
			local := make([]time.Duration, 0, *calls / *clients + 1)
			for i := range next {
				sc := counters[(i*7919)%len(counters)]
				t := time.Now()
				if err := c.EvalSha(ctx, sha, sc.keys, "", sc.input).Err(); err != nil {
					log.Fatal(err)
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(lat)
	fmt.Printf("EVALSHA %s 1 %srl:{<n>}:sw:60000:10 \"\" <one sliding item>: %.2f requests per second, p50=%.3f msec\n",
		sha, *prefix, float64(len(lat))/el.Seconds(), float64(lat[len(lat)/2].Microseconds())/1000)
}
