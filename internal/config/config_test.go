package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseAndValidate(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string // "" = valid
		check   func(t *testing.T, c Config)
	}{
		{name: "empty file gives defaults", yaml: "", check: func(t *testing.T, c Config) {
			if c.Server.GRPCAddr != "127.0.0.1:8081" || c.Server.AdminAddr != "127.0.0.1:9091" || c.Server.Pprof || c.Server.GRPCTLS.Enabled() || c.RateLimit.Timeout != 20*time.Millisecond || c.Redis.KeyPrefix != "sluice:" {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{name: "durations and sections", yaml: "server:\n  grpc_addr: 127.0.0.1:1\nratelimit:\n  timeout: 35ms\n  headers: x-ratelimit\nredis:\n  url: redis://10.0.0.1:6380/2\n", check: func(t *testing.T, c Config) {
			if c.Server.GRPCAddr != "127.0.0.1:1" || c.RateLimit.Timeout != 35*time.Millisecond || c.RateLimit.Headers != "x-ratelimit" {
				t.Errorf("parsed: %+v", c)
			}
		}},
		{name: "cache section", yaml: "cache:\n  enabled: false\n  max_object_bytes: 2048\n  store:\n    l1_max_bytes: 4096\n    redis_timeout: 30ms\n", check: func(t *testing.T, c Config) {
			if *c.Cache.Enabled || c.Cache.MaxObjectBytes != 2048 || c.Cache.Store.L1MaxBytes != 4096 || c.Cache.Store.RedisTimeout != 30*time.Millisecond {
				t.Errorf("cache: %+v", c.Cache)
			}
		}},
		{name: "merge keys", yaml: "log: {<<: {level: debug, format: json}, format: text}\n", check: func(t *testing.T, c Config) {
			if c.Log.Level != "debug" || c.Log.Format != "text" {
				t.Errorf("log: %+v", c.Log)
			}
		}},
		{name: "database section with the tier store's timing", yaml: "database:\n  url: postgres://db/x\n  max_conns: 3\n  tiers:\n    resync: 10s\n    reconnect_backoff: 2s\n", check: func(t *testing.T, c Config) {
			if c.Database.URL != "postgres://db/x" || c.Database.MaxConns != 3 || c.Database.Tiers.Resync != 10*time.Second || c.Database.Tiers.Backoff != 2*time.Second {
				t.Errorf("database: %+v", c.Database)
			}
		}},
		{name: "tier store defaults", yaml: "database: {url: postgres://db/x}\n", check: func(t *testing.T, c Config) {
			if c.Database.Tiers.Resync != 30*time.Second || c.Database.Tiers.Backoff != time.Second {
				t.Errorf("tiers: %+v", c.Database.Tiers)
			}
		}},
		{name: "bad tier resync", yaml: "database:\n  url: postgres://db/x\n  tiers:\n    resync: -1s\n", wantErr: "sluice.yaml:4: database: tiers.resync -1s must be positive"},
		{name: "a zero duration may be written bare", yaml: "cache:\n  store:\n    stale_retention: 0\n"},
		{name: "bad cache policy", yaml: "cache:\n  heuristic_fraction: 2\n", wantErr: "sluice.yaml:2: cache: heuristic_fraction"},
		{name: "unknown key names its line and the valid keys", yaml: "server:\n  grpc_adr: x\n",
			wantErr: `sluice.yaml:2: unknown field "grpc_adr" in server (valid: grpc_addr, admin_addr, admin_token_file, pprof, grpc_tls, shutdown_grace, max_recv_msg_bytes)`},
		{name: "unknown top-level key", yaml: "ratelimits: {}\n", wantErr: `sluice.yaml:1: unknown field "ratelimits" in the top level (valid: server, log, redis, ratelimit, extproc, cache, database, batch)`},
		{name: "unknown key of an inline section", yaml: "cache:\n  stor: {}\n", wantErr: `sluice.yaml:2: unknown field "stor" in cache (valid: enabled,`},
		{name: "unknown key in a list item", yaml: "cache:\n  routes:\n    - {name: a, prefix: /a}\n    - {name: b, prefix: /b, max_tll: 1m}\n",
			wantErr: `sluice.yaml:4: unknown field "max_tll" in cache.routes[1] (valid: name, prefix, path, enabled, max_ttl, max_object_bytes, query_params)`},
		{name: "wrong type", yaml: "ratelimit:\n  timeout: [1]\n", wantErr: "sluice.yaml:2: ratelimit.timeout: want a duration such as 250ms or 1.5s, not a list"},
		{name: "bare number as a duration", yaml: "ratelimit:\n  timeout: 5\n", wantErr: `sluice.yaml:2: ratelimit.timeout: want a duration such as 250ms or 1.5s (with a unit), not "5"`},
		{name: "section that is not a mapping", yaml: "redis: localhost\n", wantErr: `sluice.yaml:1: redis must be a mapping, not "localhost"`},
		{name: "key given twice", yaml: "log:\n  level: info\n  level: debug\n", wantErr: `sluice.yaml:3: log: key "level" given twice (first at line 2)`},
		{name: "second document", yaml: "log: {level: debug}\n---\nlog: {level: error}\n", wantErr: "more than one YAML document"},
		{name: "bad indentation on line 3", yaml: "server:\n  grpc_addr: x\n admin_addr: y\n", wantErr: "sluice.yaml:3: invalid YAML: did not find expected key"},
		{name: "bad header format", yaml: "ratelimit:\n  headers: fancy\n", wantErr: `sluice.yaml:2: ratelimit: headers "fancy"`},
		{name: "bad log level", yaml: "log:\n  level: chatty\n", wantErr: `sluice.yaml:2: log: level "chatty"`},
		{name: "prefix with brace", yaml: "redis:\n  key_prefix: \"a{b\"\n", wantErr: "sluice.yaml:2: redis: key_prefix"},
		{name: "bad redis url", yaml: "redis:\n  url: ftp://x\n", wantErr: "sluice.yaml:2: redis: parse url"},
		{name: "negative timeout", yaml: "ratelimit:\n  timeout: -1s\n", wantErr: "sluice.yaml:2: ratelimit: timeout"},
		{name: "store problem on its line", yaml: "cache:\n  store:\n    subscription_lease: 1ms\n", wantErr: "sluice.yaml:3: cache.store: subscription_lease 1ms is below"},
		{name: "problem of a list item", yaml: "extproc:\n  metrics:\n    routes:\n      - {name: a, prefix: /a}\n      - {name: a, prefix: /b}\n",
			wantErr: `sluice.yaml:5: extproc: metrics.routes[1]: duplicate name "a"`},
		{name: "grpc tls", yaml: "server:\n  pprof: true\n  grpc_tls: {cert_file: /c, key_file: /k, client_ca_file: /ca}\n", check: func(t *testing.T, c Config) {
			if !c.Server.Pprof || c.Server.GRPCTLS != (TLS{CertFile: "/c", KeyFile: "/k", ClientCAFile: "/ca"}) {
				t.Errorf("server: %+v", c.Server)
			}
		}},
		{name: "client CA without a certificate", yaml: "server:\n  grpc_tls: {client_ca_file: /ca}\n", wantErr: "sluice.yaml:2: server: grpc_tls needs cert_file and key_file"},
		{name: "the admin token is not a file setting", yaml: "server:\n  admin_token: abc\n", wantErr: `sluice.yaml:2: unknown field "admin_token" in server`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sluice.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path, Overrides{})
			msg := ""
			if err != nil {
				msg = strings.ReplaceAll(err.Error(), path, "sluice.yaml")
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", msg)
				}
				if tt.check != nil {
					tt.check(t, c)
				}
				return
			}
			if !strings.Contains(msg, tt.wantErr) {
				t.Fatalf("error:\n%s\nwant it to contain %q", msg, tt.wantErr)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not an *Error", err)
			}
		})
	}
}

