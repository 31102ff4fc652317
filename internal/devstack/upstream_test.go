package devstack_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// origin is a test API: it records exactly what it received (by the
// x-test-id request header) and counts requests per "METHOD path".
type origin struct {
	*httptest.Server
	mu     sync.Mutex
	seen   map[string]received
	counts map[string]int
}

type received struct {
	method, uri string
	header      http.Header
	body        []byte
	te          []string
}

// bigBody is a deterministic binary body just under 1 MiB (the cache's
// max_object_bytes and Envoy's buffer limit).
var bigBody = func() []byte {
	b := make([]byte, 1<<20-4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}()

var lastModified = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// oddValue has internal runs of spaces, a tab, quotes, separators and UTF-8.
const oddValue = "a  b,\"c, d\";e=\tf caf\xc3\xa9 ~!#$%&'*+^`|"

// originSetCookies are repeated Set-Cookie fields, commas inside included.
var originSetCookies = []string{"a=1; Path=/", "b=2; HttpOnly", `c="3, 4"; Expires=Wed, 21 Oct 2026 07:28:00 GMT`}

func newOrigin(t *testing.T) *origin {
	t.Helper()
	o := &origin{seen: map[string]received{}, counts: map[string]int{}}
	o.Server = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.Close)
	return o
}

func (o *origin) count(method, path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[method+" "+path]
}

func (o *origin) got(t *testing.T, id string) received {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	r, ok := o.seen[id]
	if !ok {
		t.Fatalf("origin never saw request %s", id)
	}
	return r
}

func (o *origin) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	o.mu.Lock()
	o.counts[r.Method+" "+r.URL.Path]++
	if id := r.Header.Get("x-test-id"); id != "" {
		o.seen[id] = received{method: r.Method, uri: r.RequestURI, header: r.Header.Clone(), body: body, te: r.TransferEncoding}
	}
	o.mu.Unlock()
	h := w.Header()
	tenant := r.Header.Get("x-sluice-tenant")
	safe := r.Method == "GET" || r.Method == "HEAD"
	switch p := r.URL.Path; {
	case strings.HasPrefix(p, "/fresh/") && safe:
		h.Set("Cache-Control", "max-age=60")
		h.Set("ETag", `"f1"`)
		h.Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "fresh representation of "+p+" for tenant "+tenant)
	case p == "/compressible" && safe:
		// Over envoy.yaml's min_content_length, without an ETag: compressed on request.
		h.Set("Cache-Control", "max-age=60")
		h.Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, strings.Repeat("compressible representation for tenant "+tenant+"\n", 40))
	case p == "/big" && safe:
		h.Set("Cache-Control", "public, max-age=60")
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.Itoa(len(bigBody)))
		w.Write(bigBody)
	case p == "/big-nostore" && safe:
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Type", "application/octet-stream")
		w.Write(bigBody) // chunked: no Content-Length
		w.Write(bigBody[:8192])
	case p == "/etag" && safe:
		h.Set("Cache-Control", "no-cache, max-age=60")
		h.Set("ETag", `"e1"`)
		h.Set("Content-Type", "text/plain")
		if r.Header.Get("If-None-Match") == `"e1"` {
			o.mu.Lock()
			o.counts["304 "+p]++
			o.mu.Unlock()
			w.WriteHeader(304)
			return
		}
		io.WriteString(w, "etag body for "+tenant)
	case p == "/lm" && safe:
		h.Set("Cache-Control", "no-cache, max-age=60")
		h.Set("Last-Modified", lastModified.Format(http.TimeFormat))
		h.Set("Content-Type", "text/plain")
		if ims, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !lastModified.After(ims) {
			o.mu.Lock()
			o.counts["304 "+p]++
			o.mu.Unlock()
			w.WriteHeader(304)
			return
		}
		io.WriteString(w, "last-modified body for "+tenant)
	case p == "/hop":
		// Hop-by-hop fields describe the origin's connection only.
		h.Set("Connection", "X-Hop-Resp, keep-alive")
		h.Set("X-Hop-Resp", "secret")
		h.Set("Keep-Alive", "timeout=5, max=100")
		h.Set("Proxy-Connection", "keep-alive")
		h.Set("Upgrade", "h2c")
		h.Set("X-End-To-End", "kept")
		h.Set("Content-Type", "text/plain")
		io.WriteString(w, "hop")
	case strings.HasPrefix(p, "/fresh/"), p == "/etag", p == "/lm":
		w.WriteHeader(http.StatusNoContent) // unsafe methods on cacheable resources
	default: // /echo…: the request body back, with odd and repeated fields
		status := 200
		if s := r.URL.Query().Get("status"); s != "" {
			status, _ = strconv.Atoi(s)
		}
		h.Set("X-Odd", oddValue)
		h["X-Multi"] = []string{"one", "two", "three"}
		h["Set-Cookie"] = slices.Clone(originSetCookies)
		h.Set("X-Echo-Method", r.Method)
		if cc := r.URL.Query().Get("cc"); cc != "" {
			h.Set("Cache-Control", cc)
			h.Set("ETag", `"zero"`)
		}
		h.Set("Content-Type", "application/octet-stream")
		if r.Method == "OPTIONS" {
			h.Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		}
		if status == 304 || status == 204 {
			h.Set("ETag", `"echo"`)
			h.Del("Content-Type")
			w.WriteHeader(status)
			return
		}
		w.WriteHeader(status)
		w.Write(body)
	}
}

