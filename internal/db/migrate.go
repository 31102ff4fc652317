package db

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/sluicehq/sluice/migrations"
)

// migrateLockID is the advisory lock that serialises migration runners (goose's
// session locker and the index repair). Any value works as long as every
// runner uses the same one; this is goose's default.
const migrateLockID = lock.DefaultLockID

// MigrateOptions tune Migrate. The zero value migrates and logs nowhere.
type MigrateOptions struct {
	// DryRun lists pending migrations and invalid indexes and changes nothing
	// (not even goose's version table).
	DryRun bool
	// Log receives progress; nil discards it.
	Log *slog.Logger
	// LockWait bounds how long a runner waits for another to finish. Default 10m.
	LockWait time.Duration
	// LockPoll is how often a waiting runner retries the lock. Default 1s.
	LockPoll time.Duration
}

// MigrateReport says what Migrate found and did.
type MigrateReport struct {
	Pending []string // migrations not applied before the run (file names)
	Applied []string // migrations this run applied
	Invalid []string // indexes found INVALID (pg_index.indisvalid = false)
	Rebuilt []string // invalid indexes this run rebuilt or dropped
}

// Migrate brings the schema of pool's database (current_schema()) up to the
// embedded migrations, then repairs indexes that an interrupted CREATE INDEX
// CONCURRENTLY left INVALID. It is idempotent, and safe to run from several
// processes at once: runners take a session-level advisory lock in turn. The
// lock is polled with pg_try_advisory_lock rather than waited on, because a
// session blocked in pg_advisory_lock holds a snapshot that a concurrent index
// build of the lock holder would wait for: a deadlock.
func Migrate(ctx context.Context, pool *pgxpool.Pool, opts MigrateOptions) (MigrateReport, error) {
	var rep MigrateReport
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.LockWait <= 0 {
		opts.LockWait = 10 * time.Minute
	}
	if opts.LockPoll <= 0 {
		opts.LockPoll = time.Second
	}
	sqlDB := stdlib.OpenDBFromPool(pool) // closing it leaves the pool open
	defer sqlDB.Close()
	poll := max(uint64(opts.LockPoll/time.Second), 1) // goose's minimum period is 1s
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(migrateLockID),
		lock.WithLockTimeout(poll, max(uint64(opts.LockWait/(time.Duration(poll)*time.Second)), 1)),
	)
	if err != nil {
		return rep, fmt.Errorf("migrate: locker: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations.FS,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return rep, fmt.Errorf("migrate: %w", err)
	}
	rep.Pending, err = pending(ctx, pool, p.ListSources())
	if err != nil {
		return rep, err
	}
	invalid, err := invalidIndexes(ctx, pool)
	if err != nil {
		return rep, err
	}
	for _, ix := range invalid {
		rep.Invalid = append(rep.Invalid, ix.name)
	}
	log.Info("migrate: status", "pending", len(rep.Pending), "invalid_indexes", len(rep.Invalid), "dry_run", opts.DryRun)
	if opts.DryRun {
		for _, name := range rep.Pending {
			log.Info("migrate: pending", "migration", name)
		}
		for _, ix := range invalid {
			log.Info("migrate: invalid index", "index", ix.name, "action", ix.action())
		}
		return rep, nil
	}

	start := time.Now()
	results, err := p.Up(ctx)
	for _, r := range results {
		if r.Error == nil {
			rep.Applied = append(rep.Applied, path.Base(r.Source.Path))
		}
		log.Info("migrate: applied", "migration", path.Base(r.Source.Path), "duration", r.Duration, "err", r.Error)
	}
	if err != nil {
		return rep, fmt.Errorf("migrate: up: %w", err)
	}
	log.Info("migrate: up to date", "applied", len(rep.Applied), "duration", time.Since(start))

	rep.Rebuilt, err = repair(ctx, pool, opts, log)
	return rep, err
}

