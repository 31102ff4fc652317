package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3/lock"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/db/dbtest"
	"github.com/sluicehq/sluice/internal/faultproxy"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
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
		{name: "warming without tenants", args: []string{"worker", "--redis-url", "redis://127.0.0.1:1", "--envoy-url", "http://127.0.0.1:1"}, wantCode: 2},
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
		done <- run(ctx, []string{"worker", "--database-url", url, "--admin-addr", "127.0.0.1:0"}, &bytes.Buffer{}, &errb, func(string) string { return "" })
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

// lockedBuffer is a bytes.Buffer safe for a writer and a reader in different goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestWorkerWarmsWithRedisAndEnvoy(t *testing.T) {
	url := dbtest.New(t)
	redistest.Client(t) // fails the test early if Redis is not there
	prefix := redistest.Prefix(t)
	envoy := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer envoy.Close()
	env := map[string]string{
		"DATABASE_URL": url, "REDIS_URL": "redis://" + redistest.Addr(), "REDIS_KEY_PREFIX": prefix,
		"ENVOY_URL": envoy.URL, "WARM_TENANTS": "acme, globex", "WARM_INTERVAL": "20ms",
		"WORKER_ADMIN_ADDR": "127.0.0.1:0",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var errb lockedBuffer
	go func() {
		done <- run(ctx, []string{"worker"}, &bytes.Buffer{}, &errb, func(k string) string { return env[k] })
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(errb.String(), "warm: round done") {
		select {
		case code := <-done:
			t.Fatalf("worker exited early with %d: %s", code, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no warming round logged: %s", errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := errb.String(); !strings.Contains(s, "warming the cache") || !strings.Contains(s, "tenants=2") {
		t.Fatalf("log: %s", s)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not stop")
	}
}

// TestActiveTenantsQuery: the warmer's tenant source ranks tenants by their
// activities of the last day, against the migrated schema. It reads the
// replica (here the same database behind a fault proxy), and the primary
// when the replica stops answering.
func TestActiveTenantsQuery(t *testing.T) {
	ctx := context.Background()
	primary := dbtest.New(t)
	u, err := url.Parse(primary)
	if err != nil {
		t.Fatal(err)
	}
	proxy := faultproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	reg := metricstest.NewRegistry()
	d, err := db.Open(ctx, db.Config{URL: primary, ReadURL: u.String(), ConnectTimeout: time.Second}.WithDefaults(), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := db.Migrate(ctx, d.Primary(), db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = d.Primary().Exec(ctx, `
		INSERT INTO tenants (id, tier) VALUES ('quiet', 'free'), ('busy', 'pro'), ('old', 'pro'), ('mid', 'basic');
		INSERT INTO contacts (tenant_id, name) VALUES ('quiet', 'q'), ('busy', 'b'), ('old', 'o'), ('mid', 'm');
		INSERT INTO activities (tenant_id, contact_id, kind, created_at)
		SELECT c.tenant_id, c.id, 'call', now() - s.age
		FROM contacts c
		JOIN (VALUES ('quiet', 1, interval '1 hour'), ('busy', 5, interval '1 hour'), ('mid', 3, interval '1 hour'),
		             ('old', 9, interval '3 days')) AS v(tenant, n, age) ON v.tenant = c.tenant_id
		CROSS JOIN LATERAL (SELECT v.age AS age FROM generate_series(1, v.n)) s`)
	if err != nil {
		t.Fatal(err)
	}
	if f := activeTenants(d, 5, false); f != nil {
		t.Error("no templates: the query should not run")
	}
	if err := d.CheckReplica(ctx); err != nil {
		t.Fatal(err)
	}
	replicaQueries := func() float64 {
		return reg.Value(t, "sluice_db_queries_total", prometheus.Labels{"pool": "replica"})
	}
	for _, fault := range []string{"none", "replica cut off"} {
		if fault != "none" {
			proxy.Cut()
		}
		before := replicaQueries()
		got, err := activeTenants(d, 2, true)(ctx)
		if err != nil {
			t.Fatalf("%s: %v", fault, err)
		}
		if strings.Join(got, ",") != "busy,mid" {
			t.Errorf("%s: active tenants %v, want [busy mid] (old activity does not count)", fault, got)
		}
		if fault == "none" && replicaQueries() == before {
			t.Errorf("the query did not go to the replica")
		}
	}
}

// adminAddrRe finds the address the worker's admin server bound (the tests
// ask for port 0).
var adminAddrRe = regexp.MustCompile(`sluice worker: admin listening.* addr=(\S+)`)

// waitAdmin returns the worker's admin base URL once its log names it.
func waitAdmin(t *testing.T, errb *lockedBuffer, done <-chan int) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := adminAddrRe.FindStringSubmatch(errb.String()); m != nil {
			return "http://" + m[1]
		}
		select {
		case code := <-done:
			t.Fatalf("worker exited with %d before its admin server listened: %s", code, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no admin listening line: %s", errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func status(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestWorkerHealth: the long-running worker serves /healthz, /readyz and
// /metrics on its admin address, the endpoints the image's HEALTHCHECK, the
// Kubernetes probes and Prometheus use. It is live while migrations wait (an
// index built CONCURRENTLY may take long; a liveness probe must not kill it)
// and ready only once they are applied.
func TestWorkerHealth(t *testing.T) {
	url := dbtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Another runner holds the migration lock: this worker waits for it.
	holder, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, lock.DefaultLockID); err != nil {
		t.Fatal(err)
	}

	done := make(chan int, 1)
	var errb lockedBuffer
	go func() {
		done <- run(ctx, []string{"worker", "--database-url", url, "--admin-addr", "127.0.0.1:0"}, &bytes.Buffer{}, &errb, func(string) string { return "" })
	}()
	base := waitAdmin(t, &errb, done)

	if code, body := status(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while migrating = %d %q; want 200", code, body)
	}
	if code, body := status(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "migrations") {
		t.Errorf("/readyz while migrating = %d %q; want 503 naming migrations", code, body)
	}
	if code, body := status(t, base+"/metrics"); code != http.StatusOK || !strings.Contains(body, "sluice_build_info") {
		t.Errorf("/metrics = %d; want 200 with sluice_build_info: %.200s", code, body)
	}

	if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock($1)`, lock.DefaultLockID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second) // the runner polls the lock every second
	for {
		code, body := status(t, base+"/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after the lock was released = %d %q; want 200", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not stop")
	}
}
