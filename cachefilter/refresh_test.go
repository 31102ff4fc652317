package cachefilter_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/header"
	"github.com/sluicehq/sluice/internal/metricstest"
)

// TestRefresher: a refresh is the request that found the entry stale, sent again to the
// listener as a GET for the same authority and path, with the client's end-to-end fields but
// neither the fields Envoy sets nor the client's own caching and conditional ones, and with
// Cache-Control: max-age=0 so that the cache validates. One refresh per key at a time; a full
// queue drops (and counts) a refresh instead of blocking the request.
func TestRefresher(t *testing.T) {
	var mu sync.Mutex
	var got []*http.Request
	release := make(chan struct{})
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
		<-release
		w.Write([]byte("refreshed"))
	}))
	defer listener.Close()
	reg := metricstest.NewRegistry()
	r, err := cachefilter.NewRefresher(cachefilter.RefreshConfig{ListenerURL: listener.URL, Workers: 1, Queue: 1}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	req := httpcache.Request{
		Method: "HEAD", Scheme: "http", Authority: "api.example.com", Path: "/items?page=2", Tenant: "acme",
		Header: header.List{
			{Name: "x-tenant-id", Value: "acme"}, {Name: "accept-language", Value: "fr"},
			{Name: "authorization", Value: "Bearer t"}, {Name: "if-none-match", Value: `"x"`},
			{Name: "cache-control", Value: "max-stale"}, {Name: "x-forwarded-for", Value: "192.0.2.1"},
			{Name: "x-request-id", Value: "r1"}, {Name: "x-envoy-external-address", Value: "192.0.2.1"},
			{Name: "x-sluice-tenant", Value: "acme"}, {Name: "range", Value: "bytes=0-1"},
			{Name: "x-original-host", Value: "evil.example"},
		},
	}
	if !r.Refresh("k1", req) {
		t.Fatal("first refresh not queued")
	}
	waitFor(t, 5*time.Second, "the refresh to reach the listener", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	if r.Refresh("k1", req) {
		t.Error("a second refresh of a key in flight was queued")
	}
	if !r.Refresh("k2", req) { // waits in the queue (1 worker, busy)
		t.Error("a refresh of another key was not queued")
	}
	if r.Refresh("k3", req) {
		t.Error("a refresh was queued past the queue's bound")
	}
	close(release)
	waitFor(t, 5*time.Second, "the queued refresh", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })

	h := got[0]
	if h.Method != "GET" || h.Host != "api.example.com" || h.URL.RequestURI() != "/items?page=2" {
		t.Errorf("refresh %s %s %s, want GET api.example.com /items?page=2", h.Method, h.Host, h.URL.RequestURI())
	}
	want := map[string]string{"X-Tenant-Id": "acme", "Accept-Language": "fr", "Authorization": "Bearer t", "Cache-Control": "max-age=0"}
	for k, v := range want {
		if h.Header.Get(k) != v {
			t.Errorf("refresh %s = %q, want %q", k, h.Header.Get(k), v)
		}
	}
	for _, k := range []string{"If-None-Match", "X-Forwarded-For", "X-Request-Id", "X-Envoy-External-Address", "X-Sluice-Tenant", "Range", "X-Original-Host"} {
		if v := h.Header.Get(k); v != "" {
			t.Errorf("refresh carries %s: %q", k, v)
		}
	}
	waitFor(t, 5*time.Second, "the counts", func() bool {
		return gauge(t, reg, "sluice_cache_refreshes_total", map[string]string{"result": "ok"}) == 2
	})
	if got := gauge(t, reg, "sluice_cache_refreshes_total", map[string]string{"result": "dropped"}); got != 1 {
		t.Errorf("dropped refreshes %v, want 1", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// refreshes records the refreshes a stage asks for.
type refreshes struct {
	mu   sync.Mutex
	keys []string
	reqs []httpcache.Request
}

func (f *refreshes) Refresh(key string, req httpcache.Request) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = append(f.keys, key)
	f.reqs = append(f.reqs, req)
	return true
}

// TestStageRefreshesInTheBackground (RFC 5861 §3): with a refresher, every request within the
// stale-while-revalidate window is answered from the stale entry at once — the first one too —
// and each asks the refresher to revalidate it.
func TestStageRefreshesInTheBackground(t *testing.T) {
	rec := &refreshes{}
	env := newStageEnvWith(t, cachefilter.Config{}, cachefilter.StageOptions{Refresher: rec})
	o := fixed(200, "cache-control", "max-age=1, stale-while-revalidate=600", "etag", `"v1"`)
	if r := env.do(t, o, "GET", "/swr", "x-tenant-id", "acme"); !r.upstream {
		t.Fatalf("first request: %+v", r)
	}
	env.clk.Advance(5 * time.Second)
	for i := range 2 {
		r := env.do(t, o, "GET", "/swr", "x-tenant-id", "acme", "accept", "text/plain")
		if r.upstream || r.body != "body of acme" || r.header["x-cache"] != "STALE-L1" {
			t.Fatalf("request %d in the window: %+v", i+2, r)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.keys) != 2 || rec.reqs[0].Path != "/swr" || rec.reqs[0].Tenant != "acme" {
		t.Fatalf("refreshes %v %+v", rec.keys, rec.reqs)
	}
	if o.hits.Load() != 1 {
		t.Errorf("origin hits %d, want 1: the stage itself never goes upstream for a stale entry", o.hits.Load())
	}
}
