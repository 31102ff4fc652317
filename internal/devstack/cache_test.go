package devstack_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/redistest"
)

// cacheOrigin is an upstream with cacheable responses whose body names the
// tenant Sluice forwarded, counting the requests that reach it.
type cacheOrigin struct {
	*httptest.Server
	hits atomic.Int64
	gets atomic.Int64
	revs atomic.Int64 // conditional requests answered 304
}

func newCacheOrigin(t *testing.T, delay time.Duration) *cacheOrigin {
	t.Helper()
	o := &cacheOrigin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		if r.Method != "GET" {
			w.WriteHeader(http.StatusCreated)
			return
		}
		o.gets.Add(1)
		time.Sleep(delay)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Content-Type", "text/plain")
		if r.Header.Get("If-None-Match") == `"v1"` {
			o.revs.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte("tenant=" + r.Header.Get("x-sluice-tenant") + " path=" + r.URL.Path))
	}))
	t.Cleanup(o.Close)
	return o
}

func (s *stack) do(t *testing.T, method, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	if method == "GET" {
		return s.get(t, path, hdr...)
	}
	req, _ := http.NewRequest(method, s.URL()+path, strings.NewReader("x"))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	resp.Body.Close()
	return resp, ""
}

func TestCacheEndToEnd(t *testing.T) {
	o := newCacheOrigin(t, 0)
	s := start(t, o.URL, true, nil)
	acme := []string{"x-tenant-id", "acme"}

	resp, body := s.get(t, "/items", acme...)
	if resp.StatusCode != 200 || body != "tenant=acme path=/items" || resp.Header.Get("x-cache") != "MISS" {
		t.Fatalf("first GET: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = s.get(t, "/items", acme...)
	if body != "tenant=acme path=/items" || resp.Header.Get("x-cache") != "HIT-L1" || resp.Header.Get("Age") == "" ||
		!strings.HasPrefix(resp.Header.Get("Cache-Status"), "sluice; hit") {
		t.Fatalf("second GET: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if got := o.gets.Load(); got != 1 {
		t.Fatalf("origin GETs %d after a hit, want 1", got)
	}

	// Tenant isolation: globex never gets acme's entry.
	if _, body = s.get(t, "/items", "x-tenant-id", "globex"); body != "tenant=globex path=/items" {
		t.Fatalf("globex got %q", body)
	}

	// Revalidation: the client asks for validation; Sluice sends the
	// entry's ETag, the origin answers 304 and the client gets the body.
	resp, body = s.get(t, "/items", "x-tenant-id", "acme", "cache-control", "no-cache")
	if resp.StatusCode != 200 || body != "tenant=acme path=/items" || resp.Header.Get("x-cache") != "REVALIDATED" || o.revs.Load() != 1 {
		t.Fatalf("revalidation: %d %q %v (304s %d)", resp.StatusCode, body, resp.Header, o.revs.Load())
	}
	// The client's own conditional request is answered 304 from the cache.
	before := o.hits.Load()
	if resp, _ = s.get(t, "/items", "x-tenant-id", "acme", "if-none-match", `"v1"`); resp.StatusCode != 304 || o.hits.Load() != before {
		t.Fatalf("conditional: %d, origin hits %d → %d", resp.StatusCode, before, o.hits.Load())
	}

	// POST invalidates the target URI (RFC 9111 §4.4).
	if resp, _ = s.do(t, "POST", "/items", acme...); resp.StatusCode != 201 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	gets := o.gets.Load()
	if resp, _ = s.get(t, "/items", acme...); resp.Header.Get("x-cache") != "MISS" || o.gets.Load() != gets+1 {
		t.Fatalf("GET after POST: %v, origin GETs %d → %d", resp.Header, gets, o.gets.Load())
	}
}

func TestCacheCollapsing(t *testing.T) {
	o := newCacheOrigin(t, 100*time.Millisecond)
	s := start(t, o.URL, true, nil)
	const n = 100
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", s.URL()+"/hot", nil)
			req.Header.Set("x-tenant-id", "umbrella")
			resp, err := s.client.Do(req)
			if err != nil {
				bad.Add(1)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "tenant=umbrella path=/hot" {
				bad.Add(1)
			}
		})
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d of %d requests failed", bad.Load(), n)
	}
	if got := o.gets.Load(); got != 1 {
		t.Errorf("origin GETs %d for %d concurrent requests, want 1", got, n)
	}
}

// TestCachePurgeAcrossInstances: two Sluice instances share one Redis
// prefix; a purge through one's admin API is honoured by the other.
func TestCachePurgeAcrossInstances(t *testing.T) {
	o := newCacheOrigin(t, 0)
	prefix := redistest.Prefix(t)
	share := func(c *config.Config) { c.Redis.KeyPrefix = prefix }
	s1 := start(t, o.URL, true, share)
	s2 := start(t, o.URL, true, share)
	// The same authority through both gateways (the key includes it).
	acme := []string{"x-tenant-id", "acme", "host", "api.example.com"}
	s1.get(t, "/p", acme...)
	// s2 reads what s1 stored once s1's announcement reached its presence
	// table (cachefilter/presence.go); on a loaded machine that can take a
	// moment, and until then s2 misses and fetches (and stores) itself.
	misses := int64(0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, _ := s2.get(t, "/p", acme...)
		if strings.HasPrefix(resp.Header.Get("x-cache"), "HIT") {
			break
		}
		misses++
		if time.Now().After(deadline) {
			t.Fatalf("second instance, after %d misses: %v", misses, resp.Header)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if o.gets.Load() != 1+misses {
		t.Fatalf("origin GETs %d, want 1 + %d misses of the second instance", o.gets.Load(), misses)
	}
	for _, tt := range []struct {
		name, body string
		want       int
	}{
		{"bad json", `{`, 400},
		{"two selectors", `{"tenant":"acme","tag":"t","all":true}`, 400},
		{"no tenant", `{"all":true}`, 400},
		{"prefix", `{"tenant":"acme","prefix":"/p"}`, 200},
	} {
		resp, err := s1.client.Post(s1.AdminURL()+"/cache/purge", "application/json", strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
	}
	if resp, _ := s2.get(t, "/p", acme...); resp.Header.Get("x-cache") != "MISS" || o.gets.Load() != 2 {
		t.Fatalf("after purge on the first instance, the second answered %v (origin GETs %d)", resp.Header, o.gets.Load())
	}
}

// TestCacheRedisDown: with Redis unreachable the cache still answers
// correctly, from the L1 or by passing requests through.
func TestCacheRedisDown(t *testing.T) {
	o := newCacheOrigin(t, 0)
	s := start(t, o.URL, true, func(c *config.Config) {
		c.Redis.URL = "redis://127.0.0.1:1/0"
	})
	for i := range 3 {
		resp, body := s.get(t, "/d", "x-tenant-id", "acme")
		if resp.StatusCode != 200 || body != "tenant=acme path=/d" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if _, body := s.get(t, "/d", "x-tenant-id", "globex"); body != "tenant=globex path=/d" {
		t.Fatalf("globex got %q", body)
	}
	t.Logf("origin GETs with Redis down: %d of 4", o.gets.Load())
}

// TestAnswersAtResponseTimeTravelTheEncoders: the answers the cache makes once the upstream
// response exists — the freshened entry for an upstream 304, the stale entry when the origin
// cannot be reached — are mutations of that response, so Envoy's encoder filters still see
// them: the ratelimit filter's RateLimit headers reach the client. (As ImmediateResponses they
// would go straight to the client, without them: sendDirectLocalReply.)
func TestAnswersAtResponseTimeTravelTheEncoders(t *testing.T) {
	var drop atomic.Bool
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if drop.Load() {
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.Close() // no response at all
			}
			return
		}
		w.Header().Set("Cache-Control", "max-age=1")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Content-Type", "text/plain")
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "stored body")
	}))
	t.Cleanup(origin.Close)
	s := start(t, origin.URL, true, nil)
	acme := []string{"x-tenant-id", "acme"}
	if resp, body := s.get(t, "/r", acme...); resp.StatusCode != 200 || body != "stored body" {
		t.Fatalf("first GET: %d %q", resp.StatusCode, body)
	}

	resp, body := s.get(t, "/r", append(acme, "cache-control", "no-cache")...)
	if resp.StatusCode != 200 || body != "stored body" || resp.Header.Get("x-cache") != "REVALIDATED" ||
		resp.Header.Get("Ratelimit") == "" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("revalidated: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	time.Sleep(1100 * time.Millisecond) // stale
	drop.Store(true)
	resp, body = s.get(t, "/r", acme...)
	if resp.StatusCode != 200 || body != "stored body" || !strings.HasPrefix(resp.Header.Get("x-cache"), "STALE") ||
		resp.Header.Get("Ratelimit") == "" || !strings.Contains(resp.Header.Get("Cache-Status"), `detail="origin unreachable"`) {
		t.Fatalf("origin unreachable: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	// A cached HEAD keeps the entry's Content-Type and Content-Length.
	drop.Store(false)
	req, _ := http.NewRequest("HEAD", s.URL()+"/r", nil)
	req.Header.Set("x-tenant-id", "acme")
	req.Header.Set("Cache-Control", "max-stale")
	hresp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hresp.Body.Close()
	if hresp.Header.Get("Content-Type") != "text/plain" || hresp.ContentLength != int64(len("stored body")) {
		t.Errorf("HEAD from the cache: Content-Type %q, Content-Length %d; want the GET's", hresp.Header.Get("Content-Type"), hresp.ContentLength)
	}
}

// TestStaleWhileRevalidateInTheBackground (RFC 5861 §3): in the stale-while-revalidate window
// the client is answered from the stale entry at once, and Sluice revalidates the entry in the
// background through the gateway (a conditional request the origin answers 304), after which
// the entry is fresh again.
func TestStaleWhileRevalidateInTheBackground(t *testing.T) {
	var full, conditional atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			conditional.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		full.Add(1)
		io.WriteString(w, "v1 body")
	}))
	t.Cleanup(origin.Close)
	s := start(t, origin.URL, true, nil)
	acme := []string{"x-tenant-id", "acme"}
	s.get(t, "/swr", acme...)
	time.Sleep(1100 * time.Millisecond)
	resp, body := s.get(t, "/swr", acme...)
	if body != "v1 body" || !strings.HasPrefix(resp.Header.Get("x-cache"), "STALE") {
		t.Fatalf("in the window: %q %v", body, resp.Header)
	}
	deadline := time.Now().Add(5 * time.Second)
	for conditional.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if conditional.Load() != 1 || full.Load() != 1 {
		t.Fatalf("origin: %d conditional, %d full requests; want the background revalidation", conditional.Load(), full.Load())
	}
	var x string
	for time.Now().Before(deadline) { // the 304 is stored just after the refresh's answer
		resp, _ = s.get(t, "/swr", acme...)
		if x = resp.Header.Get("x-cache"); strings.HasPrefix(x, "HIT") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.HasPrefix(x, "HIT") {
		t.Errorf("after the background revalidation: x-cache %q, want a fresh hit", x)
	}
}

// TestVaryOnSluiceUser: an application behind Sluice asks for per-user caching with
// "Vary: x-sluice-user", the field Sluice sets from the caller's identity. Each user of the
// tenant gets their own answer; a client cannot pick another user's entry by sending
// x-sluice-user itself (it is stripped and replaced).
func TestVaryOnSluiceUser(t *testing.T) {
	var hits atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "x-sluice-user")
		io.WriteString(w, "private data of "+r.Header.Get("x-sluice-user"))
	}))
	t.Cleanup(origin.Close)
	s := start(t, origin.URL, true, nil)
	get := func(user string, extra ...string) string {
		_, body := s.get(t, "/me", append([]string{"x-tenant-id", "acme", "x-user-id", user}, extra...)...)
		return body
	}
	if b := get("alice"); b != "private data of alice" {
		t.Fatalf("alice: %q", b)
	}
	if b := get("bob"); b != "private data of bob" {
		t.Fatalf("bob got %q", b)
	}
	if b := get("bob", "x-sluice-user", "alice"); b != "private data of bob" {
		t.Fatalf("bob claiming alice's x-sluice-user got %q", b)
	}
	if b := get("alice"); b != "private data of alice" || hits.Load() != 2 {
		t.Fatalf("alice again: %q after %d origin requests, want a hit of her own entry", b, hits.Load())
	}
}

