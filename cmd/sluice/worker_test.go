package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/db/dbtest"
)

func TestWorkerMigrate(t *testing.T) {
	url := dbtest.New(t)
	env := func(k string) string {
		if k == "DATABASE_URL" {
			return url
		}
		return ""
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{name: "dry run on empty database", args: []string{"worker", "migrate", "--dry-run"}, wantOut: "8 pending migrations, 0 invalid indexes"},
		{name: "dry run again: still pending", args: []string{"worker", "--dry-run", "migrate"}, wantOut: "8 pending migrations"},
		{name: "migrate", args: []string{"worker", "migrate", "--database-url", url}},
		{name: "nothing pending after", args: []string{"worker", "migrate", "--dry-run"}, wantOut: "0 pending migrations, 0 invalid indexes"},
		{name: "dry run without migrate", args: []string{"worker", "--dry-run"}, wantCode: 2},
		{name: "unknown argument", args: []string{"worker", "migrate", "extra"}, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errb, env)
			if code != tt.wantCode || !strings.Contains(out.String(), tt.wantOut) {
				t.Fatalf("exit %d, stdout %q, stderr %s; want exit %d with %q", code, out.String(), errb.String(), tt.wantCode, tt.wantOut)
			}
		})
	}
}

func TestWorkerWaitsUntilStopped(t *testing.T) {
	url := dbtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"worker", "--database-url", url}, &bytes.Buffer{}, &errb, func(string) string { return "" })
	}()
	select {
	case code := <-done:
		t.Fatalf("worker exited early with %d: %s", code, errb.String())
	case <-time.After(time.Second):
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not stop")
	}
}
