package emulator

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/envoy"
)

// TestStatsListenerExposesOnlyPrometheus runs envoy.yaml's stats listener
// in front of a stand-in for the admin interface: only GET
// /stats/prometheus gets through, however the path is spelled.
func TestStatsListenerExposesOnlyPrometheus(t *testing.T) {
	ls, err := envoy.ParseListeners(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen []string
	)
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		_, _ = w.Write([]byte("# TYPE envoy_x counter\n"))
	}))
	defer admin.Close()
	g, err := New(Options{Settings: envoy.Find(ls, envoy.StatsListener), Upstreams: map[string]string{"envoy_admin": admin.URL}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	srv := httptest.NewServer(g)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	tests := []struct {
		method, path string
		want         int
	}{
		{"GET", "/stats/prometheus", 200},
		{"GET", "/stats/prometheus?usedonly", 200},
		{"GET", "//stats//prometheus", 200},
		{"POST", "/stats/prometheus", 404},
		{"POST", "/quitquitquit", 404},
		{"POST", "/runtime_modify?x=1", 404},
		{"GET", "/config_dump", 404},
		{"GET", "/stats/prometheus/../../config_dump", 404},
		{"GET", "/stats", 404},
	}
	for _, tt := range tests {
		code, _ := rawRequest(t, addr, tt.method+" "+tt.path+" HTTP/1.1\r\nHost: envoy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		if code != tt.want {
			t.Errorf("%s %s: %d; want %d", tt.method, tt.path, code, tt.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if !strings.HasPrefix(s, "GET /stats/prometheus") {
			t.Errorf("the admin interface got %q", s)
		}
	}
}

// TestInternalListenerWithoutExtProc: on envoy.yaml's internal listener,
// Sluice's markers never reach the app, even when ext_proc is down and
// fails open (request_headers_to_remove runs in the router, after the
// filters); the client address Sluice names is still the one limited.
func TestInternalListenerWithoutExtProc(t *testing.T) {
	ls, err := envoy.ParseListeners(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	internal := envoy.Find(ls, envoy.InternalListener)
	h := newHarness(t, harnessOpts{noExtProc: true, settings: func(s *envoy.Settings) {
		*s = *internal
		remoteAddressOnly(s)
		// The listener's own 20 ms would make a loaded machine a test of
		// failing open (CI saw "rate limited as []"); newHarness's
		// generous timeout, which the copy above replaced.
		s.RateLimit.Timeout = durationpb.New(5 * time.Second)
	}})
	resp, _ := h.doFrom("127.0.0.8", "GET", "/api/v1/x", map[string]string{
		"X-Sluice-Batch": "1", "X-Sluice-Warm": "1", "X-Sluice-Client-Address": "198.51.100.7",
		"X-Sluice-Tenant": "umbrella", "X-Forwarded-For": "198.51.100.7",
	})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_, up, _ := h.upstream.last()
	for _, name := range []string{"X-Sluice-Batch", "X-Sluice-Warm", "X-Sluice-Client-Address", "X-Sluice-Tenant"} {
		if v := up.Get(name); v != "" {
			t.Errorf("the app got %s: %q", name, v)
		}
	}
	if got := up.Get("X-Forwarded-For"); got != "198.51.100.7" {
		t.Errorf("x-forwarded-for %q; want Sluice's, unchanged", got)
	}
	if reqs := h.rls.requests(); len(reqs) != 1 || reqs[0].GetDescriptors()[0].GetEntries()[0].GetValue() != "198.51.100.7" {
		t.Errorf("rate limited as %v; want 198.51.100.7", reqs)
	}
}
