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
	"os"
	"slices"
	"strconv"
	"strings"
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
		batch   = flag.Int("batch", 1, "requests per script call, each of one item on its own counter, as the limiter coalesces them")
		script  = flag.String("script", "", "time the Lua source in this file instead of the limiter's (a variant under study; same input and reply)")
	)
	flag.Parse()
	if !*bench {
		fmt.Print(limiter.ScriptSource())
		return
	}
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: *addr, PoolSize: *clients})
	defer c.Close()
	src := limiter.ScriptSource()
	if *script != "" {
		b, err := os.ReadFile(*script)
		if err != nil {
			log.Fatal(err)
		}
		src = string(b)
	}
	sha, err := c.ScriptLoad(ctx, src).Result()
	if err != nil {
		log.Fatal(err)
	}
	// One request of one sliding-window item per call, as the limiter sends it: limit 1e9,
	// window 1m, 10 sub-windows, 1 hit, on one of -r counters.
	type scriptCall struct {
		keys  []string
		input []byte
	}
	if *batch < 1 {
		log.Fatal("rlsscript: -batch must be at least 1")
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
	cpu0, err := redisCPU(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	for range *clients {
		wg.Go(func() {
			local := make([]time.Duration, 0, *calls / *clients + 1)
			var (
				ks    []string
				input []byte
			)
			for i := range next {
				ks, input = ks[:0], input[:0]
				for j := range *batch {
					sc := counters[((i**batch+j)*7919)%len(counters)]
					ks = append(ks, sc.keys...)
					input = append(input, sc.input...)
				}
				t := time.Now()
				if err := c.EvalSha(ctx, sha, ks, "", input).Err(); err != nil {
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
	cpu1, err := redisCPU(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	slices.Sort(lat)
	fmt.Printf("EVALSHA %s %d %srl:{<n>}:sw:60000:10 \"\" <%d sliding item(s), one per request>: %.2f requests per second, p50=%.3f msec, redis_cpu_us_per_item=%.2f\n",
		sha, *batch, *prefix, *batch, float64(len(lat))/el.Seconds(), float64(lat[len(lat)/2].Microseconds())/1000,
		(cpu1-cpu0)*1e6/float64(len(lat)**batch))
}

// redisCPU returns the CPU seconds (user and system) the Redis server has used, from INFO cpu.
func redisCPU(ctx context.Context, c *redis.Client) (float64, error) {
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, fmt.Errorf("rlsscript: info cpu: %w", err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("rlsscript: info cpu %s: %w", k, err)
			}
			total += f
		}
	}
	return total, nil
}
