package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// anonymousTenant is the demo API's tenant for callers without identity.
const anonymousTenant = "anonymous"

// tenant is one caller population and the URLs it reads.
type tenant struct {
	name, tier string
	ids        []int64  // contacts it may PUT/PATCH (seeded ones)
	keys       []string // GET paths, in Zipf rank order (index 0 hottest)
}

// target is where one phase sends the mix.
type target struct {
	base string
	// direct: the demo API itself. Requests carry the x-sluice-* headers
	// Sluice would have set, and a batch is run by the client as its items
	// (what a caller does without the batch endpoint).
	direct bool
	client *http.Client
	// anon are the clients of anonymous callers, each dialing from its own
	// loopback source address so the per-IP limit sees distinct callers.
	anon []*http.Client
}

// mix is the request mix. Safe for concurrent use: workers only read it,
// and pool has its own lock.
type mix struct {
	tenants   []*tenant // identified callers
	anon      *tenant
	cum       [numClasses]int // cumulative percentages
	zipfS     float64
	users     int
	batchMax  int
	pool      *writePool
	versions  *versions
	seed      uint64
	reqTotal  atomic.Int64 // requests completed in any phase (soak throughput)
	userShare float64      // share of identified requests carrying a user id
}

// versions tracks the updates of seeded contacts, for the read-your-writes
// check. Updates of one contact are serialized (begin refuses a second), so
// the versions answered are in order.
type versions struct {
	mu   sync.Mutex       // guards seq, done and busy
	seq  int64            // last version handed out
	done map[string]int64 // "tenant/id" → version of the last update answered 200
	busy map[string]bool  // "tenant/id" → an update is in flight
}

func (v *versions) begin(key string) (int64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.busy[key] {
		return 0, false
	}
	v.busy[key] = true
	v.seq++
	return v.seq, true
}

func (v *versions) end(key string, seq int64, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.busy, key)
	if ok {
		v.done[key] = seq
	}
}

func (v *versions) last(key string) int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.done[key]
}

// writePool holds contacts created by POSTs, per tenant, so DELETEs remove
// what the run added and the demo store stays bounded however long it runs.
type writePool struct {
	mu      sync.Mutex // guards created
	created map[string][]int64
	cap     int
}

func (p *writePool) push(tenant string, id int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.created[tenant]) < p.cap {
		p.created[tenant] = append(p.created[tenant], id)
	}
}

func (p *writePool) pop(tenant string, r *rand.Rand) (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := p.created[tenant]
	if len(ids) == 0 {
		return 0, false
	}
	i := r.IntN(len(ids))
	id := ids[i]
	ids[i] = ids[len(ids)-1]
	p.created[tenant] = ids[:len(ids)-1]
	return id, true
}

func (p *writePool) full(tenant string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.created[tenant]) >= p.cap
}

// buildKeys makes a tenant's GET keyspace: each contact, list pages
// (?limit=1..pages) and the dashboard, shuffled so the hottest keys mix
// the kinds.
func buildKeys(t *tenant, pages int, seed uint64) {
	keys := make([]string, 0, len(t.ids)+pages+1)
	for _, id := range t.ids {
		keys = append(keys, "/api/v1/contacts/"+strconv.FormatInt(id, 10))
	}
	for p := 1; p <= pages; p++ {
		keys = append(keys, "/api/v1/contacts?limit="+strconv.Itoa(p))
	}
	keys = append(keys, "/api/v1/dashboard/stats")
	h := fnv.New64a()
	h.Write([]byte(t.name))
	r := rand.New(rand.NewPCG(seed, h.Sum64()))
	r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	t.keys = keys
}

