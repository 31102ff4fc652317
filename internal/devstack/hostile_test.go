package devstack_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hostileOrigin is an upstream that reflects what a cache must not key on
// (unkeyed request headers, Host, the identity Sluice forwarded) in
// cacheable responses, so a poisoned or cross-tenant entry shows in the
// body. Paths:
//
//	/api/v1/public/...   public, max-age=60
//	/api/v1/cookie/...   max-age=60 with Set-Cookie naming the user
//	/api/v1/private/...  private, max-age=60
//	/api/v1/varystar/... max-age=60, Vary: *
//	/api/v1/varyxfh/...  max-age=60, Vary: X-Forwarded-Host
//	/api/v1/redirect     302 to the Location in ?to=
//	/api/v1/upload       reads the body, answers its length
//	anything else        200 JSON, max-age=60
type hostileOrigin struct {
	*httptest.Server
	mu    sync.Mutex // guards gets
	gets  map[string]int
	bytes atomic.Int64 // request body bytes read by /api/v1/upload
}

func newHostileOrigin(t *testing.T) *hostileOrigin {
	t.Helper()
	o := &hostileOrigin{gets: map[string]int{}}
	o.Server = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.Close)
	return o
}

func (o *hostileOrigin) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if r.Method == "GET" {
		o.mu.Lock()
		o.gets[r.URL.RequestURI()]++
		o.mu.Unlock()
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	reflect := fmt.Sprintf("tenant=%s user=%s host=%s xfh=%s xou=%s xru=%s override=%s method=%s",
		r.Header.Get("x-sluice-tenant"), r.Header.Get("x-sluice-user"), r.Host, r.Header.Get("x-forwarded-host"),
		r.Header.Get("x-original-url"), r.Header.Get("x-rewrite-url"), r.Header.Get("x-http-method-override"), r.Method)
	switch {
	case strings.HasPrefix(p, "/api/v1/public/"):
		h.Set("Cache-Control", "public, max-age=60")
	case strings.HasPrefix(p, "/api/v1/cookie/"):
		h.Set("Cache-Control", "max-age=60")
		h.Set("Set-Cookie", "session="+r.Header.Get("x-sluice-user")+"; HttpOnly")
	case strings.HasPrefix(p, "/api/v1/private/"):
		h.Set("Cache-Control", "private, max-age=60")
	case strings.HasPrefix(p, "/api/v1/varystar/"):
		h.Set("Cache-Control", "max-age=60")
		h.Set("Vary", "*")
	case strings.HasPrefix(p, "/api/v1/varyxfh/"):
		h.Set("Cache-Control", "max-age=60")
		h.Set("Vary", "X-Forwarded-Host")
	case p == "/api/v1/redirect":
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
		return
	case p == "/api/v1/upload":
		n, err := io.Copy(io.Discard, r.Body)
		o.bytes.Add(n)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.Set("Cache-Control", "no-store")
		io.WriteString(w, strconv.FormatInt(n, 10))
		return
	default:
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "max-age=60")
		json.NewEncoder(w).Encode(map[string]string{"path": p, "tenant": r.Header.Get("x-sluice-tenant")})
		return
	}
	io.WriteString(w, reflect)
}

func (o *hostileOrigin) getCount(uri string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.gets[uri]
}

