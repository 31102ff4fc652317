package cachefilter_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/internal/redistest"
)

func TestPurgeHandler(t *testing.T) {
	live := newStore(t, testConfig(), redistest.Client(t), redistest.Prefix(t), newClock(), nil)
	run(t, live)

	// A store whose Redis is gone: purges cannot be confirmed.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	deadRDB := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 20 * time.Millisecond, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { deadRDB.Close() })
	dead := newStore(t, testConfig(), deadRDB, "dead:", newClock(), nil)

	tests := []struct {
		name  string
		store *cachefilter.Store
		body  string
		want  int
	}{
		{"tag", live, `{"tenant":"acme","tag":"contacts:acme"}`, 200},
		{"prefix", live, `{"tenant":"acme","prefix":"/api/v1/contacts"}`, 200},
		{"key", live, `{"tenant":"acme","key":"http://api.example.com/api/v1/contacts?page=2"}`, 200},
		{"whole tenant", live, `{"tenant":"acme","all":true}`, 200},
		{"malformed JSON", live, `{"tenant":`, 400},
		{"unknown field", live, `{"tenant":"acme","tags":"x"}`, 400},
		{"no tenant", live, `{"tag":"x"}`, 400},
		{"two selectors", live, `{"tenant":"acme","tag":"x","all":true}`, 400},
		{"relative key", live, `{"tenant":"acme","key":"/api/v1/contacts"}`, 400},
		{"redis down", dead, `{"tenant":"acme","tag":"x"}`, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := cachefilter.PurgeHandler(cachefilter.Config{}, tt.store, 3*time.Second)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/cache/purge", strings.NewReader(tt.body)))
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body.String())
			}
			if !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
				t.Errorf("content-type %q", rec.Header().Get("Content-Type"))
			}
		})
	}
}
