package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// gate is a go-redis hook that holds every script call until release is closed (or the call's
// context ends), so a test can fill the limiter's queue and see which requests share a call.
type gate struct {
	entered chan struct{} // one value per script call held
	release chan struct{}
	scripts atomic.Int64 // script calls seen
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 1000), release: make(chan struct{})}
}

func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			g.scripts.Add(1)
			g.entered <- struct{}{}
			select {
			case <-g.release:
			case <-ctx.Done():
				cmd.SetErr(ctx.Err())
				return ctx.Err()
			}
		}
		return next(ctx, cmd)
	}
}

// coalesceSetup returns a limiter on a private Redis whose flushers are all held in the gate by
// one call each (on the key "{blocker}"), so that every later call queues. The script is loaded
// before, so each batch is one script call.
func coalesceSetup(t *testing.T, cfg limiter.Config) (*limiter.Limiter, *gate, *redis.Client, func() []error) {
	t.Helper()
	srv := redistest.StartServer(t)
	c := srv.Client(t)
	cfg.LocalCacheSize = -1
	l := newLimiter(t, c, cfg)
	do(t, l, limiter.Item{Key: "{warm}", Limit: 1, Window: time.Minute})
	g := newGate()
	c.AddHook(g)
	t.Cleanup(func() {
		select {
		case <-g.release:
		default:
			close(g.release)
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, limiter.MaxInFlight)
	for i := range limiter.MaxInFlight {
		wg.Go(func() {
			_, _, errs[i] = l.Do(context.Background(), []limiter.Item{{Key: "{blocker}", Limit: 100, Window: time.Minute, Hits: 1}})
		})
		<-g.entered
	}
	return l, g, c, func() []error { wg.Wait(); return errs }
}

// waitQueued waits until n requests are queued.
func waitQueued(t *testing.T, l *limiter.Limiter, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for limiter.Queued(l) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", limiter.Queued(l), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// outcome is the answer to one Do call.
type outcome struct {
	res     []limiter.Result
	allowed bool
	err     error
}

// TestCoalesce queues many concurrent calls while every flusher is busy: they go to Redis as
// one script call, and exactly Limit of them pass.
func TestCoalesce(t *testing.T) {
	l, g, _, blockers := coalesceSetup(t, limiter.Config{})
	const (
		callers = 48
		limit   = 40
	)
	item := limiter.Item{Key: "{crowd}", Limit: limit, Window: time.Minute, Hits: 1}
	out := make([]outcome, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			var o outcome
			o.res, o.allowed, o.err = l.Do(context.Background(), []limiter.Item{item})
			out[i] = o
		})
	}
	waitQueued(t, l, callers)
	close(g.release)
	wg.Wait()
	for _, err := range blockers() {
		if err != nil {
			t.Fatalf("blocking call: %v", err)
		}
	}
	allowed := 0
	for i, o := range out {
		if o.err != nil {
			t.Fatalf("call %d: %v", i, o.err)
		}
		if o.allowed {
			allowed++
		}
	}
	if allowed != limit {
		t.Errorf("%d of %d calls allowed, want exactly %d", allowed, callers, limit)
	}
	if n := g.scripts.Load() - limiter.MaxInFlight; n != 1 {
		t.Errorf("%d queued calls went to Redis in %d script calls, want 1", callers, n)
	}
}

// TestCoalesceAllOrNothing queues requests in a known order so they share one script call:
// each is decided on its own, all-or-nothing, against what the requests before it charged.
func TestCoalesceAllOrNothing(t *testing.T) {
	l, g, _, blockers := coalesceSetup(t, limiter.Config{Now: newClock(epoch).Now})
	m := time.Minute
	x := func(hits uint64) limiter.Item {
		return limiter.Item{Key: "{x}", Limit: 2, Window: m, Hits: hits}
	}
	y := func(hits uint64) limiter.Item {
		return limiter.Item{Key: "{y}", Limit: 1, Window: m, Algorithm: limiter.FixedWindow, Hits: hits}
	}
	tests := []struct {
		name    string
		items   []limiter.Item
		allowed bool
		want    []limiter.Result
	}{
		{name: "both fit", items: []limiter.Item{x(1), y(1)}, allowed: true,
			want: []limiter.Result{res(false, 1, 1, m), res(false, 1, 0, m)}},
		{name: "y is over: x is not charged", items: []limiter.Item{x(1), y(1)}, allowed: false,
			want: []limiter.Result{res(false, 1, 1, m), res(true, 1, 0, m)}},
		{name: "x alone fits", items: []limiter.Item{x(1)}, allowed: true,
			want: []limiter.Result{res(false, 2, 0, m)}},
		{name: "x is full", items: []limiter.Item{x(1)}, allowed: false,
			want: []limiter.Result{res(true, 2, 0, m)}},
		{name: "a refund applies in a denied request", items: []limiter.Item{withRefund(x(1), true), y(1)}, allowed: false,
			want: []limiter.Result{res(false, 1, 1, m), res(true, 1, 0, m)}},
		{name: "check only", items: []limiter.Item{x(0), y(0)}, allowed: false,
			want: []limiter.Result{res(false, 1, 1, m), res(true, 1, 0, m)}},
	}
	out := make([]outcome, len(tests))
	var wg sync.WaitGroup
	for i, tc := range tests {
		wg.Go(func() {
			var o outcome
			o.res, o.allowed, o.err = l.Do(context.Background(), tc.items)
			out[i] = o
		})
		waitQueued(t, l, i+1) // queued in this order
	}
	close(g.release)
	wg.Wait()
	blockers()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := out[i]
			if o.err != nil {
				t.Fatal(o.err)
			}
			if o.allowed != tc.allowed || len(o.res) != len(tc.want) {
				t.Fatalf("allowed=%v %+v, want allowed=%v %+v", o.allowed, o.res, tc.allowed, tc.want)
			}
			for j := range tc.want {
				if o.res[j] != tc.want[j] {
					t.Errorf("item %d: %+v, want %+v", j, o.res[j], tc.want[j])
				}
			}
		})
	}
	if n := g.scripts.Load() - limiter.MaxInFlight; n != 1 {
		t.Errorf("%d queued requests went to Redis in %d script calls, want 1", len(tests), n)
	}
}