// pending lists the migrations not recorded in goose's version table, reading
// it without creating it.
func pending(ctx context.Context, pool *pgxpool.Pool, sources []*goose.Source) ([]string, error) {
	applied := map[int64]bool{}
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("migrate: version table: %w", err)
	}
	if exists {
		rows, err := pool.Query(ctx, `SELECT version_id FROM goose_db_version WHERE is_applied`)
		if err != nil {
			return nil, fmt.Errorf("migrate: versions: %w", err)
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return nil, fmt.Errorf("migrate: versions: %w", err)
		}
		for _, v := range versions {
			applied[v] = true
		}
	}
	var out []string
	for _, s := range sources {
		if !applied[s.Version] {
			out = append(out, path.Base(s.Path))
		}
	}
	return out, nil
}

type invalidIndex struct {
	schema, name string
}

// action is what repair does: an index named *_ccnew or *_ccold is a leftover
// of a failed REINDEX CONCURRENTLY (the original is still valid), so it is
// dropped; any other invalid index is rebuilt in place.
func (ix invalidIndex) action() string {
	if strings.Contains(ix.name, "_ccnew") || strings.Contains(ix.name, "_ccold") {
		return "drop"
	}
	return "reindex"
}

// invalidIndexes lists INVALID indexes of current_schema() that no session is
// building right now (a concurrent build is INVALID until it finishes).
func invalidIndexes(ctx context.Context, pool *pgxpool.Pool) ([]invalidIndex, error) {
	rows, err := pool.Query(ctx, `
SELECT n.nspname, c.relname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid
  AND n.nspname = current_schema()
  AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid)
ORDER BY c.relname`)
	if err != nil {
		return nil, fmt.Errorf("migrate: list invalid indexes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (invalidIndex, error) {
		var ix invalidIndex
		err := r.Scan(&ix.schema, &ix.name)
		return ix, err
	})
	if err != nil {
		return nil, fmt.Errorf("migrate: list invalid indexes: %w", err)
	}
	return out, nil
}

// repair rebuilds invalid indexes under the migration lock, so two runners
// never rebuild the same index at once.
func repair(ctx context.Context, pool *pgxpool.Pool, opts MigrateOptions, log *slog.Logger) (rebuilt []string, err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: repair: %w", err)
	}
	defer conn.Release()
	if err := tryLock(ctx, conn, opts); err != nil {
		return nil, err
	}
	defer func() {
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrateLockID); uerr != nil {
			err = errors.Join(err, fmt.Errorf("migrate: unlock: %w", uerr))
		}
	}()
	// Listed again under the lock: another runner may have repaired them.
	invalid, err := invalidIndexes(ctx, pool)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, ix := range invalid {
		id := pgx.Identifier{ix.schema, ix.name}.Sanitize()
		stmt := "REINDEX INDEX CONCURRENTLY " + id
		if ix.action() == "drop" {
			stmt = "DROP INDEX CONCURRENTLY IF EXISTS " + id
		}
		start := time.Now()
		if err := execWithLockTimeout(ctx, conn, stmt); err != nil {
			log.Error("migrate: repair index failed", "index", ix.name, "action", ix.action(), "err", err)
			errs = append(errs, fmt.Errorf("migrate: %s: %w", stmt, err))
			continue
		}
		log.Info("migrate: repaired invalid index", "index", ix.name, "action", ix.action(), "duration", time.Since(start))
		rebuilt = append(rebuilt, ix.name)
	}
	return rebuilt, errors.Join(errs...)
}

func execWithLockTimeout(ctx context.Context, conn *pgxpool.Conn, stmt string) error {
	if _, err := conn.Exec(ctx, `SET lock_timeout = '5s'`); err != nil {
		return err
	}
	_, err := conn.Exec(ctx, stmt)
	if _, rerr := conn.Exec(context.WithoutCancel(ctx), `RESET lock_timeout`); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// tryLock polls pg_try_advisory_lock (see Migrate for why it never blocks).
func tryLock(ctx context.Context, conn *pgxpool.Conn, opts MigrateOptions) error {
	deadline := time.Now().Add(opts.LockWait)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, migrateLockID).Scan(&ok); err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("migrate: lock: another runner held it for %s", opts.LockWait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migrate: lock: %w", ctx.Err())
		case <-time.After(opts.LockPoll):
		}
	}
}
