package devstack_test

// The hostile-traffic suite of issue #14: each test is an attack reproduced
// against the dev stack with the shipped configs (envoy/envoy.yaml,
// config/ratelimit/tiers.yaml), clients dialling from distinct loopback
// addresses (127.0.0.x) so that per-address limits are what production
// sees. docs/reliability.md lists each attack with its result.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/envoy/envoytest"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/devstack"
)

// from is an HTTP client whose connections leave from ip (127.0.0.x).
type from struct {
	ip     string
	client *http.Client
}

func (s *stack) from(t *testing.T, ip string) *from {
	t.Helper()
	tr := &http.Transport{
		DialContext:        (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}).DialContext,
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &from{ip: ip, client: &http.Client{Timeout: 10 * time.Second, Transport: tr}}
}

func (c *from) do(t *testing.T, method, url, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s from %s: %v", method, url, c.ip, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// batchOf is a batch of n GETs of distinct paths under prefix, each asking
// the origin (no-cache), so that every item is rate limited.
func batchOf(prefix string, n int) string {
	var items []string
	for i := range n {
		items = append(items, fmt.Sprintf(`{"id":"%d","method":"GET","url":"/api/v1/%s/%d","headers":{"cache-control":"no-cache"}}`, i, prefix, i))
	}
	return `{"requests":[` + strings.Join(items, ",") + `]}`
}

func (c *from) batch(t *testing.T, s *stack, body string, hdr ...string) batchResponse {
	t.Helper()
	resp, b := c.do(t, "POST", s.URL()+"/api/v1/batch", body, append([]string{"content-type", "application/json"}, hdr...)...)
	var out batchResponse
	if err := json.Unmarshal([]byte(b), &out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("batch from %s: %d %q", c.ip, resp.StatusCode, b)
	}
	return out
}

func statuses(out batchResponse) map[int]int {
	n := map[int]int{}
	for _, r := range out.Responses {
		n[r.Status]++
	}
	return n
}

// decisions counts a batch's items by status, only those Sluice's rate
// limit service decided (a RateLimit-Policy header): an item let through
// because the ratelimit filter's 20 ms budget ran out on a loaded machine
// proves nothing either way; undecided counts the others.
func decisions(out batchResponse) (byStatus map[int]int, undecided int) {
	byStatus = map[int]int{}
	for _, r := range out.Responses {
		if r.Headers["ratelimit-policy"] == "" {
			undecided++
			continue
		}
		byStatus[r.Status]++
	}
	return byStatus, undecided
}

// TestHostileBatchItemsLimitedAsTheirClient: batch items re-enter Envoy
// from Sluice's socket, so before the internal listener they were all
// limited as Sluice's own address: an anonymous client over its limit got
// 20×200 through a batch, and fresh clients got 20×429 for a bucket others
// had filled. Now every item is limited as the client that sent the batch
// (anonymous: 60 per minute per address), and the origin sees that client.
func TestHostileBatchItemsLimitedAsTheirClient(t *testing.T) {
	s := start(t, echo(t).URL, true, demoPolicy)
	filler, fresh := s.from(t, "127.0.0.31"), s.from(t, "127.0.0.32")

	// The filler spends its whole anonymous quota on items, 20 at a time,
	// until an item is refused. Whatever failed open, no more than its 60
	// per minute may be decided OK.
	allowed, refusedAt := 0, -1
	for i := 0; i < 8 && refusedAt < 0; i++ {
		got, _ := decisions(filler.batch(t, s, batchOf(fmt.Sprintf("fill%d", i), 20)))
		allowed += got[200]
		if got[429] > 0 {
			refusedAt = i
		}
	}
	if allowed > 60 || refusedAt < 0 {
		t.Fatalf("the filler's items: %d allowed, refused from batch %d; want at most its 60 per minute, then refusals", allowed, refusedAt)
	}
	// Over its limit, its items are refused like its direct calls.
	if got, undecided := decisions(filler.batch(t, s, batchOf("over", 20))); got[200] > 0 || got[429]+undecided != 20 {
		t.Errorf("filler over its limit: decided item statuses %v (%d undecided); want every decided item 429", got, undecided)
	}
	if resp, _ := filler.do(t, "GET", s.URL()+"/api/v1/direct", "", "cache-control", "no-cache"); decided(resp) && resp.StatusCode != 429 {
		t.Errorf("filler direct call: %d; want 429", resp.StatusCode)
	}
	// A fresh client is not charged for what the filler did.
	out := fresh.batch(t, s, batchOf("fresh", 20), "x-forwarded-for", "203.0.113.50")
	if got, undecided := decisions(out); got[429] > 0 || undecided == 20 {
		t.Fatalf("fresh client's batch: decided item statuses %v (%d undecided); want its items allowed", got, undecided)
	}
	// The origin sees the fresh client: the same XFF and external address
	// as on its direct call, and none of Sluice's headers but the ones ext_proc sets.
	_, direct := fresh.do(t, "GET", s.URL()+"/api/v1/direct", "", "x-forwarded-for", "203.0.113.50")
	want := upstreamSaw(t, direct)
	var item http.Header
	if err := json.Unmarshal(out.Responses[0].Body, &item); err != nil {
		t.Fatalf("item body %s: %v", out.Responses[0].Body, err)
	}
	for _, h := range []string{"X-Forwarded-For", "X-Envoy-External-Address", "X-Forwarded-Proto"} {
		if got, w := item.Get(h), want.Get(h); got != w || w == "" {
			t.Errorf("origin saw %s %q on an item, %q on a direct call", h, got, w)
		}
	}
	if got := item.Get("X-Envoy-External-Address"); got != fresh.ip {
		t.Errorf("origin saw the item's client as %q; want %s", got, fresh.ip)
	}
	for _, h := range []string{"X-Sluice-Batch", "X-Sluice-Client-Address", "X-Sluice-Warm"} {
		if v := item.Get(h); v != "" {
			t.Errorf("origin saw %s: %q", h, v)
		}
	}
}

// decided reports whether Sluice's rate limit service answered for this
// response (its RateLimit-Policy header): a 200 without one was let through
// because the ratelimit filter's 20 ms budget ran out on a loaded machine,
// which proves nothing either way.
func decided(resp *http.Response) bool { return resp.Header.Get("Ratelimit-Policy") != "" }

// TestHostileSameUserInTwoTenants: user ids are a tenant's own, so the
// per-user limits are keyed (tier, tenant, user). They were (tier, user):
// tenant initech's "admin" used up tenant hooli's "admin" (both free: 5 per
// second per user).
func TestHostileSameUserInTwoTenants(t *testing.T) {
	s := start(t, echo(t).URL, true, demoPolicy)
	c := s.from(t, "127.0.0.33")
	for round := 1; ; round++ {
		limited, undecided := 0, 0
		for range 8 {
			resp, _ := c.do(t, "GET", s.URL()+fmt.Sprintf("/api/v1/r%d", round), "", "x-tenant-id", "initech", "x-user-id", "admin")
			switch {
			case resp.StatusCode == 429:
				limited++
			case !decided(resp):
				undecided++
			}
		}
		resp, body := c.do(t, "GET", s.URL()+"/api/v1/other", "", "x-tenant-id", "hooli", "x-user-id", "admin")
		if resp.StatusCode == 429 {
			t.Fatalf("hooli's admin refused after initech's admin spent its quota: %s %s", resp.Header.Get("Ratelimit-Policy"), body)
		}
		if limited > 0 && decided(resp) {
			if !strings.Contains(resp.Header.Get("Ratelimit-Policy"), "free_user_burst") {
				t.Errorf("hooli's admin: RateLimit-Policy %q; want its own user limit", resp.Header.Get("Ratelimit-Policy"))
			}
			return
		}
		if round == 5 {
			t.Fatalf("initech's admin was never limited in 5 rounds of 8 (last: %d undecided)", undecided)
		}
		t.Logf("round %d: %d limited, %d undecided; again", round, limited, undecided)
		time.Sleep(1100 * time.Millisecond)
	}
}

// heldOrigin answers /api/v1/hold only when released (or its request
// ends), everything else at once with the headers it received.
type heldOrigin struct {
	release chan struct{}
	held    chan struct{}
}

func newHeldOrigin(t *testing.T) (*heldOrigin, string) {
	t.Helper()
	o := &heldOrigin{release: make(chan struct{}), held: make(chan struct{}, 64)}
	srv := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/v1/hold") {
			o.held <- struct{}{}
			select {
			case <-o.release:
			case <-r.Context().Done():
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(func() {
		select {
		case <-o.release:
		default:
			close(o.release)
		}
	})
	return o, srv
}

// TestHostileSaturatedExtProc: with every ext_proc stream taken
// (extproc.max_streams), Envoy lets further requests through without
// Sluice (failure_mode_allow). Every descriptor needed a header ext_proc
// sets, so 30 requests of a free tenant all got 200. The per-address
// descriptors need nothing from ext_proc: an address sending requests
// ext_proc did not identify gets 10 per second.
func TestHostileSaturatedExtProc(t *testing.T) {
	origin, url := newHeldOrigin(t)
	s := start(t, url, true, func(c *config.Config) { demoPolicy(c); c.ExtProc.MaxStreams = 3 })
	holder := s.from(t, "127.0.0.34")
	// Three requests wait at the origin, each holding its ext_proc stream
	// (Sluice waits for the response headers).
	done := make(chan struct{}, 3)
	for i := range 3 {
		go func() {
			defer func() { done <- struct{}{} }()
			// Three URLs: one URL's misses would collapse onto one request.
			req, _ := http.NewRequest("GET", s.URL()+"/api/v1/hold/"+strconv.Itoa(i), nil)
			req.Header.Set("x-tenant-id", "acme")
			if resp, err := holder.client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	for range 3 {
		select {
		case <-origin.held:
		case <-time.After(5 * time.Second):
			t.Fatal("the holding requests never reached the origin")
		}
	}
	// Rounds from fresh addresses until one is decided: on a loaded machine
	// the ratelimit filter's own 20 ms budget can run out too (it then also
	// fails open), which proves nothing.
	var sawSluice []string
	for round := 1; ; round++ {
		attacker := s.from(t, fmt.Sprintf("127.0.0.%d", 40+round))
		start := time.Now()
		allowed, limited, undecided := 0, 0, 0
		for i := range 30 {
			resp, body := attacker.do(t, "GET", s.URL()+fmt.Sprintf("/api/v1/r%dx%d", round, i), "",
				"x-tenant-id", "initech", "x-sluice-tier", "enterprise", "x-sluice-tenant", "umbrella", "x-sluice-cost", "0")
			switch {
			case resp.StatusCode == 429:
				limited++
			case resp.StatusCode != 200:
				t.Fatalf("status %d", resp.StatusCode)
			case !decided(resp):
				undecided++
			default:
				allowed++
			}
			if resp.StatusCode == 200 {
				for name := range upstreamSaw(t, body) {
					if strings.HasPrefix(strings.ToLower(name), "x-sluice-") {
						sawSluice = append(sawSluice, name)
					}
				}
			}
		}
		elapsed := time.Since(start)
		if allowed > 10*(int(elapsed/time.Second)+1) {
			t.Fatalf("30 requests ext_proc could not take (%v): %d allowed by the rate limit service; want at most 10 per second", elapsed, allowed)
		}
		if limited > 0 {
			break
		}
		if round == 5 {
			t.Fatalf("5 rounds of 30 requests ext_proc could not take: none refused (last round %d allowed, %d undecided)", allowed, undecided)
		}
		t.Logf("round %d: %d allowed, %d undecided; again", round, allowed, undecided)
	}
	close(origin.release)
	for range 3 {
		<-done
	}
	if len(sawSluice) > 0 {
		t.Errorf("the origin saw the client's %v without ext_proc", sawSluice)
	}
	// Counted as refusals by Sluice (the streams past max_streams).
	if got := metricValue(t, s, `sluice_extproc_streams_total{result="overloaded"}`); got < 20 {
		t.Errorf("overloaded streams %v; want the attacker's", got)
	}
}

// TestHostileSlowBody: a client that sends 2 of the 100 bytes it announced
// for a batch held Sluice's ext_proc stream (Envoy buffers the whole body
// before sending it) as long as it liked. Sluice now answers 408 after
// extproc.request_body_timeout and frees the stream.
func TestHostileSlowBody(t *testing.T) {
	s := start(t, echo(t).URL, true, func(c *config.Config) { demoPolicy(c); c.ExtProc.RequestBodyTimeout = 300 * time.Millisecond })
	addr := strings.TrimPrefix(s.URL(), "http://")
	conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.36")}, Timeout: 5 * time.Second}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, _ = io.WriteString(conn, "POST /api/v1/batch HTTP/1.1\r\nHost: api\r\nx-tenant-id: acme\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"")
	resp, err := http.ReadResponse(bufioReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to the trickled body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || time.Since(start) > 5*time.Second {
		t.Fatalf("status %d %q after %v; want 408 after the 300ms body timeout", resp.StatusCode, b, time.Since(start))
	}
	waitMetric(t, s, `sluice_extproc_streams_total{result="body_timeout"}`, 1)
	waitMetric(t, s, `sluice_extproc_streams_open`, 0)
}

// TestHostileBatchPathVariants: the batch stage answered
// POST /api/v1/batch/ and /API/V1/BATCH, which missed the exact-match route
// and so went to the app's route (where ext_proc fails open). Envoy now
// normalises the path (normalize_path, merge_slashes) and the batch route
// matches what the stage does: every spelling is a batch, answered by
// Sluice, and the app never sees one.
func TestHostileBatchPathVariants(t *testing.T) {
	var (
		mu     sync.Mutex // guards origin
		origin []string
	)
	url := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		origin = append(origin, r.Method+" "+r.RequestURI)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}))
	s := start(t, url, true, demoPolicy)
	c := s.from(t, "127.0.0.37")
	body := `{"requests":[{"id":"1","method":"GET","url":"/api/v1/item"}]}`
	for _, p := range []string{
		"/api/v1/batch", "/api/v1/batch/", "/API/V1/BATCH", "/Api/V1/Batch/", "//api/v1/batch", "/api//v1///batch",
		"/api/v1/./batch", "/api/x/../v1/batch", "/api/v1/%62atch", "/api/v1/%62%61tch/?q=1", "/api/v1/batch;x/..;/batch",
	} {
		resp, b := c.do(t, "POST", s.URL()+p, body, "x-tenant-id", "acme", "content-type", "application/json")
		var out batchResponse
		if err := json.Unmarshal([]byte(b), &out); resp.StatusCode != 200 || err != nil || len(out.Responses) != 1 {
			t.Errorf("POST %s: %d %q; want a batch reply", p, resp.StatusCode, b)
		}
	}
	mu.Lock()
	for _, r := range origin {
		if !strings.HasPrefix(r, "GET /api/v1/item") {
			t.Errorf("the app received %q", r)
		}
	}
	mu.Unlock()
	// Not a spelling of the batch path: an ordinary request for the app.
	if resp, _ := c.do(t, "POST", s.URL()+"/api/v1/batchx", body, "x-tenant-id", "acme"); resp.StatusCode != 200 {
		t.Errorf("/api/v1/batchx: %d; want the app's answer", resp.StatusCode)
	}
	mu.Lock()
	if last := origin[len(origin)-1]; last != "POST /api/v1/batchx" {
		t.Errorf("the app's last request %q; want POST /api/v1/batchx", last)
	}
	mu.Unlock()
}

// TestHostileSpoofedSluiceHeaders: every x-sluice-* header is Sluice's.
// Clients' copies are stripped by Envoy (internal_only_headers, the ones
// Sluice uses) and by ext_proc (any name with the prefix); x-sluice-batch
// and x-sluice-warm used to reach the origin, and a client could name
// another address in x-sluice-client-address.
func TestHostileSpoofedSluiceHeaders(t *testing.T) {
	s := start(t, echo(t).URL, true, demoPolicy)
	spoof := []string{
		"x-sluice-tenant", "umbrella", "x-sluice-tier", "enterprise", "x-sluice-user", "root", "x-sluice-cost", "0",
		"x-sluice-batch", "1", "x-sluice-warm", "1", "x-sluice-client-address", "127.0.0.99",
		"x-sluice-debug", "1", "X-SLUICE-ANYTHING", "x",
	}
	c := s.from(t, "127.0.0.38")
	resp, body := c.do(t, "GET", s.URL()+"/api/v1/spoof", "", append([]string{"x-tenant-id", "initech"}, spoof...)...)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	want := map[string]string{"X-Sluice-Tenant": "initech", "X-Sluice-Tier": "free", "X-Sluice-Cost": "1"}
	for name, vs := range upstreamSaw(t, body) {
		if !strings.HasPrefix(strings.ToLower(name), "x-sluice-") {
			continue
		}
		if w, ok := want[name]; !ok || len(vs) != 1 || vs[0] != w {
			t.Errorf("origin saw %s: %q", name, vs)
		}
	}
	// The address a client names is not the address it is limited as:
	// anonymous, 60 per minute per address.
	anon := s.from(t, "127.0.0.39")
	allowed, refused := 0, 0
	for i := 0; i < 90 && refused == 0; i++ {
		resp, _ := anon.do(t, "GET", s.URL()+fmt.Sprintf("/api/v1/a%d", i), "", "x-sluice-client-address", "127.0.0.99")
		switch {
		case resp.StatusCode == 429:
			refused++
		case decided(resp):
			allowed++
		}
	}
	if refused == 0 || allowed > 60 {
		t.Errorf("anonymous requests from one address naming another: %d allowed, %d refused; want at most 60, then refusals", allowed, refused)
	}
	if resp, _ := s.from(t, "127.0.0.99").do(t, "GET", s.URL()+"/api/v1/fresh", ""); resp.StatusCode == 429 {
		t.Errorf("the named address was charged: %d", resp.StatusCode)
	}
}

func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// metricValue reads one series (name and labels exactly as exported) from
// the admin port's /metrics; 0 when absent.
func metricValue(t *testing.T, s *stack, series string) float64 {
	t.Helper()
	resp, err := s.client.Get(s.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// waitMetric polls until series equals want: streams are counted when they
// end, which can be just after the client has its response.
func waitMetric(t *testing.T, s *stack, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := metricValue(t, s, series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v; want %v", series, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHostileJWTIdentity: with identity.source jwt_metadata, the tenant and
// user come from a token Envoy's jwt_authn verified (forwarded to Sluice as
// dynamic metadata, metadata_options), never from a header a client sets;
// a forged token is refused before Sluice's request path; batch items are
// their sender's tenant.
func TestHostileJWTIdentity(t *testing.T) {
	iss := envoytest.NewIssuer(t)
	s := startWith(t, devstack.Options{Upstream: echo(t).URL, RedisSet: true, EnvoyConfig: envoytest.WithJWT(t, iss)}, func(c *config.Config) {
		demoPolicy(c)
		c.ExtProc.Identity.Source = extproc.SourceJWTMetadata
		c.ExtProc.Identity.JWTMetadata.TenantClaim = "jwt_payload.tenant"
		c.ExtProc.Identity.JWTMetadata.UserClaim = "jwt_payload.sub"
	})
	c := s.from(t, "127.0.0.40")
	exp := time.Now().Add(5 * time.Minute).Unix()
	token := "Bearer " + iss.Sign(t, map[string]any{"tenant": "initech", "sub": "alice", "exp": exp})
	identity := func(body string) (tenant, tier, user string) {
		h := upstreamSaw(t, body)
		return h.Get("X-Sluice-Tenant"), h.Get("X-Sluice-Tier"), h.Get("X-Sluice-User")
	}
	tests := []struct {
		name                           string
		hdr                            []string
		wantStatus                     int
		wantTenant, wantTier, wantUser string
	}{
		{"verified token", []string{"authorization", token}, 200, "initech", "free", "alice"},
		{"a tenant header beside the token is ignored", []string{"authorization", token, "x-tenant-id", "umbrella", "x-user-id", "root"}, 200, "initech", "free", "alice"},
		{"a tenant header without a token is ignored", []string{"x-tenant-id", "umbrella"}, 200, "anonymous", "anonymous", ""},
		{"a token signed by another key", []string{"authorization", "Bearer " + envoytest.NewIssuer(t).Sign(t, map[string]any{"tenant": "umbrella", "sub": "root", "exp": exp})}, 401, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := c.do(t, "GET", s.URL()+"/api/v1/me", "", tt.hdr...)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d %q; want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				return
			}
			if tenant, tier, user := identity(body); tenant != tt.wantTenant || tier != tt.wantTier || user != tt.wantUser {
				t.Errorf("origin saw %q/%q/%q; want %q/%q/%q", tenant, tier, user, tt.wantTenant, tt.wantTier, tt.wantUser)
			}
		})
	}
	// The refusal ran through ext_proc's response path (a response-only stream).
	waitMetric(t, s, `sluice_extproc_streams_total{result="response_only"}`, 1)

	// Batch items carry the sender's token and are its tenant's requests.
	out := c.batch(t, s, `{"requests":[{"id":"1","method":"GET","url":"/api/v1/me"}]}`, "authorization", token)
	var item http.Header
	if err := json.Unmarshal(out.Responses[0].Body, &item); err != nil || out.Responses[0].Status != 200 {
		t.Fatalf("item %d %s: %v", out.Responses[0].Status, out.Responses[0].Body, err)
	}
	if item.Get("X-Sluice-Tenant") != "initech" || item.Get("X-Sluice-User") != "alice" {
		t.Errorf("batch item seen as %q/%q; want initech/alice", item.Get("X-Sluice-Tenant"), item.Get("X-Sluice-User"))
	}
}

// TestHostileManyHeaders: Envoy's codec takes up to max_headers_count (100)
// header lines and refuses more with 431; ext_proc's mutation must keep the
// map within the same limit (pseudo-headers and the fields Envoy adds
// count), or Envoy answers 500. A client sending 90 to 100 lines got that
// 500 for the x-sluice-* fields Sluice adds; now each size gets a 200 or a
// 431, never a 5xx.
func TestHostileManyHeaders(t *testing.T) {
	s := start(t, echo(t).URL, true, demoPolicy)
	for i, lines := range []int{60, 90, 95, 100, 101, 5000} {
		t.Run(strconv.Itoa(lines), func(t *testing.T) {
			c := s.from(t, fmt.Sprintf("127.0.0.%d", 60+i))
			hdr := []string{"x-tenant-id", "acme", "cache-control", "no-cache"}
			for j := 0; len(hdr)/2 < lines-1; j++ { // Host is the last line
				hdr = append(hdr, fmt.Sprintf("x-h%d", j), "v")
			}
			resp, body := c.do(t, "GET", s.URL()+"/api/v1/many-headers", "", hdr...)
			switch {
			case resp.StatusCode >= 500:
				t.Fatalf("%d header lines: %d %q", lines, resp.StatusCode, body)
			case lines <= 60 && resp.StatusCode != 200:
				t.Errorf("%d header lines: %d; want 200", lines, resp.StatusCode)
			case lines > 100 && resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge:
				t.Errorf("%d header lines: %d; want 431", lines, resp.StatusCode)
			case resp.StatusCode != 200 && resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge:
				t.Errorf("%d header lines: %d; want 200 or 431", lines, resp.StatusCode)
			}
		})
	}
}

// TestHostileFloodKeepsLimits: one anonymous address (60 requests a
// minute) floods sluice dev with 64
// concurrent uncached requests. In one process on shared cores the flood
// starved the rate limit call past the ratelimit filter's 20 ms timeout and
// its own Redis budget, and both fail open: about one request in ten went
// through undecided (1,068 of 10,000 against the sluice binary; 2,906 of
// 3,000 here, under the race detector). Now the limit's own 60 are the bulk
// of what passes.
func TestHostileFloodKeepsLimits(t *testing.T) {
	// The machine's Redis: under the race detector the embedded server's
	// Lua runs too slowly for any budget (measured with the sluice binary
	// instead, docs/reliability.md).
	// Sluice's own Redis budget as sluice dev sets it for its embedded Redis.
	s := start(t, echo(t).URL, true, func(c *config.Config) { demoPolicy(c); c.RateLimit.Timeout = 100 * time.Millisecond })
	tr := &http.Transport{
		DialContext:         (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.71")}, Timeout: 5 * time.Second}).DialContext,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 64,
	}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	const n, workers = 3000, 64
	var mu sync.Mutex
	byKind := map[string]int{}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				req, _ := http.NewRequest("GET", s.URL()+fmt.Sprintf("/api/v1/flood/%d", i), nil)
				req.Header.Set("cache-control", "no-cache")
				kind := "error"
				if resp, err := client.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					kind = strconv.Itoa(resp.StatusCode)
					if resp.StatusCode != 429 && !decided(resp) {
						kind += " undecided"
					}
				}
				mu.Lock()
				byKind[kind]++
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	passed := 0
	for k, v := range byKind {
		if k != "429" {
			passed += v
		}
	}
	t.Logf("%d requests from one address: %v; Sluice failed open %v times, ext_proc streams %v, %v",
		n, byKind, metricValue(t, s, `sluice_ratelimit_degraded_total{domain="sluice",mode="fail_open"}`),
		metricValue(t, s, `sluice_extproc_streams_total{result="ok"}`), metricValue(t, s, `sluice_extproc_streams_total{result="cancelled"}`))
	if passed > 150 { // before: 2,906 under -race
		t.Errorf("%d of %d flood requests passed (%v); the limit is 60 a minute", passed, n, byKind)
	}
}

// TestOriginWithManyResponseHeaders: an origin answers with close to Envoy's
// header count limit (max_headers_count, 100, which the response header map
// carries too: MutationUtils::headerMutationResultCheck). Sluice's own
// additions (cache-status, x-cache) must never push the map past it, which
// Envoy answers with a 500 for a response the origin sent correctly.
func TestOriginWithManyResponseHeaders(t *testing.T) {
	for _, n := range []int{90, 96, 97, 98, 99, 100} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// Go's server adds Date, Content-Length and Content-Type: n lines in all.
				w.Header().Set("Cache-Control", r.URL.Query().Get("cc"))
				w.Header().Set("ETag", `"e"`)
				for j := 0; j < n-5; j++ {
					w.Header().Set(fmt.Sprintf("x-o%d", j), "v")
				}
				if r.Header.Get("If-None-Match") == `"e"` {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				fmt.Fprint(w, "body")
			}))
			t.Cleanup(origin.Close)
			s := start(t, origin.URL, true, demoPolicy)
			c := s.from(t, "127.0.0.80")
			// no-store passes, max-age=60's second request is a hit and
			// no-cache's is a revalidation the origin answers 304.
			for _, cc := range []string{"no-store", "max-age=60", "no-cache"} {
				for round := range 2 {
					resp, body := c.do(t, "GET", s.URL()+"/api/v1/many-response-headers?cc="+cc, "", "x-tenant-id", "acme")
					if resp.StatusCode != 200 || body != "body" || resp.Header.Get(fmt.Sprintf("x-o%d", n-6)) != "v" {
						t.Errorf("%s, request %d: %d %q (x-o%d %q); want the origin's 200", cc, round+1, resp.StatusCode, body, n-6, resp.Header.Get(fmt.Sprintf("x-o%d", n-6)))
					}
				}
			}
		})
	}
}
