package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sluicehq/sluice/internal/app"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/internal/tlsfiles/tlsfilestest"
)

// TestDefaultAddressesAreLoopback: `sluice serve` without flags serves
// gRPC and admin on loopback only (they used to bind every interface, where
// anyone could purge a tenant's cache or read another's cached answers).
func TestDefaultAddressesAreLoopback(t *testing.T) {
	cfg := config.Config{}.WithDefaults()
	for name, addr := range map[string]string{"grpc": cfg.Server.GRPCAddr, "admin": cfg.Server.AdminAddr} {
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("default %s address %q; want loopback", name, addr)
		}
	}
}

// TestAdminToken: with a token, purges and /debug need it; the probes and
// /metrics do not; pprof is off unless enabled.
func TestAdminToken(t *testing.T) {
	const token = "0123456789abcdef-admin"
	r := start(t, "redis://"+redistest.Addr(), func(c *config.Config) { c.Server.AdminToken = token })
	do := func(method, path, auth string) int {
		t.Helper()
		req, _ := http.NewRequest(method, r.admin+path, strings.NewReader(`{"tenant":"acme","all":true}`))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/metrics", "", 200},
		{"POST", "/cache/purge", "", 401},
		{"POST", "/cache/purge", "wrong-token-wrong-token", 401},
		{"POST", "/cache/purge", token, 200},
		{"GET", "/debug/ratelimit", "", 401},
		{"GET", "/debug/ratelimit", token, 200},
		{"GET", "/debug/pprof/", token, 404},
		{"GET", "/debug/pprof/cmdline", token, 404},
	} {
		if got := do(tt.method, tt.path, tt.auth); got != tt.want {
			t.Errorf("%s %s (token %v): %d; want %d", tt.method, tt.path, tt.auth != "", got, tt.want)
		}
	}
}

// TestGRPCMutualTLS: with grpc_tls and a client CA, only a client with a
// certificate of that CA is served.
func TestGRPCMutualTLS(t *testing.T) {
	dir := t.TempDir()
	authority := tlsfilestest.NewCA(t, "sluice test ca")
	cert, key := authority.Issue(t, "sluice", 2, false)
	paths := map[string][]byte{"tls.crt": cert, "tls.key": key, "ca.crt": authority.PEM}
	for name, data := range paths {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.ShutdownGrace = time.Second
	cfg.Redis.URL, cfg.Redis.KeyPrefix = "redis://"+redistest.Addr(), redistest.Prefix(t)
	cfg.Server.GRPCTLS = config.TLS{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), ClientCAFile: filepath.Join(dir, "ca.crt")}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler), "test", app.Options{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := a.Listen(ctx); err != nil {
		a.Close()
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		a.Close()
	})

	roots := x509.NewCertPool()
	roots.AddCert(authority.Cert)
	cc, ck := authority.Issue(t, "envoy", 3, true)
	client, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	check := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(a.GRPCAddr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{client}, ServerName: "127.0.0.1"})); err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	if err := check(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})); err == nil {
		t.Error("a client without a certificate was served")
	}
	if err := check(insecure.NewCredentials()); err == nil {
		t.Error("a plaintext client was served")
	}
}
