package cachefilter_test

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/redistest"
)

// origin is a scripted upstream: it answers every forwarded request with
// respond(request headers as forwarded) and counts the requests. A status of
// 0 is a connection that fails before any response: the test then plays
// Envoy's router, whose local reply (503, no x-envoy-upstream-service-time)
// reaches ext_proc's response phase like a response.
type origin struct {
	hits    atomic.Int64
	respond func(method, path string, h map[string]string) (status int, header []string, body string)
}

// result is what the client of one exchange got.
type result struct {
	status   int               // status of the immediate response, or the origin's
	header   map[string]string // immediate response headers, or the origin's plus mutations
	body     string
	upstream bool              // the request reached the origin
	sent     map[string]string // request headers as forwarded (after mutations)
	// immediate: answered with an ImmediateResponse; replaced: the upstream
	// response was replaced at the response headers (CONTINUE_AND_REPLACE).
	immediate, replaced bool
}

type stageEnv struct {
	conn  grpc.ClientConnInterface
	store *cachefilter.Store
	clk   *clock
}

func newStageEnv(t *testing.T, cfg cachefilter.Config) *stageEnv {
	t.Helper()
	return newStageEnvWith(t, cfg, cachefilter.StageOptions{})
}

// newStageEnvWith is newStageEnv with stage options (Now is the env's clock).
func newStageEnvWith(t *testing.T, cfg cachefilter.Config, opts cachefilter.StageOptions) *stageEnv {
	t.Helper()
	clk := newClock()
	rdb := redistest.Client(t)
	store := newStore(t, testConfig(), rdb, redistest.Prefix(t), clk, nil)
	run(t, store)
	opts.Now = clk.Now
	stage, err := cachefilter.NewStage(cfg, store, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := extproc.New(extproc.Config{}, nil, nil, nil, extproc.WithStages(stage))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(srv.Stages(), ","); got != "identity,cache,metrics" {
		t.Fatalf("stages %s", got)
	}
	return &stageEnv{conn: extproctest.Serve(t, srv.Register), store: store, clk: clk}
}

// recv skips override_message_timeout messages.
func recv(t *testing.T, s *extproctest.Stream) *extprocv3.ProcessingResponse {
	t.Helper()
	for {
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if r.GetOverrideMessageTimeout() == nil {
			return r
		}
	}
}

// do runs one request through the stage as Envoy would, with o upstream.
func (env *stageEnv) do(t *testing.T, o *origin, method, path string, hdr ...string) result {
	t.Helper()
	s := extproctest.Open(t, env.conn)
	r := recvAfter(t, s, extproctest.RequestHeaders(method, path, true, hdr...))
	if ir := r.GetImmediateResponse(); ir != nil {
		return immediate(ir)
	}
	sent := map[string]string{}
	for i := 0; i+1 < len(hdr); i += 2 {
		sent[hdr[i]] = hdr[i+1]
	}
	m := extproctest.Mutation(r)
	for _, k := range m.GetRemoveHeaders() {
		delete(sent, k)
	}
	for k, v := range extproctest.SetHeaders(m) {
		sent[k] = v[0]
	}
	o.hits.Add(1)
	status, rh, body := o.respond(method, path, sent)
	if status == 0 {
		// Envoy's router: "upstream connect error or disconnect/reset
		// before headers", 503, as a local reply.
		status, rh, body = 503, []string{"content-type", "text/plain"}, "upstream connect error"
	} else {
		rh = append(rh, "x-envoy-upstream-service-time", "1")
	}
	if method == "HEAD" {
		body = ""
	}
	rh = append(rh, "content-length", strconv.Itoa(len(body)))
	r = recvAfter(t, s, extproctest.ResponseHeaders(status, len(body) == 0, rh...))
	if ir := r.GetImmediateResponse(); ir != nil {
		res := immediate(ir)
		res.upstream, res.sent = true, sent
		return res
	}
	res := result{status: status, header: map[string]string{}, body: body, upstream: true, sent: sent}
	for i := 0; i+1 < len(rh); i += 2 {
		res.header[rh[i]] = rh[i+1]
	}
	cr := extproctest.Common(r)
	for _, k := range cr.GetHeaderMutation().GetRemoveHeaders() {
		delete(res.header, k)
	}
	for k, v := range extproctest.SetHeaders(cr.GetHeaderMutation()) {
		res.header[k] = strings.Join(v, ", ")
	}
	if cr.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
		// As Envoy applies it (ProcessorState::handleHeadersResponse).
		res.replaced = true
		if st, err := strconv.Atoi(res.header[":status"]); err == nil {
			res.status = st
		}
		delete(res.header, ":status")
		if bm := cr.GetBodyMutation(); bm != nil {
			res.body = string(bm.GetBody())
			delete(res.header, "content-length")
		}
		if err := s.Finish(); err != nil {
			t.Fatalf("finish: %v", err)
		}
		return res
	}
	if mo := r.GetModeOverride(); mo != nil && mo.GetResponseBodyMode() != procmodev3.ProcessingMode_NONE && len(body) > 0 {
		r = recvAfter(t, s, extproctest.ResponseBody([]byte(body), true))
		if r.GetResponseBody() == nil {
			t.Fatalf("reply to the body: %v", r)
		}
	}
	if err := s.Finish(); err != nil {
		t.Fatalf("finish: %v", err)
	}
	return res
}

