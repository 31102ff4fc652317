package pgtier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/db/dbtest"
	"github.com/sluicehq/sluice/internal/pgtier"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup migrates a fresh database, adds tenants and starts a Store's Run,
// stopped (and waited for) in Cleanup.
func setup(t *testing.T, cfg pgtier.Config) (*pgtier.Store, *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := db.Migrate(ctx, pool, db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	exec(t, pool, `INSERT INTO tenants (id, tier) VALUES ('acme', 'pro'), ('globex', 'free')`)
	s, err := pgtier.New(pool, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v; want context.Canceled", err)
		}
	})
	select {
	case <-s.Loaded():
	case <-time.After(5 * time.Second):
		t.Fatal("first load did not complete")
	}
	return s, pool
}

func exec(t *testing.T, p *pgxpool.Pool, sql string) {
	t.Helper()
	if _, err := p.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitTier waits up to within for tenant's tier to become want (ok=false for
// want ""), and returns how long it took.
func waitTier(t *testing.T, s *pgtier.Store, tenant, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got, ok := s.Tier(context.Background(), tenant)
		if got == want && ok == (want != "") {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("Tier(%q) = %q, %v after %s; want %q", tenant, got, ok, within, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNotifyReachesStore(t *testing.T) {
	s, pool := setup(t, pgtier.Config{Resync: time.Hour}) // only NOTIFY can explain a change
	if got, ok := s.Tier(context.Background(), "acme"); got != "pro" || !ok {
		t.Fatalf("initial Tier(acme) = %q, %v", got, ok)
	}
	tests := []struct {
		name, sql, tenant, want string
	}{
		{name: "tier update", sql: `UPDATE tenants SET tier = 'enterprise' WHERE id = 'acme'`, tenant: "acme", want: "enterprise"},
		{name: "new tenant", sql: `INSERT INTO tenants (id, tier) VALUES ('initech', 'pro')`, tenant: "initech", want: "pro"},
		{name: "deleted tenant", sql: `DELETE FROM tenants WHERE id = 'globex'`, tenant: "globex", want: ""},
		{name: "renamed tenant", sql: `UPDATE tenants SET id = 'acme2' WHERE id = 'acme'`, tenant: "acme", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exec(t, pool, tt.sql)
			d := waitTier(t, s, tt.tenant, tt.want, time.Second)
			t.Logf("visible after %s", d)
		})
	}
	if got, _ := s.Tier(context.Background(), "acme2"); got != "enterprise" {
		t.Fatalf("renamed tenant's tier %q", got)
	}
}

func TestResyncAfterReconnect(t *testing.T) {
	s, pool := setup(t, pgtier.Config{Resync: time.Hour, Backoff: 300 * time.Millisecond})
	// End the listener's session (waiting for it to end); the change made
	// while no listener exists sends a NOTIFY nobody receives.
	start := time.Now()
	var ended int
	err := pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))
FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'sluice-tiers'`).Scan(&ended)
	if err != nil || ended != 1 {
		t.Fatalf("terminated %d listeners (%v); want 1", ended, err)
	}
	exec(t, pool, `UPDATE tenants SET tier = 'enterprise' WHERE id = 'globex'`)
	waitTier(t, s, "globex", "enterprise", 3*time.Second)
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("change seen after %s, before the reconnect backoff: the listener was not cut off", d)
	}
	// And the new connection listens again.
	exec(t, pool, `UPDATE tenants SET tier = 'free' WHERE id = 'acme'`)
	waitTier(t, s, "acme", "free", time.Second)
}

func TestPeriodicResync(t *testing.T) {
	s, pool := setup(t, pgtier.Config{Resync: 50 * time.Millisecond})
	// Without the trigger no NOTIFY is sent; only the periodic reload sees it.
	exec(t, pool, `ALTER TABLE tenants DISABLE TRIGGER tenants_tier_notify`)
	exec(t, pool, `UPDATE tenants SET tier = 'enterprise' WHERE id = 'globex'`)
	waitTier(t, s, "globex", "enterprise", 2*time.Second)
	if s.Len() != 2 {
		t.Fatalf("Len() = %d", s.Len())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (pgtier.Config{}).WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (pgtier.Config{Resync: -1}).Validate(); err == nil {
		t.Fatal("negative resync accepted")
	}
}
