// Package pgtier is the PostgreSQL tier.Store: it keeps every tenant's tier
// in memory, so Tier never waits on the database, and keeps that copy current
// from the NOTIFYs the tenants table sends on channel sluice_tenant_tiers
// (migrations/00002), with a full reload after every reconnect and on a timer.
package pgtier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/internal/tier"
)

// Channel is the NOTIFY channel of tier changes; the payload is a tenant id.
const Channel = "sluice_tenant_tiers"

// queryTimeout bounds each query of the Store (the LISTEN, a reload, a refresh): a PostgreSQL
// that stops answering must not hold the update lock, or the listener, for long.
const queryTimeout = 5 * time.Second

// Defaults applied by Config.WithDefaults.
const (
	DefaultResync  = 30 * time.Second
	DefaultBackoff = time.Second
)

// Config tunes the Store. The zero value plus WithDefaults is valid.
type Config struct {
	// Resync is the period of the full reload that backs up NOTIFY (a
	// notification is lost if it is sent while no listener is connected).
	// Default 30s.
	Resync time.Duration `yaml:"resync"`
	// Backoff is the wait before reconnecting after the listening connection
	// fails. Default 1s.
	Backoff time.Duration `yaml:"reconnect_backoff"`
}

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Resync == 0 {
		c.Resync = DefaultResync
	}
	if c.Backoff == 0 {
		c.Backoff = DefaultBackoff
	}
	return c
}

// Validate reports the first invalid field; it changes nothing.
func (c Config) Validate() error {
	if c.Resync <= 0 {
		return fmt.Errorf("tiers: resync %s must be positive", c.Resync)
	}
	if c.Backoff <= 0 {
		return fmt.Errorf("tiers: reconnect_backoff %s must be positive", c.Backoff)
	}
	return nil
}

// Store is a tier.Store over the tenants table. Tier is safe for concurrent
// use and answers from memory; Run fills and refreshes that memory. Until the
// first load completes every tenant is unknown (the caller's default tier).
// The zero value is not usable; use New.
type Store struct {
	pool *pgxpool.Pool
	cfg  Config
	log  *slog.Logger

	// update serialises reload and refresh, each from its query to its write,
	// so a reload's older snapshot never overwrites a newer refresh.
	update sync.Mutex
	mu     sync.RWMutex // guards tiers
	tiers  map[string]string
	loaded chan struct{} // closed after the first full load
	once   sync.Once
}

var _ tier.Store = (*Store)(nil)

// New returns a Store reading tenants through pool; cfg gets WithDefaults.
func New(pool *pgxpool.Pool, cfg Config, log *slog.Logger) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{pool: pool, cfg: cfg, log: log, tiers: map[string]string{}, loaded: make(chan struct{})}, nil
}

// Tier returns tenant's tier from memory.
func (s *Store) Tier(_ context.Context, tenant string) (string, bool) {
	s.mu.RLock()
	t, ok := s.tiers[tenant]
	s.mu.RUnlock()
	return t, ok
}

// Loaded is closed once the first full load has completed.
func (s *Store) Loaded() <-chan struct{} { return s.loaded }

// Len returns how many tenants are in memory.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.tiers)
}

// Run listens for tier changes and reloads every Resync until ctx is done,
// reconnecting after failures; it returns ctx's error. Only one Run per Store.
func (s *Store) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	// The periodic reload uses a pooled connection of its own, so the
	// listener's wait is never interrupted (pgx answers an interrupted wait
	// with a cancel request that could hit the connection's next query).
	wg.Go(func() {
		t := time.NewTicker(s.cfg.Resync)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := s.reload(ctx, s.pool); err != nil && ctx.Err() == nil {
				s.log.Warn("tiers: periodic reload failed", "err", err)
			}
		}
	})
	for {
		err := s.listen(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("tiers: listener failed; reconnecting", "err", err, "backoff", s.cfg.Backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.cfg.Backoff):
		}
	}
}

// listen runs one connection's life: LISTEN first, then the full load, so no
// change committed in between is missed; then one notification at a time.
func (s *Store) listen(ctx context.Context) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("tiers: acquire: %w", err)
	}
	// The connection carries a LISTEN, so it never goes back to the pool.
	conn := pc.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	// Named so operators (and tests) can tell the listener in pg_stat_activity.
	lctx, cancel := context.WithTimeout(ctx, queryTimeout)
	_, err = conn.Exec(lctx, "SET application_name = 'sluice-tiers'; LISTEN "+pgx.Identifier{Channel}.Sanitize())
	cancel()
	if err != nil {
		return fmt.Errorf("tiers: listen: %w", err)
	}
	if err := s.reload(ctx, conn); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("tiers: wait for notification: %w", err)
		}
		if err := s.refresh(ctx, conn, n.Payload); err != nil {
			return err
		}
	}
}

// querier is what reload and refresh need of a pgx.Conn or pgxpool.Pool.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// reload replaces the whole map with the tenants table.
func (s *Store) reload(ctx context.Context, q querier) error {
	s.update.Lock()
	defer s.update.Unlock()
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := q.Query(ctx, `SELECT id, tier FROM tenants`)
	if err != nil {
		return fmt.Errorf("tiers: load: %w", err)
	}
	m := map[string]string{}
	var id, t string
	_, err = pgx.ForEachRow(rows, []any{&id, &t}, func() error { m[id] = t; return nil })
	if err != nil {
		return fmt.Errorf("tiers: load: %w", err)
	}
	s.mu.Lock()
	s.tiers = m
	s.mu.Unlock()
	s.once.Do(func() { close(s.loaded) })
	s.log.Debug("tiers: loaded", "tenants", len(m))
	return nil
}

// refresh re-reads one tenant named by a notification.
func (s *Store) refresh(ctx context.Context, q querier, tenant string) error {
	s.update.Lock()
	defer s.update.Unlock()
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var t string
	err := q.QueryRow(ctx, `SELECT tier FROM tenants WHERE id = $1`, tenant).Scan(&t)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("tiers: refresh %q: %w", tenant, err)
	}
	s.mu.Lock()
	if err == nil {
		s.tiers[tenant] = t
	} else {
		delete(s.tiers, tenant)
	}
	s.mu.Unlock()
	return nil
}
