// Package db opens Sluice's PostgreSQL pools (a primary and an optional read
// replica), picks the pool reads go to from a background health and lag check,
// and runs the embedded schema migrations (see Migrate).
package db

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// DB holds the primary pool and, when configured, the replica pool. It is safe
// for concurrent use. Reads go to the replica only after a check found it
// reachable and within Config.MaxReplicaLag; Run repeats that check.
type DB struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	primary *pgxpool.Pool
	replica *pgxpool.Pool // nil without Config.ReadURL

	// lag measures the replica's replay lag; replicaLag unless a test swaps it.
	lag        func(ctx context.Context, p *pgxpool.Pool) (time.Duration, error)
	useReplica atomic.Bool
}

// Open creates the pools for cfg (WithDefaults is applied) and registers the
// metrics on reg (nil: not registered). Pools connect lazily, so an
// unreachable replica does not fail Open; it only keeps reads on the primary.
// Open pings the primary. Call Close when done.
func Open(ctx context.Context, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*DB, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("database: register metrics: %w", err)
	}
	d := &DB{cfg: cfg, log: log, m: m, lag: replicaLag}
	d.primary, err = newPool(cfg.URL, cfg.MaxConns, cfg.ConnectTimeout, m.queries.WithLabelValues("primary"))
	if err != nil {
		return nil, fmt.Errorf("database: primary: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	if err := d.primary.Ping(pctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("database: ping primary: %w", err)
	}
	if cfg.ReadURL != "" {
		d.replica, err = newPool(cfg.ReadURL, cfg.ReadMaxConns, cfg.ConnectTimeout, m.queries.WithLabelValues("replica"))
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("database: replica: %w", err)
		}
	}
	return d, nil
}

func newPool(url string, maxConns int32, connectTimeout time.Duration, queries prometheus.Counter) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	pc.MaxConns = maxConns
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = connectTimeout
	}
	pc.ConnConfig.Tracer = queryCounter{queries}
	// TCP keepalive probes find a peer that vanished without closing (a partition, a host
	// gone) on idle connections, such as the tier listener's LISTEN, in about 25s instead of
	// the kernel's default of over two hours.
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3}}
	pc.ConnConfig.DialFunc = d.DialContext
	return pgxpool.NewWithConfig(context.Background(), pc)
}

// Primary returns the primary pool, for writes and read-your-writes reads.
func (d *DB) Primary() *pgxpool.Pool { return d.primary }

// Reader returns the pool for reads that tolerate replica lag: the replica
// when the last check found it healthy, else the primary. It never queries;
// a read through it fails if the replica fails before the next check. Read
// falls back instead.
func (d *DB) Reader(ctx context.Context) *pgxpool.Pool {
	if d.replica != nil && d.useReplica.Load() {
		return d.replica
	}
	return d.primary
}

// Querier is what a read needs of a pool (pgxpool.Pool, pgx.Conn and pgx.Tx
// have it).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var _ Querier = (*pgxpool.Pool)(nil)

// Read runs fn, a read that tolerates replica lag, against the replica when
// the last check found it usable, else against the primary. When fn fails
// on the replica while ctx is still live, the replica is taken out of use
// until a check passes again, the fallback is counted, and fn runs again on
// the primary; so fn must start afresh on each call and keep nothing from a
// failed one. Read returns fn's last error.
//
// The replica gets half of ctx's remaining time (Config.ConnectTimeout when
// ctx has no deadline), so that a replica that stopped answering leaves the
// primary time to.
func (d *DB) Read(ctx context.Context, fn func(ctx context.Context, q Querier) error) error {
	if d.replica == nil || !d.useReplica.Load() {
		return fn(ctx, d.primary)
	}
	budget := d.cfg.ConnectTimeout
	if deadline, ok := ctx.Deadline(); ok {
		budget = time.Until(deadline) / 2
	}
	rctx, cancel := context.WithTimeout(ctx, budget)
	err := fn(rctx, d.replica)
	cancel()
	if err == nil || ctx.Err() != nil {
		return err
	}
	d.m.fallbacks.Inc()
	d.setReplica(false)
	d.log.Warn("database: read failed on the replica; reading from the primary until it passes a check", "err", err)
	return fn(ctx, d.primary)
}

// Run checks the replica every Config.LagCheckInterval until ctx is done, and
// returns ctx's error. Without a replica it returns at once with nil.
func (d *DB) Run(ctx context.Context) error {
	if d.replica == nil {
		return nil
	}
	t := time.NewTicker(d.cfg.LagCheckInterval)
	defer t.Stop()
	for {
		if err := d.CheckReplica(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("database: replica unusable, reading from the primary", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// CheckReplica measures the replica once and switches reads to it or away
// from it. It returns why the replica is not used, or nil when it is (or when
// there is none). Run calls it; tests and startup may call it directly.
func (d *DB) CheckReplica(ctx context.Context) error {
	if d.replica == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConnectTimeout)
	defer cancel()
	lag, err := d.lag(ctx, d.replica)
	if err == nil && lag > d.cfg.MaxReplicaLag {
		err = fmt.Errorf("replica lag %s above max_replica_lag %s", lag, d.cfg.MaxReplicaLag)
	}
	if err != nil {
		d.setReplica(false)
		return fmt.Errorf("database: replica check: %w", err)
	}
	d.m.lag.Set(lag.Seconds())
	d.setReplica(true)
	return nil
}

func (d *DB) setReplica(use bool) {
	if d.useReplica.Swap(use) != use {
		d.log.Info("database: read pool changed", "replica", use)
	}
	if use {
		d.m.healthy.Set(1)
	} else {
		d.m.healthy.Set(0)
	}
}

// replicaLag returns now() - pg_last_xact_replay_timestamp() on a standby,
// and 0 on a server that is not in recovery or whose replay has caught up with
// what it received (an idle primary writes nothing, so the last replayed
// transaction ages without the standby falling behind).
func replicaLag(ctx context.Context, p *pgxpool.Pool) (time.Duration, error) {
	var secs float64
	err := p.QueryRow(ctx, `
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
    ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
END::float8`).Scan(&secs)
	if err != nil {
		return 0, err
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// Close closes both pools. It is safe after a partial Open and more than once.
func (d *DB) Close() {
	if d.replica != nil {
		d.replica.Close()
	}
	if d.primary != nil {
		d.primary.Close()
	}
}
