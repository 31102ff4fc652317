package emulator

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

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
