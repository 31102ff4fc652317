package redisconn

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
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

// NewBreaker returns the circuit breaker a component puts in front of Redis:
// it opens after failures consecutive failures (errors BreakerExcluded
// ignores and HealthyReply replies do not count), stays open for openFor,
// then lets one probe call through. open is called with true when it opens
// and false when it closes or half-opens (to drive a gauge).
func NewBreaker(name string, failures uint32, openFor time.Duration, open func(bool)) *gobreaker.CircuitBreaker[struct{}] {
	return gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1, // one probe when half-open
		Timeout:     openFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		OnStateChange: func(_ string, _, to gobreaker.State) {
			open(to == gobreaker.StateOpen)
		},
		IsExcluded:   BreakerExcluded,
		IsSuccessful: func(err error) bool { return err == nil || HealthyReply(err) },
	})
}
