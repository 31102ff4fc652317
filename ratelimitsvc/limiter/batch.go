package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Coalescing limits on a single Redis (see Coalescing in the package doc). They are constants,
// not Config: nothing in them is a user's trade-off.
const (
	// maxInFlight is how many batches may wait on Redis at once. Under load, one gives batches
	// twice as large as two, and fewer system calls on both sides, for the same latency
	// (bench/ratelimit.sh); Redis runs one script at a time anyway.
	maxInFlight = 1
	// maxBatchRequests and maxBatchItems cap one script call: a script blocks Redis while it
	// runs (about 5µs per item), so a capped batch keeps every other client's wait around a
	// millisecond at most.
	maxBatchRequests = 64
	maxBatchItems    = 256
)

// request is one Do call's share of a batch. Do fills keys, input, nowArg and deadline before
// queueing it; the flusher that takes it sets reply or err, then signals done. Requests are
// recycled through requestPool once answered.
type request struct {
	keys     []any  // its KEYS entries (counter names as strings)
	input    []byte // its share of ARGV[2] (appendRequest, appendLease)
	replyLen int    // the length of its share of the reply
	slot     uint16 // the Redis Cluster hash slot of all its keys (a cluster batch: one call per slot)
	nowArg   string // ARGV[1]: only requests with the same value share a batch
	deadline time.Time
	state    atomic.Int32  // reqQueued, then reqTaken (by a flusher) or reqAbandoned (by Do)
	done     chan struct{} // buffered: finish never blocks
	reply    []int64       // its share of the reply: replyPerReq, then replyPerItem per item (replyPerLease for a lease)
	now      int64         // the batch's time, Unix ms (the reply's head)
	err      error
	// then, if set, is called with the request once it is answered, by the flusher, instead
	// of signalling done: a request nobody waits for (a lease call), recycled after. It must
	// not block, nor take the batcher's lock.
	then func(r *request)
}

var requestPool = sync.Pool{New: func() any { return &request{done: make(chan struct{}, 1)} }}

func getRequest() *request { return requestPool.Get().(*request) }

// putRequest recycles r, which no flusher may hold any more.
func putRequest(r *request) {
	clear(r.keys)
	r.keys, r.input, r.reply, r.err, r.replyLen, r.now, r.then = r.keys[:0], r.input[:0], nil, nil, 0, 0, nil
	r.state.Store(reqQueued)
	requestPool.Put(r)
}

// States of a request.
const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

// batcher coalesces the requests of concurrent Do calls: whatever queues while batches are in
// flight goes to Redis together, as one script call, as soon as a flusher is free. Nothing
// waits on a timer: a request that finds a flusher idle is sent at once. It is safe for
// concurrent use; newBatcher starts its flushers and close stops them.
type batcher struct {
	send func(batch []*request) // runs one batch and finishes its requests

	mu     sync.Mutex // guards queue, idle and closed
	cond   sync.Cond  // signalled, with mu, when a request is queued or the batcher closes
	queue  []*request
	idle   int // flushers waiting on cond
	closed bool

	wg sync.WaitGroup // the flushers
}

func newBatcher(send func(batch []*request)) *batcher {
	b := &batcher{send: send}
	b.cond.L = &b.mu
	for range maxInFlight {
		b.wg.Go(b.flusher)
	}
	return b
}

// do queues r and waits until it is answered or ctx ends; answered reports the former (r is
// then the caller's again). A request still queued when ctx ends is dropped; one already sent
// is applied all the same, its answer ignored.
func (b *batcher) do(ctx context.Context, r *request) (answered bool, err error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return true, ErrClosed
	}
	b.queue = append(b.queue, r)
	if b.idle > 0 {
		b.cond.Signal()
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		return true, r.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return false, ctx.Err()
		}
		// A flusher has it: it may be charged. Stop waiting all the same, unless it is done.
		select {
		case <-r.done:
			return true, r.err
		default:
			return false, ctx.Err()
		}
	}
}

// enqueue queues r without waiting: the flusher calls r.then with it once it is answered (or
// fails). It reports false, leaving r to the caller, once the batcher is closed.
func (b *batcher) enqueue(r *request) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.queue = append(b.queue, r)
	if b.idle > 0 {
		b.cond.Signal()
	}
	return true
}

// close stops taking requests, lets the flushers send what is queued and waits for them.
func (b *batcher) close() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *batcher) flusher() {
	var batch, expired []*request
	for {
		batch, expired = b.next(batch[:0], expired[:0])
		// Finished here, out of the batcher's lock: a request's then may take other locks
		// whose holders queue requests.
		for _, r := range expired {
			r.finish(nil, 0, errQueuedTooLong)
		}
		clear(expired)
		if len(batch) == 0 {
			if len(expired) == 0 {
				return
			}
			continue
		}
		b.send(batch)
		clear(batch)
	}
}

