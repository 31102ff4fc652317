package limiter_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

func TestSlot(t *testing.T) {
	tests := []struct {
		tag  string
		want uint16
	}{
		{tag: "", want: 0},
		{tag: "123456789", want: 12739}, // the CRC16/XMODEM check value 0x31C3
		{tag: "a", want: 15495},
		{tag: "b", want: 3300},
		{tag: "c", want: 7365},
		{tag: "foo", want: 12182},
		{tag: "user1000", want: 3443},
		{tag: "tenant:acme", want: 1612},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.tag), func(t *testing.T) {
			if got := limiter.Slot(tc.tag); got != tc.want {
				t.Errorf("Slot(%q) = %d, want %d", tc.tag, got, tc.want)
			}
		})
	}
}

// TestCluster runs the limiter against a three-master Redis Cluster: items of one request on
// three slots (one per master) are sent in one pipeline, and a slot that denies makes the
// others give their charge back.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	cl := redistest.StartCluster(t)
	cc := cl.Client(t)

	t.Run("Slot agrees with CLUSTER KEYSLOT", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for range 200 {
			tag := fmt.Sprintf("tenant-%x", r.Uint64())
			want, err := cc.ClusterKeySlot(ctx, "sluice:rl:{"+tag+"}:x").Result()
			if err != nil {
				t.Fatal(err)
			}
			if got := limiter.Slot(tag); int64(got) != want {
				t.Fatalf("Slot(%q) = %d, CLUSTER KEYSLOT says %d", tag, got, want)
			}
		}
	})

	// {a}, {b} and {c} are served by the three different masters.
	clk := newClock(epoch)
	hook := &counter{}
	cc.AddHook(hook)
	l := newLimiter(t, cc, limiter.Config{Now: clk.Now, LocalCacheSize: -1})
	p := "sluicetest:cluster:"
	item := func(tag string, alg limiter.Algorithm, limit, hits uint64) limiter.Item {
		return limiter.Item{Key: p + "{" + tag + "}:" + alg.String(), Limit: limit, Window: time.Minute, Algorithm: alg, Hits: hits}
	}
	shadow := func(it limiter.Item) limiter.Item { it.Shadow = true; return it }
	m := time.Minute
	// Load the script on every master first (EVALSHA, NOSCRIPT, then EVAL in a second pipeline),
	// so the calls below show one pipeline each.
	do(t, l, item("a", limiter.FixedWindow, 9, 0), item("b", limiter.FixedWindow, 9, 0), item("c", limiter.FixedWindow, 9, 0))
	type call struct {
		items   []limiter.Item
		allowed bool
		want    []limiter.Result
	}
	tests := []struct {
		name  string
		calls []call
	}{
		{name: "three slots allowed", calls: []call{
			{items: []limiter.Item{item("a", limiter.FixedWindow, 2, 1), item("b", limiter.SlidingWindow, 2, 1), item("c", limiter.FixedWindow, 1, 1)},
				allowed: true, want: []limiter.Result{res(false, 1, 1, m), res(false, 1, 1, m), res(false, 1, 0, m)}},
		}},
		{name: "one slot denies, the others are compensated", calls: []call{
			{items: []limiter.Item{item("a", limiter.FixedWindow, 2, 1), item("b", limiter.SlidingWindow, 2, 1), item("c", limiter.FixedWindow, 1, 1)},
				allowed: false, want: []limiter.Result{res(false, 1, 1, m), res(false, 1, 1, m), res(true, 1, 0, m)}},
			{items: []limiter.Item{item("a", limiter.FixedWindow, 2, 0), item("b", limiter.SlidingWindow, 2, 0), item("c", limiter.FixedWindow, 1, 0)},
				allowed: false, want: []limiter.Result{res(false, 1, 1, m), res(false, 1, 1, m), res(true, 1, 0, m)}},
			{items: []limiter.Item{item("a", limiter.FixedWindow, 2, 1), item("b", limiter.SlidingWindow, 2, 1)},
				allowed: true, want: []limiter.Result{res(false, 2, 0, m), res(false, 2, 0, m)}},
		}},
		{name: "a shadow item over allows on every slot", calls: []call{
			{items: []limiter.Item{item("a", limiter.SlidingWindow, 5, 1), shadow(item("c", limiter.FixedWindow, 1, 1))},
				allowed: true, want: []limiter.Result{res(false, 1, 4, m), res(true, 2, 0, m)}},
		}},
		{name: "two items on one slot and one on another", calls: []call{
			{items: []limiter.Item{item("b", limiter.FixedWindow, 3, 2), limiter.Item{Key: p + "{b}:other", Limit: 3, Window: m, Hits: 2}, item("c", limiter.SlidingWindow, 1, 2)},
				allowed: false, want: []limiter.Result{res(false, 0, 3, m), res(false, 0, 3, 0), res(true, 0, 1, 0)}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i, c := range tc.calls {
				pipelines, cmds := hook.pipelines.Load(), hook.cmds.Load()
				got, allowed := do(t, l, c.items...)
				if allowed != c.allowed || len(got) != len(c.want) {
					t.Fatalf("call %d: allowed=%v %+v, want allowed=%v %+v", i, allowed, got, c.allowed, c.want)
				}
				for j := range got {
					if got[j] != c.want[j] {
						t.Errorf("call %d item %d: %+v, want %+v", i, j, got[j], c.want[j])
					}
				}
				wantPipelines := int64(1)
				if !c.allowed && !c.want[0].Over && c.items[0].Hits > 0 {
					wantPipelines = 2 // the compensation
				}
				if n := hook.pipelines.Load() - pipelines; n != wantPipelines || hook.cmds.Load()-cmds > 3*wantPipelines {
					t.Errorf("call %d: %d pipelines, %d commands; want %d pipelines of one script call per slot",
						i, n, hook.cmds.Load()-cmds, wantPipelines)
				}
			}
		})
	}

	t.Run("server time and a lost script cache", func(t *testing.T) {
		l := newLimiter(t, cc, limiter.Config{LocalCacheSize: -1}) // the script reads TIME
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.ScriptFlush(ctx).Err() })
		if err != nil {
			t.Fatal(err)
		}
		full := limiter.Item{Key: p + "{c}:time", Limit: 1, Window: time.Hour, Algorithm: limiter.FixedWindow, Hits: 1}
		do(t, l, full)
		for _, alg := range []limiter.Algorithm{limiter.FixedWindow, limiter.SlidingWindow} {
			a := limiter.Item{Key: p + "{a}:time:" + alg.String(), Limit: 5, Window: time.Hour, Algorithm: alg, Hits: 1}
			if _, ok := do(t, l, a, full); ok {
				t.Fatal("allowed with an exhausted item")
			}
			if r, _ := do(t, l, withHits(a, 0)); r[0].Used != 0 {
				t.Errorf("%v: Used = %d after a compensated denial, want 0", alg, r[0].Used)
			}
		}
	})
}

