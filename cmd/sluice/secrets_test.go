package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/config"
)

const secret = "hunter2-not-for-logs"

// env is a getenv over a map.
func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestURLSecretsNeverPrinted: a password in a Redis or PostgreSQL URL,
// from a flag, an environment variable or a file, shows up in no output:
// flag help, config errors, logs.
func TestURLSecretsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	redisFile := filepath.Join(dir, "redis-url")
	if err := os.WriteFile(redisFile, []byte("redis://:"+secret+"@127.0.0.1:1/0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withSecrets := map[string]string{
		"REDIS_URL":         "redis://:" + secret + "@127.0.0.1:1/0",
		"DATABASE_URL":      "postgres://u:" + secret + "@127.0.0.1:1/db",
		"DATABASE_READ_URL": "postgres://u:" + secret + "@127.0.0.1:2/db",
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"serve help", []string{"serve", "-h"}, withSecrets},
		{"dev help", []string{"dev", "-h"}, withSecrets},
		{"check-config help", []string{"check-config", "-h"}, withSecrets},
		{"worker help", []string{"worker", "-h"}, withSecrets},
		{"unparsable redis url flag", []string{"check-config", "--redis-url", "redis://:" + secret + "@[::1"}, nil},
		{"unparsable redis url env", []string{"check-config"}, map[string]string{"REDIS_URL": "redis://:" + secret + "@h:x/0"}},
		{"unparsable cluster url", []string{"check-config", "--redis-url", "redis+cluster://:" + secret + "@h:1?addr=%zz"}, nil},
		{"redis url file", []string{"check-config", "--redis-url-file", redisFile, "--redis-url", "x"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			run(context.Background(), tt.args, &out, &errOut, env(tt.env))
			if all := out.String() + errOut.String(); strings.Contains(all, secret) {
				t.Fatalf("the password was printed:\n%s", all)
			}
		})
	}
}

// TestServeLogsNoSecret runs `sluice serve` with a password in the Redis
// URL given on the command line: the logs show the URL redacted and warn
// that a command line is visible to every user of the host.
func TestServeLogsNoSecret(t *testing.T) {
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	run(ctx, []string{"serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--redis-url", "redis://:" + secret + "@127.0.0.1:1/0"}, &out, &errOut, env(nil))
	all := out.String() + errOut.String()
	if strings.Contains(all, secret) {
		t.Fatalf("the password was printed:\n%s", all)
	}
	if !strings.Contains(all, "REDIS_URL_FILE") {
		t.Errorf("no warning about the password on the command line:\n%s", all)
	}
}

// TestURLFiles: --redis-url-file and --database-url-file (and their
// *_FILE environment variables) read the URL from a file, so it never
// appears on a command line or in the environment.
func TestURLFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	redisFile := write("redis", "redis://:"+secret+"@redis.internal:6380/2\n")
	dbFile := write("db", "postgres://u:"+secret+"@db.internal/sluice\n")
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"flags", []string{"--redis-url-file", redisFile, "--database-url-file", dbFile}, nil},
		{"env", nil, map[string]string{"REDIS_URL_FILE": redisFile, "DATABASE_URL_FILE": dbFile}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c common
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			c.register(fs, env(tt.env), config.DefaultGRPCAddr, config.DefaultAdminAddr)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := c.load()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Redis.URL != "redis://:"+secret+"@redis.internal:6380/2" || cfg.Database.URL != "postgres://u:"+secret+"@db.internal/sluice" {
				t.Errorf("redis %q, database set %v", cfg.Redis.Redacted(), cfg.Database.URL != "")
			}
		})
	}
}

// TestCheckConfigEnvoy: check-config --envoy prints each coupling problem
// as file:line: message and exits 1; the shipped configs pass.
func TestCheckConfigEnvoy(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := write("old.yaml", "domain: sluice\ndescriptors:\n  - key: tier\n    descriptors:\n      - key: user_id\n        rate_limit: {unit: second, requests_per_unit: 5}\n")
	big := write("big.yaml", "cache:\n  max_object_bytes: 4194304\n")
	envoyYAML := "../../envoy/envoy.yaml"
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  []string
	}{
		{"shipped", []string{"--config", "../../deploy/sluice/sluice.yaml", "--ratelimit-config", "../../config/ratelimit/tiers.yaml", "--envoy", envoyYAML}, 0, nil},
		{"old user rules", []string{"--ratelimit-config", old, "--envoy", envoyYAML}, 1, []string{
			old + ":5: descriptor (tier, user_id) has limits, but " + envoyYAML + " never sends a descriptor that reaches it",
		}},
		{"cache objects over the buffer limit", []string{"--config", big, "--envoy", envoyYAML}, 1, []string{
			big + ": cache.max_object_bytes 4194304 is above " + envoyYAML + " listener ingress's per_connection_buffer_limit_bytes 1048576",
		}},
		{"missing bootstrap", []string{"--envoy", filepath.Join(dir, "nope.yaml")}, 1, []string{"nope.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), append([]string{"check-config"}, tt.args...), &out, &errOut, env(nil))
			if code != tt.wantCode {
				t.Fatalf("exit %d; want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, out.String(), errOut.String())
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut.String())
				}
			}
		})
	}
}