// TestHostileCache: cache-poisoning and cross-tenant attempts through the
// gateway. An attacker's request is sent first (and twice, so a cacheable
// answer is in the cache); then the victim's request for the same URL must
// get its own answer: never one the attacker's headers shaped, never a
// Set-Cookie or a private response meant for someone else, never another
// tenant's entry.
func TestHostileCache(t *testing.T) {
	o := newHostileOrigin(t)
	s := start(t, o.URL, true, nil)

	tests := []struct {
		name     string
		path     string
		attacker []string
		victim   []string
		// bad are substrings the victim's answer must not hold.
		bad []string
		// want is a substring the victim's body must hold.
		want string
	}{
		{
			name:     "X-Forwarded-Host",
			path:     "/api/v1/public/xfh",
			attacker: []string{"x-tenant-id", "acme", "x-forwarded-host", "evil.example"},
			victim:   []string{"x-tenant-id", "acme"},
			bad:      []string{"evil.example"},
		},
		{
			name:     "X-Original-URL and X-Rewrite-URL",
			path:     "/api/v1/public/rewrite",
			attacker: []string{"x-tenant-id", "acme", "x-original-url", "/admin", "x-rewrite-url", "/admin"},
			victim:   []string{"x-tenant-id", "acme"},
			bad:      []string{"/admin"},
		},
		{
			name:     "X-HTTP-Method-Override",
			path:     "/api/v1/public/override",
			attacker: []string{"x-tenant-id", "acme", "x-http-method-override", "DELETE"},
			victim:   []string{"x-tenant-id", "acme"},
			bad:      []string{"DELETE"},
		},
		{
			name:     "Host header",
			path:     "/api/v1/public/host",
			attacker: []string{"x-tenant-id", "acme", "host", "evil.example"},
			victim:   []string{"x-tenant-id", "acme"},
			bad:      []string{"evil.example"},
		},
		{
			name:     "Host header case, port and trailing dot",
			path:     "/api/v1/public/hostcase",
			attacker: []string{"x-tenant-id", "acme", "host", "EVIL.example.:80"},
			victim:   []string{"x-tenant-id", "acme", "host", "evil.example"},
			bad:      []string{"EVIL"},
		},
		{
			name:     "Vary: X-Forwarded-Host is honoured",
			path:     "/api/v1/varyxfh/a",
			attacker: []string{"x-tenant-id", "acme", "x-forwarded-host", "evil.example"},
			victim:   []string{"x-tenant-id", "acme"},
			bad:      []string{"evil.example"},
		},
		{
			name:     "Set-Cookie is not replayed",
			path:     "/api/v1/cookie/a",
			attacker: []string{"x-tenant-id", "acme", "x-user-id", "attacker"},
			victim:   []string{"x-tenant-id", "acme", "x-user-id", "victim"},
			bad:      []string{"session=attacker", "user=attacker"},
		},
		{
			name:     "private response",
			path:     "/api/v1/private/a",
			attacker: []string{"x-tenant-id", "acme", "x-user-id", "attacker"},
			victim:   []string{"x-tenant-id", "acme", "x-user-id", "victim"},
			bad:      []string{"user=attacker"},
		},
		{
			name:     "Vary: *",
			path:     "/api/v1/varystar/a",
			attacker: []string{"x-tenant-id", "acme", "x-user-id", "attacker"},
			victim:   []string{"x-tenant-id", "acme", "x-user-id", "victim"},
			bad:      []string{"user=attacker"},
		},
		{
			name:     "another tenant, same path and query",
			path:     "/api/v1/public/tenant?q=1&r=2",
			attacker: []string{"x-tenant-id", "acme"},
			victim:   []string{"x-tenant-id", "globex"},
			bad:      []string{"tenant=acme"},
			want:     "tenant=globex",
		},
		{
			name:     "another tenant, query reordered and escaped",
			path:     "/api/v1/public/tenant2?r=2&q=%31",
			attacker: []string{"x-tenant-id", "acme"},
			victim:   []string{"x-tenant-id", "globex"},
			bad:      []string{"tenant=acme"},
			want:     "tenant=globex",
		},
		{
			name:     "spoofed x-sluice-tenant to read a tenant's entry",
			path:     "/api/v1/public/spoof",
			attacker: []string{"x-tenant-id", "globex"}, // the entry to steal is globex's
			victim:   []string{"x-sluice-tenant", "globex", "x-sluice-tier", "enterprise"},
			bad:      []string{"tenant=globex"},
			want:     "tenant=anonymous",
		},
		{
			name:     "spoofed x-sluice-tenant next to a real identity",
			path:     "/api/v1/public/spoof2",
			attacker: []string{"x-tenant-id", "globex"},
			victim:   []string{"x-tenant-id", "acme", "x-sluice-tenant", "globex", "x-sluice-user", "root"},
			bad:      []string{"tenant=globex", "user=root"},
			want:     "tenant=acme",
		},
		{
			name:     "tenant header twice",
			path:     "/api/v1/public/twice",
			attacker: []string{"x-tenant-id", "globex"},
			victim:   []string{"x-tenant-id", "acme", "x-tenant-id", "globex"},
			bad:      []string{"tenant=globex"},
			want:     "tenant=anonymous",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 {
				s.get(t, tt.path, tt.attacker...)
			}
			resp, body := s.get(t, tt.path, tt.victim...)
			if resp.StatusCode != 200 {
				t.Fatalf("victim: %d %q", resp.StatusCode, body)
			}
			t.Logf("victim: %d x-cache=%s cache-status=%q body=%q", resp.StatusCode, resp.Header.Get("x-cache"), resp.Header.Get("Cache-Status"), body)
			seen := body + " " + strings.Join(resp.Header.Values("Set-Cookie"), " ")
			for _, b := range tt.bad {
				if strings.Contains(seen, b) {
					t.Errorf("victim got %q (x-cache %s, set-cookie %q): contains %q", body, resp.Header.Get("x-cache"), resp.Header.Values("Set-Cookie"), b)
				}
			}
			if tt.want != "" && !strings.Contains(body, tt.want) {
				t.Errorf("victim got %q, want it to contain %q", body, tt.want)
			}
		})
	}
}

