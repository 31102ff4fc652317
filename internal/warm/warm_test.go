package warm_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/devstack"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/internal/warm"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// net/http keeps these briefly after Close.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// origin serves max-age=2 with an ETag, answers conditional requests 304, and counts the
// requests that reach it and the conditional ones (how the cache stage revalidates, as a
// warming request makes it do). Sluice strips x-sluice-* request headers, so the warming mark
// itself does not reach the origin.
type origin struct {
	*httptest.Server
	gets, revs atomic.Int64
}

func newOrigin(t *testing.T) *origin {
	o := &origin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.gets.Add(1)
		w.Header().Set("Cache-Control", "max-age=2")
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			o.revs.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "hello "+r.URL.RequestURI())
	}))
	t.Cleanup(o.Close)
	return o
}

func TestWarmRefreshesHotEntryBeforeExpiry(t *testing.T) {
	o := newOrigin(t)
	prefix := redistest.Prefix(t)
	rdb := redistest.Client(t)

	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.ShutdownGrace = time.Second
	cfg.Redis.URL = "redis://" + redistest.Addr()
	cfg.Redis.KeyPrefix = prefix
	cfg.Cache.Store.HotSampleRate = 1
	ctx, cancel := context.WithCancel(context.Background())
	s, err := devstack.Start(ctx, devstack.Options{Listen: "127.0.0.1:0", Upstream: o.URL, Sluice: cfg, RedisSet: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		client.CloseIdleConnections()
	})

	get := func() *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", s.URL()+"/hot?b=2&a=1", nil)
		req.Header.Set("x-tenant-id", "acme")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for range 3 {
		get()
	}
	if n := o.gets.Load(); n != 1 {
		t.Fatalf("origin saw %d requests for 3 GETs, want 1", n)
	}

	// The warmer's view of Redis: a Store of its own on the same prefix.
	src, err := cachefilter.NewStore(cachefilter.StoreConfig{}, cachefilter.StoreOptions{Redis: rdb, KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tag := cachefilter.TenantTag("acme")
	var hot cachefilter.HotEntry
	deadline := time.Now().Add(5 * time.Second)
	for {
		es, err := src.HotPaths(context.Background(), tag, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 1 {
			hot = es[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hot entries %+v, want the one path", es)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if hot.Path != "/hot?b=2&a=1" || hot.Lifetime != 2*time.Second || cachefilter.KeyTenant(hot.Key) != tag ||
		time.Until(hot.FreshUntil) <= 0 || time.Until(hot.FreshUntil) > 2*time.Second || !hot.Expires.After(hot.FreshUntil.Add(-time.Millisecond)) {
		t.Fatalf("hot entry %+v", hot)
	}

	reg := prometheus.NewRegistry()
	// Through the internal listener, as the worker warms; with the
	// client-facing authority, which the cache keys on.
	w, err := warm.New(warm.Config{EnvoyURL: s.InternalURL(), Host: strings.TrimPrefix(s.URL(), "http://"), Tenants: []string{"acme", "globex"}, EarlyRefresh: 1}, src, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// Wait until the entry is near expiry (under 400ms of freshness left), then warm it.
	for time.Until(hot.FreshUntil) > 400*time.Millisecond {
		time.Sleep(10 * time.Millisecond)
	}
	st, err := w.Round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Tenants != 2 || st.Hot != 1 || st.Due != 1 || st.Refreshed != 1 || st.Failed != 0 {
		t.Fatalf("round stats %+v", st)
	}
	if o.revs.Load() != 1 || o.gets.Load() != 2 {
		t.Fatalf("origin saw %d revalidations, %d requests in all; want 1 and 2", o.revs.Load(), o.gets.Load())
	}
	if got := testutil.ToFloat64(w.Requests(warm.ResultRefreshed)); got != 1 {
		t.Fatalf("sluice_warm_requests_total{result=refreshed} = %v, want 1", got)
	}

	// Once the original freshness has run out, clients still hit the refreshed entry.
	for !time.Now().After(hot.FreshUntil.Add(50 * time.Millisecond)) {
		time.Sleep(10 * time.Millisecond)
	}
	resp := get()
	if xc := resp.Header.Get("x-cache"); !strings.HasPrefix(xc, httpcache.XCacheHit) || o.gets.Load() != 2 {
		t.Fatalf("after warming: x-cache %q, origin requests %d (want a hit, 2)", xc, o.gets.Load())
	}
	after, err := src.HotPaths(context.Background(), tag, 10)
	if err != nil || len(after) != 1 || !after[0].FreshUntil.After(hot.FreshUntil) {
		t.Fatalf("hot entries after warming %+v (%v), want freshness past %v", after, err, hot.FreshUntil)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	src := sourceFunc(func(context.Context, string, int) ([]cachefilter.HotEntry, error) { return nil, nil })
	w, err := warm.New(warm.Config{Interval: time.Millisecond, Tenants: []string{"a"}}, src, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDueOnlyNearExpiry(t *testing.T) {
	var saw atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Cache-Control") != "no-cache" || r.Header.Get(warm.Header) != "1" || r.Header.Get("x-tenant-id") != "t" {
			w.WriteHeader(400)
			return
		}
		saw.Add(1)
	}))
	defer srv.Close()
	now := time.Now()
	src := sourceFunc(func(_ context.Context, tag string, n int) ([]cachefilter.HotEntry, error) {
		return []cachefilter.HotEntry{
			{Path: "/fresh", Lifetime: time.Minute, FreshUntil: now.Add(50 * time.Second)},
			{Path: "/near", Lifetime: time.Minute, FreshUntil: now.Add(time.Second)},
			{Path: "/stale", Lifetime: time.Minute, FreshUntil: now.Add(-time.Second)},
		}, nil
	})
	w, err := warm.New(warm.Config{EnvoyURL: srv.URL, Tenants: []string{"t"}}, src, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	st, err := w.Round(context.Background())
	if err != nil || st.Due != 2 || st.Refreshed != 2 || saw.Load() != 2 {
		t.Fatalf("round %+v %v, origin saw %d; want 2 due and refreshed", st, err, saw.Load())
	}
}

type sourceFunc func(context.Context, string, int) ([]cachefilter.HotEntry, error)

func (f sourceFunc) HotPaths(ctx context.Context, tag string, n int) ([]cachefilter.HotEntry, error) {
	return f(ctx, tag, n)
}

// TestTemplatesForActiveTenants: the configured templates are requested for
// each active tenant, as plain GETs (fill, not revalidate), with the tenant
// substituted and sent as identity.
func TestTemplatesForActiveTenants(t *testing.T) {
	var mu sync.Mutex
	got := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Cache-Control") != "" || r.Header.Get(warm.Header) != "1" {
			w.WriteHeader(400)
			return
		}
		mu.Lock()
		got[r.Header.Get("x-tenant-id")+" "+r.URL.RequestURI()] = true
		mu.Unlock()
	}))
	defer srv.Close()
	none := sourceFunc(func(context.Context, string, int) ([]cachefilter.HotEntry, error) { return nil, nil })
	w, err := warm.New(warm.Config{
		EnvoyURL:  srv.URL,
		Templates: []string{"/api/v1/dashboard/stats", "/api/v1/tenants/{tenant}/summary"},
		ActiveTenants: func(context.Context) ([]string, error) {
			return []string{"acme", "glo bex"}, nil
		},
	}, none, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	st, err := w.Round(context.Background())
	if err != nil || st.Refreshed != 4 {
		t.Fatalf("round %+v %v, want 4 refreshed", st, err)
	}
	for _, want := range []string{
		"acme /api/v1/dashboard/stats", "acme /api/v1/tenants/acme/summary",
		"glo bex /api/v1/dashboard/stats", "glo bex /api/v1/tenants/glo%20bex/summary",
	} {
		if !got[want] {
			t.Errorf("no request %q; got %v", want, got)
		}
	}
}
