package db

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/internal/db/dbtest"
)

const migrationCount = 8

func testPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return nil
}

func mustMigrate(t *testing.T, p *pgxpool.Pool, opts MigrateOptions) MigrateReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if opts.Log == nil {
		opts.Log = testLog(t)
	}
	rep, err := Migrate(ctx, p, opts)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return rep
}

func invalidNames(t *testing.T, p *pgxpool.Pool) []string {
	t.Helper()
	ix, err := invalidIndexes(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, i := range ix {
		out = append(out, i.name)
	}
	return out
}

func TestMigrateFromEmptyThenNoop(t *testing.T) {
	p := testPool(t, dbtest.New(t))
	rep := mustMigrate(t, p, MigrateOptions{})
	if len(rep.Pending) != migrationCount || len(rep.Applied) != migrationCount {
		t.Fatalf("first run: pending %v applied %v; want %d each", rep.Pending, rep.Applied, migrationCount)
	}
	rep = mustMigrate(t, p, MigrateOptions{})
	if len(rep.Pending)+len(rep.Applied)+len(rep.Invalid)+len(rep.Rebuilt) != 0 {
		t.Fatalf("second run changed something: %+v", rep)
	}

	// Every foreign key has an index whose leading columns are the key's.
	var unindexed []string
	rows, err := p.Query(context.Background(), `
SELECT c.conrelid::regclass::text || '(' || array_to_string(c.conkey, ',') || ')'
FROM pg_constraint c
WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace
  AND NOT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = c.conrelid AND i.indisvalid
      AND (i.indkey::int2[])[0:cardinality(c.conkey)-1] = c.conkey)`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		unindexed = append(unindexed, s)
	}
	if rows.Err() != nil || len(unindexed) > 0 {
		t.Fatalf("foreign keys without an index: %v (%v)", unindexed, rows.Err())
	}

	// The search column and its GIN index answer a full-text query.
	ctx := context.Background()
	if _, err := p.Exec(ctx, `INSERT INTO tenants (id, tier) VALUES ('acme', 'pro')`); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email) VALUES ('acme', 'Grace Hopper', 'grace@acme.example')`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := p.QueryRow(ctx, `SELECT count(*) FROM contacts WHERE search @@ plainto_tsquery('simple', 'hopper')`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("full-text search: %d rows, %v", n, err)
	}
}

func TestMigrateDryRunChangesNothing(t *testing.T) {
	p := testPool(t, dbtest.New(t))
	ctx := context.Background()
	countRelations := func() int {
		var n int
		if err := p.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rep := mustMigrate(t, p, MigrateOptions{DryRun: true})
	if len(rep.Pending) != migrationCount || len(rep.Applied) != 0 {
		t.Fatalf("dry run on empty: %+v", rep)
	}
	if n := countRelations(); n != 0 {
		t.Fatalf("dry run created %d relations", n)
	}

	mustMigrate(t, p, MigrateOptions{})
	makeInvalidUniqueIndex(t, p)
	before := countRelations()
	rep = mustMigrate(t, p, MigrateOptions{DryRun: true})
	if len(rep.Pending) != 0 || !slices.Equal(rep.Invalid, []string{"contacts_tenant_email_key"}) || len(rep.Rebuilt) != 0 {
		t.Fatalf("dry run: %+v", rep)
	}
	if got := invalidNames(t, p); len(got) != 1 || countRelations() != before {
		t.Fatalf("dry run repaired or changed something: invalid %v", got)
	}
}

// makeInvalidUniqueIndex leaves an INVALID index the way an interrupted build
// does: CREATE UNIQUE INDEX CONCURRENTLY fails on duplicate rows after the
// catalog entry exists, and PostgreSQL keeps it, marked invalid.
func makeInvalidUniqueIndex(t *testing.T, p *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO tenants (id, tier) VALUES ('dup', 'free') ON CONFLICT DO NOTHING`,
		`INSERT INTO contacts (tenant_id, name, email) VALUES ('dup', 'A', 'same@dup.example'), ('dup', 'B', 'same@dup.example')`,
	} {
		if _, err := p.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	_, err := p.Exec(ctx, `CREATE UNIQUE INDEX CONCURRENTLY contacts_tenant_email_key ON contacts (tenant_id, email)`)
	if err == nil {
		t.Fatal("unique index on duplicate rows was built")
	}
	if got := invalidNames(t, p); !slices.Equal(got, []string{"contacts_tenant_email_key"}) {
		t.Fatalf("invalid indexes %v", got)
	}
}

func TestMigrateRebuildsInvalidIndex(t *testing.T) {
	p := testPool(t, dbtest.New(t))
	mustMigrate(t, p, MigrateOptions{})
	makeInvalidUniqueIndex(t, p)

	// While the duplicates remain, the rebuild fails, is reported, and the
	// REINDEX leftover (…_ccnew) is dropped by the next run.
	_, err := Migrate(context.Background(), p, MigrateOptions{Log: testLog(t)})
	if err == nil {
		t.Fatal("rebuild over duplicate rows succeeded")
	}

	if _, err := p.Exec(context.Background(), `DELETE FROM contacts WHERE name = 'B' AND tenant_id = 'dup'`); err != nil {
		t.Fatal(err)
	}
	rep := mustMigrate(t, p, MigrateOptions{})
	if !slices.Contains(rep.Rebuilt, "contacts_tenant_email_key") {
		t.Fatalf("not rebuilt: %+v", rep)
	}
	if got := invalidNames(t, p); len(got) != 0 {
		t.Fatalf("still invalid after repair: %v", got)
	}
	// The rebuilt index is the real unique index again.
	_, err = p.Exec(context.Background(), `INSERT INTO contacts (tenant_id, name, email) VALUES ('dup', 'C', 'same@dup.example')`)
	if err == nil {
		t.Fatal("duplicate accepted: index not valid")
	}
}