// TestGetWithBodyIsNotCached: the key does not cover a request body, so a GET or HEAD that
// carries one is neither answered from the cache (the stored answer is to a request without it)
// nor stored (its answer may depend on the body, and would be served to requests without it).
func TestGetWithBodyIsNotCached(t *testing.T) {
	var hits atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "answer to body "+strconv.Quote(string(b)))
	}))
	t.Cleanup(origin.Close)
	s := start(t, origin.URL, true, nil)
	withBody := func(body string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", s.URL()+"/search", strings.NewReader(body))
		req.Header.Set("x-tenant-id", "acme")
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if _, b := s.get(t, "/search", "x-tenant-id", "acme"); b != `answer to body ""` {
		t.Fatalf("plain GET: %q", b)
	}
	resp, b := withBody(`{"q":"secret"}`)
	if b != `answer to body "{\"q\":\"secret\"}"` || resp.Header.Get("x-cache") != "BYPASS" {
		t.Fatalf("GET with a body: %q x-cache %q, want the origin's answer to it, bypassing the cache", b, resp.Header.Get("x-cache"))
	}
	if resp, b := s.get(t, "/search", "x-tenant-id", "acme"); b != `answer to body ""` || !strings.HasPrefix(resp.Header.Get("x-cache"), "HIT") {
		t.Fatalf("plain GET after: %q %v; want the first answer, from the cache", b, resp.Header)
	}
	if hits.Load() != 2 {
		t.Errorf("origin requests %d, want 2", hits.Load())
	}
}

// TestSlowOriginCollapses: 30 concurrent misses of one URL whose origin takes 2 s reach the
// origin once: the followers wait for the leader's response (up to cache.collapse_wait, which
// Sluice asks Envoy for with override_message_timeout) and are answered from its entry.
func TestSlowOriginCollapses(t *testing.T) {
	o := newCacheOrigin(t, 2*time.Second)
	s := start(t, o.URL, true, nil)
	const n = 30
	var wg sync.WaitGroup
	bodies := make([]string, n)
	for i := range n {
		wg.Go(func() { _, bodies[i] = s.get(t, "/slow", "x-tenant-id", "acme") })
	}
	wg.Wait()
	for i, b := range bodies {
		if b != "tenant=acme path=/slow" {
			t.Fatalf("request %d: %q", i, b)
		}
	}
	if got := o.gets.Load(); got != 1 {
		t.Errorf("origin GETs %d, want 1: followers gave up on the leader", got)
	}
}
