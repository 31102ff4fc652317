package pgtier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/db/dbtest"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/pgtier"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup migrates a fresh database, adds tenants and starts a Store's Run,
// stopped (and waited for) in Cleanup.
func setup(t *testing.T, cfg pgtier.Config) (*pgtier.Store, *pgxpool.Pool) {
	t.Helper()
	d := openDB(t, db.Config{URL: dbtest.New(t)}, nil)
	s := start(t, d, cfg)
	return s, d.Primary()
}

// openDB opens d's pools on migrated databases holding acme (pro) and
// globex (free).
func openDB(t *testing.T, cfg db.Config, reg prometheus.Registerer) *db.DB {
	t.Helper()
	ctx := context.Background()
	for _, url := range []string{cfg.URL, cfg.ReadURL} {
		if url == "" {
			continue
		}
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Migrate(ctx, pool, db.MigrateOptions{}); err != nil {
			t.Fatal(err)
		}
		exec(t, pool, `INSERT INTO tenants (id, tier) VALUES ('acme', 'pro'), ('globex', 'free') ON CONFLICT DO NOTHING`)
		pool.Close()
	}
	d, err := db.Open(ctx, cfg, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// start runs a Store on d until the test ends and waits for its first load.
func start(t *testing.T, d *db.DB, cfg pgtier.Config) *pgtier.Store {
	t.Helper()
	ctx := context.Background()
	s, err := pgtier.New(d, cfg, nil)
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
	return s
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
	// The rename sends two notifications, acme's and then acme2's: the
	// subtest saw the first take effect.
	waitTier(t, s, "acme2", "enterprise", time.Second)
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

// TestResyncFromALaggingReplica: the periodic resync reads the replica, and
// the replica's stale rows never replace what the primary says. The
// "replica" is a second database holding an older copy of the table: acme
// still free (the primary has it pro), ghost (deleted on the primary), and
// globex already enterprise, a change the primary made without a
// notification, so only a resync can bring it.
func TestResyncFromALaggingReplica(t *testing.T) {
	primaryURL, replicaURL := dbtest.New(t), dbtest.New(t)
	reg := metricstest.NewRegistry()
	d := openDB(t, db.Config{URL: primaryURL, ReadURL: replicaURL}, reg)
	ctx := context.Background()
	if err := d.CheckReplica(ctx); err != nil {
		t.Fatal(err)
	}
	replica, err := pgxpool.New(ctx, replicaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	exec(t, replica, `UPDATE tenants SET tier = 'free' WHERE id = 'acme'`)
	exec(t, replica, `UPDATE tenants SET tier = 'enterprise' WHERE id = 'globex'`)
	exec(t, replica, `INSERT INTO tenants (id, tier) VALUES ('ghost', 'pro')`)

	s := start(t, d, pgtier.Config{Resync: 20 * time.Millisecond})
	replicaReads := queries(t, reg, "replica")
	exec(t, d.Primary(), `ALTER TABLE tenants DISABLE TRIGGER tenants_tier_notify`)
	exec(t, d.Primary(), `UPDATE tenants SET tier = 'enterprise' WHERE id = 'globex'`)
	waitTier(t, s, "globex", "enterprise", 3*time.Second)
	// Let several more resyncs read the stale replica.
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if got, _ := s.Tier(ctx, "acme"); got != "pro" {
			t.Fatalf("Tier(acme) = %q: the replica's stale row replaced the primary's", got)
		}
		if got, ok := s.Tier(ctx, "ghost"); ok {
			t.Fatalf("Tier(ghost) = %q: a tenant only the replica still has appeared", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := queries(t, reg, "replica"); n <= replicaReads {
		t.Errorf("replica queries %v -> %v: the resync did not read the replica", replicaReads, n)
	}
	if s.Len() != 2 {
		t.Errorf("Len() = %d, want 2", s.Len())
	}
}

// queries reads sluice_db_queries_total for one pool.
func queries(t *testing.T, reg *metricstest.Registry, pool string) float64 {
	t.Helper()
	return reg.Value(t, "sluice_db_queries_total", prometheus.Labels{"pool": pool})
}
