package db

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/db/dbtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "defaults", cfg: Config{URL: "postgres://x"}},
		{name: "no url", cfg: Config{}, wantErr: true},
		{name: "negative lag", cfg: Config{URL: "postgres://x", MaxReplicaLag: -time.Second}, wantErr: true},
		{name: "negative conns", cfg: Config{URL: "postgres://x", MaxConns: -1}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.WithDefaults().Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
	if c := (Config{}).WithDefaults(); c.MaxConns != 10 || c.MaxReplicaLag != 5*time.Second || c.LagCheckInterval != 2*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
}

func open(t *testing.T, cfg Config, reg prometheus.Registerer) *DB {
	t.Helper()
	d, err := Open(context.Background(), cfg, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func TestReaderSelection(t *testing.T) {
	url := dbtest.New(t)
	// The same server stands in for a replica: it is not in recovery, so its
	// measured lag is 0; lag above the threshold is injected.
	tests := []struct {
		name        string
		readURL     string
		lag         func(context.Context, *pgxpool.Pool) (time.Duration, error)
		wantReplica bool
		wantErr     bool
	}{
		{name: "no replica configured", wantReplica: false},
		{name: "healthy replica", readURL: url, wantReplica: true},
		{name: "unreachable replica", readURL: "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=1", wantReplica: false, wantErr: true},
		{name: "replica lagging", readURL: url, wantReplica: false, wantErr: true,
			lag: func(context.Context, *pgxpool.Pool) (time.Duration, error) { return time.Minute, nil }},
		{name: "replica within lag", readURL: url, wantReplica: true,
			lag: func(context.Context, *pgxpool.Pool) (time.Duration, error) { return 500 * time.Millisecond, nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			d := open(t, Config{URL: url, ReadURL: tt.readURL, MaxReplicaLag: time.Second}, reg)
			if tt.lag != nil {
				d.lag = tt.lag
			}
			if d.Reader(context.Background()) != d.Primary() {
				t.Fatal("reads go to the replica before any check")
			}
			err := d.CheckReplica(context.Background())
			if (err != nil) != tt.wantErr {
				t.Fatalf("CheckReplica() = %v, wantErr %v", err, tt.wantErr)
			}
			r := d.Reader(context.Background())
			if got := r != d.Primary(); got != tt.wantReplica {
				t.Fatalf("Reader is replica = %v; want %v", got, tt.wantReplica)
			}
			// Queries are counted on the pool that served them.
			if _, err := r.Exec(context.Background(), "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			pool := map[bool]string{true: "replica", false: "primary"}[tt.wantReplica]
			if n := testutil.ToFloat64(d.m.queries.WithLabelValues(pool)); n < 1 {
				t.Fatalf("sluice_db_queries_total{pool=%q} = %v", pool, n)
			}
		})
	}
}

func TestRunSwitchesBackAndForth(t *testing.T) {
	url := dbtest.New(t)
	reg := prometheus.NewRegistry()
	d := open(t, Config{URL: url, ReadURL: url, MaxReplicaLag: time.Second, LagCheckInterval: 10 * time.Millisecond}, reg)
	var lag atomicDuration
	d.lag = func(ctx context.Context, p *pgxpool.Pool) (time.Duration, error) {
		if _, err := replicaLag(ctx, p); err != nil { // the real query still runs
			return 0, err
		}
		return lag.load(), nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "replica in use", func() bool { return d.Reader(ctx) != d.Primary() })
	lag.store(3 * time.Second)
	waitFor(t, "fallback to primary on lag", func() bool { return d.Reader(ctx) == d.Primary() })
	lag.store(200 * time.Millisecond)
	waitFor(t, "replica again", func() bool { return d.Reader(ctx) != d.Primary() })
	if got := testutil.ToFloat64(d.m.lag); got != 0.2 {
		t.Fatalf("sluice_db_replica_lag_seconds = %v; want 0.2", got)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() = %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type atomicDuration struct{ v atomic.Int64 }

func (a *atomicDuration) load() time.Duration   { return time.Duration(a.v.Load()) }
func (a *atomicDuration) store(d time.Duration) { a.v.Store(int64(d)) }

// TestOpenErrorHidesPassword guards the contract that no output shows a
// database password: pgconn reports a connection string that does not
// parse with the password replaced (ParseConfigError), which this pins for
// the pgx version in go.mod.
func TestOpenErrorHidesPassword(t *testing.T) {
	const secret = "hunter2-not-for-logs"
	for _, u := range []string{
		"postgres://u:" + secret + "@[::1/db",
		"postgres://u:" + secret + "@host:port/db",
		"host=x password=" + secret + " port=notanumber",
	} {
		_, err := Open(context.Background(), Config{URL: u}.WithDefaults(), nil, nil)
		if err == nil {
			t.Fatalf("Open(%q) succeeded", u)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}
