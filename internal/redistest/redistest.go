// Package redistest gives integration tests a real Redis: a client to the machine's server with a
// key prefix of their own, a private redis-server process they may kill and restart, and a
// three-master Redis Cluster.
//
// Integration tests never skip silently: an unreachable Redis or a missing redis-server binary
// fails the test with a message that says what to start. Only -short skips them.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/testenv"
)

// DefaultAddr is the Redis that Addr returns when REDIS_ADDR is not set.
const DefaultAddr = "127.0.0.1:6379"

// setupTimeout bounds each setup or clean-up call to Redis, so a wedged server fails a test
// instead of hanging it until the test binary's own timeout.
const setupTimeout = 5 * time.Second

// Addr returns the address of the shared test Redis: REDIS_ADDR, or DefaultAddr.
func Addr() string {
	if a := os.Getenv("REDIS_ADDR"); a != "" {
		return a
	}
	return DefaultAddr
}

// Client returns a client to the shared test Redis at Addr, closed when the test ends. It fails
// the test if Redis does not answer PING, and skips it only under -short. Like every client this
// package returns, it honours context deadlines (ContextTimeoutEnabled), as production clients
// must.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	skipShort(t)
	c := redis.NewClient(&redis.Options{Addr: Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("redistest: Redis at %s does not answer (start redis-server or set REDIS_ADDR): %v", Addr(), err)
	}
	return c
}

// Prefix returns a key prefix of the form "sluicetest:<random>:" that no other test uses, and
// deletes every key under it from the Redis at Addr when the test ends (SCAN and UNLINK; the
// database is never flushed). Keys a test writes to servers of its own (StartServer,
// StartCluster) vanish with those servers instead.
func Prefix(t testing.TB) string {
	t.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it)
	p := "sluicetest:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		c := redis.NewClient(&redis.Options{Addr: Addr(), ContextTimeoutEnabled: true})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		if err := DeletePrefix(ctx, c, p); err != nil {
			t.Errorf("redistest: delete keys under %q: %v", p, err)
		}
	})
	return p
}

// DeletePrefix unlinks every key of c that starts with prefix, which must hold no glob
// characters (*?[\). It scans in batches, so it does not block the server.
func DeletePrefix(ctx context.Context, c redis.Cmdable, prefix string) error {
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	batch := make([]string, 0, 500)
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == cap(batch) {
			if err := c.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(batch) > 0 {
		return c.Unlink(ctx, batch...).Err()
	}
	return nil
}

func skipShort(t testing.TB) {
	t.Helper()
	testenv.SkipShort(t, "redistest: integration test needs Redis")
}