// call is one request through the gateway.
type call struct {
	method, path string
	body         []byte
	header       [][2]string
}

type result struct {
	resp *http.Response
	body []byte
}

// rawClient neither adds Accept-Encoding nor decompresses, so bodies are
// compared as they came off the wire.
func rawClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}
}

func do(t *testing.T, c *http.Client, base string, k call) result {
	t.Helper()
	var body io.Reader
	if k.body != nil {
		body = bytes.NewReader(k.body)
	}
	req, err := http.NewRequest(k.method, base+k.path, body)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range k.header {
		req.Header.Add(h[0], h[1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", k.method, k.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", k.method, k.path, err)
	}
	return result{resp, b}
}

// Fields Envoy (the emulator) or Sluice may add on the way to the origin.
var addedToRequest = map[string]bool{
	"X-Forwarded-For": true, "X-Forwarded-Proto": true, "X-Request-Id": true, "X-Envoy-External-Address": true,
	"X-Envoy-Expected-Rq-Timeout-Ms": true, "X-Sluice-Tenant": true, "X-Sluice-Tier": true, "X-Sluice-User": true,
	"X-Sluice-Cost": true, "Content-Length": true,
}

// Fields Envoy or Sluice may add on the way back.
var addedToResponse = map[string]bool{
	"Age": true, "Cache-Status": true, "X-Cache": true, "Server": true, "X-Envoy-Upstream-Service-Time": true,
	"Date": true, "Content-Length": true, "Vary": true, "Ratelimit": true, "Ratelimit-Policy": true,
	"X-Ratelimit-Limit": true, "X-Ratelimit-Remaining": true, "X-Ratelimit-Reset": true,
}

// hopByHop are RFC 9110 §7.6.1's connection-specific fields.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Transfer-Encoding", "Upgrade"}

// checkRequestArrived: every end-to-end field the client sent reached the
// origin with the same values in the same order, nothing else was added
// but the documented fields, and the body arrived byte for byte.
func checkRequestArrived(t *testing.T, sent call, got received, dropped ...string) {
	t.Helper()
	if got.method != sent.method || got.uri != sent.path {
		t.Errorf("origin got %s %s, want %s %s", got.method, got.uri, sent.method, sent.path)
	}
	if !bytes.Equal(got.body, sent.body) {
		t.Errorf("%s %s: origin got a %d-byte body, want the %d bytes sent", sent.method, sent.path, len(got.body), len(sent.body))
	}
	want := http.Header{}
	for _, h := range sent.header {
		want.Add(h[0], h[1])
	}
	for _, d := range append(dropped, hopByHop...) {
		want.Del(d)
	}
	for k, v := range want {
		if !slices.Equal(got.header[k], v) {
			t.Errorf("%s %s: origin got %s %q, want %q", sent.method, sent.path, k, got.header[k], v)
		}
	}
	for k, v := range got.header {
		if _, ok := want[k]; !ok && !addedToRequest[k] && k != "User-Agent" && k != "Accept-Encoding" {
			t.Errorf("%s %s: origin got unexpected %s %q", sent.method, sent.path, k, v)
		}
	}
}

// checkResponsePassed: the client got the origin's fields unchanged, and
// nothing but the documented additions.
func checkResponsePassed(t *testing.T, name string, res result, origin http.Header) {
	t.Helper()
	for k, v := range origin {
		if k == "Date" || k == "Content-Length" || slices.Contains(hopByHop, k) {
			continue
		}
		if !slices.Equal(res.resp.Header[k], v) {
			t.Errorf("%s: client got %s %q, want %q", name, k, res.resp.Header[k], v)
		}
	}
	for k, v := range res.resp.Header {
		if _, ok := origin[k]; !ok && !addedToResponse[k] {
			t.Errorf("%s: client got unexpected %s %q", name, k, v)
		}
	}
}

// gateway is what the checks need from a running `sluice dev`.
type gateway struct {
	url string
	o   *origin
}

func TestUpstreamPassThrough(t *testing.T) {
	o := newOrigin(t)
	s := start(t, o.URL, true, nil)
	runPassThrough(t, gateway{s.URL(), o})
}

func TestUpstreamCaching(t *testing.T) {
	o := newOrigin(t)
	s := start(t, o.URL, true, nil)
	runCaching(t, gateway{s.URL(), o})
}

func runPassThrough(t *testing.T, g gateway) {
	c := rawClient()
	defer c.CloseIdleConnections()
	acme := [2]string{"x-tenant-id", "acme"}
	n := 0
	id := func() [2]string { n++; return [2]string{"X-Test-Id", fmt.Sprintf("pt-%d", n)} }

	t.Run("methods with bodies", func(t *testing.T) {
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
			for _, body := range [][]byte{[]byte("{\"k\":\"v\"}\x00\xff\x01binary"), bigBody} {
				k := call{method: m, path: "/echo/" + strings.ToLower(m) + "?q=1&q=2&x=%20y", body: body, header: [][2]string{
					acme, id(), {"Content-Type", "application/octet-stream"}, {"X-Odd", oddValue},
					{"X-Multi", "1"}, {"X-Multi", "2"}, {"Cookie", "a=1; b=2"}, {"Authorization", "Bearer t0k3n"},
					{"User-Agent", "upstream-test/1"}, {"Accept", "*/*"},
				}}
				res := do(t, c, g.url, k)
				if res.resp.StatusCode != 200 || !bytes.Equal(res.body, body) {
					t.Fatalf("%s: %d, %d-byte body, want 200 and the %d bytes echoed", m, res.resp.StatusCode, len(res.body), len(body))
				}
				checkRequestArrived(t, k, g.o.got(t, k.header[1][1]))
				want := http.Header{"X-Odd": {oddValue}, "X-Multi": {"one", "two", "three"}, "Set-Cookie": originSetCookies,
					"X-Echo-Method": {m}, "Content-Type": {"application/octet-stream"}}
				if m == "OPTIONS" {
					want.Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
				}
				checkResponsePassed(t, m, res, want)
				if res.resp.Header.Get("x-cache") != "" && m != "GET" && m != "OPTIONS" {
					t.Errorf("%s: x-cache %q on an unsafe method", m, res.resp.Header.Get("x-cache"))
				}
			}
		}
	})

	t.Run("HEAD passes through", func(t *testing.T) {
		k := call{method: "HEAD", path: "/echo/head", header: [][2]string{acme, id()}}
		res := do(t, c, g.url, k)
		if res.resp.StatusCode != 200 || len(res.body) != 0 || res.resp.Header.Get("X-Echo-Method") != "HEAD" {
			t.Fatalf("HEAD: %d %q %v", res.resp.StatusCode, res.body, res.resp.Header)
		}
		checkRequestArrived(t, k, g.o.got(t, k.header[1][1]))
	})

	t.Run("statuses", func(t *testing.T) {
		for _, tt := range []struct {
			method string
			status int
			hdr    [2]string
		}{
			{"DELETE", 204, [2]string{"X-A", "b"}},
			{"GET", 304, [2]string{"If-None-Match", `"echo"`}},
			{"GET", 404, [2]string{"X-A", "b"}},
			{"POST", 404, [2]string{"X-A", "b"}},
		} {
			path := fmt.Sprintf("/echo/status?status=%d", tt.status)
			for range 2 { // twice: nothing here may be served from the cache
				k := call{method: tt.method, path: path, header: [][2]string{acme, id(), tt.hdr}}
				if tt.method == "POST" {
					k.body = []byte("missing")
				}
				before := g.o.count(tt.method, "/echo/status")
				res := do(t, c, g.url, k)
				if res.resp.StatusCode != tt.status || g.o.count(tt.method, "/echo/status") != before+1 {
					t.Fatalf("%s %d: got %d (origin %d → %d)", tt.method, tt.status, res.resp.StatusCode, before, g.o.count(tt.method, "/echo/status"))
				}
				if tt.status == 404 && !bytes.Equal(res.body, k.body) || tt.status != 404 && len(res.body) != 0 {
					t.Errorf("%s %d: body %q", tt.method, tt.status, res.body)
				}
				checkRequestArrived(t, k, g.o.got(t, k.header[1][1]))
				want := http.Header{"X-Odd": {oddValue}, "X-Multi": {"one", "two", "three"}, "Set-Cookie": originSetCookies, "X-Echo-Method": {tt.method}}
				if tt.status == 404 {
					want.Set("Content-Type", "application/octet-stream")
				} else {
					want.Set("ETag", `"echo"`)
				}
				checkResponsePassed(t, fmt.Sprintf("%s %d", tt.method, tt.status), res, want)
			}
		}
	})

	t.Run("large uncacheable body streams", func(t *testing.T) {
		res := do(t, c, g.url, call{method: "GET", path: "/big-nostore", header: [][2]string{acme}})
		want := append(slices.Clone(bigBody), bigBody[:8192]...)
		if res.resp.StatusCode != 200 || !bytes.Equal(res.body, want) {
			t.Fatalf("big no-store: %d, %d bytes, want %d", res.resp.StatusCode, len(res.body), len(want))
		}
	})

	t.Run("hop-by-hop request fields", func(t *testing.T) {
		k := call{method: "POST", path: "/echo/hop", body: []byte("hop body"), header: [][2]string{acme, id(),
			{"Connection", "X-Hop-Req, keep-alive"}, {"X-Hop-Req", "secret"}, {"Keep-Alive", "timeout=5"},
			{"Proxy-Connection", "keep-alive"}, {"TE", "gzip"}, {"Upgrade", "h2c"}, {"X-End-To-End", "kept"}}}
		res := do(t, c, g.url, k)
		if res.resp.StatusCode != 200 {
			t.Fatalf("status %d", res.resp.StatusCode)
		}
		got := g.o.got(t, k.header[1][1])
		checkRequestArrived(t, k, got, "X-Hop-Req")
		for _, h := range append([]string{"X-Hop-Req"}, hopByHop...) {
			if v, ok := got.header[h]; ok {
				t.Errorf("origin got hop-by-hop %s %q", h, v)
			}
		}
		// TE: trailers is the one TE value a proxy forwards.
		k = call{method: "GET", path: "/echo/te", header: [][2]string{acme, id(), {"TE", "trailers, deflate"}}}
		do(t, c, g.url, k)
		if got := g.o.got(t, k.header[1][1]).header.Get("Te"); got != "trailers" {
			t.Errorf("origin got TE %q, want trailers", got)
		}
		// Chunked request bodies arrive whole; the framing is per hop.
		req, _ := http.NewRequest("PUT", g.url+"/echo/chunked", io.MultiReader(strings.NewReader("chunk1"), strings.NewReader("chunk2")))
		req.Header.Set("x-tenant-id", "acme")
		req.Header.Set("X-Test-Id", "chunked")
		req.ContentLength = -1
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "chunk1chunk2" || string(g.o.got(t, "chunked").body) != "chunk1chunk2" {
			t.Errorf("chunked body: client %q, origin %q", b, g.o.got(t, "chunked").body)
		}
	})

	t.Run("hop-by-hop response fields", func(t *testing.T) {
		for range 2 {
			res := do(t, c, g.url, call{method: "GET", path: "/hop", header: [][2]string{acme}})
			for _, h := range append([]string{"X-Hop-Resp"}, hopByHop...) {
				if v, ok := res.resp.Header[h]; ok {
					t.Errorf("client got hop-by-hop %s %q", h, v)
				}
			}
			if res.resp.Header.Get("X-End-To-End") != "kept" || string(res.body) != "hop" {
				t.Errorf("end-to-end part: %v %q", res.resp.Header, res.body)
			}
		}
	})

	t.Run("compression only on request", func(t *testing.T) {
		plain := do(t, c, g.url, call{method: "GET", path: "/compressible", header: [][2]string{acme}})
		if plain.resp.Header.Get("Content-Encoding") != "" || plain.resp.Header.Get("Vary") != "Accept-Encoding" {
			t.Errorf("no Accept-Encoding: %v", plain.resp.Header)
		}
		for range 2 { // hit (the identity entry, compressed on the way out), twice
			gz := do(t, c, g.url, call{method: "GET", path: "/compressible", header: [][2]string{acme, {"Accept-Encoding", "gzip"}}})
			if gz.resp.Header.Get("Content-Encoding") != "gzip" || gz.resp.Header.Get("Vary") != "Accept-Encoding" ||
				!strings.HasPrefix(gz.resp.Header.Get("X-Cache"), "HIT") {
				t.Fatalf("Accept-Encoding gzip: %v", gz.resp.Header)
			}
			zr, err := gzip.NewReader(bytes.NewReader(gz.body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(zr)
			if !bytes.Equal(b, plain.body) {
				t.Errorf("gunzipped %q, want %q", b, plain.body)
			}
		}
		// A response with an ETag goes out as the origin made it, with or without
		// Accept-Encoding, so that its strong validator keeps working (envoy.yaml
		// disable_on_etag_header).
		for _, ae := range []string{"", "gzip"} {
			res := do(t, c, g.url, call{method: "GET", path: "/fresh/gz", header: [][2]string{acme, {"Accept-Encoding", ae}}})
			if res.resp.Header.Get("Content-Encoding") != "" || res.resp.Header.Get("Etag") != `"f1"` || res.resp.Header.Get("Vary") != "" {
				t.Errorf("Accept-Encoding %q: ETag response changed: %v", ae, res.resp.Header)
			}
			cond := do(t, c, g.url, call{method: "GET", path: "/fresh/gz", header: [][2]string{acme, {"Accept-Encoding", ae}, {"If-None-Match", `"f1"`}}})
			if cond.resp.StatusCode != 304 {
				t.Errorf("Accept-Encoding %q: If-None-Match with the ETag: status %d, want 304", ae, cond.resp.StatusCode)
			}
		}
	})
}

func runCaching(t *testing.T, g gateway) {
	c := rawClient()
	defer c.CloseIdleConnections()
	acme := [2]string{"x-tenant-id", "acme"}
	get := func(path string, hdr ...[2]string) result {
		t.Helper()
		return do(t, c, g.url, call{method: "GET", path: path, header: append([][2]string{acme}, hdr...)})
	}
	xcache := func(r result) string { return r.resp.Header.Get("x-cache") }

	t.Run("hit and miss", func(t *testing.T) {
		first := get("/fresh/a")
		second := get("/fresh/a")
		if xcache(first) != "MISS" || !strings.HasPrefix(xcache(second), "HIT") || g.o.count("GET", "/fresh/a") != 1 {
			t.Fatalf("x-cache %q then %q, origin GETs %d", xcache(first), xcache(second), g.o.count("GET", "/fresh/a"))
		}
		if !bytes.Equal(first.body, second.body) || second.resp.Header.Get("ETag") != `"f1"` ||
			second.resp.Header.Get("Cache-Control") != "max-age=60" || second.resp.Header.Get("Age") == "" {
			t.Errorf("hit: %q %v", second.body, second.resp.Header)
		}
		// Uncacheable (no explicit freshness; heuristics are off): every GET
		// reaches the origin.
		for range 3 {
			if r := get("/echo/nocache"); strings.HasPrefix(xcache(r), "HIT") {
				t.Fatalf("response without freshness served from the cache: %v", r.resp.Header)
			}
		}
		if n := g.o.count("GET", "/echo/nocache"); n != 3 {
			t.Errorf("origin GETs %d for an uncacheable resource, want 3", n)
		}
	})

	t.Run("large binary body", func(t *testing.T) {
		for i := range 2 {
			r := get("/big")
			if r.resp.StatusCode != 200 || !bytes.Equal(r.body, bigBody) {
				t.Fatalf("GET %d: %d, %d bytes", i, r.resp.StatusCode, len(r.body))
			}
			if i == 1 && !strings.HasPrefix(xcache(r), "HIT") {
				t.Errorf("second GET of a %d-byte body: x-cache %q", len(bigBody), xcache(r))
			}
		}
		if n := g.o.count("GET", "/big"); n != 1 {
			t.Errorf("origin GETs %d, want 1", n)
		}
	})

	t.Run("revalidation", func(t *testing.T) {
		for _, path := range []string{"/etag", "/lm"} {
			first := get(path)
			if first.resp.StatusCode != 200 || xcache(first) != "MISS" {
				t.Fatalf("%s first: %d %v", path, first.resp.StatusCode, first.resp.Header)
			}
			for i := range 2 {
				r := get(path)
				if r.resp.StatusCode != 200 || !bytes.Equal(r.body, first.body) || xcache(r) != "REVALIDATED" {
					t.Fatalf("%s revalidation %d: %d %q %v", path, i, r.resp.StatusCode, r.body, r.resp.Header)
				}
			}
			if n, r := g.o.count("GET", path), g.o.count("304", path); n != 3 || r != 2 {
				t.Errorf("%s: origin GETs %d (304s %d), want 3 (2)", path, n, r)
			}
		}
	})

	t.Run("nothing kept is reported stored", func(t *testing.T) {
		// max-age=0 with a validator is storable (RFC 9111 §3), but the store
		// keeps entries only for their freshness and stale windows plus
		// stale_retention (default 0): Cache-Status must not claim "stored".
		for range 2 {
			r := get("/echo/zero?cc=max-age%3D0")
			if strings.Contains(r.resp.Header.Get("Cache-Status"), "stored") || strings.HasPrefix(xcache(r), "HIT") {
				t.Errorf("max-age=0: %v", r.resp.Header)
			}
		}
	})

	t.Run("HEAD from a cached GET", func(t *testing.T) {
		full := get("/fresh/head")
		req, _ := http.NewRequest("HEAD", g.url+"/fresh/head", nil)
		req.Header.Set("x-tenant-id", "acme")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) != 0 || !strings.HasPrefix(resp.Header.Get("x-cache"), "HIT") ||
			resp.Header.Get("ETag") != `"f1"` || g.o.count("HEAD", "/fresh/head") != 0 || g.o.count("GET", "/fresh/head") != 1 {
			t.Fatalf("HEAD: %d %q %v (origin GET %d HEAD %d)", resp.StatusCode, b, resp.Header, g.o.count("GET", "/fresh/head"), g.o.count("HEAD", "/fresh/head"))
		}
		if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(full.body)) {
			t.Errorf("HEAD Content-Length %s, GET body %d bytes", cl, len(full.body))
		}
	})

	t.Run("unsafe methods invalidate", func(t *testing.T) {
		for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
			path := "/fresh/inv-" + strings.ToLower(m)
			get(path)
			if r := get(path); !strings.HasPrefix(xcache(r), "HIT") {
				t.Fatalf("%s: not cached: %v", path, r.resp.Header)
			}
			if r := do(t, c, g.url, call{method: m, path: path, body: []byte("change"), header: [][2]string{acme}}); r.resp.StatusCode != 204 {
				t.Fatalf("%s %s: %d", m, path, r.resp.StatusCode)
			}
			if r := get(path); xcache(r) != "MISS" || g.o.count("GET", path) != 2 {
				t.Errorf("GET after %s: x-cache %q, origin GETs %d", m, xcache(r), g.o.count("GET", path))
			}
		}
	})

	t.Run("anonymous callers share the anonymous cache", func(t *testing.T) {
		anon1, anon2 := rawClient(), rawClient()
		defer anon1.CloseIdleConnections()
		defer anon2.CloseIdleConnections()
		a := do(t, anon1, g.url, call{method: "GET", path: "/fresh/shared"})
		b := do(t, anon2, g.url, call{method: "GET", path: "/fresh/shared"})
		if xcache(a) != "MISS" || !strings.HasPrefix(xcache(b), "HIT") || !strings.HasSuffix(string(b.body), "tenant anonymous") {
			t.Fatalf("anonymous: %q then %q, body %q", xcache(a), xcache(b), b.body)
		}
		named := get("/fresh/shared")
		if xcache(named) != "MISS" || !strings.HasSuffix(string(named.body), "tenant acme") {
			t.Fatalf("named tenant after anonymous: %q %q", xcache(named), named.body)
		}
		if a := do(t, anon1, g.url, call{method: "GET", path: "/fresh/only-acme"}); xcache(a) != "MISS" {
			t.Fatalf("anonymous: %q", xcache(a))
		}
		_ = get("/fresh/only-acme")
		if n := g.o.count("GET", "/fresh/only-acme"); n != 2 {
			t.Errorf("origin GETs %d: the named tenant was served the anonymous entry", n)
		}
		if n := g.o.count("GET", "/fresh/shared"); n != 2 {
			t.Errorf("origin GETs %d for /fresh/shared, want 2 (anonymous once, acme once)", n)
		}
	})
}

