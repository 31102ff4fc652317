package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func noenv(string) string { return "" }

func TestRun(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	cfg := filepath.Join(dir, "sluice.yaml")
	badCfg := filepath.Join(dir, "badcfg.yaml")
	os.WriteFile(good, []byte("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 5}\n"), 0o644)
	os.WriteFile(bad, []byte("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: lightyear\n      requests_per_unit: 5\n"), 0o644)
	os.WriteFile(cfg, []byte("ratelimit:\n  timeout: 30ms\n"), 0o644)
	os.WriteFile(badCfg, []byte("ratelimit:\n  timeuot: 30ms\n"), 0o644)

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "no args", args: nil, wantCode: 2, wantErr: "Usage"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantErr: `unknown command "frobnicate"`},
		{name: "version", args: []string{"version"}, wantCode: 0, wantOut: "sluice "},
		{name: "check good rules", args: []string{"check-config", "--ratelimit-config", good}, wantCode: 0, wantOut: "good.yaml: ok (1 domains)"},
		{name: "check bad rules names file and line", args: []string{"check-config", "--ratelimit-config", bad}, wantCode: 1, wantErr: "bad.yaml:5:"},
		{name: "check extra paths", args: []string{"check-config", good, bad}, wantCode: 1, wantErr: "bad.yaml:5:"},
		{name: "check the example rules", args: []string{"check-config", "../../config/ratelimit/tiers.yaml"}, wantCode: 0, wantOut: "ok"},
		{name: "check sluice config", args: []string{"check-config", "--config", cfg}, wantCode: 0, wantOut: "sluice.yaml: ok"},
		{name: "unknown key in sluice config", args: []string{"check-config", "--config", badCfg}, wantCode: 1, wantErr: "line 2: field timeuot not found"},
		{name: "invalid flag value", args: []string{"check-config", "--redis-url", "http://nope"}, wantCode: 1, wantErr: "redis"},
		{name: "bad flag", args: []string{"serve", "--nope"}, wantCode: 2, wantErr: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errb, noenv)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout %q lacks %q", out.String(), tt.wantOut)
			}
			if !strings.Contains(errb.String(), tt.wantErr) {
				t.Errorf("stderr %q lacks %q", errb.String(), tt.wantErr)
			}
		})
	}
}
