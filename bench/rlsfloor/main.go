// Command rlsfloor is the baseline for the rate limit benchmark: a
// RateLimitService that answers OK to everything without touching Redis, so
// it measures the gRPC floor of this machine. With -redis it is the Redis
// floor instead: each call runs the limiter's Lua script once (EVALSHA, one
// sliding-window item per descriptor, as Sluice's script call does, without
// coalescing, matching, metrics or headers) and answers OK: the cheapest RLS
// that still asks Redis for every decision.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/internal/app"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

type floor struct {
	rlsv3.UnimplementedRateLimitServiceServer
	rdb    *redis.Client // nil: no Redis
	sha    string
	prefix string
}

func (f floor) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	ds := req.GetDescriptors()
	if f.rdb != nil && len(ds) > 0 {
		// One sliding-window item per descriptor, as Sluice sends them: limit 1e9, window 1m,
		// 10 sub-windows, 1 hit.
		items := make([]limiter.Item, len(ds))
		for i, d := range ds {
			k := ""
			for _, e := range d.GetEntries() {
				k += e.GetKey() + "=" + e.GetValue() + ";"
			}
			items[i] = limiter.Item{Key: f.prefix + "{" + k + "}", Limit: 1e9, Window: time.Minute, Hits: 1}
		}
		keys, input, err := limiter.ScriptCall(items)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := f.rdb.EvalSha(ctx, f.sha, keys, "", input).Err(); err != nil {
			return nil, err
		}
	}
	st := make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(ds))
	for i := range st {
		st[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
	}
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: st}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18090", "listen address")
	redisAddr := flag.String("redis", "", "Redis address: run the limiter's script once per call (the Redis floor)")
	prefix := flag.String("prefix", "sluicebench:floor:", "key prefix with -redis")
	tuned := flag.Bool("tuned", false, "serve with Sluice's gRPC server options (stream workers, its codec, static flow-control windows) instead of gRPC's defaults")
	flag.Parse()
	f := floor{prefix: *prefix}
	if *redisAddr != "" {
		f.rdb = redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: 64, ContextTimeoutEnabled: true})
		var err error
		if f.sha, err = f.rdb.ScriptLoad(context.Background(), limiter.ScriptSource()).Result(); err != nil {
			log.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	var opts []grpc.ServerOption
	if *tuned {
		opts = app.GRPCTuning()
	}
	g := grpc.NewServer(opts...)
	rlsv3.RegisterRateLimitServiceServer(g, f)
	log.Fatal(g.Serve(ln))
}
