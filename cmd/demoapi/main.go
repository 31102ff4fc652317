// Command demoapi serves the demo contacts API (internal/demoapi) over
// PostgreSQL when -database-url / DATABASE_URL is set (reads from
// DATABASE_READ_URL's replica while it is healthy; the schema comes from
// `sluice worker migrate`), otherwise over an in-memory store: the
// application behind Envoy in the compose stack
// (docker-compose.yaml's `app` service, envoy.yaml's `app` cluster).
// `sluice dev` runs the same API in-process instead.
//
//	demoapi [-listen :8000] [-seed initech,hooli,...] [-shutdown-grace 10s]
//
// On SIGTERM or SIGINT it stops accepting connections and lets in-flight
// requests finish for -shutdown-grace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/demoapi"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// defaultSeed are the demo tenants of `sluice dev` and deploy/sluice/sluice.yaml,
// plus "anonymous" (callers without identity), so every tier has data.
const defaultSeed = "initech,hooli,globex,acme,umbrella,anonymous"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr, nil)
	stop()
	os.Exit(code)
}

// run is main without signals and exit, for tests: it serves until ctx ends
// and returns the exit code. ready, when not nil, gets the bound address once
// the listener is open.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(net.Addr)) int {
	fs := flag.NewFlagSet("demoapi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":8000", "HTTP listen address")
	seed := fs.String("seed", defaultSeed, "comma-separated tenants to give five demo contacts each (empty: none)")
	grace := fs.Duration("shutdown-grace", 10*time.Second, "how long in-flight requests may run after SIGTERM")
	dbURL := fs.String("database-url", os.Getenv("DATABASE_URL"), "PostgreSQL (env DATABASE_URL); empty: in-memory store")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "demoapi: unexpected arguments %q\n", fs.Args())
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))

	var (
		store   demoapi.Store
		tenants []string // seeded (in-memory store only)
	)
	if *dbURL != "" {
		d, err := db.Open(ctx, db.Config{URL: *dbURL, ReadURL: os.Getenv("DATABASE_READ_URL")}.WithDefaults(), nil, log)
		if err != nil {
			log.Error("demoapi: database", "err", err)
			return 1
		}
		defer d.Close()
		go func() { _ = d.Run(ctx) }() // replica lag checks; ends with ctx
		store = demoapi.NewPostgres(d, "free")
	} else {
		mem := demoapi.NewMemory(nil)
		for t := range strings.SplitSeq(*seed, ",") {
			if t = strings.TrimSpace(t); t != "" {
				tenants = append(tenants, t)
			}
		}
		mem.Seed(tenants...)
		store = mem
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		log.Error("demoapi: listen", "addr", *listen, "err", err)
		return 1
	}
	srv := &http.Server{
		Handler:           demoapi.New(store),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	if ready != nil {
		ready(ln.Addr())
	}
	log.Info("demoapi serving", "addr", ln.Addr().String(), "version", version, "tenants", tenants)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		// Serve only returns early on a listener failure.
		log.Error("demoapi: serve", "err", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("demoapi: shutdown grace expired; closing remaining connections", "grace", *grace, "err", err)
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("demoapi: serve", "err", err)
		return 1
	}
	log.Info("demoapi stopped")
	return 0
}
