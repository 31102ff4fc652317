package config

import (
	"os"
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
		{name: "bad cache policy", yaml: "cache:\n  heuristic_fraction: 2\n", wantErr: "heuristic_fraction"},
		{name: "unknown key names its line", yaml: "server:\n  grpc_adr: x\n", wantErr: "line 2: field grpc_adr not found"},
		{name: "wrong type", yaml: "ratelimit:\n  timeout: [1]\n", wantErr: "line 2"},
		{name: "bad header format", yaml: "ratelimit:\n  headers: fancy\n", wantErr: `headers "fancy"`},
		{name: "bad log level", yaml: "log:\n  level: chatty\n", wantErr: `level "chatty"`},
		{name: "prefix with brace", yaml: "redis:\n  key_prefix: \"a{b\"\n", wantErr: "key_prefix"},
		{name: "bad redis url", yaml: "redis:\n  url: ftp://x\n", wantErr: "redis: parse url"},
		{name: "negative timeout", yaml: "ratelimit:\n  timeout: -1s\n", wantErr: "timeout"},
		{name: "grpc tls", yaml: "server:\n  pprof: true\n  grpc_tls: {cert_file: /c, key_file: /k, client_ca_file: /ca}\n", check: func(t *testing.T, c Config) {
			if !c.Server.Pprof || c.Server.GRPCTLS != (TLS{CertFile: "/c", KeyFile: "/k", ClientCAFile: "/ca"}) {
				t.Errorf("server: %+v", c.Server)
			}
		}},
		{name: "client CA without a certificate", yaml: "server:\n  grpc_tls: {client_ca_file: /ca}\n", wantErr: "grpc_tls needs cert_file and key_file"},
		{name: "the admin token is not a file setting", yaml: "server:\n  admin_token: abc\n", wantErr: "field admin_token not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml))
			if err == nil {
				c = c.WithDefaults()
				err = c.Validate()
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if tt.check != nil {
					tt.check(t, c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load("/nonexistent/sluice.yaml"); err == nil {
		t.Fatal("want an error for a missing file")
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
