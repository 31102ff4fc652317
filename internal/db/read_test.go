package db

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicehq/sluice/internal/db/dbtest"
	"github.com/sluicehq/sluice/internal/faultproxy"
)

// viaProxy returns dbURL with its host replaced by a fault proxy in front of
// the same server: a "replica" the test can cut off or blackhole.
func viaProxy(t *testing.T, dbURL string) (string, *faultproxy.Proxy) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := faultproxy.Start(t, u.Host)
	u.Host = p.Addr()
	return u.String(), p
}

// readOne runs SELECT 1 through Read and reports which pool answered, by the
// query counters.
func readOne(t *testing.T, d *DB, ctx context.Context) (pool string, err error) {
	t.Helper()
	before := map[string]float64{}
	for _, p := range []string{"primary", "replica"} {
		before[p] = testutil.ToFloat64(d.m.queries.WithLabelValues(p))
	}
	err = d.Read(ctx, func(ctx context.Context, q Querier) error {
		var one int
		return q.QueryRow(ctx, "SELECT 1").Scan(&one)
	})
	for _, p := range []string{"replica", "primary"} { // the last pool asked answered
		if testutil.ToFloat64(d.m.queries.WithLabelValues(p)) > before[p] {
			pool = p
		}
	}
	return pool, err
}

// TestReadFallsBackToPrimary: reads go to the replica while it answers; when
// it stops (refused connections, then a partition that answers nothing) the
// read is served by the primary at once, later reads stay there, and the
// next successful check sends them back.
func TestReadFallsBackToPrimary(t *testing.T) {
	primary := dbtest.New(t)
	replica, proxy := viaProxy(t, primary)
	reg := prometheus.NewRegistry()
	d := open(t, Config{URL: primary, ReadURL: replica, ConnectTimeout: 500 * time.Millisecond}, reg)
	ctx := context.Background()
	if err := d.CheckReplica(ctx); err != nil {
		t.Fatalf("CheckReplica: %v", err)
	}
	fallbacks := func() float64 { return testutil.ToFloat64(d.m.fallbacks) }

	if pool, err := readOne(t, d, ctx); err != nil || pool != "replica" {
		t.Fatalf("healthy replica: read served by %q, %v", pool, err)
	}

	proxy.Cut()
	if pool, err := readOne(t, d, ctx); err != nil || pool != "primary" {
		t.Fatalf("replica refusing: read served by %q, %v; want the primary", pool, err)
	}
	if fallbacks() != 1 || testutil.ToFloat64(d.m.healthy) != 0 || d.Reader(ctx) != d.Primary() {
		t.Fatalf("after a failed replica read: %v fallbacks, replica in use %v", fallbacks(), testutil.ToFloat64(d.m.healthy))
	}
	if pool, err := readOne(t, d, ctx); err != nil || pool != "primary" {
		t.Fatalf("next read served by %q, %v; want the primary until a check passes", pool, err)
	}
	if fallbacks() != 1 {
		t.Errorf("%v fallbacks; the second read should not try the replica", fallbacks())
	}

	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := d.CheckReplica(ctx); err != nil {
		t.Fatalf("CheckReplica after restore: %v", err)
	}
	if pool, err := readOne(t, d, ctx); err != nil || pool != "replica" {
		t.Fatalf("restored replica: read served by %q, %v", pool, err)
	}

	// A partition: the replica's connections stay open and nothing comes
	// back. The replica's share of the caller's deadline runs out, then the
	// primary answers within what is left.
	proxy.Blackhole()
	rctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	start := time.Now()
	pool, err := readOne(t, d, rctx)
	if err != nil || pool != "primary" {
		t.Fatalf("replica blackholed: read served by %q, %v after %v", pool, err, time.Since(start))
	}
	if fallbacks() != 2 {
		t.Errorf("%v fallbacks, want 2", fallbacks())
	}
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
}

// TestReadKeepsErrorsOfTheCaller: a read whose caller gave up is not retried
// and does not mark the replica unusable.
func TestReadKeepsErrorsOfTheCaller(t *testing.T) {
	primary := dbtest.New(t)
	d := open(t, Config{URL: primary, ReadURL: primary}, prometheus.NewRegistry())
	ctx := context.Background()
	if err := d.CheckReplica(ctx); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	calls := 0
	err := d.Read(cctx, func(ctx context.Context, q Querier) error {
		calls++
		_, err := q.Query(ctx, "SELECT 1")
		return err
	})
	if err == nil || calls != 1 {
		t.Fatalf("Read with a cancelled context: %v after %d calls; want an error after 1", err, calls)
	}
	if d.Reader(ctx) == d.Primary() || testutil.ToFloat64(d.m.fallbacks) != 0 {
		t.Fatal("the caller's cancellation marked the replica unusable")
	}
	// Without a replica, Read runs on the primary once.
	d2 := open(t, Config{URL: primary}, nil)
	var n int
	if err := d2.Read(ctx, func(ctx context.Context, q Querier) error {
		return q.QueryRow(ctx, "SELECT 41 + 1").Scan(&n)
	}); err != nil || n != 42 {
		t.Fatalf("Read without replica: %d, %v", n, err)
	}
}