// TestLoadReportsEveryProblem: one run names every problem of a file, each
// on its own line, whether the YAML decoder or a component's Validate
// finds it.
func TestLoadReportsEveryProblem(t *testing.T) {
	const file = `server:
  grpc_adr: ":1"
ratelimit:
  timeout: [1]
  headers: fancy
redis:
  key_prefix: "a{b"
cache:
  store:
    subscription_lease: 1ms
  routes:
    - {name: a, prefix: /a, bogus: 1}
`
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, Overrides{})
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %T %v, want an *Error", err, err)
	}
	want := []string{
		`2: unknown field "grpc_adr" in server`,
		`4: ratelimit.timeout: want a duration`,
		`5: ratelimit: headers "fancy" must be one of`,
		`7: redis: key_prefix "a{b" must not contain`,
		`10: cache.store: subscription_lease 1ms is below`,
		`12: unknown field "bogus" in cache.routes[0]`,
	}
	if len(ce.Problems) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(ce.Problems), len(want), err)
	}
	for i, w := range want {
		got := ce.Problems[i]
		if got.File != path || !strings.HasPrefix(strings.TrimPrefix(got.String(), path+":"), w) {
			t.Errorf("problem %d = %q, want %s:%s…", i, got, path, w)
		}
	}
}

// TestLoadOverrideProblems: a bad value from a flag or the environment is
// not blamed on the file.
func TestLoadOverrideProblems(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte("redis:\n  url: redis://127.0.0.1:6379/0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", path} {
		_, err := Load(p, Overrides{RedisURL: "ftp://example.com"})
		var ce *Error
		if !errors.As(err, &ce) || len(ce.Problems) != 1 {
			t.Fatalf("Load(%q): %v", p, err)
		}
		if got := ce.Problems[0]; got.File != "" || !strings.HasPrefix(got.Msg, "redis: parse url") || !strings.HasSuffix(got.Msg, "(set by a flag or an environment variable)") {
			t.Errorf("Load(%q): problem %+v", p, got)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("/nonexistent/sluice.yaml", Overrides{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want a wrapped ErrNotExist", err)
	}
}

func TestOverrides(t *testing.T) {
	base := Config{}.WithDefaults()
	base.Redis.URL = "redis://file:6379/0"
	got := Overrides{GRPCAddr: "127.0.0.1:1", RedisURL: "redis://flag:6379/0", DatabaseURL: "postgres://db"}.Apply(base)
	if got.Server.GRPCAddr != "127.0.0.1:1" || got.Redis.URL != "redis://flag:6379/0" || got.Database.URL != "postgres://db" {
		t.Errorf("overrides not applied: %+v", got)
	}
	if got.Server.AdminAddr != base.Server.AdminAddr || got.RateLimit.ConfigPath != base.RateLimit.ConfigPath {
		t.Errorf("empty overrides changed the file's values")
	}
}

// TestParseBoundsAliasWork: aliases that multiply the work stop with a
// problem instead of running on: a mapping of 2,000 unknown keys used 2,000
// times stops at the problem cap, valid values used 150,000 times at the
// work bound.
func TestParseBoundsAliasWork(t *testing.T) {
	var b strings.Builder
	b.WriteString("extproc:\n  identity:\n    tiers: &t {")
	for i := range 2000 {
		fmt.Fprintf(&b, "t%d: free, ", i)
	}
	b.WriteString("}\ncache:\n  routes: [")
	for range 2000 {
		b.WriteString("*t, ")
	}
	b.WriteString("]\n")
	_, err := Parse("big.yaml", []byte(b.String()))
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != maxProblems || !strings.Contains(err.Error(), "too many problems; stopped after 99") {
		t.Fatalf("err = %.300v", err)
	}

	// Valid values multiplied: the work bound stops it.
	b.Reset()
	b.WriteString("cache:\n  routes: [&r {name: r, prefix: /r, max_ttl: 1m, query_params: [a, b, c]}")
	for range 150000 {
		b.WriteString(", *r")
	}
	b.WriteString("]\n")
	_, err = Parse("big.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "big.yaml:2: aliases expand the file by more than 1048576 YAML nodes") {
		t.Fatalf("err = %.300v", err)
	}
}

func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	good := dir + "/token"
	short := dir + "/short"
	if err := os.WriteFile(good, []byte("  0123456789abcdef-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		server  Server
		want    string
		wantErr string // from Token
		invalid string // from Validate
	}{
		{name: "none", want: ""},
		{name: "from the environment", server: Server{AdminToken: "0123456789abcdef-env"}, want: "0123456789abcdef-env"},
		{name: "from a file, trimmed", server: Server{AdminTokenFile: good}, want: "0123456789abcdef-file"},
		{name: "file too short", server: Server{AdminTokenFile: short}, wantErr: "at least 16 bytes"},
		{name: "missing file", server: Server{AdminTokenFile: dir + "/nope"}, wantErr: "admin_token_file"},
		{name: "env too short", server: Server{AdminToken: "abc"}, invalid: "at least 16 bytes"},
		{name: "both", server: Server{AdminToken: "0123456789abcdef-env", AdminTokenFile: good}, invalid: "once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Server: tt.server}.WithDefaults()
			if err := c.Validate(); tt.invalid != "" || err != nil {
				if err == nil || tt.invalid == "" || !strings.Contains(err.Error(), tt.invalid) {
					t.Fatalf("Validate = %v; want %q", err, tt.invalid)
				}
				return
			}
			got, err := c.Server.Token()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Token = %q, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Token = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