func TestMigrateConcurrentRunners(t *testing.T) {
	url := dbtest.New(t)
	const runners = 3
	var wg sync.WaitGroup
	reps := make([]MigrateReport, runners)
	errs := make([]error, runners)
	start := time.Now()
	for i := range runners {
		p := testPool(t, url) // one pool per runner, as separate workers would have
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			reps[i], errs[i] = Migrate(ctx, p, MigrateOptions{Log: testLog(t)})
		})
	}
	wg.Wait()
	total := 0
	for i := range runners {
		if errs[i] != nil {
			t.Fatalf("runner %d: %v", i, errs[i])
		}
		total += len(reps[i].Applied)
	}
	if total != migrationCount {
		t.Fatalf("runners applied %d migrations in all; want %d (each exactly once)", total, migrationCount)
	}
	t.Logf("%d racing runners done in %s", runners, time.Since(start).Round(time.Millisecond))
	if got := invalidNames(t, testPool(t, url)); len(got) != 0 {
		t.Fatalf("invalid indexes: %v", got)
	}
}

func TestMigrateIndexBuildsUnderWriteLoad(t *testing.T) {
	url := dbtest.New(t)
	p := testPool(t, url)
	ctx := context.Background()
	mustMigrate(t, p, MigrateOptions{})
	// Take the index migrations back so the next run builds them while
	// writers are busy, over enough rows for the builds to take a while.
	for v := 3; v <= migrationCount; v++ {
		name := []string{"", "", "", "contacts_tenant_created_idx", "contacts_tenant_id_covering_idx", "contacts_search_idx",
			"activities_tenant_created_idx", "activities_contact_id_idx", "users_tenant_id_idx"}[v]
		if _, err := p.Exec(ctx, "DROP INDEX "+name); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Exec(ctx, `DELETE FROM goose_db_version WHERE version_id = $1`, v); err != nil {
			t.Fatal(err)
		}
	}
	seed := []string{
		`INSERT INTO tenants (id, tier) SELECT 't' || g, 'free' FROM generate_series(1, 50) g`,
		`INSERT INTO contacts (tenant_id, name, email) SELECT 't' || (g % 50 + 1), 'name ' || g, 'user' || g || '@example.com' FROM generate_series(1, 100000) g`,
		`INSERT INTO activities (tenant_id, contact_id, kind) SELECT tenant_id, id, 'created' FROM contacts`,
	}
	for _, q := range seed {
		if _, err := p.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}

	writers := testPool(t, url)
	loadCtx, stopLoad := context.WithCancel(ctx)
	var ops, failures atomic.Int64
	var maxLatency atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; loadCtx.Err() == nil; i++ {
				tenant := fmt.Sprintf("t%d", (w*7+i)%50+1)
				start := time.Now()
				var id int64
				err := writers.QueryRow(loadCtx, `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, $2, $3) RETURNING id`,
					tenant, fmt.Sprintf("load %d-%d", w, i), fmt.Sprintf("load%d-%d@example.com", w, i)).Scan(&id)
				if err == nil {
					_, err = writers.Exec(loadCtx, `INSERT INTO activities (tenant_id, contact_id, kind) VALUES ($1, $2, 'created')`, tenant, id)
				}
				if err == nil {
					_, err = writers.Exec(loadCtx, `UPDATE contacts SET name = name || '!', updated_at = now() WHERE id = $1`, id)
				}
				if loadCtx.Err() != nil {
					return // cancellation at the end of the run is not a write failure
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ops.Add(1)
				if d := int64(time.Since(start)); d > maxLatency.Load() {
					maxLatency.Store(d)
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond) // writers under way before the first build
	start := time.Now()
	rep, err := Migrate(ctx, p, MigrateOptions{Log: testLog(t)})
	elapsed := time.Since(start)
	stopLoad()
	wg.Wait()
	if err != nil {
		t.Fatalf("Migrate under load: %v", err)
	}
	if len(rep.Applied) != migrationCount-2 {
		t.Fatalf("applied %v; want the %d index migrations", rep.Applied, migrationCount-2)
	}
	if f := failures.Load(); f > 0 {
		t.Fatalf("%d writes failed during the index builds; first: %v", f, firstErr.Load())
	}
	if ops.Load() == 0 {
		t.Fatal("no write completed during the index builds")
	}
	if got := invalidNames(t, p); len(got) != 0 {
		t.Fatalf("invalid indexes: %v", got)
	}
	t.Logf("index builds took %s; %d write transactions (3 statements each) completed meanwhile, 0 failed, slowest %s",
		elapsed.Round(time.Millisecond), ops.Load(), time.Duration(maxLatency.Load()).Round(time.Millisecond))
}

func TestMigrateCanceledWhileWaitingForLock(t *testing.T) {
	url := dbtest.New(t)
	holder := testPool(t, url)
	conn, err := holder.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_lock($1)`, migrateLockID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err = Migrate(ctx, testPool(t, url), MigrateOptions{})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Migrate while another runner holds the lock: %v; want deadline exceeded", err)
	}
}