func recvAfter(t *testing.T, s *extproctest.Stream, req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	t.Helper()
	if err := s.Send(req); err != nil {
		t.Fatalf("send: %v", err)
	}
	return recv(t, s)
}

func immediate(ir *extprocv3.ImmediateResponse) result {
	res := result{status: int(ir.GetStatus().GetCode()), header: map[string]string{}, body: string(ir.GetBody()), immediate: true}
	for _, o := range ir.GetHeaders().GetSetHeaders() {
		res.header[o.GetHeader().GetKey()] = string(o.GetHeader().GetRawValue())
	}
	return res
}

// fixed answers every request with the same response; the body names the
// tenant the origin saw.
func fixed(status int, header ...string) *origin {
	return &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
		return status, header, "body of " + h["x-tenant-id"]
	}}
}

func TestStage(t *testing.T) {
	const (
		a = "x-tenant-id"
	)
	tests := []struct {
		name   string
		origin *origin
		// reqs are run in order; each is method, path, then header pairs.
		reqs [][]string
		// want checks the last result; wantHits the origin's count.
		wantHits int64
		want     func(t *testing.T, r result)
	}{
		{
			name:   "hit after miss",
			origin: fixed(200, "cache-control", "max-age=60", "content-type", "text/plain"),
			reqs:   [][]string{{"GET", "/a", a, "acme"}, {"GET", "/a", a, "acme"}},
			want: func(t *testing.T, r result) {
				if r.upstream || r.status != 200 || r.body != "body of acme" || r.header["x-cache"] != "HIT-L1" ||
					!strings.Contains(r.header["cache-status"], "sluice; hit") || r.header["age"] == "" {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 1,
		},
		{
			name:   "miss headers",
			origin: fixed(200, "cache-control", "max-age=60"),
			reqs:   [][]string{{"GET", "/a", a, "acme"}},
			want: func(t *testing.T, r result) {
				if !r.upstream || r.header["x-cache"] != "MISS" || r.header["cache-status"] != "sluice; fwd=uri-miss; fwd-status=200; stored" {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 1,
		},
		{
			name:     "tenant isolation",
			origin:   fixed(200, "cache-control", "max-age=60"),
			reqs:     [][]string{{"GET", "/a", a, "acme"}, {"GET", "/a", a, "globex"}},
			want:     func(t *testing.T, r result) { wantBody(t, r, true, "body of globex") },
			wantHits: 2,
		},
		{
			// The ImmediateResponse carries the GET body: Envoy sends none
			// for HEAD, and an empty local reply would lose Content-Type and
			// Content-Length (Utility::prepareLocalReply).
			name:   "HEAD served from the GET entry, its body for Envoy to drop",
			origin: fixed(200, "cache-control", "max-age=60", "content-type", "text/plain"),
			reqs:   [][]string{{"GET", "/a", a, "acme"}, {"HEAD", "/a", a, "acme"}},
			want: func(t *testing.T, r result) {
				if r.upstream || !r.immediate || r.body != "body of acme" || r.header["content-type"] != "text/plain" {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 1,
		},
		{
			name:   "a Range request answered from the stored complete response",
			origin: fixed(200, "cache-control", "max-age=60", "a", "1"),
			reqs:   [][]string{{"GET", "/a", a, "acme"}, {"GET", "/a", a, "acme", "range", "bytes=5-"}},
			want: func(t *testing.T, r result) {
				if r.upstream || r.status != 206 || r.body != "of acme" || r.header["content-range"] != "bytes 5-11/12" || r.header["a"] != "1" {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 1,
		},
		{
			name:   "client conditional answered 304",
			origin: fixed(200, "cache-control", "max-age=60", "etag", `"v1"`),
			reqs:   [][]string{{"GET", "/a", a, "acme"}, {"GET", "/a", a, "acme", "if-none-match", `"v1"`}},
			want: func(t *testing.T, r result) {
				if r.upstream || r.status != 304 || r.body != "" {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 1,
		},
		{
			name: "revalidation with the entry's ETag; 304 freshens",
			origin: &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
				if h["if-none-match"] == `"v1"` {
					return 304, []string{"cache-control", "max-age=60", "etag", `"v1"`}, ""
				}
				return 200, []string{"cache-control", "max-age=60", "etag", `"v1"`}, "full"
			}},
			reqs: [][]string{{"GET", "/a", a, "acme"}, {"GET", "/a", a, "acme", "cache-control", "no-cache"}},
			want: func(t *testing.T, r result) {
				if !r.upstream || r.sent["if-none-match"] != `"v1"` || r.status != 200 || r.body != "full" || r.header["x-cache"] != "REVALIDATED" {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 2,
		},
		{
			name: "Vary selects the variant",
			origin: &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
				return 200, []string{"cache-control", "max-age=60", "vary", "accept-language"}, h["accept-language"]
			}},
			reqs:     [][]string{{"GET", "/a", a, "acme", "accept-language", "en"}, {"GET", "/a", a, "acme", "accept-language", "fr"}, {"GET", "/a", a, "acme", "accept-language", "en"}},
			want:     func(t *testing.T, r result) { wantBody(t, r, false, "en") },
			wantHits: 2,
		},
		{
			// The origin asks for per-user caching with Vary on the field
			// Sluice sets from the identity; variants are keyed on the
			// request as the origin receives it, not as the client sent it.
			name: "Vary: x-sluice-user separates the users of a tenant",
			origin: &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
				return 200, []string{"cache-control", "max-age=60", "vary", "x-sluice-user"}, "for " + h["x-sluice-user"]
			}},
			reqs: [][]string{
				{"GET", "/me", a, "acme", "x-user-id", "u1"},
				{"GET", "/me", a, "acme", "x-user-id", "u2"},
				{"GET", "/me", a, "acme", "x-user-id", "u1"},
			},
			want:     func(t *testing.T, r result) { wantBody(t, r, false, "for u1") },
			wantHits: 2,
		},
		{
			name:     "no-store",
			origin:   fixed(200, "cache-control", "no-store"),
			reqs:     [][]string{{"GET", "/a", a, "acme"}, {"GET", "/a", a, "acme"}},
			want:     func(t *testing.T, r result) { wantBody(t, r, true, "body of acme") },
			wantHits: 2,
		},
		{
			name:     "private",
			origin:   fixed(200, "cache-control", "private, max-age=60"),
			reqs:     [][]string{{"GET", "/a", a, "acme"}, {"GET", "/a", a, "acme"}},
			want:     func(t *testing.T, r result) { wantBody(t, r, true, "body of acme") },
			wantHits: 2,
		},
		{
			name:     "Authorization without public",
			origin:   fixed(200, "cache-control", "max-age=60"),
			reqs:     [][]string{{"GET", "/a", a, "acme", "authorization", "Bearer x"}, {"GET", "/a", a, "acme", "authorization", "Bearer x"}},
			want:     func(t *testing.T, r result) { wantBody(t, r, true, "body of acme") },
			wantHits: 2,
		},
		{
			name:     "Set-Cookie",
			origin:   fixed(200, "cache-control", "max-age=60", "set-cookie", "s=1"),
			reqs:     [][]string{{"GET", "/a", a, "acme"}, {"GET", "/a", a, "acme"}},
			want:     func(t *testing.T, r result) { wantBody(t, r, true, "body of acme") },
			wantHits: 2,
		},
		{
			name:   "only-if-cached miss is a 504",
			origin: fixed(200, "cache-control", "max-age=60"),
			reqs:   [][]string{{"GET", "/a", a, "acme", "cache-control", "only-if-cached"}},
			want: func(t *testing.T, r result) {
				if r.upstream || r.status != 504 {
					t.Errorf("got %+v", r)
				}
			},
		},
		{
			name: "oversize body passes through unstored",
			origin: &origin{respond: func(string, string, map[string]string) (int, []string, string) {
				return 200, []string{"cache-control", "max-age=60"}, strings.Repeat("x", 2048)
			}},
			reqs:     [][]string{{"GET", "/big", a, "acme"}, {"GET", "/big", a, "acme"}},
			want:     func(t *testing.T, r result) { wantBody(t, r, true, strings.Repeat("x", 2048)) },
			wantHits: 2,
		},
		{
			name: "POST invalidates",
			origin: &origin{respond: func(m, _ string, h map[string]string) (int, []string, string) {
				if m == "POST" {
					return 201, nil, "created"
				}
				return 200, []string{"cache-control", "max-age=60"}, "list"
			}},
			reqs:     [][]string{{"GET", "/a", a, "acme"}, {"POST", "/a", a, "acme"}, {"GET", "/a", a, "acme"}},
			want:     func(t *testing.T, r result) { wantBody(t, r, true, "list") },
			wantHits: 3,
		},
		{
			name: "stale-if-error serves the stale entry",
			origin: &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
				if h["x-fail"] != "" {
					return 503, []string{"retry-after", "5", "content-type", "text/html"}, "down"
				}
				return 200, []string{"cache-control", "max-age=1, stale-if-error=600", "etag", `"e"`, "content-type", "text/plain"}, "good"
			}},
			reqs: [][]string{{"GET", "/a", a, "acme"}, {"wait"}, {"GET", "/a", a, "acme", "x-fail", "1"}},
			want: func(t *testing.T, r result) {
				if !r.upstream || !r.replaced || r.status != 200 || r.body != "good" || !strings.Contains(r.header["cache-status"], "fwd-status=503") ||
					r.header["retry-after"] != "" || r.header["content-type"] != "text/plain" {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 2,
		},
		{
			// An answer made at the response headers is a mutation of the
			// upstream response, so that it travels the encoder filters; the
			// ratelimit filter's fields stay on it.
			name: "the revalidated answer replaces the upstream 304, keeping RateLimit",
			origin: &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
				if h["if-none-match"] == `"v1"` {
					return 304, []string{"cache-control", "max-age=60", "etag", `"v1"`, "ratelimit", `"t";r=9;t=1`}, ""
				}
				return 200, []string{"cache-control", "max-age=60", "etag", `"v1"`, "content-type", "text/plain"}, "full"
			}},
			reqs: [][]string{{"GET", "/a", a, "acme"}, {"GET", "/a", a, "acme", "cache-control", "no-cache"}},
			want: func(t *testing.T, r result) {
				if !r.replaced || r.immediate || r.status != 200 || r.body != "full" || r.header["content-type"] != "text/plain" ||
					r.header["ratelimit"] != `"t";r=9;t=1` || r.header["x-cache"] != "REVALIDATED" {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 2,
		},
		{
			name: "a revalidated HEAD keeps the entry's Content-Length",
			origin: &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
				if h["if-none-match"] == `"v1"` {
					return 304, []string{"cache-control", "max-age=60", "etag", `"v1"`}, ""
				}
				return 200, []string{"cache-control", "max-age=60", "etag", `"v1"`, "content-type", "text/plain"}, "full"
			}},
			reqs: [][]string{{"GET", "/a", a, "acme"}, {"HEAD", "/a", a, "acme", "cache-control", "no-cache"}},
			want: func(t *testing.T, r result) {
				if !r.replaced || r.status != 200 || r.body != "" || r.header["content-length"] != "4" || r.header["content-type"] != "text/plain" {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 2,
		},
		{
			// RFC 9111 §4.2.4: a disconnected cache may serve stale.
			name: "origin unreachable: the stale entry, without stale-if-error",
			origin: &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
				if h["x-fail"] != "" {
					return 0, nil, ""
				}
				return 200, []string{"cache-control", "max-age=1", "content-type", "text/plain"}, "good"
			}},
			reqs: [][]string{{"GET", "/a", a, "acme"}, {"wait"}, {"GET", "/a", a, "acme", "x-fail", "1"}},
			want: func(t *testing.T, r result) {
				if !r.replaced || r.status != 200 || r.body != "good" || !strings.HasPrefix(r.header["x-cache"], "STALE") ||
					!strings.Contains(r.header["cache-status"], `fwd=stale; ttl=-4; detail="origin unreachable"`) {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 2,
		},
		{
			name: "origin unreachable: a must-revalidate entry is not served stale",
			origin: &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
				if h["x-fail"] != "" {
					return 0, nil, ""
				}
				return 200, []string{"cache-control", "max-age=1, must-revalidate", "etag", `"e"`}, "good"
			}},
			reqs: [][]string{{"GET", "/a", a, "acme"}, {"wait"}, {"GET", "/a", a, "acme", "x-fail", "1"}},
			want: func(t *testing.T, r result) {
				if r.replaced || r.status != 503 {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 2,
		},
		{
			name: "the origin's own 503 is not a disconnection",
			origin: &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
				if h["x-fail"] != "" {
					return 503, nil, "busy"
				}
				return 200, []string{"cache-control", "max-age=1"}, "good"
			}},
			reqs: [][]string{{"GET", "/a", a, "acme"}, {"wait"}, {"GET", "/a", a, "acme", "x-fail", "1"}},
			want: func(t *testing.T, r result) {
				if r.replaced || r.status != 503 || r.body != "busy" {
					t.Errorf("got %+v", r)
				}
			},
			wantHits: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newStageEnv(t, cachefilter.Config{Routes: []cachefilter.RouteConfig{{Name: "big", Prefix: "/big", MaxObjectBytes: 1024}}})
			var r result
			for _, q := range tt.reqs {
				if q[0] == "wait" {
					env.clk.Advance(5 * time.Second)
					continue
				}
				r = env.do(t, tt.origin, q[0], q[1], q[2:]...)
			}
			tt.want(t, r)
			if got := tt.origin.hits.Load(); got != tt.wantHits {
				t.Errorf("origin hits %d, want %d", got, tt.wantHits)
			}
		})
	}
}

func wantBody(t *testing.T, r result, upstream bool, body string) {
	t.Helper()
	if r.upstream != upstream || r.body != body {
		t.Errorf("upstream %v body %.40q, want %v %.40q (%+v)", r.upstream, r.body, upstream, body, r.header)
	}
}

// TestStageCollapse: concurrent misses of one key reach the origin once.
func TestStageCollapse(t *testing.T) {
	env := newStageEnv(t, cachefilter.Config{})
	release := make(chan struct{})
	o := &origin{respond: func(string, string, map[string]string) (int, []string, string) {
		<-release
		return 200, []string{"cache-control", "max-age=60"}, "one"
	}}
	const n = 20
	var wg sync.WaitGroup
	results := make([]result, n)
	for i := range n {
		wg.Go(func() { results[i] = env.do(t, o, "GET", "/c", "x-tenant-id", "acme") })
	}
	// Let every request join before the leader's origin call returns.
	waitFor(t, 5*time.Second, "the leader", func() bool { return o.hits.Load() == 1 })
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	if got := o.hits.Load(); got != 1 {
		t.Errorf("origin hits %d, want 1", got)
	}
	for i, r := range results {
		if r.body != "one" {
			t.Errorf("result %d: %+v", i, r)
		}
	}
}

// TestStageStaleWhileRevalidate (RFC 5861 §3): within the
// stale-while-revalidate window one request refreshes the entry upstream
// (conditionally, with the stored ETag) while the others are answered from
// the stale entry at once; afterwards the refreshed entry is fresh again.
func TestStageStaleWhileRevalidate(t *testing.T) {
	env := newStageEnv(t, cachefilter.Config{})
	o := &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
		return 200, []string{"cache-control", "max-age=1, stale-while-revalidate=600", "etag", `"v1"`}, "v1 body"
	}}
	if r := env.do(t, o, "GET", "/swr", "x-tenant-id", "acme"); !r.upstream {
		t.Fatalf("first request: %+v", r)
	}
	env.clk.Advance(5 * time.Second) // stale, inside the window

	// The refresher: its request headers go upstream with the validator.
	s := extproctest.Open(t, env.conn)
	r := recvAfter(t, s, extproctest.RequestHeaders("GET", "/swr", true, "x-tenant-id", "acme"))
	if r.GetImmediateResponse() != nil {
		t.Fatalf("the refresher was answered from cache: %v", r)
	}
	if got := extproctest.SetHeaders(extproctest.Mutation(r))["if-none-match"]; len(got) != 1 || got[0] != `"v1"` {
		t.Fatalf("refresh is not conditional: if-none-match %q", got)
	}

	// Meanwhile another request gets the stale entry without the origin.
	other := env.do(t, o, "GET", "/swr", "x-tenant-id", "acme")
	if other.upstream || other.body != "v1 body" || !strings.HasPrefix(other.header["x-cache"], "STALE") {
		t.Fatalf("concurrent request during the refresh: %+v", other)
	}

	// The origin answers the refresh with 304; the entry is fresh again.
	r = recvAfter(t, s, extproctest.ResponseHeaders(304, true, "cache-control", "max-age=60, stale-while-revalidate=600", "etag", `"v1"`))
	if cr := extproctest.Common(r); cr.GetStatus() != extprocv3.CommonResponse_CONTINUE_AND_REPLACE ||
		string(cr.GetBodyMutation().GetBody()) != "v1 body" || extproctest.SetHeaders(cr.GetHeaderMutation())[":status"][0] != "200" {
		t.Fatalf("refresher's 304 was not turned into the stored response: %v", r)
	}
	_ = s.Finish()
	after := env.do(t, o, "GET", "/swr", "x-tenant-id", "acme")
	if after.upstream || !strings.HasPrefix(after.header["x-cache"], "HIT") {
		t.Fatalf("after the refresh: %+v", after)
	}
	if got := o.hits.Load(); got != 1 {
		t.Errorf("origin saw %d full requests, want 1 (the refresh was answered by the test as a 304)", got)
	}
}

// TestStageNoContent: a 204 with explicit freshness is stored when its
// headers arrive, as no body message follows them (RFC 9110 §15.3.5;
// cache-tests status-204-fresh), whether or not it has Content-Length.
func TestStageNoContent(t *testing.T) {
	env := newStageEnv(t, cachefilter.Config{})
	s := extproctest.Open(t, env.conn)
	if r := recvAfter(t, s, extproctest.RequestHeaders("GET", "/n", true, "x-tenant-id", "acme")); r.GetImmediateResponse() != nil {
		t.Fatalf("first request answered locally: %v", r)
	}
	r := recvAfter(t, s, extproctest.ResponseHeaders(204, true, "cache-control", "max-age=60"))
	if got := extproctest.SetHeaders(extproctest.Mutation(r))["cache-status"]; len(got) != 1 || !strings.Contains(got[0], "stored") {
		t.Fatalf("204 not stored: cache-status %q (%v)", got, r)
	}
	if r.GetModeOverride().GetResponseBodyMode() != procmodev3.ProcessingMode_NONE {
		t.Errorf("asked for the body of a 204: %v", r.GetModeOverride())
	}
	if err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	o := fixed(200, "cache-control", "max-age=60")
	if got := env.do(t, o, "GET", "/n", "x-tenant-id", "acme"); got.upstream || got.status != 204 || got.body != "" || !strings.HasPrefix(got.header["x-cache"], "HIT") {
		t.Fatalf("second request: %+v", got)
	}
}

// TestStageRevalidationMismatch: a 304 to Sluice's validation that names
// another validator must not update the entry (RFC 9111 §4.3.4), and the
// client, whose request was not conditional, gets the stored 200 rather
// than the 304 (RFC 9110 §15.4.5; cache-tests 304-etag-update-response-ETag).
// Its own conditional is still answered from the entry.
func TestStageRevalidationMismatch(t *testing.T) {
	env := newStageEnv(t, cachefilter.Config{})
	o := &origin{respond: func(_, _ string, h map[string]string) (int, []string, string) {
		if h["if-none-match"] != "" {
			return 304, []string{"cache-control", "max-age=60", "etag", `"other"`, "x-new", "1"}, ""
		}
		return 200, []string{"cache-control", "max-age=1", "etag", `"v1"`}, "v1 body"
	}}
	env.do(t, o, "GET", "/m", "x-tenant-id", "acme")
	env.clk.Advance(5 * time.Second)
	r := env.do(t, o, "GET", "/m", "x-tenant-id", "acme")
	if !r.upstream || r.sent["if-none-match"] != `"v1"` || r.status != 200 || r.body != "v1 body" ||
		r.header["etag"] != `"v1"` || r.header["x-new"] != "" || r.header["x-cache"] != "REVALIDATED" ||
		strings.Contains(r.header["cache-status"], "stored") {
		t.Fatalf("after a 304 for another validator: %+v", r)
	}
	r = env.do(t, o, "GET", "/m", "x-tenant-id", "acme", "if-none-match", `"v1"`)
	if !r.upstream || r.status != 304 || r.body != "" {
		t.Fatalf("the client's own conditional: %+v", r)
	}
	if got := o.hits.Load(); got != 3 {
		t.Errorf("origin hits %d, want 3 (the entry stays stale)", got)
	}
}
