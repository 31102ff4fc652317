package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/db/dbtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestServeAndShutdown runs the command on a loopback port: it answers the
// health check and the seeded tenants' lists, and returns 0 once its context
// (the signal) ends, with no goroutine left behind.
func TestServeAndShutdown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan net.Addr, 1)
	done := make(chan int, 1)
	var stderr strings.Builder
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-seed", "acme, globex", "-shutdown-grace", "2s"}, &stderr, func(a net.Addr) { addrc <- a })
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a.String()
	case code := <-done:
		t.Fatalf("run returned %d before listening: %s", code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("demoapi did not start listening")
	}
	client := &http.Client{Timeout: 5 * time.Second}

	get := func(path, tenant string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tenant != "" {
			req.Header.Set("x-sluice-tenant", tenant)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	if code, body := get("/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz = %d %s", code, body)
	}
	tests := []struct {
		name   string
		tenant string
		want   int
	}{
		{name: "seeded tenant", tenant: "acme", want: 5},
		{name: "second seeded tenant", tenant: "globex", want: 5},
		{name: "unseeded tenant", tenant: "initech", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get("/api/v1/contacts", tt.tenant)
			if code != http.StatusOK {
				t.Fatalf("list = %d %s", code, body)
			}
			var list struct {
				Tenant   string            `json:"tenant"`
				Contacts []json.RawMessage `json:"contacts"`
			}
			if err := json.Unmarshal(body, &list); err != nil {
				t.Fatalf("list: %v: %s", err, body)
			}
			if list.Tenant != tt.tenant || len(list.Contacts) != tt.want {
				t.Fatalf("list of %q has %d contacts; want %q with %d: %s", list.Tenant, len(list.Contacts), tt.tenant, tt.want, body)
			}
		})
	}
	client.CloseIdleConnections()

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run = %d after shutdown; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("demoapi did not stop after its context ended")
	}
	if !strings.Contains(stderr.String(), "demoapi stopped") {
		t.Errorf("no stop log line:\n%s", stderr.String())
	}
}

func TestBadArguments(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{name: "unknown flag", args: []string{"-port", "1"}, want: 2},
		{name: "positional argument", args: []string{"serve"}, want: 2},
		{name: "unusable address", args: []string{"-listen", "127.0.0.1:-1"}, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := run(context.Background(), tt.args, io.Discard, nil); got != tt.want {
				t.Errorf("run(%q) = %d; want %d", tt.args, got, tt.want)
			}
		})
	}
}

// TestPostgresStore: with -database-url the API keeps contacts in PostgreSQL
// (schema from the worker's migrations), so they outlive the process.
func TestPostgresStore(t *testing.T) {
	url := dbtest.New(t)
	ctx := context.Background()
	d, err := db.Open(ctx, db.Config{URL: url}.WithDefaults(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Migrate(ctx, d.Primary(), db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	d.Close()

	serve := func(do func(base string)) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		addrc, done := make(chan net.Addr, 1), make(chan int, 1)
		var stderr strings.Builder
		go func() {
			done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-database-url", url, "-shutdown-grace", "1s"}, &stderr, func(a net.Addr) { addrc <- a })
		}()
		select {
		case a := <-addrc:
			do("http://" + a.String())
		case code := <-done:
			t.Fatalf("demoapi exited %d: %s", code, stderr.String())
		}
		cancel()
		if code := <-done; code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	var location string
	serve(func(base string) {
		req, _ := http.NewRequest("POST", base+"/api/v1/contacts", strings.NewReader(`{"name":"Pat Postgres","email":"pat@pg"}`))
		req.Header.Set("x-sluice-tenant", "pgco")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("create: %d", resp.StatusCode)
		}
		location = resp.Header.Get("Location")
	})
	client.CloseIdleConnections()
	// A new process finds it.
	serve(func(base string) {
		req, _ := http.NewRequest("GET", base+location, nil)
		req.Header.Set("x-sluice-tenant", "pgco")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "Pat Postgres") {
			t.Fatalf("read back after restart: %d %s", resp.StatusCode, body)
		}
	})
}