// TestCoalesceCancel checks that a caller whose context ends stops waiting without failing the
// others: dropped if its request was still queued, applied all the same if it was sent.
func TestCoalesceCancel(t *testing.T) {
	l, g, c, blockers := coalesceSetup(t, limiter.Config{})
	item := limiter.Item{Key: "{z}", Limit: 10, Window: time.Minute, Algorithm: limiter.FixedWindow, Hits: 1}
	call := func(ctx context.Context) <-chan outcome {
		ch := make(chan outcome, 1)
		go func() {
			var o outcome
			o.res, o.allowed, o.err = l.Do(ctx, []limiter.Item{item})
			ch <- o
		}()
		return ch
	}
	wantCanceled := func(name string, ch <-chan outcome) {
		t.Helper()
		select {
		case o := <-ch:
			if !errors.Is(o.err, context.Canceled) {
				t.Fatalf("%s: %v, want context.Canceled", name, o.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s kept waiting after its context ended", name)
		}
	}

	// Still queued: the cancelled call returns at once and is never sent.
	ctx, cancel := context.WithCancel(context.Background())
	first := call(ctx)
	waitQueued(t, l, 1)
	second := call(context.Background())
	waitQueued(t, l, 2)
	cancel()
	wantCanceled("a cancelled queued call", first)
	close(g.release)
	if o := <-second; o.err != nil || !o.allowed || o.res[0].Used != 1 {
		t.Fatalf("the call queued behind a cancelled one: %+v, want allowed with Used 1", o)
	}
	for _, err := range blockers() {
		if err != nil {
			t.Fatalf("blocking call: %v", err)
		}
	}

	// Already sent: the cancelled call returns at once, the next one is answered, and the
	// cancelled one's hits were charged all the same.
	g2 := newGate()
	c.AddHook(g2)
	ctx, cancel = context.WithCancel(context.Background())
	third := call(ctx)
	<-g2.entered
	fourth := call(context.Background())
	if limiter.MaxInFlight > 1 {
		<-g2.entered // in a batch of its own
	} else {
		waitQueued(t, l, 1) // behind the held batch
	}
	cancel()
	wantCanceled("a cancelled call in flight", third)
	close(g2.release)
	if o := <-fourth; o.err != nil || !o.allowed {
		t.Fatalf("a call in flight beside a cancelled one: %+v, want allowed", o)
	}
	if r, _ := do(t, l, withHits(item, 0)); r[0].Used != 3 {
		t.Errorf("Used = %d, want 3: the dropped request uncharged, the sent one charged", r[0].Used)
	}
}

// TestCoalesceClose checks that Close answers the calls already queued before it returns, and
// refuses later ones.
func TestCoalesceClose(t *testing.T) {
	l, g, _, blockers := coalesceSetup(t, limiter.Config{})
	const callers = 5
	errs := make(chan error, callers)
	for i := range callers {
		go func() {
			_, _, err := l.Do(context.Background(), []limiter.Item{{Key: "{close}", Limit: 100, Window: time.Minute, Hits: 1}})
			errs <- err
		}()
		waitQueued(t, l, i+1)
	}
	closed := make(chan struct{})
	go func() { _ = l.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned with calls still queued")
	case <-time.After(50 * time.Millisecond):
	}
	if _, _, err := l.Do(context.Background(), []limiter.Item{{Key: "{close}", Limit: 100, Window: time.Minute, Hits: 1}}); !errors.Is(err, limiter.ErrClosed) {
		t.Errorf("Do during Close: %v, want ErrClosed", err)
	}
	close(g.release)
	<-closed
	for range callers {
		if err := <-errs; err != nil {
			t.Errorf("queued call answered during Close: %v, want success", err)
		}
	}
	for _, err := range blockers() {
		if err != nil {
			t.Errorf("blocking call: %v", err)
		}
	}
}

// TestCoalesceQueuedPastTimeout stalls Redis: the calls in flight fail at their timeout, and so
// does a call queued behind them, within its own timeout.
func TestCoalesceQueuedPastTimeout(t *testing.T) {
	cfg := limiter.Config{Timeout: 100 * time.Millisecond}
	l, _, _, blockers := coalesceSetup(t, cfg)
	start := time.Now()
	_, _, err := l.Do(context.Background(), []limiter.Item{{Key: "{late}", Limit: 100, Window: time.Minute, Hits: 1}})
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("queued call: %v, want a timeout", err)
	}
	if took > cfg.Timeout+slack {
		t.Errorf("queued call failed after %v, want within its %v timeout", took, cfg.Timeout)
	}
	for _, err := range blockers() {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("call held past its timeout: %v, want a timeout", err)
		}
	}
}

// TestCoalesceMixedClocks checks that calls with different simulated times are not batched
// together: each batch has one time.
func TestCoalesceMixedClocks(t *testing.T) {
	srv := redistest.StartServer(t)
	c := srv.Client(t)
	var calls atomic.Int64
	l := newLimiter(t, c, limiter.Config{LocalCacheSize: -1, Now: func() time.Time {
		// two calls at each simulated time, the first a window apart from the second
		return epoch.Add(time.Duration(calls.Add(1)%2) * time.Hour)
	}})
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			res, ok, err := l.Do(context.Background(), []limiter.Item{{Key: fmt.Sprintf("{mixed%d}", i%2), Limit: 100, Window: time.Minute, Algorithm: limiter.FixedWindow, Hits: 1}})
			if err != nil || !ok || res[0].ResetAfter != time.Minute {
				t.Errorf("Do: %v %v %+v, want allowed with a whole window left (simulated times are whole hours)", err, ok, res)
			}
		})
	}
	wg.Wait()
}
