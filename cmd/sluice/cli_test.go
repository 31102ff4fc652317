package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// noEnv is an empty environment, so no test reads the machine's.
func noEnv(string) string { return "" }

// TestCLI runs the command line as a user types it and checks the exit code
// and what each stream says. None of these cases starts a server: each ends
// at its flags or its config.
func TestCLI(t *testing.T) {
	dir := t.TempDir()
	badConfig := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(badConfig, []byte("server:\n  grpc_adr: x\nratelimit:\n  timeout: [1]\n  headers: fancy\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badIndent := filepath.Join(dir, "indent.yaml")
	if err := os.WriteFile(badIndent, []byte("server:\n  grpc_addr: x\n admin_addr: y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badRules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(badRules, []byte("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: eon, requests_per_unit: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	goodRules := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(goodRules, []byte("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{name: "no command", args: nil, wantCode: 2, wantStderr: []string{"Usage:"}},
		{name: "help", args: []string{"-h"}, wantCode: 0, wantStdout: []string{"Usage:"}},

		{name: "serve -h", args: []string{"serve", "-h"}, wantCode: 0, wantStdout: []string{"Usage: sluice serve [flags]", "-grpc-addr", "(default 127.0.0.1:8081, or the config file"}},
		{name: "serve --help", args: []string{"serve", "--help"}, wantCode: 0, wantStdout: []string{"Usage: sluice serve [flags]"}},
		{name: "serve with a stray argument before a flag", args: []string{"serve", "oops", "--admin-addr", "127.0.0.1:0"}, wantCode: 2,
			wantStderr: []string{`sluice serve: unexpected argument "oops"`, "Usage: sluice serve [flags]"}},
		{name: "serve with an unknown flag", args: []string{"serve", "--nope"}, wantCode: 2, wantStderr: []string{"flag provided but not defined: -nope", "Usage: sluice serve"}},
		{name: "serve with a bad config", args: []string{"serve", "--config", badConfig}, wantCode: 1,
			wantStderr: []string{badConfig + `:2: unknown field "grpc_adr" in server`, badConfig + ":4: ratelimit.timeout: want a duration", badConfig + `:5: ratelimit: headers "fancy"`}},

		{name: "dev -h shows dev's defaults", args: []string{"dev", "-h"}, wantCode: 0,
			wantStdout: []string{"Usage: sluice dev [flags]", "(default 127.0.0.1:8081)", "(default 127.0.0.1:9091)", "-listen", "(default \":8080\")"}},
		{name: "dev with a stray argument", args: []string{"dev", "oops", "--listen", "127.0.0.1:0"}, wantCode: 2,
			wantStderr: []string{`sluice dev: unexpected argument "oops"`}},
		{name: "dev with an upstream path", args: []string{"dev", "--upstream", "http://127.0.0.1:1/v2", "--listen", "127.0.0.1:0"}, wantCode: 2,
			wantStderr: []string{`--upstream "http://127.0.0.1:1/v2" has a path`}},
		{name: "dev with an upstream that is no URL", args: []string{"dev", "--upstream", "localhost:3000"}, wantCode: 2,
			wantStderr: []string{`--upstream "localhost:3000" must be an http:// or https:// URL`}},

		{name: "check-config with nothing to check", args: []string{"check-config"}, wantCode: 2,
			wantStderr: []string{"nothing to check", "Usage: sluice check-config [flags] [rule files or directories...]"}},
		{name: "check-config -h", args: []string{"check-config", "-h"}, wantCode: 0, wantStdout: []string{"Usage: sluice check-config"}},
		{name: "check-config reports every problem of the config and the rules", args: []string{"check-config", "--config", badConfig, badRules}, wantCode: 1,
			wantStderr: []string{badConfig + `:2: unknown field "grpc_adr"`, badConfig + `:5: ratelimit: headers "fancy"`, badRules + `:4: invalid rate limit unit "eon"`}},
		{name: "check-config places a bad indent on its line", args: []string{"check-config", "--config", badIndent}, wantCode: 1,
			wantStderr: []string{badIndent + ":3: invalid YAML: did not find expected key"}},
		{name: "check-config of good rules", args: []string{"check-config", goodRules}, wantCode: 0, wantStdout: []string{goodRules + ": ok (1 domains)"}},

		{name: "worker -h", args: []string{"worker", "-h"}, wantCode: 0, wantStdout: []string{"sluice worker migrate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := run(ctx, tt.args, &stdout, &stderr, noEnv)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, &stdout, &stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, &stdout)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, &stderr)
				}
			}
		})
	}
}