// TestHostileSpoofedIdentity: every header Sluice owns, sent by a client,
// is stripped or replaced before the application and the rate limiter see
// the request.
func TestHostileSpoofedIdentity(t *testing.T) {
	s := start(t, echo(t).URL, true, nil)
	spoof := []string{
		"x-sluice-tenant", "globex", "x-sluice-tier", "enterprise", "x-sluice-user", "root",
		"x-sluice-cost", "0", "x-sluice-batch", "1", "x-sluice-warm", "1",
	}
	tests := []struct {
		name       string
		hdr        []string
		wantTenant string
		wantTier   string
		wantUser   string
	}{
		{"anonymous caller", spoof, "anonymous", "anonymous", ""},
		{"known tenant", append([]string{"x-tenant-id", "initech", "x-user-id", "u1"}, spoof...), "initech", "free", "u1"},
		{"mixed-case names", []string{"X-Sluice-Tenant", "globex", "X-SLUICE-TIER", "enterprise", "x-tenant-id", "hooli"}, "hooli", "free", ""},
		{"invalid tenant value", append([]string{"x-tenant-id", "acme,globex"}, spoof...), "anonymous", "anonymous", ""},
		{"tenant value with a space", append([]string{"x-tenant-id", "ac me"}, spoof...), "anonymous", "anonymous", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", s.URL()+"/anything", nil)
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				req.Header[tt.hdr[i]] = append(req.Header[tt.hdr[i]], tt.hdr[i+1])
			}
			resp, err := s.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			h := upstreamSaw(t, string(b))
			check := func(name string, want []string) {
				t.Helper()
				if got := h.Values(name); strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("upstream %s = %q, want %q", name, got, want)
				}
			}
			check("X-Sluice-Tenant", []string{tt.wantTenant})
			check("X-Sluice-Tier", []string{tt.wantTier})
			check("X-Sluice-Cost", []string{"1"})
			if tt.wantUser == "" {
				check("X-Sluice-User", nil)
			} else {
				check("X-Sluice-User", []string{tt.wantUser})
			}
			check("X-Sluice-Batch", nil)
			check("X-Sluice-Warm", nil)
		})
	}
	// Underscore spellings are refused outright (headers_with_underscores_action:
	// REJECT_REQUEST), so no backend can fold them into x-sluice-*.
	req, _ := http.NewRequest("GET", s.URL()+"/anything", nil)
	req.Header["x_sluice_tenant"] = []string{"globex"}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("x_sluice_tenant: status %d, want 400", resp.StatusCode)
	}
}

// canary is a listener that must never be connected to.
type canary struct {
	ln    net.Listener
	conns atomic.Int64
	done  chan struct{}
}

func newCanary(t *testing.T) *canary {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &canary{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.conns.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-c.done
	})
	return c
}

func (c *canary) port() string { return strconv.Itoa(c.ln.Addr().(*net.TCPAddr).Port) }

