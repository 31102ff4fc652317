package devstack_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/db/dbtest"
)

// TestTiersFromPostgres: with a database configured, the enrichment stage
// takes tiers from the tenants table, and a tier change made in SQL reaches
// requests through LISTEN/NOTIFY without a restart.
func TestTiersFromPostgres(t *testing.T) {
	url := dbtest.New(t)
	ctx := context.Background()
	d, err := db.Open(ctx, db.Config{URL: url}.WithDefaults(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := db.Migrate(ctx, d.Primary(), db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Primary().Exec(ctx, `INSERT INTO tenants (id, tier) VALUES ('dbco', 'basic')`); err != nil {
		t.Fatal(err)
	}

	s := start(t, echo(t).URL, true, func(c *config.Config) { c.Database.URL = url })
	tierOf := func() string {
		resp, body := s.get(t, "/x", "x-tenant-id", "dbco")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return upstreamSaw(t, body).Get("X-Sluice-Tier")
	}
	deadline := time.Now().Add(5 * time.Second)
	for tierOf() != "basic" {
		if time.Now().After(deadline) {
			t.Fatal("tier from PostgreSQL never applied")
		}
		time.Sleep(20 * time.Millisecond)
	}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE tenants SET tier = 'enterprise' WHERE id = 'dbco'`); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	for tierOf() != "enterprise" {
		if time.Since(changed) > time.Second {
			t.Fatal("tier change did not reach enrichment within 1s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("tier change visible after %v", time.Since(changed))
}