// TestSluiceDevBinary builds cmd/sluice and runs `sluice dev --upstream
// <origin> --listen 127.0.0.1:0` as a developer would, with the embedded
// Redis, reading the gateway's address from the banner.
func TestSluiceDevBinary(t *testing.T) {
	testenv.SkipShort(t, "builds the binary")
	bin := filepath.Join(t.TempDir(), "sluice")
	build := exec.Command("go", "build", "-o", bin, "github.com/sluicehq/sluice/cmd/sluice")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	o := newOrigin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The same config file `sluice serve` reads: here it turns the cache off
	// for one prefix; every other path keeps the default policy.
	cfgFile := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(cfgFile, []byte("cache:\n  routes:\n    - {name: off, prefix: /fresh/off, enabled: false}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "dev", "--upstream", o.URL, "--listen", "127.0.0.1:0",
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--config", cfgFile)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()} // no REDIS_URL: embedded Redis
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	}()
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "gateway" {
				urlc <- f[1]
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	var gw string
	select {
	case gw = <-urlc:
	case err := <-exited:
		stopped = true
		t.Fatalf("sluice dev exited: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("no banner within 30s; stderr:\n%s", stderr.String())
	}
	if !strings.HasPrefix(gw, "http://127.0.0.1:") {
		t.Fatalf("banner gateway %q", gw)
	}
	g := gateway{gw, o}
	t.Run("pass-through", func(t *testing.T) { runPassThrough(t, g) })
	t.Run("caching", func(t *testing.T) { runCaching(t, g) })
	t.Run("config file route", func(t *testing.T) {
		c := rawClient()
		defer c.CloseIdleConnections()
		for range 2 {
			do(t, c, gw, call{method: "GET", path: "/fresh/off/x", header: [][2]string{{"x-tenant-id", "acme"}}})
		}
		if n := o.count("GET", "/fresh/off/x"); n != 2 {
			t.Errorf("origin GETs %d on a route the config file turns off, want 2", n)
		}
	})

	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("sluice dev after SIGINT: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("sluice dev did not stop within 15s of SIGINT")
	}
}
