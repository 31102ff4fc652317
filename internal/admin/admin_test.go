package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReadyz(t *testing.T) {
	tests := []struct {
		name       string
		checks     map[string]Check
		wantStatus int
		wantBody   string
	}{
		{name: "no checks", wantStatus: 200, wantBody: "{}"},
		{name: "all pass", checks: map[string]Check{"a": func(context.Context) error { return nil }}, wantStatus: 200, wantBody: `"a":"ok"`},
		{name: "one fails", checks: map[string]Check{
			"rules": func(context.Context) error { return nil },
			"redis": func(context.Context) error { return errors.New("connection refused") },
		}, wantStatus: 503, wantBody: `"redis":"connection refused"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(slog.New(slog.DiscardHandler), Options{})
			for n, c := range tt.checks {
				s.AddCheck(n, c)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			if rec.Code != tt.wantStatus || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Fatalf("got %d %s, want %d with %s", rec.Code, rec.Body.String(), tt.wantStatus, tt.wantBody)
			}
		})
	}
}

func TestServeAndShutdown(t *testing.T) {
	s := New(slog.New(slog.DiscardHandler), Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, time.Second) }()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("/healthz = %d %q", resp.StatusCode, body)
	}
	if resp, err := client.Post("http://"+ln.Addr().String()+"/healthz", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /healthz = %v %v, want 405", resp, err)
	} else {
		resp.Body.Close()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v after shutdown", err)
	}
}

// TestTokenAndPprof: with a token, the protected endpoints (purges, /debug)
// need it and the probes do not; pprof is served only when enabled, and
// never /debug/pprof/cmdline, which would show the command line's secrets.
func TestTokenAndPprof(t *testing.T) {
	const token = "s3cret-token-of-some-length"
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("done")) })
	tests := []struct {
		name       string
		opts       Options
		method     string
		path       string
		auth       string
		wantStatus int
	}{
		{"probe open", Options{Token: token}, "GET", "/healthz", "", 200},
		{"metrics open", Options{Token: token}, "GET", "/metrics", "", 200},
		{"purge without token", Options{Token: token}, "POST", "/cache/purge", "", 401},
		{"purge with a wrong token", Options{Token: token}, "POST", "/cache/purge", "Bearer nope", 401},
		{"purge with the token's prefix", Options{Token: token}, "POST", "/cache/purge", "Bearer " + token[:10], 401},
		{"purge with basic auth", Options{Token: token}, "POST", "/cache/purge", "Basic " + token, 401},
		{"purge with the token", Options{Token: token}, "POST", "/cache/purge", "Bearer " + token, 200},
		{"scheme is case-insensitive", Options{Token: token}, "POST", "/cache/purge", "bearer " + token, 200},
		{"debug without token", Options{Token: token}, "GET", "/debug/ratelimit", "", 401},
		{"no token configured: open", Options{}, "POST", "/cache/purge", "", 200},
		{"pprof off by default", Options{}, "GET", "/debug/pprof/", "", 404},
		{"pprof off: no profile", Options{}, "GET", "/debug/pprof/heap", "", 404},
		{"pprof on, protected", Options{Token: token, Pprof: true}, "GET", "/debug/pprof/heap", "", 401},
		{"pprof on, with token", Options{Token: token, Pprof: true}, "GET", "/debug/pprof/heap", "Bearer " + token, 200},
		{"pprof never serves cmdline", Options{Pprof: true}, "GET", "/debug/pprof/cmdline", "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(slog.New(slog.DiscardHandler), tt.opts)
			s.Handle("GET /metrics", ok)
			s.HandleProtected("POST /cache/purge", ok)
			s.HandleProtected("GET /debug/ratelimit", ok)
			req := httptest.NewRequest(tt.method, tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("%s %s: %d %q; want %d", tt.method, tt.path, rec.Code, rec.Body.String(), tt.wantStatus)
			}
			if rec.Code == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}
