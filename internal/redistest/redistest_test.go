package redistest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClientPings(t *testing.T) {
	c := redistest.Client(t)
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestPrefixDeletesItsKeysOnly(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	outer := redistest.Prefix(t)
	if err := c.Set(ctx, outer+"keep", "1", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	var inner string
	t.Run("inner", func(t *testing.T) {
		inner = redistest.Prefix(t)
		if inner == outer || !strings.HasPrefix(inner, "sluicetest:") || !strings.HasSuffix(inner, ":") {
			t.Fatalf("Prefix = %q (outer %q): want a fresh sluicetest:<random>: prefix", inner, outer)
		}
		for i := range 1234 { // more than one SCAN and UNLINK batch
			if err := c.Set(ctx, fmt.Sprintf("%s{t}%d", inner, i), "1", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
		}
	})
	keys, err := c.Keys(ctx, inner+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("%d keys left under %q after the subtest ended", len(keys), inner)
	}
	if n, err := c.Exists(ctx, outer+"keep").Result(); err != nil || n != 1 {
		t.Errorf("key under the outer prefix: Exists = %d, %v; want 1", n, err)
	}
}

func TestServerKillRestart(t *testing.T) {
	ctx := context.Background()
	s := redistest.StartServer(t)
	if s.Addr() == redistest.Addr() {
		t.Fatalf("StartServer reused the shared Redis address %s", s.Addr())
	}
	c := s.Client(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("Set: %v", err)
	}
	for _, arg := range []string{"save", "appendonly"} {
		v, err := c.ConfigGet(ctx, arg).Result()
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]string{"save": "", "appendonly": "no"}[arg]; v[arg] != want {
			t.Errorf("CONFIG GET %s = %q, want %q", arg, v[arg], want)
		}
	}

	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("process_id:%d\r\n", s.PID()); s.PID() <= 0 || !strings.Contains(info, want) {
		t.Errorf("PID() = %d, INFO server does not say %q", s.PID(), want)
	}

	s.Kill()
	s.Kill() // idempotent
	if pid := s.PID(); pid != 0 {
		t.Errorf("PID() = %d after Kill, want 0", pid)
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := c.Ping(short).Err(); err == nil {
		t.Fatal("Ping after Kill succeeded")
	}

	s.Restart()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("Ping after Restart: %v", err)
	}
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("Get after Restart: err = %v, want redis.Nil (no persistence)", err)
	}
}

func TestCluster(t *testing.T) {
	ctx := context.Background()
	cl := redistest.StartCluster(t)
	if n := len(cl.Addrs()); n != 3 {
		t.Fatalf("Addrs: %d nodes, want 3", n)
	}
	cc := cl.Client(t)
	// One key per master: {a} is slot 15495, {b} 3300, {c} 7365.
	for _, tag := range []string{"a", "b", "c"} {
		key := "{" + tag + "}k"
		if err := cc.Set(ctx, key, tag, time.Minute).Err(); err != nil {
			t.Fatalf("Set %s: %v", key, err)
		}
		if v, err := cc.Get(ctx, key).Result(); err != nil || v != tag {
			t.Fatalf("Get %s = %q, %v", key, v, err)
		}
	}
	var masters atomic.Int32 // ForEachMaster visits the masters concurrently
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		n, err := c.DBSize(ctx).Result()
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("master %s holds %d keys, want 1", c.Options().Addr, n)
		}
		masters.Add(1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := masters.Load(); n != 3 {
		t.Errorf("visited %d masters, want 3", n)
	}
}