// next waits for queued requests and takes the next batch from the front of the queue: up to
// maxBatchRequests requests and maxBatchItems items (one request may exceed that alone), all
// with the same nowArg. Requests abandoned by their callers are dropped, and those past their
// deadline go to expired, for the caller to finish with a timeout. It returns no batch and no
// expired request once closed and drained.
func (b *batcher) next(batch, expired []*request) ([]*request, []*request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		for len(b.queue) == 0 {
			if b.closed || len(expired) > 0 {
				return batch, expired
			}
			b.idle++
			b.cond.Wait()
			b.idle--
		}
		now := time.Now()
		nowArg := b.queue[0].nowArg
		taken, items := 0, 0
		for _, r := range b.queue {
			if len(batch) == maxBatchRequests || r.nowArg != nowArg || (items > 0 && items+len(r.keys) > maxBatchItems) {
				break
			}
			taken++
			if !r.state.CompareAndSwap(reqQueued, reqTaken) {
				continue // abandoned
			}
			if !now.Before(r.deadline) {
				expired = append(expired, r)
				continue
			}
			batch = append(batch, r)
			items += len(r.keys)
		}
		rest := copy(b.queue, b.queue[taken:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
		if len(batch) > 0 {
			return batch, expired
		}
	}
}

// errQueuedTooLong finishes a request whose deadline passed before a flusher was free (Redis
// is slow: the batches ahead of it took their whole timeout).
var errQueuedTooLong = fmt.Errorf("queued until the timeout: %w", context.DeadlineExceeded)

func (r *request) finish(reply []int64, now int64, err error) {
	r.reply, r.now, r.err = reply, now, err
	if r.then != nil {
		r.then(r)
		putRequest(r)
		return
	}
	r.done <- struct{}{}
}

// sendBatch runs one batch as one script call (behind the circuit breaker, which counts a
// batch as one call) and finishes its requests. The call's deadline is the earliest of theirs.
// On a cluster, the requests of each hash slot make one script call, all sent in one pipeline.
func (l *Limiter) sendBatch(batch []*request) {
	if l.cluster != nil {
		l.sendClusterBatch(batch)
		return
	}
	deadline := batch[0].deadline
	nkeys, nbytes, nreply := 0, 0, replyHead
	for _, r := range batch {
		if r.deadline.Before(deadline) {
			deadline = r.deadline
		}
		nkeys += len(r.keys)
		nbytes += len(r.input)
		nreply += r.replyLen
	}
	args := make([]any, 0, 6+nkeys)
	args = append(args, "evalsha", limitScript.Hash(), nkeys)
	input := make([]byte, 0, nbytes)
	for _, r := range batch {
		args = append(args, r.keys...)
		input = append(input, r.input...)
	}
	args = append(args, batch[0].nowArg, input, l.id)

	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	var reply []int64
	_, err := l.breaker.Execute(func() (struct{}, error) {
		var err error
		reply, err = l.evalScript(ctx, l.client, args)
		return struct{}{}, err
	})
	cancel()
	if err == nil && len(reply) != nreply {
		err = fmt.Errorf("limiter: script reply of %d values for %d requests, want %d", len(reply), len(batch), nreply)
	}
	off := replyHead
	for _, r := range batch {
		if err != nil {
			r.finish(nil, 0, err)
			continue
		}
		n := r.replyLen
		r.finish(reply[off:off+n:off+n], reply[0], nil)
		off += n
	}
}

// evalScript runs limitScript with args ("evalsha", sha, then EVALSHA's arguments), and again
// with EVAL if Redis does not know the script (NOSCRIPT). It may change args.
func (l *Limiter) evalScript(ctx context.Context, c processor, args []any) ([]int64, error) {
	start := time.Now()
	cmd := redis.NewIntSliceCmd(ctx, args...)
	_ = c.Process(ctx, cmd)
	if isNoScript(cmd.Err()) {
		args[0], args[1] = "eval", limitScriptSource
		cmd = redis.NewIntSliceCmd(ctx, args...)
		_ = c.Process(ctx, cmd)
	}
	l.metrics.duration.Observe(time.Since(start).Seconds())
	return cmd.Result()
}

// processor runs one command: a client or a pipeline.
type processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}

// sendClusterBatch runs a batch on a cluster: the requests of each hash slot (each request's
// keys are in one slot) as one script call, all the calls in one pipeline, which go-redis
// splits by node and sends to the nodes at once. Behind the circuit breaker as one call.
func (l *Limiter) sendClusterBatch(batch []*request) {
	deadline := batch[0].deadline
	type group struct {
		reqs []*request
		scriptCmd
	}
	var (
		groups []*group
		bySlot = map[uint16]*group{}
	)
	for _, r := range batch {
		if r.deadline.Before(deadline) {
			deadline = r.deadline
		}
		g := bySlot[r.slot]
		if g == nil {
			g = &group{}
			bySlot[r.slot] = g
			groups = append(groups, g)
		}
		g.reqs = append(g.reqs, r)
	}
	for _, g := range groups {
		var input []byte
		g.args = append(g.args, "evalsha", limitScript.Hash(), 0)
		for _, r := range g.reqs {
			g.args = append(g.args, r.keys...)
			input = append(input, r.input...)
		}
		g.args[2] = len(g.args) - 3
		g.args = append(g.args, g.reqs[0].nowArg, input, l.id)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cmds := make([]*scriptCmd, len(groups))
	for i, g := range groups {
		cmds[i] = &g.scriptCmd
	}
	_, err := l.breaker.Execute(func() (struct{}, error) {
		// The breaker judges Redis by the first failure; each group answers its own requests.
		return struct{}{}, l.pipelineScripts(ctx, cmds)
	})
	for _, g := range groups {
		var (
			reply []int64
			gerr  = err // the breaker's refusal, when nothing was sent
		)
		if g.cmd != nil {
			reply, gerr = g.cmd.Result()
		}
		want := replyHead
		for _, r := range g.reqs {
			want += r.replyLen
		}
		if gerr == nil && len(reply) != want {
			gerr = fmt.Errorf("limiter: script reply of %d values for %d requests, want %d", len(reply), len(g.reqs), want)
		}
		off := replyHead
		for _, r := range g.reqs {
			if gerr != nil {
				r.finish(nil, 0, gerr)
				continue
			}
			n := r.replyLen
			r.finish(reply[off:off+n:off+n], reply[0], nil)
			off += n
		}
	}
}
