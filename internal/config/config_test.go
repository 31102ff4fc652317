package config

import (
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
			if c.Server.GRPCAddr != ":8081" || c.Server.AdminAddr != ":9091" || c.RateLimit.Timeout != 20*time.Millisecond || c.Redis.KeyPrefix != "sluice:" {
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
