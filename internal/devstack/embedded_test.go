package devstack

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/config"
)

// TestEmbeddedRedisExpires: miniredis counts TTLs down only when told, so in
// `sluice dev` no key of the embedded Redis ever expired: every cache entry,
// tag set and rate-limit window stayed for the life of the process (20,000
// distinct cacheable URLs grew the heap by 120 MB, and a client could grow it
// without bound). The stack now advances the TTLs with the wall clock.
func TestEmbeddedRedisExpires(t *testing.T) {
	s := runEmbedded(t, Options{})
	if err := s.mini.Set("redteam:short", "v"); err != nil {
		t.Fatal(err)
	}
	s.mini.SetTTL("redteam:short", 300*time.Millisecond)
	if err := s.mini.Set("redteam:long", "v"); err != nil {
		t.Fatal(err)
	}
	s.mini.SetTTL("redteam:long", time.Hour)
	deadline := time.Now().Add(5 * time.Second)
	for s.mini.Exists("redteam:short") {
		if time.Now().After(deadline) {
			t.Fatalf("a key with a 300 ms TTL still exists after 5 s (TTL now %v)", s.mini.TTL("redteam:short"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !s.mini.Exists("redteam:long") {
		t.Errorf("a key with an hour's TTL expired")
	}
}

// TestGatewayConnectionLimit: past MaxConnections the gateway closes a new
// connection at once (as Envoy's overload manager does past
// global_downstream_max_connections), so that held connections cannot take
// every file descriptor of the process: with 20,000 of them held, `accept`
// failed for everyone and, in one process, so did the dials to the embedded
// Redis, failing rate-limit decisions open.
func TestGatewayConnectionLimit(t *testing.T) {
	s := runEmbedded(t, Options{MaxConnections: 3})
	addr := s.gwLn.Addr().String()
	get := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /api/v1/contacts HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for i := range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if err := get(c); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := get(extra); err == nil {
		t.Errorf("a fourth connection was served; want it closed")
	}
	extra.Close()
	held[0].Close()
	held = held[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		err = get(c)
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection served after one of the three closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMaxConnections(t *testing.T) {
	tests := []struct {
		name       string
		configured int
		nofile     uint64
		want       int
	}{
		{"default, large limit", 0, 1 << 20, 50000},
		{"default, half the descriptors", 0, 20000, 10000},
		{"default, limit unknown", 0, 0, 50000},
		{"configured", 7, 20000, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := maxConnections(tt.configured, tt.nofile); got != tt.want {
				t.Errorf("maxConnections(%d, %d) = %d; want %d", tt.configured, tt.nofile, got, tt.want)
			}
		})
	}
}

// runEmbedded starts a stack with o (its listener, a default Sluice config
// on loopback ports and the embedded Redis set here) and runs it until the
// test ends.
func runEmbedded(t *testing.T, o Options) *Stack {
	t.Helper()
	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.ShutdownGrace = time.Second
	o.Listen, o.Sluice = "127.0.0.1:0", cfg
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, o, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}
