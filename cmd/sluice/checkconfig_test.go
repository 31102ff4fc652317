package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfigAgainstEnvoy: check-config --envoy refuses a Sluice config whose cache
// asks the ext_proc filter for a longer wait than its max_message_timeout grants (Envoy would
// stop waiting and forward the request uncached), and accepts the shipped pair.
func TestCheckConfigAgainstEnvoy(t *testing.T) {
	const shipped = "../../envoy/envoy.yaml"
	dir := t.TempDir()
	long := filepath.Join(dir, "long.yaml")
	if err := os.WriteFile(long, []byte("cache:\n  collapse_wait: 30s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv := func(string) string { return "" }
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{name: "defaults fit envoy.yaml", args: []string{"check-config", "--envoy", shipped}, code: 0, contains: "ok against the Sluice config"},
		{name: "a wait past max_message_timeout", args: []string{"check-config", "--config", long, "--envoy", shipped}, code: 1,
			contains: "the cache's longest wait (cache.collapse_wait or an invalidation, plus 300ms to answer) 30.3s is above"},
		{name: "no such bootstrap", args: []string{"check-config", "--envoy", filepath.Join(dir, "none.yaml")}, code: 1, contains: "none.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(context.Background(), tt.args, &out, &errOut, getenv); code != tt.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tt.code, out.String(), errOut.String())
			}
			if !strings.Contains(out.String()+errOut.String(), tt.contains) {
				t.Errorf("output %q %q lacks %q", out.String(), errOut.String(), tt.contains)
			}
		})
	}
}
