package batch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// upstream stands in for the Envoy listener: it answers by path and records
// what it received.
type upstream struct {
	srv      *httptest.Server
	hits     atomic.Int64
	inflight atomic.Int64
	maxIn    atomic.Int64
	mu       sync.Mutex // guards order and seen
	order    []string   // request-targets in arrival order
	seen     []*http.Request
	barrier  int          // the first barrier /api/wait requests block until that many are in flight (or 4s)
	waits    atomic.Int64 // /api/wait requests seen
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.hits.Add(1)
	n := u.inflight.Add(1)
	defer u.inflight.Add(-1)
	for {
		m := u.maxIn.Load()
		if n <= m || u.maxIn.CompareAndSwap(m, n) {
			break
		}
	}
	u.mu.Lock()
	u.order = append(u.order, r.RequestURI)
	u.seen = append(u.seen, r.Clone(context.Background()))
	u.mu.Unlock()
	q := r.URL.Query()
	sleep := func(d time.Duration) bool {
		select {
		case <-time.After(d):
			return true
		case <-r.Context().Done():
			return false
		}
	}
	switch {
	case strings.HasPrefix(r.URL.Path, "/api/ok"), strings.HasPrefix(r.URL.Path, "/api/v1/"):
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "secret=1; HttpOnly")
		w.Header().Set("X-App", "yes")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"uri": r.RequestURI, "host": r.Host, "auth": r.Header.Get("Authorization"),
			"batch": r.Header.Get("X-Sluice-Batch"), "trace": r.Header.Get("X-Trace"), "ua": r.Header.Get("User-Agent"),
			"client": r.Header.Get("X-Sluice-Client-Address"), "external": r.Header.Get("X-Envoy-External-Address"),
			"xff": r.Header.Get("X-Forwarded-For"), "xfp": r.Header.Get("X-Forwarded-Proto"),
		})
	case r.URL.Path == "/api/fail":
		http.Error(w, "boom", http.StatusInternalServerError)
	case r.URL.Path == "/api/sleep":
		ms, _ := strconv.Atoi(q.Get("ms"))
		if !sleep(time.Duration(ms) * time.Millisecond) {
			return
		}
		w.WriteHeader(http.StatusOK)
	case r.URL.Path == "/api/slowbody":
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		ms, _ := strconv.Atoi(q.Get("ms"))
		if sleep(time.Duration(ms) * time.Millisecond) {
			_, _ = io.WriteString(w, "late")
		}
	case r.URL.Path == "/api/wait":
		first := u.waits.Add(1) <= int64(u.barrier)
		deadline := time.After(4 * time.Second) // under ItemTimeout; generous for a loaded -race run
		for first && u.inflight.Load() < int64(u.barrier) {
			select {
			case <-deadline:
				http.Error(w, "barrier not reached", http.StatusInternalServerError)
				return
			case <-r.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
		sleep(5 * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/api/big":
		n, _ := strconv.Atoi(q.Get("n"))
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, strings.Repeat("x", n))
	case r.URL.Path == "/api/redirect":
		http.Redirect(w, r, q.Get("to"), http.StatusFound)
	case r.URL.Path == "/api/echo":
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
		_, _ = w.Write(b)
	default:
		http.NotFound(w, r)
	}
}

func newTestRunner(t *testing.T, u *upstream, cfg Config) *Runner {
	t.Helper()
	cfg.ListenerURL = u.srv.URL
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

var testParent = Parent{
	Header: http.Header{
		"Authorization": {"Bearer tok"}, "Cookie": {"s=1"}, "X-Other": {"not forwarded"}, "User-Agent": {"client/1"},
		"X-Forwarded-For": {"198.51.100.9, 192.0.2.10"}, "X-Forwarded-Proto": {"https"}, "X-Envoy-External-Address": {"10.9.9.9"},
	},
	Host:          "api.example.com",
	ClientAddress: "192.0.2.10",
}

// handle runs body and decodes the reply.
func handle(t *testing.T, r *Runner, body string) (int, Response, ErrorBody) {
	t.Helper()
	status, out := r.Handle(context.Background(), testParent, []byte(body))
	var resp Response
	var eb ErrorBody
	if status == http.StatusOK {
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("reply %s: %v", out, err)
		}
	} else if err := json.Unmarshal(out, &eb); err != nil {
		t.Fatalf("error reply %s: %v", out, err)
	}
	return status, resp, eb
}

