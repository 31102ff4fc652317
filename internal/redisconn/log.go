package redisconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// go-redis logs through one logger for the whole process (redis.SetLogger),
// and most of its lines carry no sign of the client they are about (its
// pool dials with a background context). So New does two things, neither of
// which keeps per-client state in a global:
//   - each client's hook logs what matters about that client, its dial
//     failures and its recovery, through the client's own logger (once per
//     change of state, not per attempt);
//   - New installs, once per process, a go-redis logger (router) that writes
//     go-redis's remaining lines as structured warnings through the logger
//     found in the line's context, else slog.Default() (which cmd/sluice sets
//     to the process logger), and drops its lines about failed dials, which
//     the hooks report with their client.
var installRouter sync.Once

type loggerKey struct{}

// router is the go-redis logger New installs.
type router struct{}

func (router) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	if strings.Contains(msg, "failed to dial") {
		return // reported by the client's hook, with its logger
	}
	log, _ := ctx.Value(loggerKey{}).(*slog.Logger)
	if log == nil {
		log = slog.Default()
	}
	log.LogAttrs(ctx, slog.LevelWarn, "redis client", slog.String("component", "go-redis"), slog.String("detail", msg))
}

// causeWindow is how long a failed dial explains the deadline errors that
// follow it. While Redis cannot be reached, go-redis re-dials at least every
// second, so the failure stays fresh; an older one is not blamed.
const causeWindow = 30 * time.Second

// hook records a client's dial failures, logs their start and end, names
// them in the deadline errors they cause, and carries the client's logger
// to go-redis's log lines about its calls.
type hook struct {
	log *slog.Logger

	mu       sync.Mutex // guards dialErr, dialedAt and down
	dialErr  error      // the last dial's error; nil after a dial succeeds
	dialedAt time.Time
	down     bool // the last dial failed, and that was logged
}

var _ redis.Hook = (*hook)(nil)

func (h *hook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		h.mu.Lock()
		h.dialErr, h.dialedAt = err, time.Now()
		changed := h.down != (err != nil)
		h.down = err != nil
		h.mu.Unlock()
		switch {
		case changed && err != nil:
			h.log.LogAttrs(ctx, slog.LevelWarn, "redis unreachable", slog.String("addr", addr), slog.Any("err", err))
		case changed:
			h.log.LogAttrs(ctx, slog.LevelInfo, "redis reachable again", slog.String("addr", addr))
		}
		return conn, err
	}
}

func (h *hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return h.explain(next(h.withLogger(ctx), cmd))
	}
}

func (h *hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(h.withLogger(ctx), cmds)
		if err == nil {
			return nil
		}
		for _, c := range cmds {
			if e := c.Err(); e != nil {
				c.SetErr(h.explain(e))
			}
		}
		return h.explain(err)
	}
}

func (h *hook) withLogger(ctx context.Context) context.Context {
	return context.WithValue(ctx, loggerKey{}, h.log)
}

// explain adds the last dial failure to a deadline or cancellation error:
// go-redis retries a failed dial until the caller's time runs out, and then
// reports only that the time ran out.
func (h *hook) explain(err error) error {
	if err == nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		return err
	}
	var already *UnreachableError
	if errors.As(err, &already) {
		return err
	}
	h.mu.Lock()
	cause, at := h.dialErr, h.dialedAt
	h.mu.Unlock()
	if cause == nil || time.Since(at) > causeWindow {
		return err
	}
	return &UnreachableError{Err: err, Cause: cause}
}

// UnreachableError is a call that ran out of time while Redis could not be
// reached: Err is the context's error, Cause the last dial's (connection
// refused, a failed DNS lookup, a dial timeout). errors.Is and errors.As see
// both.
type UnreachableError struct {
	Err, Cause error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%v (redis unreachable: %v)", e.Err, e.Cause)
}

func (e *UnreachableError) Unwrap() []error { return []error{e.Err, e.Cause} }
