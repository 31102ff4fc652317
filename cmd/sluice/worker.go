package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/db"
)

const workerUsage = `Usage:
  sluice worker [flags]                 migrate the database once, then stay up until SIGTERM
  sluice worker migrate [--dry-run] [flags]
                                        apply pending migrations and rebuild INVALID indexes, then exit;
                                        --dry-run lists them and changes nothing

Several workers may start at once: migration runners take turns on an advisory lock.
Cache warming (re-requesting hot keys through Envoy) will run in 'sluice worker' later;
for now it only migrates.

Flags:
`

// worker runs `sluice worker` and `sluice worker migrate`.
func worker(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	migrateOnly := len(args) > 0 && args[0] == "migrate"
	if migrateOnly {
		args = args[1:]
	}
	fs := flag.NewFlagSet("sluice worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, workerUsage); fs.PrintDefaults() }
	url := fs.String("database-url", getenv("DATABASE_URL"), "PostgreSQL primary URL (env DATABASE_URL)")
	dryRun := fs.Bool("dry-run", false, "with migrate: list pending migrations and invalid indexes, change nothing")
	timeout := fs.Duration("migrate-timeout", 30*time.Minute, "give up migrating after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !migrateOnly && fs.Arg(0) == "migrate" { // flags before the subcommand
		migrateOnly = true
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return 2
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice worker: unexpected argument %q\n\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	if *dryRun && !migrateOnly {
		fmt.Fprintln(stderr, "sluice worker: --dry-run goes with 'sluice worker migrate'")
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	d, err := db.Open(ctx, db.Config{URL: *url, MaxConns: 2}, nil, log)
	if err != nil {
		log.Error("sluice worker: open database", "err", err)
		return 1
	}
	defer d.Close()
	mctx, cancel := context.WithTimeout(ctx, *timeout)
	rep, err := db.Migrate(mctx, d.Primary(), db.MigrateOptions{DryRun: *dryRun, Log: log})
	cancel()
	if err != nil {
		log.Error("sluice worker: migrate", "err", err)
		return 1
	}
	if *dryRun {
		for _, m := range rep.Pending {
			fmt.Fprintln(stdout, "pending migration:", m)
		}
		for _, ix := range rep.Invalid {
			fmt.Fprintln(stdout, "invalid index:", ix)
		}
		fmt.Fprintf(stdout, "%d pending migrations, %d invalid indexes\n", len(rep.Pending), len(rep.Invalid))
		return 0
	}
	if migrateOnly {
		return 0
	}
	log.Info("sluice worker: migrated; waiting for SIGTERM (cache warming is not built yet)")
	<-ctx.Done()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("sluice worker stopped", "err", err)
		return 1
	}
	log.Info("sluice worker stopped")
	return 0
}
