// Package pgtier is the PostgreSQL tier.Store: it keeps every tenant's tier
// in memory, so Tier never waits on the database, and keeps that copy current
// from the NOTIFYs the tenants table sends on channel sluice_tenant_tiers
// (migrations/00002), with a full reload after every reconnect and a resync
// on a timer that may read a replica.
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

	"github.com/sluicehq/sluice/internal/db"
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

// Config tunes the Store: the `database.tiers` section of the Sluice config
// file. The zero value plus WithDefaults is valid.
type Config struct {
	// Resync is the period of the full re-read that backs up NOTIFY (a
	// notification is lost if it is sent while no listener is connected).
	// It reads the replica when one is in use. Default 30s.
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
		return fmt.Errorf("database: tiers.resync %s must be positive", c.Resync)
	}
	if c.Backoff <= 0 {
		return fmt.Errorf("database: tiers.reconnect_backoff %s must be positive", c.Backoff)
	}
	return nil
}

// Store is a tier.Store over the tenants table. Tier is safe for concurrent
// use and answers from memory; Run fills and refreshes that memory. Until the
// first load completes every tenant is unknown (the caller's default tier).
// The zero value is not usable; use New.
type Store struct {
	db  DB
	cfg Config
	log *slog.Logger

	// update serialises reload and refresh, each from its query to its write,
	// so a reload's older snapshot never overwrites a newer refresh.
	update sync.Mutex
	mu     sync.RWMutex // guards tiers
	tiers  map[string]string
	loaded chan struct{} // closed after the first full load
	once   sync.Once
}

var _ tier.Store = (*Store)(nil)

// DB is what a Store needs of the database (internal/db.DB): the primary,
// for LISTEN and the reads that must be current, and Read, for the periodic
// resync, which may be answered by a lagging replica.
type DB interface {
	Primary() *pgxpool.Pool
	Read(ctx context.Context, fn func(ctx context.Context, q db.Querier) error) error
}

var _ DB = (*db.DB)(nil)

// New returns a Store reading tenants through d; cfg gets WithDefaults.
func New(d DB, cfg Config, log *slog.Logger) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{db: d, cfg: cfg, log: log, tiers: map[string]string{}, loaded: make(chan struct{})}, nil
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
	// The periodic resync uses pooled connections of its own, so the
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
			if err := s.resync(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("tiers: periodic resync failed", "err", err)
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
	pc, err := s.db.Primary().Acquire(ctx)
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

// maxConfirm bounds the tenants a resync re-reads from the primary one by
// one; past it (a replica far behind, a table rewritten) the primary's
// whole table is read instead.
const maxConfirm = 1000

// reload replaces the whole map with the tenants table as q (the primary)
// has it.
func (s *Store) reload(ctx context.Context, q db.Querier) error {
	s.update.Lock()
	defer s.update.Unlock()
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	return s.reloadLocked(ctx, q)
}

func (s *Store) reloadLocked(ctx context.Context, q db.Querier) error {
	m, err := loadTiers(ctx, q, `SELECT id, tier FROM tenants`)
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

// loadTiers runs a query of (id, tier) rows into a map.
func loadTiers(ctx context.Context, q db.Querier, sql string, args ...any) (map[string]string, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	var id, t string
	if _, err := pgx.ForEachRow(rows, []any{&id, &t}, func() error { m[id] = t; return nil }); err != nil {
		return nil, err
	}
	return m, nil
}

// resync re-reads the whole table through DB.Read (the replica when one is
// in use) to catch changes whose notification was lost. A replica may lag
// behind the notifications already applied, so its answer is not taken as
// is: the tenants on which it differs from memory are read again from the
// primary, and the primary's answers are applied. A lagging replica thus
// never undoes a newer change, and in the usual case (no difference) the
// primary is not asked at all. Before the first load it reads the primary.
func (s *Store) resync(ctx context.Context) error {
	select {
	case <-s.loaded:
	default:
		return s.reload(ctx, s.db.Primary())
	}
	// The snapshot is read without the update lock, so that notifications
	// are not held up by a slow replica: a refresh applied meanwhile only
	// makes its tenant differ, and differing tenants are confirmed below.
	rctx, cancel := context.WithTimeout(ctx, queryTimeout)
	var snapshot map[string]string
	err := s.db.Read(rctx, func(ctx context.Context, q db.Querier) error {
		var err error
		snapshot, err = loadTiers(ctx, q, `SELECT id, tier FROM tenants`)
		return err
	})
	cancel()
	if err != nil {
		return fmt.Errorf("tiers: resync: %w", err)
	}
	s.update.Lock()
	defer s.update.Unlock()
	ctx, cancel = context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var differ []string
	s.mu.RLock()
	for id, t := range snapshot {
		if cur, ok := s.tiers[id]; !ok || cur != t {
			differ = append(differ, id)
		}
	}
	for id := range s.tiers {
		if _, ok := snapshot[id]; !ok {
			differ = append(differ, id)
		}
	}
	s.mu.RUnlock()
	if len(differ) == 0 {
		return nil
	}
	if len(differ) > maxConfirm {
		return s.reloadLocked(ctx, s.db.Primary())
	}
	current, err := loadTiers(ctx, s.db.Primary(), `SELECT id, tier FROM tenants WHERE id = ANY($1)`, differ)
	if err != nil {
		return fmt.Errorf("tiers: resync: confirm %d tenants: %w", len(differ), err)
	}
	s.mu.Lock()
	for _, id := range differ {
		if t, ok := current[id]; ok {
			s.tiers[id] = t
		} else {
			delete(s.tiers, id)
		}
	}
	s.mu.Unlock()
	s.log.Debug("tiers: resync corrected tenants", "tenants", len(differ))
	return nil
}

// refresh re-reads one tenant named by a notification.
func (s *Store) refresh(ctx context.Context, q db.Querier, tenant string) error {
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
