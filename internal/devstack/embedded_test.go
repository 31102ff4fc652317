package devstack

import (
	"context"
	"log/slog"
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
	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.ShutdownGrace = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, Options{Listen: "127.0.0.1:0", Sluice: cfg}, slog.New(slog.DiscardHandler))
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
