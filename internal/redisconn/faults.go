package redisconn

import (
	"context"
	"errors"
	"net"

	"github.com/redis/go-redis/v9"
)

// Fault classification shared by the components that put a circuit breaker
// in front of Redis (the rate limiter and the response cache).

// HonoursContext reports whether client applies context deadlines to its
// socket I/O (ContextTimeoutEnabled); without it a caller's 20 ms budget can
// turn into the full read timeout. Clients of other types are trusted.
func HonoursContext(client redis.UniversalClient) bool {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	}
	return true
}

// CallerGone marks the error of a call whose caller cancelled or timed out
// its own context: it says nothing about Redis's health.
type CallerGone struct{ Err error }

func (e CallerGone) Error() string { return e.Err.Error() }
func (e CallerGone) Unwrap() error { return e.Err }

// BreakerExcluded reports errors a breaker must ignore: a caller that went
// away, or NOSCRIPT (answered by EVAL fallback).
func BreakerExcluded(err error) bool {
	return errors.As(err, new(CallerGone)) || redis.HasErrorPrefix(err, "NOSCRIPT")
}

// HealthyReply reports an error reply from a Redis that works (a script
// error, WRONGTYPE): not a reason to open a breaker. Replies that say the
// server cannot serve (LOADING, CLUSTERDOWN, OOM, ...) are not healthy.
func HealthyReply(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	for _, p := range []string{"LOADING", "CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN", "BUSY", "READONLY", "OOM", "max number of clients"} {
		if redis.HasErrorPrefix(err, p) {
			return false
		}
	}
	return true
}

// IsTimeout reports a deadline or network timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
