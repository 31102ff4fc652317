package limiter_test

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

func Example() {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: redistest.Addr(), ContextTimeoutEnabled: true})
	defer client.Close()

	// Production leaves Now nil (the Redis server's clock); a fixed time keeps the output stable.
	now := time.UnixMilli(1_800_000_000_000)
	l, err := limiter.New(client, limiter.Config{Now: func() time.Time { return now }}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()

	key := fmt.Sprintf("sluicetest:example:%d:{tenant-acme}:rps", time.Now().UnixNano())
	defer client.Del(ctx, key+":sw:1000:10")
	for range 3 {
		results, allowed, err := l.Do(ctx, []limiter.Item{{
			Key: key, Limit: 2, Window: time.Second, Algorithm: limiter.SlidingWindow, Hits: 1,
		}})
		if err != nil {
			fmt.Println(err)
			return
		}
		r := results[0]
		fmt.Printf("allowed=%v used=%d remaining=%d reset=%v cached=%v\n", allowed, r.Used, r.Remaining, r.ResetAfter, r.FromCache)
	}
	// Output:
	// allowed=true used=1 remaining=1 reset=1s cached=false
	// allowed=true used=2 remaining=0 reset=1s cached=false
	// allowed=false used=2 remaining=0 reset=1s cached=true
}

func ExampleParseAlgorithm() {
	a, err := limiter.ParseAlgorithm("Fixed_Window")
	fmt.Println(a, err)
	_, err = limiter.ParseAlgorithm("")
	fmt.Println(err)
	// Output:
	// fixed_window <nil>
	// limiter: unknown algorithm "" (want sliding_window or fixed_window)
}

// An item in lease mode: the first decision of the key waits for a lease, later ones are
// answered from it without Redis.
func Example_lease() {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: redistest.Addr(), ContextTimeoutEnabled: true})
	defer client.Close()

	now := time.UnixMilli(1_800_000_000_000)
	l, err := limiter.New(client, limiter.Config{Now: func() time.Time { return now }}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()

	key := fmt.Sprintf("sluicetest:example:%d:{tenant-initech}:api", time.Now().UnixNano())
	defer client.Del(ctx, key+":sw:60000:10")
	for range 3 {
		results, allowed, err := l.Do(ctx, []limiter.Item{{
			Key: key, Limit: 1_000_000, Window: time.Minute, Hits: 1, Mode: limiter.Lease,
		}})
		if err != nil {
			fmt.Println(err)
			return
		}
		r := results[0]
		fmt.Printf("allowed=%v leased=%v used=%d remaining=%d\n", allowed, r.Leased, r.Used, r.Remaining)
	}
	// Output:
	// allowed=true leased=true used=1 remaining=999999
	// allowed=true leased=true used=2 remaining=999998
	// allowed=true leased=true used=3 remaining=999997
}