func statuses(resp Response) string {
	var parts []string
	for _, r := range resp.Responses {
		parts = append(parts, fmt.Sprintf("%s=%d", r.ID, r.Status))
	}
	return strings.Join(parts, " ")
}

func errCode(t *testing.T, r ItemResponse) string {
	t.Helper()
	var eb ErrorBody
	if err := json.Unmarshal(r.Body, &eb); err != nil {
		t.Fatalf("item %s body %s: %v", r.ID, r.Body, err)
	}
	return eb.Error.Code
}

func TestRunBasics(t *testing.T) {
	u := newUpstream(t)
	r := newTestRunner(t, u, Config{})
	status, resp, _ := handle(t, r, `{"requests":[
		{"id":"1","method":"GET","url":"/api/v1/users/a%20b?x=1","headers":{"x-trace":"t1"}},
		{"id":"2","method":"POST","url":"/api/echo","headers":{"content-type":"application/json"},"body":{"k":"v"}},
		{"id":"3","method":"PUT","url":"/api/echo","headers":{"content-type":"application/octet-stream"},"body":"AAECAw=="},
		{"id":"4","method":"GET","url":"/api/nothing"},
		{"id":"5","method":"GET","url":"http://evil.example/api/ok"}
	]}`)
	if status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	if got := statuses(resp); got != "1=200 2=200 3=200 4=404 5=400" {
		t.Fatalf("statuses %s", got)
	}
	one := resp.Responses[0]
	var echoed map[string]string
	if err := json.Unmarshal(one.Body, &echoed); err != nil {
		t.Fatalf("item 1 body %s: %v", one.Body, err)
	}
	want := map[string]string{"uri": "/api/v1/users/a%20b?x=1", "host": "api.example.com", "auth": "Bearer tok", "batch": "1", "trace": "t1", "ua": "client/1",
		// The item is the parent client's request: its address for Envoy's internal listener
		// and the app, the XFF and scheme Envoy's ingress wrote.
		"client": "192.0.2.10", "external": "192.0.2.10", "xff": "198.51.100.9, 192.0.2.10", "xfp": "https"}
	for k, v := range want {
		if echoed[k] != v {
			t.Errorf("upstream saw %s=%q, want %q", k, echoed[k], v)
		}
	}
	if one.Headers["x-app"] != "yes" || one.Headers["set-cookie"] != "" || one.Headers["content-type"] != "application/json" {
		t.Errorf("item 1 headers %v", one.Headers)
	}
	if string(resp.Responses[1].Body) != `{"k":"v"}` {
		t.Errorf("item 2 body %s", resp.Responses[1].Body)
	}
	var b64 string
	if err := json.Unmarshal(resp.Responses[2].Body, &b64); err != nil {
		t.Fatalf("item 3 body %s: %v", resp.Responses[2].Body, err)
	}
	if raw, _ := base64.StdEncoding.DecodeString(b64); string(raw) != "\x00\x01\x02\x03" {
		t.Errorf("item 3 body %q", raw)
	}
	if errCode(t, resp.Responses[4]) != CodeInvalidURL {
		t.Errorf("item 5 %s", resp.Responses[4].Body)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, req := range u.seen {
		if req.Header.Get("X-Other") != "" || req.Header.Get("Cookie") != "s=1" {
			t.Errorf("forwarded headers %v", req.Header)
		}
	}
	if u.hits.Load() != 4 {
		t.Errorf("upstream hits %d, want 4 (the absolute url is never sent)", u.hits.Load())
	}
}

func TestRunBatchErrors(t *testing.T) {
	u := newUpstream(t)
	r := newTestRunner(t, u, Config{MaxItems: 3, Concurrency: 2})
	status, _, eb := handle(t, r, `{"requests":[{"id":"1","method":"GET","url":"/api/ok"},{"id":"2","method":"GET","url":"/api/ok"},{"id":"3","method":"GET","url":"/api/ok"},{"id":"4","method":"GET","url":"/api/ok"}]}`)
	if status != http.StatusBadRequest || eb.Error.Code != CodeTooManyItems || eb.Error.Message == "" {
		t.Fatalf("got %d %+v", status, eb)
	}
	if u.hits.Load() != 0 {
		t.Fatalf("upstream hit %d times for a refused batch", u.hits.Load())
	}
}

func TestRunDependencies(t *testing.T) {
	u := newUpstream(t)
	r := newTestRunner(t, u, Config{Concurrency: 5})
	status, resp, _ := handle(t, r, `{"requests":[
		{"id":"c","method":"GET","url":"/api/ok/c","dependsOn":["b"]},
		{"id":"b","method":"GET","url":"/api/ok/b","dependsOn":["a"]},
		{"id":"a","method":"GET","url":"/api/sleep?ms=20"},
		{"id":"f","method":"GET","url":"/api/fail"},
		{"id":"g","method":"GET","url":"/api/ok/g","dependsOn":["f"]},
		{"id":"h","method":"GET","url":"/api/ok/h","dependsOn":["g","a"]},
		{"id":"i","method":"GET","url":"/api/ok/i"},
		{"id":"bad","method":"GET","url":"/admin"},
		{"id":"j","method":"GET","url":"/api/ok/j","dependsOn":["bad"]}
	]}`)
	if status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	if got := statuses(resp); got != "c=200 b=200 a=200 f=500 g=424 h=424 i=200 bad=400 j=424" {
		t.Fatalf("statuses %s", got)
	}
	if errCode(t, resp.Responses[4]) != CodeFailedDependency || errCode(t, resp.Responses[5]) != CodeFailedDependency {
		t.Fatalf("424 bodies %s %s", resp.Responses[4].Body, resp.Responses[5].Body)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	pos := map[string]int{}
	for i, o := range u.order {
		pos[o] = i
	}
	if !(pos["/api/sleep?ms=20"] < pos["/api/ok/b"] && pos["/api/ok/b"] < pos["/api/ok/c"]) {
		t.Fatalf("chain order %v", u.order)
	}
	for _, o := range u.order {
		if o == "/api/ok/g" || o == "/api/ok/h" || o == "/api/ok/j" {
			t.Fatalf("%s was sent though a dependency failed", o)
		}
	}
}

func TestRunConcurrencyCap(t *testing.T) {
	for _, conc := range []int{1, 5, 20} {
		t.Run(strconv.Itoa(conc), func(t *testing.T) {
			u := newUpstream(t)
			u.barrier = conc
			r := newTestRunner(t, u, Config{Concurrency: conc, ItemTimeout: 5 * time.Second, Deadline: 9 * time.Second, MaxMessageTimeout: 10 * time.Second})
			var items []string
			for i := range 20 {
				items = append(items, fmt.Sprintf(`{"id":"%d","method":"GET","url":"/api/wait"}`, i))
			}
			_, resp, _ := handle(t, r, `{"requests":[`+strings.Join(items, ",")+`]}`)
			for _, it := range resp.Responses {
				if it.Status != http.StatusNoContent {
					t.Fatalf("item %s: %d %s", it.ID, it.Status, it.Body)
				}
			}
			// The barrier made the first conc requests wait for each other,
			// so conc were in flight together; the cap kept it at that.
			if got := u.maxIn.Load(); got != int64(conc) {
				t.Fatalf("max in flight %d, want %d", got, conc)
			}
		})
	}
}

func TestRunTimeouts(t *testing.T) {
	t.Run("item timeout", func(t *testing.T) {
		u := newUpstream(t)
		// The timeout leaves the fast item a wide margin on a loaded machine (-race, packages
		// tested in parallel); the slow ones would take seconds.
		r := newTestRunner(t, u, Config{ItemTimeout: 300 * time.Millisecond})
		_, resp, _ := handle(t, r, `{"requests":[
			{"id":"slow","method":"GET","url":"/api/sleep?ms=2000"},
			{"id":"slowbody","method":"GET","url":"/api/slowbody?ms=2000"},
			{"id":"after","method":"GET","url":"/api/ok","dependsOn":["slow"]},
			{"id":"fast","method":"GET","url":"/api/ok"}]}`)
		if got := statuses(resp); got != "slow=504 slowbody=504 after=424 fast=200" {
			t.Fatalf("statuses %s", got)
		}
		if c := errCode(t, resp.Responses[0]); c != CodeItemTimeout {
			t.Fatalf("slow: %s", c)
		}
		if c := errCode(t, resp.Responses[1]); c != CodeItemTimeout {
			t.Fatalf("slowbody: %s", c)
		}
	})
	t.Run("batch deadline", func(t *testing.T) {
		u := newUpstream(t)
		// a finishes well inside the deadline even on a loaded machine; b, started after it,
		// would take seconds, so the deadline cuts it, and c never starts.
		r := newTestRunner(t, u, Config{ItemTimeout: 10 * time.Second, Deadline: 500 * time.Millisecond})
		start := time.Now()
		_, resp, _ := handle(t, r, `{"requests":[
			{"id":"a","method":"GET","url":"/api/sleep?ms=10"},
			{"id":"b","method":"GET","url":"/api/sleep?ms=5000","dependsOn":["a"]},
			{"id":"c","method":"GET","url":"/api/sleep?ms=10","dependsOn":["b"]}]}`)
		if got := statuses(resp); got != "a=200 b=504 c=504" {
			t.Fatalf("statuses %s", got)
		}
		if c := errCode(t, resp.Responses[1]); c != CodeDeadlineExceeded {
			t.Fatalf("b: %s", c)
		}
		if c := errCode(t, resp.Responses[2]); c != CodeDeadlineExceeded {
			t.Fatalf("c: %s", c)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("batch took %v past a 500ms deadline", d)
		}
	})
	t.Run("parent cancelled", func(t *testing.T) {
		u := newUpstream(t)
		r := newTestRunner(t, u, Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		b, berr := r.Parse([]byte(`{"requests":[{"id":"a","method":"GET","url":"/api/sleep?ms=1000"}]}`))
		if berr != nil {
			t.Fatal(berr)
		}
		resp := r.Run(ctx, testParent, b)
		if resp.Responses[0].Status != http.StatusGatewayTimeout {
			t.Fatalf("status %d", resp.Responses[0].Status)
		}
	})
}

func TestRunSizeCaps(t *testing.T) {
	u := newUpstream(t)
	r := newTestRunner(t, u, Config{MaxItemResponseBytes: 1000, MaxTotalResponseBytes: 2500, Concurrency: 1})
	_, resp, _ := handle(t, r, `{"requests":[
		{"id":"huge","method":"GET","url":"/api/big?n=1001"},
		{"id":"edge","method":"GET","url":"/api/big?n=600"},
		{"id":"b","method":"GET","url":"/api/big?n=600","dependsOn":["edge"]},
		{"id":"c","method":"GET","url":"/api/big?n=600","dependsOn":["b"]},
		{"id":"d","method":"GET","url":"/api/big?n=10","dependsOn":["c"]}]}`)
	// huge: over the item cap. edge and b: 800 bytes of base64 each plus
	// headers, c would pass 2500, so it and its dependent fail.
	if got := statuses(resp); got != "huge=507 edge=200 b=200 c=507 d=424" {
		t.Fatalf("statuses %s", got)
	}
	if c := errCode(t, resp.Responses[0]); c != CodeItemTooLarge {
		t.Fatalf("huge: %s", c)
	}
	if c := errCode(t, resp.Responses[3]); c != CodeBatchTooLarge {
		t.Fatalf("c: %s", c)
	}
}

func TestRunRedirectNotFollowed(t *testing.T) {
	u := newUpstream(t)
	other := newUpstream(t)
	r := newTestRunner(t, u, Config{})
	_, resp, _ := handle(t, r, `{"requests":[{"id":"r","method":"GET","url":"/api/redirect?to=`+other.srv.URL+`/api/ok"}]}`)
	it := resp.Responses[0]
	if it.Status != http.StatusFound || !strings.HasPrefix(it.Headers["location"], other.srv.URL) {
		t.Fatalf("item %d %v", it.Status, it.Headers)
	}
	if other.hits.Load() != 0 {
		t.Fatal("the redirect was followed")
	}
}

// TestClientDialsOnlyListener sends crafted requests straight through the
// Runner's client: whatever their URL says, the socket goes to the listener.
func TestClientDialsOnlyListener(t *testing.T) {
	u := newUpstream(t)
	other := newUpstream(t)
	r := newTestRunner(t, u, Config{})
	var mu sync.Mutex
	var attempts []string
	r.dialer.attempts = func(a string) { mu.Lock(); attempts = append(attempts, a); mu.Unlock() }
	for _, target := range []string{other.srv.URL + "/api/ok", "http://169.254.169.254/latest/meta-data", "http://localhost:1/api/ok"} {
		req, err := http.NewRequest(http.MethodGet, target, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := r.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	if other.hits.Load() != 0 || u.hits.Load() != 3 {
		t.Fatalf("listener hits %d, other hits %d", u.hits.Load(), other.hits.Load())
	}
	listenerAddr := u.srv.Listener.Addr().String()
	mu.Lock()
	defer mu.Unlock()
	for _, a := range attempts {
		if a != listenerAddr {
			t.Fatalf("dialed %s, want only %s", a, listenerAddr)
		}
	}
	// HTTPS is never dialed, and a non-TCP network is refused.
	req, _ := http.NewRequest(http.MethodGet, "https://"+listenerAddr+"/api/ok", nil)
	if resp, err := r.client.Do(req); err == nil {
		_ = resp.Body.Close()
		t.Fatal("https request succeeded")
	}
	if _, err := r.dialer.DialContext(context.Background(), "udp", listenerAddr); err == nil {
		t.Fatal("udp dial succeeded")
	}
}

// fakeResolver answers every lookup with addrs.
type fakeResolver struct{ addrs []string }

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range f.addrs {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

func TestClientHostNameListener(t *testing.T) {
	u := newUpstream(t)
	port := u.srv.Listener.Addr().(*net.TCPAddr).Port
	cfg := Config{ListenerURL: "http://envoy.internal:" + strconv.Itoa(port)}
	r, err := newRunner(cfg, fakeResolver{addrs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, berr := r.Parse([]byte(`{"requests":[{"id":"1","method":"GET","url":"/api/ok"}]}`))
	if berr != nil {
		t.Fatal(berr)
	}
	if s := r.Run(context.Background(), Parent{}, b).Responses[0].Status; s != http.StatusOK {
		t.Fatalf("status %d", s)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"https listener", Config{ListenerURL: "https://127.0.0.1:8443"}, false},
		{"listener path", Config{ListenerURL: "http://127.0.0.1:8080/api"}, false},
		{"listener userinfo", Config{ListenerURL: "http://u:p@127.0.0.1:8080"}, false},
		{"listener unspecified", Config{ListenerURL: "http://0.0.0.0:8080"}, false},
		{"deadline past message timeout", Config{Deadline: 2 * time.Second}, false},
		{"concurrency over items", Config{MaxItems: 3, Concurrency: 4}, false},
		{"prefix without slash", Config{PathPrefixes: []string{"/api"}}, false},
		{"root prefix", Config{PathPrefixes: []string{"/"}}, false},
		{"dot prefix", Config{PathPrefixes: []string{"/api/../"}}, false},
		{"forward sluice header", Config{ForwardHeaders: []string{"x-sluice-tenant"}}, false},
		{"forward host", Config{ForwardHeaders: []string{"host"}}, false},
		{"forward upper-case", Config{ForwardHeaders: []string{"Authorization"}}, false},
		{"no forwarding", Config{ForwardHeaders: []string{}}, true},
		{"batch path", Config{BatchPath: "/api/v1/batch/../x"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.WithDefaults().Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok %v", err, tc.ok)
			}
		})
	}
}
