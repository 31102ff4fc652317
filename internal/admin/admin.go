// Package admin serves Sluice's operator HTTP endpoints: /metrics, /healthz,
// /readyz and the /debug pages components add.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configure a Server. The zero value asks no token and serves no
// profiling.
type Options struct {
	// Token, when set, must come as "Authorization: Bearer <Token>" on the
	// protected endpoints (HandleProtected and /debug/pprof/); others get
	// 401. /metrics, /healthz and /readyz stay open for scrapers and
	// probes.
	Token string
	// Pprof serves Go's profiling endpoints under /debug/pprof/ (protected):
	// the index and named profiles, profile, symbol and trace. Never
	// cmdline, which shows the command line and so any secret passed on it.
	Pprof bool
}

// Check reports whether one dependency is ready; a nil error means ready.
type Check func(ctx context.Context) error

// Server is the admin HTTP server. Register handlers and checks before Serve.
// Its methods are safe for concurrent use.
type Server struct {
	mux      *http.ServeMux
	log      *slog.Logger
	tokenSum *[sha256.Size]byte // nil: no token asked
	mu       sync.Mutex         // guards checks
	checks   map[string]Check
	srv      *http.Server
}

// New returns a server with /healthz (always 200 while the process serves) and
// /readyz (200 only when every registered check passes).
func New(log *slog.Logger, o Options) *Server {
	s := &Server{mux: http.NewServeMux(), log: log, checks: map[string]Check{}}
	if o.Token != "" {
		sum := sha256.Sum256([]byte(o.Token))
		s.tokenSum = &sum
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if o.Pprof {
		// pprof.Index also serves the named profiles (/debug/pprof/heap, …);
		// it answers /debug/pprof/cmdline 404, as no profile has that name.
		s.HandleProtected("GET /debug/pprof/", http.HandlerFunc(pprof.Index))
		s.HandleProtected("GET /debug/pprof/profile", http.HandlerFunc(pprof.Profile))
		s.HandleProtected("GET /debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
		s.HandleProtected("GET /debug/pprof/trace", http.HandlerFunc(pprof.Trace))
	}
	return s
}

// Handle registers h for pattern (http.ServeMux syntax), open to anyone who
// reaches the admin port: for scrapers and probes.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandleProtected registers h for pattern behind Options.Token: for
// endpoints that change state (cache purges) or show internals (/debug).
func (s *Server) HandleProtected(pattern string, h http.Handler) { s.mux.Handle(pattern, s.guard(h)) }

// guard asks for the bearer token. The comparison is of SHA-256 sums in
// constant time, so neither the token's length nor its prefix leaks through
// timing.
func (s *Server) guard(h http.Handler) http.Handler {
	if s.tokenSum == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		scheme, token, _ := strings.Cut(auth, " ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if !strings.EqualFold(scheme, "bearer") || subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice-admin"`)
			http.Error(w, "unauthorized: this endpoint needs the admin token (Authorization: Bearer ...)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// AddCheck registers a readiness check under name, replacing one of the same name.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// Handler returns the server's routes, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	checks := make(map[string]Check, len(s.checks))
	for n, c := range s.checks {
		checks[n] = c
	}
	s.mu.Unlock()
	sort.Strings(names)

	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	status := http.StatusOK
	report := make(map[string]string, len(names))
	for _, n := range names {
		if err := checks[n](ctx); err != nil {
			status = http.StatusServiceUnavailable
			report[n] = err.Error()
			continue
		}
		report[n] = "ok"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(report)
}

// Serve listens on addr and serves until ctx is done, then shuts down within
// grace. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serve: %w", err)
	}
	return nil
}
