package cachefilter_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/header"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
)

// passEnv is a stage over a Store whose lookups are counted
// (sluice_cache_requests_total): a request marked hit-for-pass makes none.
type passEnv struct {
	*stageEnv
	reg *metricstest.Registry
}

func newPassEnv(t *testing.T, cfg cachefilter.StoreConfig) *passEnv {
	t.Helper()
	clk := newClock()
	reg := metricstest.NewRegistry()
	store := newStore(t, cfg, redistest.Client(t), redistest.Prefix(t), clk, reg)
	run(t, store)
	stage, err := cachefilter.NewStage(cachefilter.Config{}, store, cachefilter.StageOptions{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := extproc.New(extproc.Config{}, nil, nil, nil, extproc.WithStages(stage))
	if err != nil {
		t.Fatal(err)
	}
	return &passEnv{stageEnv: &stageEnv{conn: extproctest.Serve(t, srv.Register), store: store, clk: clk}, reg: reg}
}

// lookups returns how many lookups the Store answered so far.
func (env *passEnv) lookups(t *testing.T) int {
	t.Helper()
	return int(env.reg.Sum(t, "sluice_cache_requests_total", nil))
}

// switchable answers GETs with header while cacheable is false and with
// max-age=60 once it is true, and POSTs with 204.
func switchable(cacheable *atomic.Bool, header ...string) *origin {
	return &origin{respond: func(method, _ string, h map[string]string) (int, []string, string) {
		if method == "POST" {
			return 204, nil, ""
		}
		if cacheable.Load() {
			return 200, []string{"content-type", "text/plain", "cache-control", "max-age=60"}, "v for " + h["x-user-id"]
		}
		return 200, header, "private for " + h["x-user-id"]
	}}
}

// TestHitForPass follows one URL whose responses are not storable: the first response marks
// it, later requests for the same key (tenant, variant) skip the lookup and go upstream, other
// keys do not, and the mark ends with an invalidation, with PassTTL, or at the first storable
// response, which is stored at once (so a URL that becomes cacheable is cached at its next
// request, within PassTTL at most).
func TestHitForPass(t *testing.T) {
	acme := []string{"x-tenant-id", "acme", "x-user-id", "u1"}
	tests := []struct {
		name string
		// header of the non-storable responses
		header []string
		// then runs after the marking request; it returns the request whose lookup is
		// checked, and whether that request must skip the lookup.
		then func(t *testing.T, env *passEnv, o *origin, cacheable *atomic.Bool) (hdr []string, skip bool)
	}{
		{
			name:   "no-store: passes, then is stored once storable",
			header: []string{"cache-control", "no-store"},
			then: func(t *testing.T, env *passEnv, o *origin, cacheable *atomic.Bool) ([]string, bool) {
				before := env.lookups(t)
				if r := env.do(t, o, "GET", "/p", acme...); !r.upstream {
					t.Fatal("a marked request was not forwarded")
				}
				if got := env.lookups(t); got != before {
					t.Fatalf("a marked request was looked up (%d lookups, want %d)", got, before)
				}
				cacheable.Store(true)
				r := env.do(t, o, "GET", "/p", acme...)
				if !r.upstream || !strings.Contains(r.header["cache-status"], "stored") {
					t.Fatalf("first storable response: upstream %v, cache-status %q; want stored", r.upstream, r.header["cache-status"])
				}
				if r := env.do(t, o, "GET", "/p", acme...); !r.immediate || r.body != "v for u1" {
					t.Fatalf("after the storable response: immediate %v body %q; want a hit", r.immediate, r.body)
				}
				return acme, false // unmarked: looked up (and a hit)
			},
		},
		{
			name:   "private without Vary: the same tenant's other users pass too",
			header: []string{"cache-control", "private, max-age=60"},
			then: func(*testing.T, *passEnv, *origin, *atomic.Bool) ([]string, bool) {
				return []string{"x-tenant-id", "acme", "x-user-id", "u2"}, true
			},
		},
		{
			name:   "another tenant is not marked",
			header: []string{"cache-control", "no-store"},
			then: func(*testing.T, *passEnv, *origin, *atomic.Bool) ([]string, bool) {
				return []string{"x-tenant-id", "globex", "x-user-id", "u1"}, false
			},
		},
		{
			name:   "Vary: another variant is not marked",
			header: []string{"cache-control", "no-store", "vary", "x-user-id"},
			then: func(t *testing.T, env *passEnv, o *origin, _ *atomic.Bool) ([]string, bool) {
				before := env.lookups(t)
				env.do(t, o, "GET", "/p", acme...)
				if got := env.lookups(t); got != before {
					t.Fatal("the marked variant was looked up")
				}
				return []string{"x-tenant-id", "acme", "x-user-id", "u2"}, false
			},
		},
		{
			name:   "an invalidation clears the mark",
			header: []string{"cache-control", "no-store"},
			then: func(t *testing.T, env *passEnv, o *origin, _ *atomic.Bool) ([]string, bool) {
				env.do(t, o, "POST", "/p", acme...)
				return acme, false
			},
		},
		{
			name:   "the mark ends after pass_ttl",
			header: []string{"cache-control", "no-store"},
			then: func(t *testing.T, env *passEnv, _ *origin, _ *atomic.Bool) ([]string, bool) {
				env.clk.Advance(cachefilter.DefaultPassTTL + time.Second)
				return acme, false
			},
		},
		{
			name:   "an error is not marked",
			header: nil, // see the origin below
			then: func(*testing.T, *passEnv, *origin, *atomic.Bool) ([]string, bool) {
				return acme, false
			},
		},
		{
			name:   "a 304 to the client's own conditional is not marked",
			header: []string{"status", "304"}, // see the origin below
			then: func(*testing.T, *passEnv, *origin, *atomic.Bool) ([]string, bool) {
				return acme, false
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newPassEnv(t, testConfig())
			var cacheable atomic.Bool
			o := switchable(&cacheable, tt.header...)
			switch {
			case tt.header == nil:
				o = fixed(503, "content-type", "text/plain")
			case tt.header[0] == "status":
				o = fixed(304, "etag", `"v1"`)
			}
			if r := env.do(t, o, "GET", "/p", acme...); !r.upstream {
				t.Fatal("first request not forwarded")
			}
			hdr, skip := tt.then(t, env, o, &cacheable)
			before := env.lookups(t)
			if r := env.do(t, o, "GET", "/p", hdr...); !r.upstream && skip {
				t.Fatal("a marked request was not forwarded")
			}
			if looked := env.lookups(t) > before; looked == skip {
				t.Errorf("request %v: looked up %v, want %v", hdr, looked, !skip)
			}
		})
	}
}

// TestHitForPassBounded checks that the marks are bounded in number (PassMaxKeys) and that a
// disabled PassTTL marks nothing.
func TestHitForPassBounded(t *testing.T) {
	tests := []struct {
		name string
		cfg  cachefilter.StoreConfig
		max  int
	}{
		{"bounded", cachefilter.StoreConfig{PassMaxKeys: 5}, 5},
		{"disabled", cachefilter.StoreConfig{PassTTL: -1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			s := newStore(t, tt.cfg, nil, "", clk, nil)
			for i := range 50 {
				k := primaryKey(tenantA, fmt.Sprintf("/p/%d", i))
				s.MarkPass(k, "/p", nil, nil, clk.Now())
				if tt.max > 0 && !s.Passing(k, nil, clk.Now()) {
					t.Fatalf("key %d not marked right after MarkPass", i)
				}
			}
			if n := s.PassMarks(); n > tt.max || (tt.max > 0 && n == 0) {
				t.Errorf("%d marks, want 1..%d", n, tt.max)
			}
		})
	}
}

// TestHitForPassShared checks that a key marked again on one replica reaches the others'
// marks through the presence channel, with its variant.
func TestHitForPassShared(t *testing.T) {
	rdb, prefix, clk := redistest.Client(t), redistest.Prefix(t), newClock()
	a := newStore(t, testConfig(), rdb, prefix, clk, nil)
	b := newStore(t, testConfig(), rdb, prefix, clk, nil)
	run(t, a)
	run(t, b)
	k := primaryKey(tenantA, "/shared")
	u1 := header.List{{Name: "x-sluice-user", Value: "u1"}}
	u2 := header.List{{Name: "x-sluice-user", Value: "u2"}}
	for range 2 { // a key marked once is not announced; again, it is
		a.MarkPass(k, "/shared", []string{"x-sluice-user"}, u1, clk.Now())
	}
	waitFor(t, 5*time.Second, "B to hold A's mark", func() bool { return b.Passing(k, u1, clk.Now()) })
	if b.Passing(k, u2, clk.Now()) {
		t.Error("B marks another variant of the key")
	}
}
