package limiter

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// SlotCount is the number of Redis Cluster hash slots.
const SlotCount = 16384

// Slot returns the Redis Cluster hash slot of a hash tag's content (or of a whole key without
// a tag): CRC16/XMODEM modulo 16384, as CLUSTER KEYSLOT computes it.
func Slot(tag string) uint16 {
	var crc uint16
	for i := 0; i < len(tag); i++ {
		crc ^= uint16(tag[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % SlotCount
}

// scriptCall is one limitScript call in a cluster pipeline: the calls of one slot, one request.
type scriptCall struct {
	idx    []int // indexes into calls and results
	nowArg string
	scriptCmd
}

// evalCluster splits calls by hash slot and runs one script call per slot, all in one pipeline
// (go-redis sends each node its share concurrently). Each slot decides and charges its share
// atomically; if any slot denies, the slots that charged are refunded in a second pipeline, at
// the time they charged at. That compensation is not atomic with the charge: in between, other
// requests see the extra hits and may be denied (never wrongly allowed), and if it fails the
// hits stay charged until their window passes. A failure of the compensation is counted as an
// error in the metrics but does not change the answer, which is a denial.
func (l *Limiter) evalCluster(ctx context.Context, calls []call, nowArg string, results []Result) (bool, error) {
	var groups []*scriptCall
	bySlot := make(map[uint16]*scriptCall)
	for i := range calls {
		g := bySlot[calls[i].slot]
		if g == nil {
			g = &scriptCall{nowArg: nowArg}
			bySlot[calls[i].slot] = g
			groups = append(groups, g)
		}
		g.idx = append(g.idx, i)
	}
	if err := l.runPipeline(ctx, calls, groups); err != nil {
		return false, err
	}
	allowed := true
	charged := make([]bool, len(groups)) // the slot allowed: its hits were charged
	nows := make([]int64, len(groups))
	for g, sc := range groups {
		reply := sc.cmd.Val()
		if len(reply) < replyHead {
			return false, fmt.Errorf("limiter: script reply of %d values", len(reply))
		}
		nows[g] = reply[0]
		ok, err := parseReply(reply[replyHead:], calls, sc.idx, results)
		if err != nil {
			return false, err
		}
		charged[g] = ok
		allowed = allowed && ok
	}
	if !allowed {
		l.compensate(ctx, calls, groups, charged, nows, results)
	}
	return allowed, nil
}

// compensate refunds what the allowed slots of a denied request charged.
func (l *Limiter) compensate(ctx context.Context, calls []call, groups []*scriptCall, charged []bool, nows []int64, results []Result) {
	var refunds []call // one refund per charged item, same key and hits
	var owner []int    // index of the original call of each refund
	var comp []*scriptCall
	for g, sc := range groups {
		if !charged[g] {
			continue
		}
		var rc scriptCall
		for _, i := range sc.idx {
			it := calls[i].item
			if it.Refund || it.Hits == 0 {
				continue
			}
			refund := *it
			refund.Refund = true
			c := calls[i]
			c.item = &refund
			rc.idx = append(rc.idx, len(refunds))
			refunds = append(refunds, c)
			owner = append(owner, i)
		}
		if len(rc.idx) > 0 {
			rc.nowArg = formatInt(nows[g]) // the charge's time: the same window and sub-window
			comp = append(comp, &rc)
		}
	}
	if len(comp) == 0 {
		return
	}
	if err := l.runPipeline(ctx, refunds, comp); err != nil {
		l.metrics.errors.WithLabelValues(reasonError).Inc()
		return
	}
	refundResults := make([]Result, len(refunds))
	for _, sc := range comp {
		reply := sc.cmd.Val()
		if len(reply) < replyHead {
			l.metrics.errors.WithLabelValues(reasonError).Inc()
			return
		}
		if _, err := parseReply(reply[replyHead:], refunds, sc.idx, refundResults); err != nil {
			l.metrics.errors.WithLabelValues(reasonError).Inc()
			return
		}
	}
	for j, i := range owner {
		r := refundResults[j]
		r.Over = results[i].Over
		results[i] = r
	}
}

// runPipeline sends the script calls in one pipeline with EVALSHA, then resends the calls that
// got NOSCRIPT (a node that has not seen the script yet) with EVAL. It returns the first error
// of any call; each call's cmd holds its reply.
func (l *Limiter) runPipeline(ctx context.Context, calls []call, scs []*scriptCall) error {
	for _, sc := range scs {
		keys := make([]any, len(sc.idx))
		for j, i := range sc.idx {
			keys[j] = calls[i].counter
		}
		sc.args = append([]any{"evalsha", limitScript.Hash(), len(keys)}, keys...)
		sc.args = append(sc.args, sc.nowArg, appendRequest(nil, calls, sc.idx), l.id)
	}
	cmds := make([]*scriptCmd, len(scs))
	for i, sc := range scs {
		cmds[i] = &sc.scriptCmd
	}
	return l.pipelineScripts(ctx, cmds)
}

// scriptCmd is one call of the limit script in a pipeline: its arguments and, once sent, its
// command.
type scriptCmd struct {
	args []any // "evalsha", sha, then EVALSHA's arguments
	cmd  *redis.IntSliceCmd
}

// pipelineScripts sends every script call in one pipeline (go-redis sends each cluster node
// its share concurrently), sends again with EVAL those whose node did not know the script,
// and returns the first error of any call; each call's own result stays in its cmd.
func (l *Limiter) pipelineScripts(ctx context.Context, cmds []*scriptCmd) error {
	send := func(todo []*scriptCmd) {
		start := time.Now()
		_, _ = l.cluster.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range todo {
				c.cmd = redis.NewIntSliceCmd(ctx, c.args...)
				_ = p.Process(ctx, c.cmd)
			}
			return nil
		})
		l.metrics.duration.Observe(time.Since(start).Seconds())
	}
	send(cmds)
	var retry []*scriptCmd
	for _, c := range cmds {
		if isNoScript(c.cmd.Err()) {
			c.args[0], c.args[1] = "eval", limitScriptSource
			retry = append(retry, c)
		}
	}
	if len(retry) > 0 {
		send(retry)
	}
	for _, c := range cmds {
		if err := c.cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}