// prepare lists each tenant's contacts and, when upstream is known, first
// tops each tenant up to contacts entries by writing to the demo API
// directly (through the gateway the free tiers' limits would throttle it).
// Without upstream the lists are read through the gateway.
func prepare(ctx context.Context, client *http.Client, gateway, upstream string, tiers map[string]string, contacts int) ([]*tenant, *tenant, error) {
	names := make([]string, 0, len(tiers))
	for n := range tiers {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*tenant
	for _, n := range append(names, anonymousTenant) {
		t := &tenant{name: n, tier: tiers[n]}
		if n == anonymousTenant {
			t.tier = anonymousTenant
		}
		var err error
		if upstream != "" {
			t.ids, err = listIDs(ctx, client, upstream, n, true)
			for err == nil && len(t.ids) < contacts {
				var id int64
				if id, err = create(ctx, client, upstream, n, len(t.ids)); err == nil {
					t.ids = append(t.ids, id)
				}
			}
		} else {
			t.ids, err = listIDs(ctx, client, gateway, n, false)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("prepare tenant %s: %w", n, err)
		}
		out = append(out, t)
	}
	return out[:len(out)-1], out[len(out)-1], nil
}

func identify(h http.Header, tenant string, direct bool) {
	if tenant == anonymousTenant {
		return
	}
	if direct {
		h.Set("x-sluice-tenant", tenant)
	} else {
		h.Set("x-tenant-id", tenant)
	}
}

func listIDs(ctx context.Context, client *http.Client, base, tenant string, direct bool) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/contacts?limit=1000", nil)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	identify(req.Header, tenant, direct)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Contacts []struct {
			ID int64 `json:"id"`
		} `json:"contacts"`
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("list: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("list: decode: %w", err)
	}
	ids := make([]int64, 0, len(body.Contacts))
	for _, c := range body.Contacts {
		ids = append(ids, c.ID)
	}
	return ids, nil
}