// pipelineGate is a go-redis hook that holds every pipeline until release is closed, counting
// them and the script calls in them.
type pipelineGate struct {
	entered   chan struct{}
	release   chan struct{}
	pipelines atomic.Int64
	scripts   atomic.Int64
}

func (g *pipelineGate) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (g *pipelineGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (g *pipelineGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		g.pipelines.Add(1)
		for _, c := range cmds {
			if c.Name() == "evalsha" || c.Name() == "eval" {
				g.scripts.Add(1)
			}
		}
		g.entered <- struct{}{}
		<-g.release
		return next(ctx, cmds)
	}
}

// TestClusterCoalesce queues calls on two slots of a cluster while the flusher is held: they go
// in one pipeline of one script call per slot, and exactly Limit of each key's calls pass.
func TestClusterCoalesce(t *testing.T) {
	cl := redistest.StartCluster(t)
	cc := cl.Client(t)
	l := newLimiter(t, cc, limiter.Config{LocalCacheSize: -1})
	// Load the script on every master first.
	for _, k := range []string{"w{a}", "w{b}", "w{c}"} {
		do(t, l, limiter.Item{Key: k, Limit: 1, Window: time.Minute})
	}
	g := &pipelineGate{entered: make(chan struct{}, 100), release: make(chan struct{})}
	cc.AddHook(g)
	var blocker sync.WaitGroup
	blocker.Go(func() { do(t, l, limiter.Item{Key: "blocker{c}", Limit: 10, Window: time.Minute, Hits: 1}) })
	<-g.entered
	const (
		callers = 40
		limit   = 15
	)
	var (
		wg      sync.WaitGroup
		allowed [2]atomic.Int64
	)
	for i := range callers {
		wg.Go(func() {
			key := []string{"crowd{a}", "crowd{b}"}[i%2]
			_, ok, err := l.Do(context.Background(), []limiter.Item{{Key: key, Limit: limit, Window: time.Minute, Hits: 1}})
			if err != nil {
				t.Errorf("Do: %v", err)
			}
			if ok {
				allowed[i%2].Add(1)
			}
		})
	}
	waitQueued(t, l, callers)
	pipelines, scripts := g.pipelines.Load(), g.scripts.Load()
	close(g.release)
	wg.Wait()
	blocker.Wait()
	if n := g.pipelines.Load() - pipelines; n != 1 {
		t.Errorf("%d queued calls went in %d pipelines, want 1", callers, n)
	}
	if n := g.scripts.Load() - scripts; n != 2 {
		t.Errorf("%d queued calls on two slots made %d script calls, want 2", callers, n)
	}
	for i := range allowed {
		if n := allowed[i].Load(); n != limit {
			t.Errorf("key %d: %d of %d calls allowed, want exactly %d", i, n, callers/2, limit)
		}
	}
}