// TestHostileBatchSSRF: batch items aimed at internal addresses, spelled
// every way a URL parser might read differently, get a 400 of their own
// (the batch itself succeeds), and nothing ever connects to the target; a
// redirect to an internal address is handed back, not followed.
func TestHostileBatchSSRF(t *testing.T) {
	c := newCanary(t)
	p := c.port()
	o := newHostileOrigin(t)
	s := start(t, o.URL, true, nil)
	urls := []string{
		"http://169.254.169.254/latest/meta-data/",
		"http://169.254.169.254:" + p + "/",
		"http://127.0.0.1:" + p + "/api/x",
		"http://localhost:" + p + "/api/x",
		"http://LOCALHOST:" + p + "/api/x",
		"http://127.1:" + p + "/api/x",
		"http://0:" + p + "/api/x",
		"http://2130706433:" + p + "/api/x",
		"http://0x7f000001:" + p + "/api/x",
		"http://0177.0.0.1:" + p + "/api/x",
		"http://[::1]:" + p + "/api/x",
		"http://[::ffff:127.0.0.1]:" + p + "/api/x",
		"http://[0:0:0:0:0:ffff:7f00:1]:" + p + "/api/x",
		"http://localtest.me:" + p + "/api/x",      // public DNS name resolving to 127.0.0.1
		"http://127.0.0.1.nip.io:" + p + "/api/x",  // likewise
		"http://user@127.0.0.1:" + p + "@evil/api", // userinfo confusion
		"//127.0.0.1:" + p + "/api/x",
		"///127.0.0.1:" + p + "/api/x",
		`/\127.0.0.1:` + p + "/api/x",
		"/api/../..//127.0.0.1:" + p,
		"/api/%2e%2e/%2e%2e/127.0.0.1:" + p,
		"gopher://127.0.0.1:" + p + "/_INFO",
		"file:///etc/passwd",
		"/api/x\r\nHost: 127.0.0.1:" + p,
	}
	var items []string
	for i, u := range urls {
		b, _ := json.Marshal(u)
		items = append(items, fmt.Sprintf(`{"id":"%d","method":"GET","url":%s}`, i, b))
	}
	// Item headers that would choose the destination or spoof the client.
	hostile := []string{
		`{"id":"h1","method":"GET","url":"/api/v1/public/h1","headers":{"host":"127.0.0.1:` + p + `"}}`,
		`{"id":"h2","method":"GET","url":"/api/v1/public/h2","headers":{"x-forwarded-host":"127.0.0.1:` + p + `"}}`,
		`{"id":"h3","method":"GET","url":"/api/v1/public/h3","headers":{"x-sluice-tenant":"globex"}}`,
		`{"id":"h4","method":"GET","url":"/api/v1/public/h4","headers":{"x-http-method-override":"DELETE"}}`,
	}
	// More than max_items: split into batches of 20.
	all := append(items, hostile...)
	got := map[string]int{}
	for len(all) > 0 {
		n := min(len(all), 20)
		status, out := s.batch(t, `{"requests":[`+strings.Join(all[:n], ",")+`]}`, "x-tenant-id", "acme")
		all = all[n:]
		if status != 200 {
			t.Fatalf("batch: %d %+v", status, out)
		}
		for _, r := range out.Responses {
			got[r.ID] = r.Status
			t.Logf("item %s: %d %s", r.ID, r.Status, r.Body)
			if r.Status == 400 && !strings.Contains(string(r.Body), "url") && !strings.Contains(string(r.Body), "header") {
				t.Errorf("item %s: 400 without a reason: %s", r.ID, r.Body)
			}
		}
	}
	for i, u := range urls {
		if code := got[strconv.Itoa(i)]; code != 400 {
			t.Errorf("item %q: status %d, want 400", u, code)
		}
	}
	for _, id := range []string{"h1", "h2", "h3", "h4"} {
		if got[id] != 400 {
			t.Errorf("item %s with a hostile header: status %d, want 400", id, got[id])
		}
	}

	// A redirect to the canary is returned to the client as the item's
	// answer, never followed.
	status, out := s.batch(t, `{"requests":[{"id":"r","method":"GET","url":"/api/v1/redirect?to=http://127.0.0.1:`+p+`/"}]}`, "x-tenant-id", "acme")
	if status != 200 || len(out.Responses) != 1 || out.Responses[0].Status != 302 {
		t.Fatalf("redirect item: %d %+v", status, out)
	}
	time.Sleep(100 * time.Millisecond)
	if n := c.conns.Load(); n != 0 {
		t.Fatalf("%d connections reached the internal target", n)
	}
}