func create(ctx context.Context, client *http.Client, upstream, tenant string, n int) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, upstream+"/api/v1/contacts", contactBody(tenant, n))
	if err != nil {
		return 0, fmt.Errorf("seed: %w", err)
	}
	req.Header.Set("content-type", "application/json")
	identify(req.Header, tenant, true)
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("seed: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	id, ok := locationID(resp)
	if resp.StatusCode != http.StatusCreated || !ok {
		return 0, fmt.Errorf("seed: status %d, location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return id, nil
}

func contactBody(tenant string, n int) io.Reader {
	return strings.NewReader(fmt.Sprintf(`{"name":"Load Contact %d","email":"load%d@%s.example"}`, n, n, tenant))
}

func locationID(resp *http.Response) (int64, bool) {
	loc := resp.Header.Get("Location")
	i := strings.LastIndexByte(loc, '/')
	if i < 0 {
		return 0, false
	}
	id, err := strconv.ParseInt(loc[i+1:], 10, 64)
	return id, err == nil
}

// newClient is an HTTP client for c concurrent callers; local, when set, is
// the source address it dials from.
func newClient(c int, timeout time.Duration, local net.IP) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:           d.DialContext,
			MaxIdleConns:          0,
			MaxIdleConnsPerHost:   c,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: timeout,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// worker is one closed-loop caller: it sends the next request when the
// previous one is answered.
type worker struct {
	m    *mix
	t    *target
	r    *rand.Rand
	zipf map[string]*rand.Zipf
	st   *stats
}

func newWorker(m *mix, t *target, id int) *worker {
	w := &worker{m: m, t: t, r: rand.New(rand.NewPCG(m.seed, uint64(id)+1)), zipf: map[string]*rand.Zipf{}, st: newStats()}
	for _, tn := range append(append([]*tenant(nil), m.tenants...), m.anon) {
		w.zipf[tn.name] = rand.NewZipf(w.r, m.zipfS, 1, uint64(len(tn.keys)-1))
	}
	return w
}

// run sends requests until stop, recording those started at or after
// measure.
func (w *worker) run(ctx context.Context, measure, stop time.Time) {
	for ctx.Err() == nil {
		start := time.Now()
		if !start.Before(stop) {
			return
		}
		pick := w.r.IntN(100)
		class := classGet
		for c := range numClasses {
			if pick < w.m.cum[c] {
				class = c
				break
			}
		}
		rec := !start.Before(measure)
		var o outcome
		switch class {
		case classGet:
			o = w.get(ctx, w.m.tenants[w.r.IntN(len(w.m.tenants))])
		case classAnon:
			o = w.get(ctx, w.m.anon)
		case classWrite:
			o = w.write(ctx, w.m.tenants[w.r.IntN(len(w.m.tenants))])
		case classBatch:
			o = w.batch(ctx, w.m.tenants[w.r.IntN(len(w.m.tenants))], rec)
		}
		w.m.reqTotal.Add(1)
		if rec {
			w.record(class, time.Since(start), o)
		}
	}
}

// outcome is one request's result.
type outcome struct {
	status int
	hdr    http.Header
	err    error
	what   string // method and path, for the examples of odd answers
	stale  bool   // a GET answered an older version than a completed update
}

func (w *worker) record(class int, d time.Duration, o outcome) {
	st := w.st
	st.lat[class].add(d)
	st.all.add(d)
	if o.err != nil {
		kind := "transport"
		var ne net.Error
		if errors.As(o.err, &ne) && ne.Timeout() || errors.Is(o.err, context.DeadlineExceeded) || errors.Is(o.err, os.ErrDeadlineExceeded) {
			kind = "timeout"
		}
		st.fail(kind, o.err.Error())
		return
	}
	st.status[o.status]++
	if o.status >= 200 && o.status < 300 {
		st.classOK[class]++
	}
	switch f := w.failure(class, o); {
	case f != "":
		st.fail(f, fmt.Sprintf("%d %s", o.status, o.what))
	case o.status >= 500:
		st.upstream5++
		st.note(fmt.Sprintf("%d %s", o.status, o.what))
	case o.status >= 400 && o.status != http.StatusTooManyRequests:
		st.note(fmt.Sprintf("%d %s", o.status, o.what))
	}
	if o.stale {
		st.fail("stale_read", fmt.Sprintf("%s older than an update answered before it was sent (x-cache %q, age %q)", o.what, o.hdr.Get("x-cache"), o.hdr.Get("age")))
	}
	if !w.t.direct && o.status != http.StatusTooManyRequests && (class == classGet || class == classAnon) {
		xc := o.hdr.Get("x-cache")
		if xc == "" {
			xc = "none"
			if class == classAnon {
				st.anonBypass++
			}
		}
		st.xcache[xc]++
	}
}

// failure names what Sluice got wrong in an answer, "" when nothing.
func (w *worker) failure(class int, o outcome) string {
	if w.t.direct {
		return ""
	}
	if o.status >= 500 && o.hdr.Get("x-envoy-upstream-service-time") == "" {
		// Envoy's router adds x-envoy-upstream-service-time to responses
		// that came from the upstream; a 5xx without it was made by the
		// gateway or by Sluice (ext_proc failure, immediate response).
		return "gateway_5xx"
	}
	if o.status == http.StatusTooManyRequests {
		return ""
	}
	// Envoy's ext_proc filter has failure_mode_allow: when Sluice does not
	// answer within message_timeout the request goes on unprocessed, so the
	// app sees no tenant. The cache stage marks every GET it saw with
	// x-cache; writes target contacts the caller owns, so a 404 means the
	// app did not see the caller's tenant; a batch Sluice did not answer
	// reaches the app (which has no batch endpoint).
	switch {
	case class == classGet && o.hdr.Get("x-cache") == "",
		class == classWrite && o.status == http.StatusNotFound:
		return "unenriched"
	case class == classBatch && o.hdr.Get("x-envoy-upstream-service-time") != "":
		return "batch_forwarded"
	}
	return ""
}

func (w *worker) headers(h http.Header, tn *tenant) {
	identify(h, tn.name, w.t.direct)
	user := ""
	if tn.name != anonymousTenant && w.m.users > 0 && w.r.Float64() < w.m.userShare {
		user = "u" + strconv.Itoa(w.r.IntN(w.m.users))
	}
	if w.t.direct && tn.name != anonymousTenant {
		// What Sluice's identity stage would have set.
		h.Set("x-sluice-tier", tn.tier)
		h.Set("x-sluice-cost", "1")
		if user != "" {
			h.Set("x-sluice-user", user)
		}
	} else if user != "" {
		h.Set("x-user-id", user)
	}
}

func (w *worker) client(tn *tenant) *http.Client {
	if tn.name == anonymousTenant && len(w.t.anon) > 0 {
		return w.t.anon[w.r.IntN(len(w.t.anon))]
	}
	return w.t.client
}

func (w *worker) do(ctx context.Context, tn *tenant, method, path string, body io.Reader, keep bool) (outcome, []byte) {
	req, err := http.NewRequestWithContext(ctx, method, w.t.base+path, body)
	if err != nil {
		return outcome{err: fmt.Errorf("%s %s: %w", method, path, err)}, nil
	}
	if body != nil {
		req.Header.Set("content-type", "application/json")
	}
	w.headers(req.Header, tn)
	resp, err := w.client(tn).Do(req)
	if err != nil {
		return outcome{err: fmt.Errorf("%s %s: %w", method, path, err)}, nil
	}
	defer resp.Body.Close()
	var b []byte
	if keep {
		b, err = io.ReadAll(resp.Body)
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	if err != nil {
		return outcome{err: fmt.Errorf("%s %s: read body: %w", method, path, err)}, nil
	}
	return outcome{status: resp.StatusCode, hdr: resp.Header, what: method + " " + path}, b
}

func (w *worker) key(tn *tenant) string { return tn.keys[w.zipf[tn.name].Uint64()] }

// get sends a Zipf-chosen GET. For a contact this run has updated, it
// also checks read-your-writes: the answer must not be older than the last
// update answered before the GET was sent.
func (w *worker) get(ctx context.Context, tn *tenant) outcome {
	path := w.key(tn)
	id, isContact := strings.CutPrefix(path, "/api/v1/contacts/")
	var want int64
	if isContact && tn.name != anonymousTenant {
		want = w.m.versions.last(tn.name + "/" + id)
	}
	o, body := w.do(ctx, tn, http.MethodGet, path, nil, want > 0)
	if want > 0 && o.err == nil && o.status == http.StatusOK {
		o.stale = staleBy(body, want)
	}
	return o
}

// staleBy reports whether a contact body carries a version older than want.
func staleBy(body []byte, want int64) bool {
	var c struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(body, &c) != nil {
		return false
	}
	v := int64(0) // never updated: the seeded name has no version
	if i := strings.LastIndex(c.Name, " v"); i >= 0 {
		v, _ = strconv.ParseInt(c.Name[i+2:], 10, 64)
	}
	return v < want
}

// write is a POST (create), PUT or PATCH (a seeded contact, versioned) or
// DELETE (a contact this run created).
func (w *worker) write(ctx context.Context, tn *tenant) outcome {
	pick := w.r.IntN(100)
	if w.m.pool.full(tn.name) {
		pick = 99
	}
	if pick >= 40 && pick < 75 {
		id := tn.ids[w.r.IntN(len(tn.ids))]
		key := tn.name + "/" + strconv.FormatInt(id, 10)
		if seq, ok := w.m.versions.begin(key); ok {
			method := http.MethodPut
			if pick >= 60 {
				method = http.MethodPatch
			}
			body := strings.NewReader(fmt.Sprintf(`{"name":"Load Contact %d v%d","email":"load%d@%s.example"}`, id, seq, id, tn.name))
			o, _ := w.do(ctx, tn, method, "/api/v1/contacts/"+strconv.FormatInt(id, 10), body, false)
			w.m.versions.end(key, seq, o.err == nil && o.status == http.StatusOK)
			return o
		}
		pick = 0 // another caller is updating that contact: create instead
	}
	if pick >= 75 {
		if id, ok := w.m.pool.pop(tn.name, w.r); ok {
			o, _ := w.do(ctx, tn, http.MethodDelete, "/api/v1/contacts/"+strconv.FormatInt(id, 10), nil, false)
			return o
		}
	}
	o, _ := w.do(ctx, tn, http.MethodPost, "/api/v1/contacts", contactBody(tn.name, w.r.IntN(1e6)), false)
	if o.err == nil && o.status == http.StatusCreated {
		if id, ok := locationID(&http.Response{Header: o.hdr}); ok {
			w.m.pool.push(tn.name, id)
		}
	}
	return o
}

type batchItem struct {
	ID        string   `json:"id"`
	Method    string   `json:"method"`
	URL       string   `json:"url"`
	DependsOn []string `json:"dependsOn,omitempty"`
}

type batchReply struct {
	Responses []struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
	} `json:"responses"`
}

// batch sends 2..batchMax GETs of one tenant; a quarter of the batches
// make the last item depend on the first.
func (w *worker) batch(ctx context.Context, tn *tenant, rec bool) outcome {
	n := 2 + w.r.IntN(max(1, w.m.batchMax-1))
	items := make([]batchItem, n)
	for i := range items {
		items[i] = batchItem{ID: strconv.Itoa(i), Method: http.MethodGet, URL: w.key(tn)}
	}
	if w.r.IntN(4) == 0 {
		items[n-1].DependsOn = []string{"0"}
	}
	if w.t.direct {
		return w.batchDirect(ctx, tn, items, rec)
	}
	body, err := json.Marshal(map[string]any{"requests": items})
	if err != nil {
		return outcome{err: fmt.Errorf("batch: %w", err)}
	}
	o, b := w.do(ctx, tn, http.MethodPost, "/api/v1/batch", bytes.NewReader(body), true)
	if o.err != nil || o.status != http.StatusOK || !rec {
		return o
	}
	var reply batchReply
	if err := json.Unmarshal(b, &reply); err != nil {
		return outcome{err: fmt.Errorf("batch: decode reply: %w", err)}
	}
	for _, it := range reply.Responses {
		w.st.items[it.Status]++
		xc := it.Headers["x-cache"]
		switch {
		case it.Status >= 500:
			// The demo API answers no 5xx: an item 5xx is the batch
			// runner's or the gateway's.
			w.st.fail("batch_item_5xx", fmt.Sprintf("%d item of POST /api/v1/batch", it.Status))
		case it.Status == http.StatusTooManyRequests || it.Status == http.StatusFailedDependency:
			continue // a decision, or the runner's answer for a failed dependency
		case xc == "" || it.Status == http.StatusNotFound:
			// As for GETs (worker.failure).
			w.st.fail("unenriched_item", fmt.Sprintf("%d item of POST /api/v1/batch, x-cache %q", it.Status, xc))
		}
		if xc == "" {
			xc = "none"
		}
		w.st.itemCache[xc]++
	}
	return o
}

// batchDirect runs the items against the demo API as a client without the
// batch endpoint would: independent items in parallel, then dependents.
func (w *worker) batchDirect(ctx context.Context, tn *tenant, items []batchItem, rec bool) outcome {
	type res struct {
		o outcome
	}
	results := make([]res, len(items))
	var wg sync.WaitGroup
	runItems := func(dependent bool) {
		for i, it := range items {
			if (len(it.DependsOn) > 0) != dependent {
				continue
			}
			wg.Go(func() {
				req, err := http.NewRequestWithContext(ctx, it.Method, w.t.base+it.URL, nil)
				if err != nil {
					results[i].o = outcome{err: err}
					return
				}
				identify(req.Header, tn.name, true)
				req.Header.Set("x-sluice-tier", tn.tier)
				resp, err := w.t.client.Do(req)
				if err != nil {
					results[i].o = outcome{err: err}
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				results[i].o = outcome{status: resp.StatusCode, err: err}
			})
		}
		wg.Wait()
	}
	runItems(false)
	runItems(true)
	for _, r := range results {
		if r.o.err != nil {
			return outcome{err: fmt.Errorf("batch item: %w", r.o.err)}
		}
		if rec {
			w.st.items[r.o.status]++
		}
	}
	return outcome{status: http.StatusOK, hdr: http.Header{}}
}