// TestHostileBodies: bodies over the limits get a clear error from the
// gateway; uploads to ordinary routes stream to the application unbuffered.
func TestHostileBodies(t *testing.T) {
	o := newHostileOrigin(t)
	s := start(t, o.URL, true, nil)
	post := func(t *testing.T, path string, body io.Reader, length int64, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", s.URL()+path, body)
		req.ContentLength = length
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	jsonBatch := func(size int) []byte {
		// A well-formed batch padded with a large item body.
		pad := strings.Repeat("a", size)
		return []byte(`{"requests":[{"id":"1","method":"POST","url":"/api/v1/upload","headers":{"content-type":"text/plain"},"body":"` + pad + `"}]}`)
	}

	t.Run("batch body over max_request_bytes", func(t *testing.T) {
		body := jsonBatch(3 << 20 / 2)
		resp, b := post(t, "/api/v1/batch", bytes.NewReader(body), int64(len(body)), "x-tenant-id", "acme", "content-type", "application/json")
		t.Logf("%d %q", resp.StatusCode, trim(b))
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d (%q), want 413", resp.StatusCode, trim(b))
		}
	})
	t.Run("batch body over max_request_bytes, chunked", func(t *testing.T) {
		body := jsonBatch(3 << 20 / 2)
		resp, b := post(t, "/api/v1/batch", io.MultiReader(bytes.NewReader(body)), -1, "x-tenant-id", "acme", "content-type", "application/json")
		t.Logf("%d %q", resp.StatusCode, trim(b))
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d (%q), want 413", resp.StatusCode, trim(b))
		}
	})
	t.Run("batch body of 1 MiB less a little", func(t *testing.T) {
		body := jsonBatch(1<<20 - 200)
		resp, b := post(t, "/api/v1/batch", bytes.NewReader(body), int64(len(body)), "x-tenant-id", "acme", "content-type", "application/json")
		// Accepted and answered: the item itself is refused by the item's
		// own limits or passes; either way a JSON batch reply.
		t.Logf("%d %q", resp.StatusCode, trim(b))
		if resp.StatusCode != 200 || !json.Valid([]byte(b)) {
			t.Fatalf("status %d (%q), want 200 with a JSON reply", resp.StatusCode, trim(b))
		}
	})
	t.Run("8 MiB upload to an ordinary route streams through", func(t *testing.T) {
		before := o.bytes.Load()
		const n = 8 << 20
		resp, b := post(t, "/api/v1/upload", io.LimitReader(rand.Reader, n), n, "x-tenant-id", "acme")
		if resp.StatusCode != 200 || b != strconv.Itoa(n) || o.bytes.Load()-before != n {
			t.Fatalf("status %d, body %q, origin read %d; want 200 and all %d bytes", resp.StatusCode, trim(b), o.bytes.Load()-before, n)
		}
	})
	t.Run("8 MiB chunked upload streams through", func(t *testing.T) {
		before := o.bytes.Load()
		const n = 8 << 20
		resp, b := post(t, "/api/v1/upload", io.MultiReader(io.LimitReader(rand.Reader, n)), -1, "x-tenant-id", "acme")
		if resp.StatusCode != 200 || b != strconv.Itoa(n) || o.bytes.Load()-before != n {
			t.Fatalf("status %d, body %q, origin read %d; want 200 and all %d bytes", resp.StatusCode, trim(b), o.bytes.Load()-before, n)
		}
	})
	t.Run("request headers over 60 KiB", func(t *testing.T) {
		resp, b := s.get(t, "/api/v1/public/big", "x-tenant-id", "acme", "x-big", strings.Repeat("a", 62<<10))
		t.Logf("%d %q", resp.StatusCode, trim(b))
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d (%q), want 431", resp.StatusCode, trim(b))
		}
	})
	// The stack still answers normally.
	if resp, b := s.get(t, "/api/v1/public/after", "x-tenant-id", "acme"); resp.StatusCode != 200 || !strings.Contains(b, "tenant=acme") {
		t.Fatalf("after the hostile bodies: %d %q", resp.StatusCode, b)
	}
}

func trim(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
