package devstack_test

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConformance replays the cases of the public HTTP caching test suite (cache-tests.fyi,
// github.com/http-tests/cache-tests; its case ids, kinds, scripted exchanges and prerequisite
// lists are the facts used here) against the stack a user starts with
// `sluice dev --upstream URL`, and scores the result the way the suite's results page does.
//
// How it runs, and why that way: the measurement has to be the one users get.
//   - The stack is the shipped default: the dev rate-limit rules, the default cache policy
//     (heuristic freshness off), envoy.yaml's filters with its compressors; Redis is the
//     machine's (REDIS_URL), not the embedded fallback.
//   - Every request is anonymous: all cases share the one "anonymous" tenant, its cache and its
//     invalidations, as the public runner's requests do. Each case has its own path.
//   - The client sends what the public command-line runner (Node's fetch) sends: Pragma and
//     Cache-Control fields that keep fetch out of the way, Accept, Accept-Language,
//     Accept-Encoding: gzip, deflate (identity with Range), a User-Agent; it decodes the
//     content codings it asked for.
//   - Cases run 25 at a time, the next 25 once all of those are done, as the runner does; the
//     requests of a case run in order, with the case's 3-second pauses.
//   - Nothing is run twice, except a case in which the gateway failed open (a GET or HEAD
//     answered without x-cache: Envoy gave up on Sluice under load and forwarded the request
//     uncached): it runs once more on a new path, and more than ctRetryBudget such reruns fail
//     the test.
//   - Scoring: a case passes when none of its checks fails and every case it depends on
//     passes; the counts per kind are logged. Each case also states its expected failures
//     (ctExpected) with the reason, so any change of behaviour shows as a test failure.
//
// The checks follow the suite's engine in substance: an answer "from the cache" carries a
// request count (stamped by the scripted origin) below its own request number, "from the
// origin" means the origin saw that very request, and a "validated" request must reach the
// origin with If-None-Match or If-Modified-Since, which it answers 304 when the value is the one
// it sent (999 otherwise). A failed check is either a precondition (the case's setup did not go
// as scripted, so it does not apply) or an assertion; both make the case fail. Unlike the suite,
// every check of a case runs and each failure is recorded, so expectations can name them all.
//
// -short skips it: like the public run it takes most of a minute.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("the conformance replay takes most of a minute; run without -short")
	}
	cases := ctCases()
	byID := map[string]int{}
	for i, c := range cases {
		if _, dup := byID[c.id]; dup {
			t.Fatalf("case %s twice", c.id)
		}
		byID[c.id] = i
	}
	for id, e := range ctExpected() {
		i, ok := byID[id]
		if !ok {
			t.Fatalf("expectation for unknown case %s", id)
		}
		if e.why == "" {
			t.Fatalf("expectation for %s gives no reason", id)
		}
		cases[i].want, cases[i].why = e.want, e.why
	}
	for _, p := range ctPrerequisites {
		for _, id := range append(slices.Clone(p.cases), p.deps...) {
			if _, ok := byID[id]; !ok {
				t.Fatalf("prerequisite table names unknown case %s", id)
			}
		}
	}

	o := newCTOrigin(t, cases)
	// The machine's Redis under a private prefix, as a deployment sets REDIS_URL: the embedded
	// server `sluice dev` falls back to runs its Lua in this process, which the race detector
	// slows tenfold on top of everything else the test runs.
	s := start(t, o.URL, true, nil)
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{
		Transport: tr,
		Timeout:   10 * time.Second, // the runner's per-request limit
		// The runner fetches with redirect: 'manual': a 3xx is the answer.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	budget := &ctBudget{left: ctRetryBudget}
	runs := make([]*ctRun, len(cases))
	for first := 0; first < len(cases); first += ctChunk {
		var wg sync.WaitGroup
		for i := first; i < min(first+ctChunk, len(cases)); i++ {
			wg.Go(func() {
				r := &ctRun{c: &cases[i], idx: i, key: strconv.Itoa(i), base: s.URL(), client: client, origin: o}
				r.run()
				if r.failedOpen() && budget.take() {
					r.note = fmt.Sprintf("rerun: the gateway failed open the first time%s", r.trace())
					again := &ctRun{c: &cases[i], idx: i, key: strconv.Itoa(i) + "r", base: s.URL(), client: client, origin: o}
					again.run()
					again.note = r.note
					r = again
				}
				runs[i] = r
			})
		}
		wg.Wait()
	}
	if budget.exceeded() {
		t.Errorf("the gateway failed open in more than %d cases: the stack could not keep up (see the cases' logs)", ctRetryBudget)
	}
	t.Logf("cases rerun because the gateway failed open: %d of %d allowed", ctRetryBudget-budget.remaining(), ctRetryBudget)

	for i := range cases {
		c, r := &cases[i], runs[i]
		t.Run(string(c.kind)+"/"+c.id, func(t *testing.T) {
			if r.note != "" {
				t.Log(r.note)
			}
			if r.failedOpen() {
				t.Errorf("the gateway failed open:%s", r.trace())
			}
			if !slices.Equal(r.fails, c.want) {
				t.Errorf("failed checks differ from the expected ones\n  got  %q\n  want %q\nanswers:%s", r.fails, c.want, r.trace())
			}
		})
	}

	// The results page's count: a case passes when it and its prerequisites do.
	passed := map[string]bool{}
	var passes func(id string) bool
	passes = func(id string) bool {
		if p, ok := passed[id]; ok {
			return p
		}
		passed[id] = false // a cycle would count as failing
		i := byID[id]
		ok := len(runs[i].fails) == 0 && !runs[i].failedOpen()
		for _, dep := range ctDependsOn(id) {
			ok = ok && passes(dep)
		}
		passed[id] = ok
		return ok
	}
	total, pass := map[ctKind]int{}, map[ctKind]int{}
	for _, c := range cases {
		total[c.kind]++
		if passes(c.id) {
			pass[c.kind]++
		}
	}
	t.Logf("counted as the results page counts (prerequisites included): required %d/%d, optimal %d/%d, check yes %d/%d",
		pass[ctRequired], total[ctRequired], pass[ctOptimal], total[ctOptimal], pass[ctCheck], total[ctCheck])
}

const (
	// ctChunk is how many cases the public runner starts at once.
	ctChunk = 25
	// ctRetryBudget bounds the reruns of cases in which the gateway failed open.
	ctRetryBudget = 3
	// ctPause is the suite's pause between the requests of a case that ask for one.
	ctPause = 3 * time.Second
)

// ctBudget counts reruns; safe for concurrent use.
type ctBudget struct {
	mu   sync.Mutex // guards left and over
	left int
	over bool
}

func (b *ctBudget) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.left == 0 {
		b.over = true
		return false
	}
	b.left--
	return true
}

func (b *ctBudget) remaining() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.left
}

func (b *ctBudget) exceeded() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.over
}

// ctKind is a case's kind in the suite.
type ctKind string

const (
	ctRequired ctKind = "required" // what RFC 9111 requires (the suite's default kind)
	ctOptimal  ctKind = "optimal"  // what a cache that reuses as much as it may does
	ctCheck    ctKind = "check"    // a behaviour the suite records, neither right nor wrong
)

// ctField is a header field of a scripted request or response.
type ctField struct {
	name, value string
	// date: the value is an HTTP-date, delta seconds from the origin's clock.
	date  bool
	delta int
	// unchecked: the client's answer is not compared with the origin's value.
	unchecked bool
}

func fv(name, value string) ctField     { return ctField{name: name, value: value} }
func fu(name, value string) ctField     { return ctField{name: name, value: value, unchecked: true} }
func fd(name string, delta int) ctField { return ctField{name: name, date: true, delta: delta} }

// ctWant is an expected answer field: present, equal to a value (or a date delta from the
// answer's Server-Now), or a number above n.
type ctWant struct {
	name, value string
	present     bool
	date        bool
	delta       int
	greater     bool
	n           int
}

func wantHas(name string) ctWant             { return ctWant{name: name, present: true} }
func wantIs(name, value string) ctWant       { return ctWant{name: name, value: value} }
func wantDate(name string, delta int) ctWant { return ctWant{name: name, date: true, delta: delta} }
func wantOver(name string, n int) ctWant     { return ctWant{name: name, greater: true, n: n} }

// ctInterim is an informational (1xx) answer.
type ctInterim struct {
	status int
	fields []ctField
}

// ctReq is one request of a case: what the client sends, what the origin answers if it is
// reached, and what is expected.
type ctReq struct {
	method         string    // default GET
	header         []ctField // request fields
	body           string    // request body
	file, query    string    // a path segment after the case's, a query
	magicIMS       bool      // If-Modified-Since relative to the previous answer's Server-Now
	rfc850         bool      // that If-Modified-Since as an rfc850-date
	magicLocations bool      // Location and Content-Location relative to this request's path
	pause          bool      // the suite's pause after this request
	disconnect     bool      // the origin closes the connection without answering
	respPause      time.Duration
	interim        []ctInterim

	status   int       // the origin's status; 0: 200 (304 or 999 for a validated request)
	resp     []ctField // the origin's fields
	respBody *string   // the origin's body; nil: the case's token
	noBody   bool      // the suite's null body (the origin still sends the token)

	typ            string // cached, not_cached, etag_validated, lm_validated, or ""
	wantStatus     int    // 0: the origin's status or 200; -1: not checked
	wantHeaders    []ctWant
	wantMissing    []ctField // value "": absent; else absent or without that value
	wantInterim    []ctInterim
	checkInterim   bool      // wantInterim applies (possibly empty)
	wantReq        []ctField // fields the origin must receive; value "": present
	wantReqMissing []string
	wantText       *string // the expected body
	noTextCheck    bool    // the body is not checked against wantText
	noBodyCheck    bool    // the body is not checked at all
	wantMethod     string
	setup          bool     // every check of this request is a precondition
	setupTests     []string // the checks of this request that are preconditions
}

func (q *ctReq) isSetup(check string) bool { return q.setup || slices.Contains(q.setupTests, check) }

// ctCase is one case of the suite.
type ctCase struct {
	id   string
	kind ctKind
	reqs []ctReq
	// want are the checks expected to fail, in check order (nil: none), and why explains them;
	// both come from ctExpected.
	want []string
	why  string
}

func ctStr(s string) *string { return &s }

// ctToken is a case's default body: 36 bytes, the length of the suite's per-case UUID.
func ctToken(idx int) string { return fmt.Sprintf("%08d-c0de-4c7e-8a11-%012d", idx, idx) }

// ctContent returns 15 lower-case letters derived from key, for the arbitrary field values
// the suite's cases use.
func ctContent(key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	x := h.Sum64()
	b := make([]byte, 15)
	for i := range b {
		x = x*6364136223846793005 + 1442695040888963407
		b[i] = 'a' + byte((x>>33)%26)
	}
	return string(b)
}

const ctRFC850Layout = "Monday, 02-Jan-06 15:04:05 GMT"

// ctDate formats nowMs + delta seconds as an HTTP-date.
func ctDate(nowMs int64, delta int, rfc850 bool) string {
	t := time.UnixMilli(nowMs).Add(time.Duration(delta) * time.Second).UTC()
	if rfc850 {
		return t.Format(ctRFC850Layout)
	}
	return t.Format(http.TimeFormat)
}

// ---- Check results ----------------------------------------------------------------------

// ctMsg is a failed check: "precondition: …" when the check only establishes the case's
// setup, "assertion: …" otherwise.
func ctMsg(setup bool, format string, args ...any) string {
	if setup {
		return "precondition: " + fmt.Sprintf(format, args...)
	}
	return "assertion: " + fmt.Sprintf(format, args...)
}

// Failed checks that expectations name.
func ctFetched(n int, setup bool) string {
	return ctMsg(setup, "answer %d was fetched from the origin, expected from the cache", n)
}

func ctReused(n int) []string {
	return []string{ctMsg(false, "answer %d came from the cache, expected from the origin", n),
		ctMsg(false, "request %d never reached the origin", n)}
}

// ---- The scripted origin ----------------------------------------------------------------

// ctOrigin answers /ct/<run key>[/file] with what the case scripts for the request's number
// (its Req-Num field, as the suite's server reads it) and records every request.
type ctOrigin struct {
	*httptest.Server
	cases []ctCase

	mu   sync.Mutex           // guards seen
	seen map[string][]*ctSeen // by run key, in arrival order
}

// ctSeen is a request the origin received and the fields it answered with.
type ctSeen struct {
	num    int // Req-Num
	method string
	header http.Header
	sent   [][2]string // compared fields: name, joined value
	lm     string      // Last-Modified and ETag as sent
	etag   string
}

func newCTOrigin(t *testing.T, cases []ctCase) *ctOrigin {
	t.Helper()
	o := &ctOrigin{cases: cases, seen: map[string][]*ctSeen{}}
	o.Server = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.Close)
	return o
}

// record returns what the origin saw of request num of a run, or nil.
func (o *ctOrigin) record(key string, num int) *ctSeen {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.seen[key] {
		if s.num == num {
			return s
		}
	}
	return nil
}

func (o *ctOrigin) serve(w http.ResponseWriter, r *http.Request) {
	// /ct/<run key>[/file]; the run key is the case's index, with "r" for a rerun.
	key, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/ct/"), "/")
	idx, err := strconv.Atoi(strings.TrimSuffix(key, "r"))
	if err != nil || idx < 0 || idx >= len(o.cases) {
		http.Error(w, "no such case", http.StatusNotFound)
		return
	}
	c := &o.cases[idx]
	o.mu.Lock()
	srvNum := len(o.seen[key]) + 1
	o.mu.Unlock()
	cliNum, _ := strconv.Atoi(r.Header.Get("Req-Num"))
	num := cliNum
	if num == 0 {
		num = srvNum
	}
	if num < 1 || num > len(c.reqs) {
		http.Error(w, fmt.Sprintf("%s has no request %d", c.id, num), http.StatusConflict)
		return
	}
	q := &c.reqs[num-1]
	if q.respPause > 0 {
		time.Sleep(q.respPause)
	}
	nowMs := time.Now().UnixMilli()
	h := w.Header()
	for _, in := range q.interim {
		for _, fl := range in.fields {
			h.Add(fl.name, fl.value)
		}
		w.WriteHeader(in.status)
		for _, fl := range in.fields {
			h.Del(fl.name) // they belong to the informational answer only
		}
	}

	status := q.status
	if status == 0 {
		status = 200
	}
	if strings.HasSuffix(q.typ, "validated") && num > 1 {
		// 304 when the request carries the validator the previous answer was scripted with,
		// else 999: the status the suite's origin uses for a validator that did not come.
		lm, etag := o.previousValidators(key, idx, num-1)
		status = 999
		if lm != "" && strings.Join(r.Header.Values("If-Modified-Since"), ", ") == lm ||
			etag != "" && strings.Join(r.Header.Values("If-None-Match"), ", ") == etag {
			status = 304
		}
	}

	rec := &ctSeen{num: cliNum, method: r.Method, header: r.Header.Clone()}
	h.Set("Server-Base-Url", r.URL.RequestURI())
	h.Set("Server-Request-Count", strconv.Itoa(srvNum))
	h.Set("Client-Request-Count", strconv.Itoa(cliNum))
	h.Set("Server-Now", strconv.FormatInt(nowMs, 10))
	rawTE := ""
	for _, fl := range q.resp {
		v := o.value(fl, q, r, nowMs)
		if strings.EqualFold(fl.name, "Transfer-Encoding") {
			rawTE = v // Go's server frames bodies itself: written by hand below
			continue
		}
		h.Add(fl.name, v)
		switch strings.ToLower(fl.name) {
		case "last-modified":
			rec.lm = ctOr(rec.lm, v)
		case "etag":
			rec.etag = ctOr(rec.etag, v)
		}
		if !fl.unchecked {
			joined := strings.Join(h.Values(fl.name), ", ")
			if i := slices.IndexFunc(rec.sent, func(s [2]string) bool { return strings.EqualFold(s[0], fl.name) }); i >= 0 {
				rec.sent[i][1] = joined
			} else {
				rec.sent = append(rec.sent, [2]string{fl.name, joined})
			}
		}
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "text/plain")
	}
	o.mu.Lock()
	o.seen[key] = append(o.seen[key], rec)
	o.mu.Unlock()

	body := ctToken(idx)
	if q.respBody != nil && !q.noBody {
		body = *q.respBody
	}
	if n, err := strconv.Atoi(h.Get("Content-Length")); err == nil && n < len(body) {
		// The suite's server writes its whole body after a shorter Content-Length, and a
		// client reads that many bytes; Go's server would refuse to write any.
		body = body[:n]
	}
	switch {
	case q.disconnect:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	case rawTE != "":
		ctWriteRaw(w, status, h, "Transfer-Encoding", rawTE, body)
	case status == http.StatusNotModified:
		ctWriteRaw(w, status, h, "", "", "")
	default:
		w.WriteHeader(status)
		if status != http.StatusNoContent && r.Method != "HEAD" {
			io.WriteString(w, body)
		}
	}
}

// value is a response field's value as sent: dates on the origin's clock, locations relative
// to the request when the case asks.
func (o *ctOrigin) value(fl ctField, q *ctReq, r *http.Request, nowMs int64) string {
	if fl.date {
		return ctDate(nowMs, fl.delta, false)
	}
	switch strings.ToLower(fl.name) {
	case "location", "content-location":
		if q.magicLocations {
			base := r.URL.RequestURI()
			if fl.value == "" {
				return base
			}
			return base + "/" + fl.value
		}
	}
	return fl.value
}

// previousValidators returns the Last-Modified and ETag of request num's answer: as sent, or
// as scripted when the request never reached the origin (a date never sent matches nothing).
func (o *ctOrigin) previousValidators(key string, idx, num int) (lm, etag string) {
	if rec := o.record(key, num); rec != nil {
		return rec.lm, rec.etag
	}
	for _, fl := range o.cases[idx].reqs[num-1].resp {
		switch strings.ToLower(fl.name) {
		case "last-modified":
			if !fl.date {
				lm = ctOr(lm, fl.value)
			}
		case "etag":
			etag = ctOr(etag, fl.value)
		}
	}
	return lm, etag
}

// ctWriteRaw writes an answer by hand on the hijacked connection and closes it: a 304 with
// the Content-Type and Content-Length the update cases script (Go's server drops both from a
// 304), or an answer with a framing field Go's server would not send (extraName: extraValue,
// the body delimited by the close).
func ctWriteRaw(w http.ResponseWriter, status int, h http.Header, extraName, extraValue, body string) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if h.Get("Date") == "" {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	slices.Sort(names)
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	for _, k := range names {
		for _, v := range h[k] {
			fmt.Fprintf(buf, "%s: %s\r\n", k, v)
		}
	}
	if extraName != "" {
		fmt.Fprintf(buf, "%s: %s\r\n", extraName, extraValue)
	}
	buf.WriteString("Connection: close\r\n\r\n")
	buf.WriteString(body)
	buf.Flush()
}

// ctOr returns a, or b when a is empty.
func ctOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ---- Running a case ---------------------------------------------------------------------

// ctResult is an answer the client got.
type ctResult struct {
	status  int
	header  http.Header
	body    string
	interim []int
	err     error
}

// ctRun is one run of a case.
type ctRun struct {
	c       *ctCase
	idx     int
	key     string // the run's path segment
	base    string
	client  *http.Client
	origin  *ctOrigin
	results []*ctResult
	fails   []string
	note    string // what the log should say about the run
}

func (r *ctRun) fail(setup bool, format string, args ...any) {
	r.fails = append(r.fails, ctMsg(setup, format, args...))
}

// run sends the case's requests in order, pausing where the case says, and checks the answers
// and what the origin saw.
func (r *ctRun) run() {
	for i := range r.c.reqs {
		q := &r.c.reqs[i]
		n := i + 1
		var prev *ctResult
		if i > 0 {
			prev = r.results[i-1]
		}
		res := r.send(n, q, prev)
		r.results = append(r.results, res)
		if res.err != nil {
			r.fail(false, "request %d failed: %v", n, res.err)
		} else {
			r.checkAnswer(n, q, res)
		}
		if q.pause {
			time.Sleep(ctPause)
		}
	}
	r.checkOrigin()
}

// ctClientFields are the fields Node's fetch, which the public runner uses, adds to every
// request it has no value for (the runner itself sets Pragma and Cache-Control so that fetch
// adds no caching fields of its own).
var ctClientFields = [][2]string{
	{"Accept", "*/*"}, {"Accept-Language", "*"}, {"Sec-Fetch-Mode", "cors"}, {"User-Agent", "node"},
}

func (r *ctRun) send(n int, q *ctReq, prev *ctResult) *ctResult {
	u := r.base + "/ct/" + r.key
	if q.file != "" {
		u += "/" + q.file
	}
	if q.query != "" {
		u += "?" + q.query
	}
	method := ctOr(q.method, "GET")
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	res := &ctResult{}
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		res.interim = append(res.interim, code)
		return nil
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, u, body)
	if err != nil {
		res.err = err
		return res
	}
	req.Header.Add("Pragma", "foo")
	req.Header.Add("Cache-Control", "nothing-to-see-here")
	for _, fl := range q.header {
		v := fl.value
		if fl.date {
			nowMs := time.Now().UnixMilli()
			if q.magicIMS && prev != nil && prev.header != nil {
				nowMs, _ = strconv.ParseInt(prev.header.Get("Server-Now"), 10, 64)
			}
			v = ctDate(nowMs, fl.delta, q.rfc850)
		}
		req.Header.Add(fl.name, v)
	}
	req.Header.Set("Test-ID", r.c.id)
	req.Header.Set("Req-Num", strconv.Itoa(n))
	for _, f := range ctClientFields {
		if req.Header.Get(f[0]) == "" {
			req.Header.Set(f[0], f[1])
		}
	}
	// fetch asks for identity with Range, else for the codings it decodes.
	if req.Header.Get("Range") != "" {
		req.Header.Set("Accept-Encoding", "identity")
	} else {
		req.Header.Set("Accept-Encoding", "gzip, deflate")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		b, err = ctDecode(resp.Header.Get("Content-Encoding"), b)
	}
	res.status, res.header, res.body, res.err = resp.StatusCode, resp.Header, string(b), err
	return res
}

// ctDecode undoes the content coding of a body it asked for, as fetch does; a body in another
// coding (the origin's own, in the header cases) is left as it is.
func ctDecode(coding string, b []byte) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(coding)) {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return io.ReadAll(zr)
	case "deflate":
		return io.ReadAll(flate.NewReader(bytes.NewReader(b)))
	}
	return b, nil
}

func ctHeaderValue(h http.Header, name string) (string, bool) {
	vs := h.Values(name)
	return strings.Join(vs, ", "), len(vs) > 0
}

// checkAnswer checks an answer: where it came from, its status, fields, informational
// answers and body.
func (r *ctRun) checkAnswer(n int, q *ctReq, res *ctResult) {
	count, countErr := strconv.Atoi(res.header.Get("Server-Request-Count"))
	switch q.typ {
	case "cached":
		// A 304 without the origin's count is taken as the cache's own.
		if !(res.status == 304 && countErr != nil) && (countErr != nil || count >= n) {
			r.fail(q.isSetup("expected_type"), "answer %d was fetched from the origin, expected from the cache", n)
		}
	case "not_cached":
		if countErr != nil || count != n {
			r.fail(q.isSetup("expected_type"), "answer %d came from the cache, expected from the origin", n)
		}
	}
	switch {
	case q.wantStatus == -1:
	case q.wantStatus != 0:
		if res.status != q.wantStatus {
			r.fail(q.isSetup("expected_status"), "answer %d has status %d, expected %d", n, res.status, q.wantStatus)
		}
	case q.status != 0:
		if res.status != q.status {
			r.fail(true, "answer %d has status %d, expected %d", n, res.status, q.status)
		}
	case res.status == 999:
		r.fail(q.isSetup("expected_type"), "request %d reached the origin without the validator it expected", n)
	case res.status != 200:
		r.fail(true, "answer %d has status %d, expected 200", n, res.status)
	}

	setup := q.isSetup("expected_response_headers")
	for _, w := range q.wantHeaders {
		got, ok := ctHeaderValue(res.header, w.name)
		switch {
		case !ok && (w.present || w.greater):
			r.fail(setup, "answer %d lacks %s", n, w.name)
		case w.present:
		case w.greater:
			if v, err := strconv.Atoi(got); err != nil || v <= w.n {
				r.fail(setup, "answer %d has %s %s, expected above %d", n, w.name, got, w.n)
			}
		default:
			want := w.value
			if w.date {
				now, _ := strconv.ParseInt(res.header.Get("Server-Now"), 10, 64)
				want = ctDate(now, w.delta, false)
			}
			if got != want || !ok {
				r.fail(setup, "answer %d has %s %q, expected %q", n, w.name, got, want)
			}
		}
	}
	setup = q.isSetup("expected_response_headers_missing")
	for _, m := range q.wantMissing {
		got, ok := ctHeaderValue(res.header, m.name)
		switch {
		case m.value == "" && ok:
			r.fail(setup, "answer %d has %s %q, expected none", n, m.name, got)
		case m.value != "" && ok && strings.Contains(got, m.value):
			r.fail(setup, "answer %d has %s %q, expected without %q", n, m.name, got, m.value)
		}
	}
	if q.checkInterim {
		setup = q.isSetup("expected_interim_responses")
		for i, in := range q.wantInterim {
			switch {
			case i >= len(res.interim):
				r.fail(setup, "informational answer %d of request %d missing", i+1, n)
			case res.interim[i] != in.status:
				r.fail(setup, "informational answer %d of request %d has status %d, expected %d", i+1, n, res.interim[i], in.status)
			}
		}
		if len(res.interim) != len(q.wantInterim) {
			r.fail(setup, "request %d got %d informational answers, expected %d", n, len(res.interim), len(q.wantInterim))
		}
	}

	switch {
	case q.noBodyCheck:
	case q.wantText != nil:
		if res.body != *q.wantText {
			r.fail(q.isSetup("expected_response_text"), "answer %d has body %s, expected %q", n, r.show(res.body), *q.wantText)
		}
	case q.noTextCheck:
	case q.respBody != nil && !q.noBody:
		if res.body != *q.respBody {
			r.fail(true, "answer %d has body %s, expected %q", n, r.show(res.body), *q.respBody)
		}
	case res.status == 204, res.status == 304, q.method == "HEAD":
	default:
		if res.body != ctToken(r.idx) {
			r.fail(true, "answer %d has body %s, expected the case's token", n, r.show(res.body))
		}
	}
}

// show quotes a body for a message; the case's token, which depends on the case's place in
// the table, is "the case's token".
func (r *ctRun) show(body string) string {
	if body == ctToken(r.idx) {
		return "the case's token"
	}
	return strconv.Quote(body)
}

// checkOrigin checks what reached the origin, and that the client got the fields the origin
// answered with.
func (r *ctRun) checkOrigin() {
	for i := range r.c.reqs {
		q := &r.c.reqs[i]
		n := i + 1
		if q.typ == "cached" || i >= len(r.results) {
			continue
		}
		rec := r.origin.record(r.key, n)
		setup := q.isSetup("expected_type")
		switch q.typ {
		case "not_cached":
			if rec == nil {
				r.fail(setup, "request %d never reached the origin", n)
			}
		case "etag_validated", "lm_validated":
			name := "If-None-Match"
			if q.typ == "lm_validated" {
				name = "If-Modified-Since"
			}
			switch {
			case rec == nil:
				r.fail(setup, "request %d never reached the origin", n)
			case len(rec.header.Values(name)) == 0:
				r.fail(setup, "request %d reached the origin without %s", n, name)
			}
		}
		if rec == nil {
			if len(q.wantReq) > 0 || q.wantMethod != "" {
				r.fail(q.isSetup("expected_request_headers"), "request %d never reached the origin", n)
			}
			continue
		}
		setup = q.isSetup("expected_request_headers")
		for _, w := range q.wantReq {
			got, ok := ctHeaderValue(rec.header, w.name)
			switch {
			case w.value == "" && !ok:
				r.fail(setup, "request %d reached the origin without %s", n, w.name)
			case w.value != "" && got != w.value:
				r.fail(setup, "request %d reached the origin with %s %q, expected %q", n, w.name, got, w.value)
			}
		}
		for _, name := range q.wantReqMissing {
			if _, ok := ctHeaderValue(rec.header, name); ok {
				r.fail(q.isSetup("expected_request_headers_missing"), "request %d reached the origin with %s, expected without", n, name)
			}
		}
		if res := r.results[i]; res.err == nil {
			for _, s := range rec.sent {
				if strings.EqualFold(s[0], "date") {
					continue // the suite leaves Date out: it only moves with time
				}
				if got, _ := ctHeaderValue(res.header, s[0]); got != s[1] {
					r.fail(true, "answer %d has %s %q, the origin sent %q", n, s[0], got, s[1])
				}
			}
		}
		if q.wantMethod != "" && rec.method != q.wantMethod {
			r.fail(q.isSetup("expected_method"), "request %d reached the origin as %s, expected %s", n, rec.method, q.wantMethod)
		}
	}
}

// failedOpen reports a GET or HEAD answered without x-cache: the gateway gave up on Sluice
// (ext_proc's message_timeout, failure_mode_allow) and forwarded it without the cache. Unsafe
// methods get no x-cache anyway.
func (r *ctRun) failedOpen() bool {
	for i, res := range r.results {
		m := r.c.reqs[i].method
		if res.err == nil && (m == "" || m == "HEAD") && res.header.Get("x-cache") == "" {
			return true
		}
	}
	return false
}

// trace sums the answers up for a log line.
func (r *ctRun) trace() string {
	var b strings.Builder
	for i, res := range r.results {
		if res.err != nil {
			fmt.Fprintf(&b, "\n  %d: %v", i+1, res.err)
			continue
		}
		fmt.Fprintf(&b, "\n  %d: %d x-cache=%q cache-status=%q server-request-count=%s", i+1, res.status,
			res.header.Get("x-cache"), res.header.Get("Cache-Status"), res.header.Get("Server-Request-Count"))
	}
	return b.String()
}

// ---- The cases ------------------------------------------------------------

// The suite's request templates (tests/lib/templates.mjs): their fields
// come first, the request's are added.

// ctFresh: a response fresh for 100000 s.
func ctFresh(q ctReq) ctReq {
	q.resp = append([]ctField{fv("Cache-Control", "max-age=100000"), fd("Date", 0)}, q.resp...)
	q.setup = true
	return q
}

// ctStale: a response stored already stale, with a validator.
func ctStale(q ctReq) ctReq {
	q.resp = append([]ctField{fd("Expires", -5000), fd("Last-Modified", -100000), fd("Date", 0)}, q.resp...)
	q.setup = true
	return q
}

// ctBecomeStale: a response fresh for 2 s, stale after the pause.
func ctBecomeStale(q ctReq) ctReq {
	q.resp = append([]ctField{fv("Cache-Control", "max-age=2"), fd("Date", 0), fv("Template-A", "1")}, q.resp...)
	q.setup, q.pause = true, true
	return q
}

// ctStored is a setup request whose response carries fields.
func ctStored(fields ...ctField) ctReq { return ctReq{resp: fields, setup: true} }

// ctStoredPause is ctStored, then the suite's pause.
func ctStoredPause(fields ...ctField) ctReq { return ctReq{resp: fields, setup: true, pause: true} }

func ctExpect(typ string) ctReq { return ctReq{typ: typ} }

func ctCases() []ctCase {
	var cs []ctCase
	for _, group := range [][]ctCase{
		ctCCFreshnessCases(), ctCCParseCases(), ctAgeParseCases(), ctExpiresCases(), ctExpiresParseCases(),
		ctCCResponseCases(), ctStaleCases(), ctHeuristicCases(), ctMethodCases(), ctStatusCases(),
		ctCCRequestCases(), ctPragmaCases(), ctVaryCases(), ctVaryParseCases(), ctConditionalLMCases(),
		ctConditionalETagCases(), ctHeadersCases(), ctUpdate304Cases(), ctUpdateHeadCases(),
		ctInvalidationCases(), ctPartialCases(), ctAuthorizationCases(), ctOtherCases(), ctInterimCases(),
		ctCDNCases(),
	} {
		cs = append(cs, group...)
	}
	return cs
}

// ctCCCase: the response has Cache-Control cc; after the pause (when
// pause), the next request is typ.
func ctCCCase(id string, kind ctKind, cc string, pause bool, typ string) ctCase {
	first := ctStored(fv("Cache-Control", cc))
	first.pause = pause
	return ctCase{id: id, kind: kind, reqs: []ctReq{first, ctExpect(typ)}}
}

// cc-freshness.mjs
func ctCCFreshnessCases() []ctCase {
	return []ctCase{
		{id: "freshness-none", kind: ctCheck, reqs: []ctReq{{setup: true}, ctExpect("not_cached")}},
		ctCCCase("freshness-max-age", ctOptimal, "max-age=3600", false, "cached"),
		{id: "freshness-max-age-stale", kind: ctRequired, reqs: []ctReq{ctBecomeStale(ctReq{}), ctExpect("not_cached")}},
		ctCCCase("freshness-max-age-0", ctRequired, "max-age=0", false, "not_cached"),
		ctCCCase("freshness-max-age-max-minus-1", ctOptimal, "max-age=2147483647", false, "cached"),
		ctCCCase("freshness-max-age-max", ctOptimal, "max-age=2147483648", false, "cached"),
		ctCCCase("freshness-max-age-max-plus-1", ctOptimal, "max-age=2147483649", false, "cached"),
		ctCCCase("freshness-max-age-max-plus", ctOptimal, "max-age=99999999999", false, "cached"),
		{id: "freshness-max-age-age", kind: ctRequired, reqs: []ctReq{
			ctStored(fd("Date", 0), fv("Cache-Control", "max-age=3600"), fv("Age", "7200")), ctExpect("not_cached")}},
		{id: "freshness-max-age-date", kind: ctCheck, reqs: []ctReq{
			ctStored(fd("Date", -7200), fv("Cache-Control", "max-age=3600")), ctExpect("not_cached")}},
		{id: "freshness-max-age-expires", kind: ctOptimal, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=3600"), fd("Expires", -7200), fd("Date", 0)), ctExpect("cached")}},
		{id: "freshness-max-age-expires-invalid", kind: ctOptimal, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=3600"), fu("Expires", "0"), fd("Date", 0)), ctExpect("cached")}},
		{id: "freshness-max-age-0-expires", kind: ctRequired, reqs: []ctReq{
			ctStored(fd("Expires", 3600), fv("Cache-Control", "max-age=0"), fd("Date", 0)), ctExpect("not_cached")}},
		ctCCCase("freshness-max-age-extension", ctOptimal, "foobar, max-age=3600", false, "cached"),
		ctCCCase("freshness-max-age-case-insenstive", ctOptimal, "MaX-aGe=3600", false, "cached"),
		ctCCCase("freshness-max-age-negative", ctRequired, "max-age=-3600", false, "not_cached"),
		ctCCCase("freshness-s-maxage-shared", ctRequired, "s-maxage=3600", false, "cached"),
		ctCCCase("freshness-max-age-s-maxage-shared-longer", ctRequired, "max-age=3600, s-maxage=1", true, "not_cached"),
		ctCCCase("freshness-max-age-s-maxage-shared-longer-reversed", ctRequired, "s-maxage=1, max-age=3600", true, "not_cached"),
		{id: "freshness-max-age-s-maxage-shared-longer-multiple", kind: ctRequired, reqs: []ctReq{
			ctStoredPause(fv("Cache-Control", "max-age=3600"), fv("Cache-Control", "s-maxage=1")), ctExpect("not_cached")}},
		ctCCCase("freshness-max-age-s-maxage-shared-shorter", ctOptimal, "max-age=1, s-maxage=3600", true, "cached"),
		{id: "freshness-max-age-s-maxage-shared-shorter-expires", kind: ctOptimal, reqs: []ctReq{
			ctStored(fd("Expires", -10), fv("Cache-Control", "max-age=0, s-maxage=3600")), ctExpect("cached")}},
	}
}

// ctCCParse: an unchecked Cache-Control (the suite's third element false).
func ctCCParse(id string, kind ctKind, typ string, pause bool, cc ...string) ctCase {
	first := ctReq{setup: true, pause: pause}
	for _, v := range cc {
		first.resp = append(first.resp, fu("Cache-Control", v))
	}
	return ctCase{id: id, kind: kind, reqs: []ctReq{first, ctExpect(typ)}}
}

// cc-parse.mjs
func ctCCParseCases() []ctCase {
	return []ctCase{
		ctCCParse("freshness-max-age-two-fresh-stale-sameline", ctCheck, "cached", true, "max-age=1800, max-age=1"),
		ctCCParse("freshness-max-age-two-fresh-stale-sepline", ctCheck, "cached", true, "max-age=1800", "max-age=1"),
		ctCCParse("freshness-max-age-two-stale-fresh-sameline", ctCheck, "cached", true, "max-age=1, max-age=1800"),
		ctCCParse("freshness-max-age-two-stale-fresh-sepline", ctCheck, "cached", true, "max-age=1", "max-age=1800"),
		ctCCParse("freshness-max-age-quoted", ctCheck, "cached", false, `max-age="3600"`),
		ctCCParse("freshness-max-age-ignore-quoted", ctRequired, "not_cached", true, `extension="max-age=3600", max-age=1`),
		ctCCParse("freshness-max-age-ignore-quoted-rev", ctRequired, "not_cached", true, `max-age=1, extension="max-age=3600"`),
		ctCCParse("freshness-max-age-space-before-equals", ctCheck, "not_cached", false, "max-age =3600"),
		ctCCParse("freshness-max-age-space-after-equals", ctCheck, "not_cached", false, "max-age= 3600"),
		ctCCParse("freshness-max-age-leading-zero", ctRequired, "cached", false, "max-age=003600"),
		ctCCParse("freshness-max-age-single-quoted", ctRequired, "not_cached", false, "max-age='3600'"),
		ctCCParse("freshness-max-age-decimal-zero", ctCheck, "cached", false, "max-age=3600.0"),
		ctCCParse("freshness-max-age-decimal-five", ctCheck, "cached", false, "max-age=3600.5"),
		ctCCParse("freshness-max-age-a100", ctCheck, "cached", false, "max-age=a3600"),
		ctCCParse("freshness-max-age-100a", ctCheck, "cached", false, "max-age=3600a"),
	}
}

// ctAgeCase: Date now, max-age=maxAge and the Age lines.
func ctAgeCase(id string, kind ctKind, maxAge, typ string, ages ...string) ctCase {
	first := ctStored(fd("Date", 0), fv("Cache-Control", "max-age="+maxAge))
	for _, a := range ages {
		first.resp = append(first.resp, fu("Age", a))
	}
	return ctCase{id: id, kind: kind, reqs: []ctReq{first, ctExpect(typ)}}
}

// age-parse.mjs (the suite's pauses are irrelevant next to lifetimes of an
// hour and more)
func ctAgeParseCases() []ctCase {
	return []ctCase{
		ctAgeCase("age-parse-nonnumeric", ctRequired, "3600", "cached", "abc"),
		ctAgeCase("age-parse-negative", ctRequired, "3600", "cached", "-7200"),
		ctAgeCase("age-parse-float", ctRequired, "3600", "cached", "7200.0"),
		ctAgeCase("age-parse-large-minus-one", ctRequired, "3600", "not_cached", "2147483647"),
		ctAgeCase("age-parse-large", ctRequired, "3600", "not_cached", "2147483648"),
		ctAgeCase("age-parse-larger", ctRequired, "3600", "not_cached", "2147483649"),
		ctAgeCase("age-parse-suffix", ctRequired, "3600", "not_cached", "7200, 0"),
		ctAgeCase("age-parse-prefix", ctRequired, "3600", "cached", "0, 7200"),
		ctAgeCase("age-parse-suffix-twoline", ctRequired, "3600", "not_cached", "7200", "0"),
		ctAgeCase("age-parse-prefix-twoline", ctRequired, "3600", "cached", "0", "7200"),
		ctAgeCase("age-parse-dup-0", ctRequired, "3600", "cached", "0, 0"),
		ctAgeCase("age-parse-dup-0-twoline", ctRequired, "3600", "cached", "0", "0"),
		ctAgeCase("age-parse-dup-old", ctRequired, "10000", "cached", "3600", "3600"),
		ctAgeCase("age-parse-parameter", ctCheck, "3600", "not_cached", "7200;foo=bar"),
		ctAgeCase("age-parse-numeric-parameter", ctCheck, "3600", "not_cached", "7200;foo=111"),
	}
}

// expires-freshness.mjs
func ctExpiresCases() []ctCase {
	return []ctCase{
		{id: "freshness-expires-future", kind: ctOptimal, reqs: []ctReq{
			ctStored(fd("Expires", 30*24*60*60), fd("Date", 0)), ctExpect("cached")}},
		{id: "freshness-expires-past", kind: ctRequired, reqs: []ctReq{
			ctStored(fd("Expires", -30*24*60*60), fd("Date", 0)), ctExpect("not_cached")}},
		{id: "freshness-expires-present", kind: ctRequired, reqs: []ctReq{
			ctStored(fd("Expires", 0), fd("Date", 0)), ctExpect("not_cached")}},
		{id: "freshness-expires-old-date", kind: ctRequired, reqs: []ctReq{
			ctStored(fd("Expires", 300), fd("Date", 400)), ctExpect("not_cached")}},
		{id: "freshness-expires-invalid", kind: ctRequired, reqs: []ctReq{
			ctStored(fu("Expires", "0"), fd("Date", 0)), ctExpect("not_cached")}},
		{id: "freshness-expires-invalid-date", kind: ctOptimal, reqs: []ctReq{
			ctStored(fu("Date", "foo"), fd("Expires", 10)), ctExpect("cached")}},
		{id: "freshness-expires-age-slow-date", kind: ctRequired, reqs: []ctReq{
			ctStored(fd("Date", -10), fd("Expires", 10), fv("Age", "25")), ctExpect("not_cached")}},
		{id: "freshness-expires-age-fast-date", kind: ctRequired, reqs: []ctReq{
			ctStored(fd("Date", 10), fd("Expires", 20), fv("Age", "15")), ctExpect("not_cached")}},
	}
}

func ctExpiresCase(id string, kind ctKind, typ string, expires ...string) ctCase {
	var first ctReq
	for _, e := range expires {
		first.resp = append(first.resp, fu("Expires", e))
	}
	first.resp = append(first.resp, fd("Date", 0))
	first.setup = true
	return ctCase{id: id, kind: kind, reqs: []ctReq{first, ctExpect(typ)}}
}

// expires-parse.mjs
func ctExpiresParseCases() []ctCase {
	return []ctCase{
		ctExpiresCase("freshness-expires-32bit", ctOptimal, "cached", "Tue, 19 Jan 2038 14:14:08 GMT"),
		ctExpiresCase("freshness-expires-far-future", ctOptimal, "cached", "Sun, 21 Nov 2286 04:46:39 GMT"),
		ctExpiresCase("freshness-expires-rfc850", ctOptimal, "cached", "Thursday, 18-Aug-50 02:01:18 GMT"),
		ctExpiresCase("freshness-expires-ansi-c", ctOptimal, "cached", "Thu Aug  8 02:01:18 2050"),
		ctExpiresCase("freshness-expires-wrong-case-weekday", ctOptimal, "cached", "THU, 18 Aug 2050 02:01:18 GMT"),
		ctExpiresCase("freshness-expires-wrong-case-month", ctOptimal, "cached", "Thu, 18 AUG 2050 02:01:18 GMT"),
		ctExpiresCase("freshness-expires-wrong-case-tz", ctOptimal, "cached", "Thu, 18 Aug 2050 02:01:18 gMT"),
		ctExpiresCase("freshness-expires-invalid-utc", ctRequired, "not_cached", "Thu, 18 Aug 2050 02:01:18 UTC"),
		ctExpiresCase("freshness-expires-invalid-aest", ctRequired, "not_cached", "Thu, 18 Aug 2050 02:01:18 AEST"),
		ctExpiresCase("freshness-expires-invalid-2-digit-year", ctRequired, "not_cached", "Thu, 18 Aug 50 02:01:18 GMT"),
		ctExpiresCase("freshness-expires-invalid-no-comma", ctRequired, "not_cached", "Thu 18 Aug 2050 02:01:18 GMT"),
		ctExpiresCase("freshness-expires-invalid-multiple-spaces", ctRequired, "not_cached", "Thu, 18  Aug  2050 02:01:18 GMT"),
		ctExpiresCase("freshness-expires-invalid-date-dashes", ctRequired, "not_cached", "Thu, 18-Aug-2050 02:01:18 GMT"),
		ctExpiresCase("freshness-expires-invalid-time-periods", ctRequired, "not_cached", "Thu, 18 Aug 2050 02.01.18 GMT"),
		ctExpiresCase("freshness-expires-invalid-1-digit-hour", ctRequired, "not_cached", "Thu, 18 Aug 2050 2:01:18 GMT"),
		ctExpiresCase("freshness-expires-invalid-multiple-lines", ctRequired, "not_cached",
			"Thu, 18 Aug 2050 2:01:18 GMT", "Thu, 18 Aug 2050 2:01:19 GMT"),
	}
}

// cc-response.mjs
func ctCCResponseCases() []ctCase {
	fresh10000 := func(cc string, more ...ctField) ctReq {
		return ctStored(append([]ctField{fv("Cache-Control", cc), fd("Expires", 10000), fd("Date", 0)}, more...)...)
	}
	mustRevalidate := []ctField{fv("Cache-Control", "max-age=2, must-revalidate"), fv("ETag", `"abcd"`)}
	return []ctCase{
		ctCCCase("cc-resp-private-shared", ctRequired, "private, max-age=3600", false, "not_cached"),
		ctCCCase("cc-resp-no-store", ctRequired, "no-store", false, "not_cached"),
		ctCCCase("cc-resp-no-store-case-insensitive", ctRequired, "No-StOrE", false, "not_cached"),
		{id: "cc-resp-no-store-fresh", kind: ctRequired, reqs: []ctReq{fresh10000("max-age=10000, no-store"), ctExpect("not_cached")}},
		{id: "cc-resp-no-store-old-new", kind: ctRequired, reqs: []ctReq{
			fresh10000("max-age=10000", fv("A", "1")),
			ctStored(fv("Cache-Control", "no-store"), fd("Date", 0), fv("A", "2")),
			{typ: "cached", wantHeaders: []ctWant{wantIs("a", "1")}},
		}},
		{id: "cc-resp-no-store-old-max-age", kind: ctRequired, reqs: []ctReq{
			fresh10000("max-age=10000", fv("A", "1")),
			ctStored(fv("Cache-Control", "no-store, max-age=0"), fd("Date", 0), fv("A", "2")),
			{typ: "cached", wantHeaders: []ctWant{wantIs("a", "1")}},
		}},
		{id: "cc-resp-no-cache", kind: ctRequired, reqs: []ctReq{fresh10000("max-age=10000, no-cache"), ctExpect("not_cached")}},
		{id: "cc-resp-no-cache-case-insensitive", kind: ctRequired, reqs: []ctReq{fresh10000("max-age=10000, No-CaChE"), ctExpect("not_cached")}},
		{id: "cc-resp-no-cache-revalidate", kind: ctOptimal, reqs: []ctReq{
			ctStored(fv("Cache-Control", "no-cache"), fv("ETag", `"abcd"`)), ctExpect("etag_validated")}},
		{id: "cc-resp-no-cache-revalidate-fresh", kind: ctOptimal, reqs: []ctReq{
			fresh10000("max-age=10000, no-cache", fv("ETag", `"abcd"`)), ctExpect("etag_validated")}},
		{id: "headers-omit-headers-listed-in-Cache-Control-no-cache-single", kind: ctCheck, reqs: []ctReq{
			ctStored(fv("Cache-Control", `no-cache="a"`), fv("a", "1"), fv("b", "2"), fv("Cache-Control", "max-age=3600"), fd("Date", 0)),
			{typ: "cached", wantHeaders: []ctWant{wantIs("b", "2")}, wantMissing: []ctField{{name: "a"}}, setupTests: []string{"expected_type"}},
		}},
		{id: "headers-omit-headers-listed-in-Cache-Control-no-cache", kind: ctCheck, reqs: []ctReq{
			ctStored(fv("Cache-Control", `no-cache="a, b"`), fv("a", "1"), fv("b", "2"), fv("c", "3"), fv("Cache-Control", "max-age=3600"), fd("Date", 0)),
			{typ: "cached", wantHeaders: []ctWant{wantIs("c", "3")}, wantMissing: []ctField{{name: "a"}, {name: "b"}}, setupTests: []string{"expected_type"}},
		}},
		{id: "cc-resp-must-revalidate-fresh", kind: ctOptimal, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=10000, must-revalidate"), fv("ETag", `"abcd"`)), ctExpect("cached")}},
		{id: "cc-resp-must-revalidate-stale", kind: ctRequired, reqs: []ctReq{
			ctStored(mustRevalidate...),
			{typ: "cached", setup: true, pause: true, resp: mustRevalidate},
			ctExpect("etag_validated"),
		}},
	}
}

// ctStaleCheckCC is the suite's makeStaleCheckCC: a directive that forbids
// serving the response stale, then a disconnecting origin.
func ctStaleCheckCC(cc, value string) ctCase {
	return ctCase{id: "stale-close-" + cc + value, kind: ctRequired, reqs: []ctReq{
		ctStoredPause(fv("Cache-Control", "max-age=2, "+cc+value)),
		{disconnect: true, wantStatus: -1, noBodyCheck: true, wantMissing: []ctField{{name: "server-request-count"}}},
	}}
}

// stale.mjs
func ctStaleCases() []ctCase {
	return []ctCase{
		{id: "stale-close", kind: ctCheck, reqs: []ctReq{ctBecomeStale(ctReq{}), {disconnect: true, typ: "cached"}}},
		{id: "stale-503", kind: ctCheck, reqs: []ctReq{ctBecomeStale(ctReq{}), {status: 503, wantStatus: 200, typ: "cached"}}},
		{id: "stale-while-revalidate", kind: ctOptimal, reqs: []ctReq{
			ctStoredPause(fv("Cache-Control", "max-age=1, stale-while-revalidate=3600"), fv("ETag", `"abc"`)), ctExpect("cached")}},
		{id: "stale-while-revalidate-window", kind: ctRequired, reqs: []ctReq{
			ctStoredPause(fv("Cache-Control", "max-age=1, stale-while-revalidate=4"), fv("ETag", `"abc"`)),
			{setup: true, pause: true, resp: []ctField{fu("Cache-Control", "no-cache"), fu("ETag", `"def"`)}, typ: "cached"},
			{wantHeaders: []ctWant{wantIs("client-request-count", "3")}},
		}},
		{id: "stale-sie-close", kind: ctCheck, reqs: []ctReq{
			ctStoredPause(fv("Cache-Control", "max-age=2, stale-if-error=60")), {disconnect: true, typ: "cached"}}},
		{id: "stale-sie-503", kind: ctCheck, reqs: []ctReq{
			ctStoredPause(fv("Cache-Control", "max-age=2, stale-if-error=60")), {status: 503, wantStatus: 200, typ: "cached"}}},
		ctStaleCheckCC("must-revalidate", ""),
		ctStaleCheckCC("proxy-revalidate", ""),
		ctStaleCheckCC("no-cache", ""),
		ctStaleCheckCC("s-maxage", "=2"),
		{id: "stale-warning-stored", kind: ctCheck, reqs: []ctReq{ctStale(ctReq{}),
			{disconnect: true, typ: "cached", wantHeaders: []ctWant{wantHas("warning")}, setupTests: []string{"expected_type"}}}},
		{id: "stale-warning-become", kind: ctCheck, reqs: []ctReq{ctBecomeStale(ctReq{}),
			{disconnect: true, typ: "cached", wantHeaders: []ctWant{wantHas("warning")}, setupTests: []string{"expected_type"}}}},
	}
}

// heuristic-freshness.mjs, on the stack with heuristic freshness on.
func ctHeuristicCases() []ctCase {
	var cs []ctCase
	for _, s := range []struct {
		reuse  bool
		code   int
		noBody bool
		extra  []ctField
		suffix string
	}{
		{reuse: true, code: 200}, {code: 201}, {code: 202}, {reuse: true, code: 203}, {reuse: true, code: 204, noBody: true},
		{code: 403}, {reuse: true, code: 404}, {reuse: true, code: 405}, {reuse: true, code: 410}, {reuse: true, code: 414},
		{reuse: true, code: 501}, {code: 502}, {code: 503}, {code: 504}, {code: 599},
		{reuse: true, code: 599, extra: []ctField{fv("Cache-Control", "public")}},
	} {
		typ, kind := "not_cached", ctRequired
		if s.reuse {
			typ, kind = "cached", ctOptimal
		}
		body := ctStr(ctContent(strconv.Itoa(s.code)))
		first := ctReq{status: s.code, respBody: body, noBody: s.noBody, setup: true,
			resp: append([]ctField{fd("Last-Modified", -24*60*60), fd("Date", 0)}, s.extra...)}
		cs = append(cs, ctCase{id: fmt.Sprintf("heuristic-%d-%s", s.code, typ), kind: kind, reqs: []ctReq{
			first, {typ: typ, status: s.code, respBody: body, noBody: s.noBody}}})
	}
	for _, delta := range []int{5, 10, 30, 60, 300, 600, 1200, 1800, 3600, 3600 * 12, 3600 * 24} {
		cs = append(cs, ctCase{id: fmt.Sprintf("heuristic-delta-%d", delta), kind: ctCheck, reqs: []ctReq{
			ctStoredPause(fd("Last-Modified", -delta), fd("Date", 0)), ctExpect("cached")}})
	}
	return cs
}

// method.mjs
func ctMethodCases() []ctCase {
	return []ctCase{{id: "method-POST", kind: ctOptimal, reqs: []ctReq{
		{method: "POST", body: "12345", header: []ctField{fv("Content-Type", "text/plain")}, magicLocations: true, setup: true,
			resp: []ctField{fv("Cache-Control", "max-age=3600"), fv("Content-Location", ""), fd("Date", 0)}},
		ctExpect("cached"),
	}}}
}

// status.mjs
func ctStatusCases() []ctCase {
	var cs []ctCase
	for _, code := range []int{200, 203, 204, 299, 301, 302, 303, 307, 308, 400, 404, 410, 499, 500, 502, 503, 504, 599} {
		body, noBody := ctStr(ctContent(strconv.Itoa(code))), code == 204
		cs = append(cs,
			ctCase{id: fmt.Sprintf("status-%d-fresh", code), kind: ctOptimal, reqs: []ctReq{
				ctFresh(ctReq{status: code, respBody: body, noBody: noBody}),
				{typ: "cached", status: code, respBody: body, noBody: noBody},
			}},
			ctCase{id: fmt.Sprintf("status-%d-stale", code), kind: ctRequired, reqs: []ctReq{
				ctStale(ctReq{status: code, respBody: body, noBody: noBody}),
				{typ: "not_cached", respBody: body, noBody: noBody},
			}})
	}
	return append(cs,
		ctCase{id: "status-599-must-understand", kind: ctRequired, reqs: []ctReq{
			{status: 599, resp: []ctField{fv("Cache-Control", "max-age=3600, no-store, must-understand")}, setup: true},
			ctExpect("not_cached"),
		}},
		ctCase{id: "status-200-must-understand", kind: ctOptimal, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=3600, no-store, must-understand")), ctExpect("cached")}},
	)
}

// cc-request.mjs
func ctCCRequestCases() []ctCase {
	ask := func(typ, cc string) ctReq {
		return ctReq{typ: typ, header: []ctField{fv("Cache-Control", cc)}}
	}
	freshPause := ctFresh(ctReq{})
	freshPause.pause = true
	return []ctCase{
		{id: "ccreq-ma0", kind: ctCheck, reqs: []ctReq{ctFresh(ctReq{}), ask("not_cached", "max-age=0")}},
		{id: "ccreq-ma1", kind: ctCheck, reqs: []ctReq{freshPause, ask("not_cached", "max-age=1")}},
		{id: "ccreq-magreaterage", kind: ctCheck, reqs: []ctReq{
			ctFresh(ctReq{resp: []ctField{fv("Age", "1800")}}), ask("not_cached", "max-age=600")}},
		{id: "ccreq-max-stale", kind: ctCheck, reqs: []ctReq{ctBecomeStale(ctReq{}), ask("cached", "max-stale=1000")}},
		{id: "ccreq-max-stale-age", kind: ctCheck, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=1500"), fv("Age", "2000")), ask("cached", "max-stale=1000")}},
		{id: "ccreq-min-fresh", kind: ctCheck, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=1500")), ask("not_cached", "min-fresh=2000")}},
		{id: "ccreq-min-fresh-age", kind: ctCheck, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=1500"), fv("Age", "1000")), ask("not_cached", "min-fresh=1000")}},
		{id: "ccreq-no-cache", kind: ctCheck, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=3600")), ask("not_cached", "no-cache")}},
		{id: "ccreq-no-cache-lm", kind: ctCheck, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=3600"), fd("Last-Modified", -10000), fd("Date", 0)), ask("lm_validated", "no-cache")}},
		{id: "ccreq-no-cache-etag", kind: ctCheck, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=3600"), fv("ETag", `"`+ctContent("abc")+`"`)), ask("etag_validated", "no-cache")}},
		{id: "ccreq-no-store", kind: ctCheck, reqs: []ctReq{ctFresh(ctReq{}), ask("not_cached", "no-store")}},
		{id: "ccreq-oic", kind: ctCheck, reqs: []ctReq{{
			header: []ctField{fv("Cache-Control", "only-if-cached")}, wantStatus: 504, noTextCheck: true}}},
	}
}

// pragma.mjs
func ctPragmaCases() []ctCase {
	pragma := func(v string) ctReq { return ctReq{typ: "cached", header: []ctField{fv("Pragma", v)}} }
	return []ctCase{
		{id: "pragma-request-no-cache", kind: ctCheck, reqs: []ctReq{ctFresh(ctReq{}), pragma("no-cache")}},
		{id: "pragma-request-extension", kind: ctCheck, reqs: []ctReq{ctFresh(ctReq{}), pragma("unrecognised-extension")}},
		{id: "pragma-response-no-cache", kind: ctCheck, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=3600"), fv("Pragma", "no-cache")), ctExpect("cached")}},
		{id: "pragma-response-no-cache-heuristic", kind: ctCheck, reqs: []ctReq{
			ctStored(fd("Date", 0), fd("Last-Modified", -10000), fv("Pragma", "no-cache")), ctExpect("cached")}},
		{id: "pragma-response-extension", kind: ctCheck, reqs: []ctReq{
			ctStored(fv("Cache-Control", "max-age=3600"), fv("Pragma", "unrecognised-extension")), ctExpect("cached")}},
	}
}

// ctVaried: a request with the given fields (name, value pairs).
func ctVaried(typ string, kv ...string) ctReq {
	q := ctReq{typ: typ}
	for i := 0; i+1 < len(kv); i += 2 {
		q.header = append(q.header, fv(kv[i], kv[i+1]))
	}
	return q
}

// ctVaryStored: the suite's vary setups, a response fresh for 5000 s with
// vary (unchecked when the suite says so) to a request with kv.
func ctVaryStored(vary ctField, kv ...string) ctReq {
	q := ctVaried("", kv...)
	q.resp = []ctField{fv("Cache-Control", "max-age=5000"), fd("Last-Modified", -3000), fd("Date", 0), vary}
	q.setup = true
	return q
}

// vary.mjs
func ctVaryCases() []ctCase {
	foo := fv("Vary", "Foo")
	two := fu("Vary", "Foo, Bar")
	three := fu("Vary", "Foo, Bar, Baz")
	lang := fv("Vary", "Accept-Language")
	foo1 := ctStr(ctContent("foo_1"))
	withBody := func(q ctReq, b *string) ctReq { q.respBody = b; return q }
	return []ctCase{
		{id: "vary-match", kind: ctOptimal, reqs: []ctReq{ctVaryStored(foo, "Foo", "1"), ctVaried("cached", "Foo", "1")}},
		{id: "vary-no-match", kind: ctRequired, reqs: []ctReq{ctVaryStored(foo, "Foo", "1"), ctVaried("not_cached", "Foo", "2")}},
		{id: "vary-omit-stored", kind: ctRequired, reqs: []ctReq{ctVaryStored(foo), ctVaried("not_cached", "Foo", "1")}},
		{id: "vary-omit", kind: ctRequired, reqs: []ctReq{ctVaryStored(foo, "Foo", "1"), ctVaried("not_cached")}},
		{id: "vary-invalidate", kind: ctOptimal, reqs: []ctReq{
			withBody(ctVaryStored(foo, "Foo", "1"), foo1),
			func() ctReq {
				q := ctVaryStored(foo, "Foo", "2")
				q.typ, q.respBody = "not_cached", ctStr(ctContent("foo_2"))
				return q
			}(),
			withBody(ctVaried("cached", "Foo", "1"), foo1),
		}},
		{id: "vary-cache-key", kind: ctOptimal, reqs: []ctReq{
			ctVaryStored(foo, "Foo", "1", "Other", "2"), ctVaried("cached", "Foo", "1", "Other", "3")}},
		{id: "vary-2-match", kind: ctOptimal, reqs: []ctReq{
			ctVaryStored(two, "Foo", "1", "Bar", "abc"), ctVaried("cached", "Foo", "1", "Bar", "abc")}},
		{id: "vary-2-no-match", kind: ctRequired, reqs: []ctReq{
			ctVaryStored(two, "Foo", "1", "Bar", "abc"), ctVaried("not_cached", "Foo", "2", "Bar", "abc")}},
		{id: "vary-2-match-omit", kind: ctRequired, reqs: []ctReq{ctVaryStored(two, "Foo", "1", "Bar", "abc"), ctVaried("not_cached")}},
		{id: "vary-3-match", kind: ctOptimal, reqs: []ctReq{
			ctVaryStored(three, "Foo", "1", "Bar", "abc", "Baz", "789"), ctVaried("cached", "Foo", "1", "Bar", "abc", "Baz", "789")}},
		{id: "vary-3-no-match", kind: ctRequired, reqs: []ctReq{
			ctVaryStored(three, "Foo", "1", "Bar", "abc", "Baz", "789"), ctVaried("not_cached", "Foo", "2", "Bar", "abc", "Baz", "789")}},
		{id: "vary-3-order", kind: ctRequired, reqs: []ctReq{
			ctVaryStored(three, "Foo", "1", "Bar", "abc", "Baz", "789"), ctVaried("not_cached", "Foo", "1", "Baz", "789", "Bar", "abcde")}},
		{id: "vary-3-omit", kind: ctOptimal, reqs: []ctReq{
			ctVaryStored(three, "Foo", "1", "Baz", "789"), ctVaried("cached", "Foo", "1", "Baz", "789")}},
		{id: "vary-star", kind: ctRequired, reqs: []ctReq{
			ctVaryStored(fv("Vary", "*"), "Foo", "1", "Baz", "789"), ctVaried("not_cached", "Foo", "1", "Baz", "789")}},
		{id: "vary-normalise-combine", kind: ctOptimal, reqs: []ctReq{
			ctVaryStored(foo, "Foo", "1, 2"), ctVaried("cached", "Foo", "1", "Foo", "2")}},
		{id: "vary-normalise-lang-order", kind: ctOptimal, reqs: []ctReq{
			ctVaryStored(lang, "Accept-Language", "en, de"), ctVaried("cached", "Accept-Language", "de, en")}},
		{id: "vary-normalise-lang-case", kind: ctOptimal, reqs: []ctReq{
			ctVaryStored(lang, "Accept-Language", "en, de"), ctVaried("cached", "Accept-Language", "eN, De")}},
		{id: "vary-normalise-lang-space", kind: ctOptimal, reqs: []ctReq{
			ctVaryStored(lang, "Accept-Language", "en, de"), ctVaried("cached", "Accept-Language", " en ,   de")}},
		{id: "vary-normalise-lang-select", kind: ctOptimal, reqs: []ctReq{
			func() ctReq {
				q := ctVaryStored(lang, "Accept-Language", "en, de")
				q.resp = append(q.resp, fv("Content-Language", "de"))
				return q
			}(),
			ctVaried("cached", "Accept-Language", "fr;q=0.5, de;q=1.0")}},
		{id: "vary-normalise-space", kind: ctOptimal, reqs: []ctReq{
			ctVaryStored(foo, "Foo", "1,2"), ctVaried("cached", "Foo", " 1, 2 ")}},
	}
}

// vary-parse.mjs
func ctVaryParseCases() []ctCase {
	star := func(id string, vary ...string) ctCase {
		first := ctVaried("", "Foo", "1", "Baz", "789")
		first.resp = []ctField{fv("Cache-Control", "max-age=5000"), fd("Last-Modified", -3000), fd("Date", 0)}
		for _, v := range vary {
			first.resp = append(first.resp, fu("Vary", v))
		}
		first.setup = true
		return ctCase{id: id, kind: ctRequired, reqs: []ctReq{first, ctVaried("not_cached", "Foo", "1", "Baz", "789")}}
	}
	return []ctCase{
		star("vary-syntax-star", "*"),
		star("vary-syntax-star-star", "*, *"),
		star("vary-syntax-star-star-lines", "*", "*"),
		star("vary-syntax-empty-star", ", *"),
		star("vary-syntax-empty-star-lines", "", "*"),
		star("vary-syntax-star-foo", "*, Foo"),
		star("vary-syntax-foo-star", "Foo, *"),
	}
}

// ctIMS: a request with If-Modified-Since delta seconds from the previous
// response's Server-Now (magic_ims), expecting typ and 304.
func ctIMS(typ string, delta int, rfc850 bool) ctReq {
	return ctReq{header: []ctField{fd("If-Modified-Since", delta)}, magicIMS: true, rfc850: rfc850, typ: typ, wantStatus: 304}
}

// conditional-lm.mjs (browser_skip: these are for shared caches)
func ctConditionalLMCases() []ctCase {
	lm := ctReq{resp: []ctField{fd("Last-Modified", -3000)}}
	return []ctCase{
		{id: "conditional-lm-fresh", kind: ctOptimal, reqs: []ctReq{ctFresh(lm), ctIMS("cached", -3000, false)}},
		{id: "conditional-lm-fresh-earlier", kind: ctOptimal, reqs: []ctReq{ctFresh(lm), ctIMS("cached", -2000, false)}},
		{id: "conditional-lm-stale", kind: ctOptimal, reqs: []ctReq{ctBecomeStale(lm), ctIMS("lm_validated", -3000, false)}},
		{id: "conditional-lm-fresh-no-lm", kind: ctOptimal, reqs: []ctReq{ctFresh(ctReq{}),
			func() ctReq { q := ctIMS("cached", -3000, false); q.setupTests = []string{"expected_type"}; return q }()}},
		{id: "conditional-lm-fresh-rfc850", kind: ctOptimal, reqs: []ctReq{ctFresh(lm),
			func() ctReq { q := ctIMS("cached", -3000, true); q.setupTests = []string{"expected_type"}; return q }()}},
	}
}

// ctINM: a request with If-None-Match v, answered 304 from the cache.
func ctINM(v string, want ...ctWant) ctReq {
	return ctReq{header: []ctField{fv("If-None-Match", v)}, typ: "cached", wantStatus: 304, wantHeaders: want}
}

// ctETagged: the fresh template with ETag v.
func ctETagged(v string) ctReq { return ctFresh(ctReq{resp: []ctField{fv("ETag", v)}}) }

// conditional-etag.mjs
func ctConditionalETagCases() []ctCase {
	staleETag := func(v string) ctReq { return ctBecomeStale(ctReq{resp: []ctField{fv("ETag", v)}}) }
	generate := func(v string) ctReq {
		return ctReq{typ: "etag_validated", wantReq: []ctField{fv("If-None-Match", v)}}
	}
	varyAbc := func(expires int) ctReq {
		q := ctVaried("", "Abc", "123")
		q.resp = []ctField{fd("Expires", expires), fv("ETag", `"abcdef"`), fd("Date", 0), fv("Vary", "Abc")}
		q.setup, q.pause = true, true
		return q
	}
	return []ctCase{
		{id: "conditional-etag-strong-respond", kind: ctOptimal, reqs: []ctReq{ctETagged(`"abcdef"`), ctINM(`"abcdef"`)}},
		{id: "conditional-304-etag", kind: ctRequired, reqs: []ctReq{ctETagged(`"abcdef"`), ctINM(`"abcdef"`, wantIs("ETag", `"abcdef"`))}},
		{id: "conditional-etag-precedence", kind: ctRequired, reqs: []ctReq{
			ctFresh(ctReq{resp: []ctField{fd("Last-Modified", -5000), fv("ETag", `"abcdef"`)}}),
			// The two conditions disagree: If-None-Match matches (304), while
			// If-Modified-Since predates Last-Modified (200). If-None-Match wins.
			{header: []ctField{fv("If-None-Match", `"abcdef"`), fd("If-Modified-Since", -10000)}, magicIMS: true, typ: "cached", wantStatus: 304},
		}},
		{id: "conditional-etag-strong-respond-obs-text", kind: ctCheck, reqs: []ctReq{ctETagged(`"abcdefü"`), ctINM(`"abcdefü"`, wantIs("ETag", `"abcdefü"`))}},
		{id: "conditional-etag-quoted-respond-unquoted", kind: ctCheck, reqs: []ctReq{ctETagged(`"abcdef"`), ctINM(`abcdef`)}},
		{id: "conditional-etag-unquoted-respond-unquoted", kind: ctCheck, reqs: []ctReq{ctETagged(`abcdef`), ctINM(`abcdef`)}},
		{id: "conditional-etag-unquoted-respond-quoted", kind: ctCheck, reqs: []ctReq{ctETagged(`abcdef`), ctINM(`"abcdef"`)}},
		{id: "conditional-etag-weak-respond", kind: ctOptimal, reqs: []ctReq{ctETagged(`W/"abcdef"`), ctINM(`W/"abcdef"`)}},
		{id: "conditional-etag-weak-respond-lowercase", kind: ctCheck, reqs: []ctReq{ctETagged(`w/"abcdef"`), ctINM(`w/"abcdef"`)}},
		{id: "conditional-etag-weak-respond-backslash", kind: ctCheck, reqs: []ctReq{ctETagged(`W\"abcdef"`), ctINM(`W\"abcdef"`)}},
		{id: "conditional-etag-weak-respond-omit-slash", kind: ctCheck, reqs: []ctReq{ctETagged(`W"abcdef"`), ctINM(`W"abcdef"`)}},
		{id: "conditional-etag-strong-respond-multiple-first", kind: ctOptimal, reqs: []ctReq{ctETagged(`"abcdef"`), ctINM(`"abcdef", "1234", "5678"`)}},
		{id: "conditional-etag-strong-respond-multiple-second", kind: ctOptimal, reqs: []ctReq{ctETagged(`"abcdef"`), ctINM(`"1234", "abcdef", "5678"`)}},
		{id: "conditional-etag-strong-respond-multiple-last", kind: ctOptimal, reqs: []ctReq{ctETagged(`"abcdef"`), ctINM(`"1234", "5678", "abcdef"`)}},
		{id: "conditional-etag-vary-headers", kind: ctRequired, reqs: []ctReq{
			varyAbc(1),
			{header: []ctField{fv("Abc", "123")}, typ: "etag_validated", wantReq: []ctField{fv("Abc", "123")}, setupTests: []string{"expected_type"}},
		}},
		{id: "conditional-etag-vary-headers-mismatch", kind: ctCheck, reqs: []ctReq{
			varyAbc(10000),
			{header: []ctField{fv("Abc", "456")}, wantReq: []ctField{fv("If-None-Match", `"abcdef"`)}},
		}},
		{id: "conditional-etag-strong-generate", kind: ctOptimal, reqs: []ctReq{staleETag(`"abcdef"`), generate(`"abcdef"`)}},
		{id: "conditional-etag-weak-generate-weak", kind: ctOptimal, reqs: []ctReq{staleETag(`W/"abcdef"`), generate(`W/"abcdef"`)}},
		{id: "conditional-etag-strong-generate-unquoted", kind: ctCheck, reqs: []ctReq{staleETag(`abcdef`), generate(`"abcdef"`)}},
		{id: "conditional-etag-forward", kind: ctCheck, reqs: []ctReq{{
			header: []ctField{fv("If-None-Match", `"abcdef"`)}, wantReq: []ctField{fv("If-None-Match", `"abcdef"`)}}}},
		{id: "conditional-etag-forward-unquoted", kind: ctCheck, reqs: []ctReq{{
			header: []ctField{fv("If-None-Match", `abcdef`)}, wantReq: []ctField{fv("If-None-Match", `"abcdef"`)}}}},
	}
}

// ctHeader is an entry of the suite's header list (tests/lib/header-list.mjs).
type ctHeader struct {
	name       string
	valA, valB string // "" for ctContent values
	noStore    bool   // a hop-by-hop field: never stored, never updated
	noUpdate   bool   // a 304 must not update it
	reqUpdate  bool   // a 304 must update it (else: check)
	noBodyChk  bool
}

// ctHeaders is the suite's header list but Transfer-Encoding (ctHeadersCases adds its case).
var ctHeaders = []ctHeader{
	{name: "Test-Header", reqUpdate: true},
	{name: "X-Test-Header", reqUpdate: true},
	{name: "Content-Foo", reqUpdate: true},
	{name: "X-Content-Foo", reqUpdate: true},
	{name: "Cache-Control", valA: "max-age=1", valB: "max-age=3600", reqUpdate: true},
	{name: "Connection", noStore: true},
	{name: "Content-Encoding"},
	{name: "Content-Length", valA: "36", valB: "10", noUpdate: true, noBodyChk: true},
	{name: "Content-Location", valA: "/foo", valB: "/bar"},
	{name: "Content-MD5", valA: "rL0Y20zC+Fzt72VPzMSk2A==", valB: "N7UdGUp1E+RbVvZSTy1R8g=="},
	{name: "Content-Range"},
	{name: "Content-Security-Policy", valA: "default-src 'self'", valB: "default-src 'self' cdn.example.com"},
	{name: "Content-Type", valA: "text/plain", valB: "text/plain;charset=utf-8"},
	{name: "Clear-Site-Data", valA: "cache", valB: "cookies"},
	{name: "ETag", valA: `"abcdef"`, valB: `"ghijkl"`},
	{name: "Expires", valA: "Fri, 01 Jan 2038 01:01:01 GMT", valB: "Mon, 11 Jan 2038 11:11:11 GMT"},
	{name: "Keep-Alive", noStore: true},
	{name: "Proxy-Authenticate", noStore: true},
	{name: "Proxy-Authentication-Info", noStore: true},
	{name: "Proxy-Authorization", noStore: true},
	{name: "Proxy-Connection", noStore: true},
	{name: "Public-Key-Pins"},
	{name: "Set-Cookie", valA: "a=b", valB: "a=c"},
	{name: "Set-Cookie2", valA: "a=b", valB: "a=c"},
	{name: "TE", noStore: true},
	{name: "Upgrade", noStore: true},
	{name: "X-Frame-Options", valA: "deny", valB: "sameorigin"},
	{name: "X-XSS-Protection", valA: "1", valB: "1; mode=block"},
}

// headers.mjs
func ctHeadersCases() []ctCase {
	cs := []ctCase{{id: "headers-omit-headers-listed-in-Connection", kind: ctRequired, reqs: []ctReq{
		ctFresh(ctReq{resp: []ctField{fu("Connection", "a, b"), fu("a", "1"), fu("b", "2"), fu("c", "3")}}),
		{typ: "cached", wantHeaders: []ctWant{wantIs("c", "3")}, wantMissing: []ctField{{name: "a"}, {name: "b"}},
			setupTests: []string{"expected_type", "expected_response_headers"}},
	}}}
	for _, h := range ctHeaders {
		value := ctOr(h.valB, ctContent(h.name+"-store-value"))
		first := ctReq{resp: []ctField{fd("Date", 0), {name: h.name, value: value, unchecked: h.noStore}}, setup: true, noBodyCheck: h.noBodyChk}
		if h.name != "Cache-Control" {
			first.resp = append(first.resp, fv("Cache-Control", "max-age=3600"))
		}
		second := ctReq{typ: "cached", setupTests: []string{"expected_type"}, noBodyCheck: h.noBodyChk}
		if h.noStore {
			second.wantMissing = []ctField{{name: h.name, value: value}}
		} else {
			second.wantHeaders = []ctWant{wantIs(h.name, value)}
		}
		cs = append(cs, ctCase{id: "headers-store-" + h.name, kind: ctRequired, reqs: []ctReq{first, second}})
	}
	// Transfer-Encoding with a coding nobody knows: the origin writes it by hand (ctWriteRaw).
	te := ctContent("Transfer-Encoding-store-value")
	return append(cs, ctCase{id: "headers-store-Transfer-Encoding", kind: ctRequired, reqs: []ctReq{
		{resp: []ctField{fd("Date", 0), fu("Transfer-Encoding", te), fv("Cache-Control", "max-age=3600")}, setup: true, pause: true},
		{typ: "cached", setupTests: []string{"expected_type"}, wantMissing: []ctField{{name: "Transfer-Encoding", value: te}}},
	}})
}

// update304.mjs
func ctUpdate304Cases() []ctCase {
	lm := "Wed, 01 Jan 2020 00:00:00 GMT"
	valueA := ctContent("Test-Header-value-A")
	cs := []ctCase{{id: "304-lm-use-stored-Test-Header", kind: ctRequired, reqs: []ctReq{
		ctStoredPause(fv("Cache-Control", "max-age=2"), fv("Last-Modified", lm), fd("Date", 0), fv("Test-Header", valueA)),
		{resp: []ctField{fv("Last-Modified", lm), fd("Date", 0)}, typ: "lm_validated",
			wantHeaders: []ctWant{wantIs("Test-Header", valueA)}, setupTests: []string{"expected_type"}},
	}}}
	for _, h := range ctHeaders {
		if h.noStore {
			continue
		}
		a := ctOr(h.valA, ctContent(h.name+"-value-A"))
		b := ctOr(h.valB, ctContent(h.name+"-value-B"))
		kind, want := ctCheck, b
		switch {
		case h.noUpdate:
			kind, want = ctRequired, a
		case h.reqUpdate:
			kind = ctRequired
		}
		etag := `"` + ctContent(h.name+"-etag-1") + `"`
		response := func(v string, validator bool) []ctField {
			fs := []ctField{fd("Date", 0), {name: h.name, value: v, unchecked: h.noUpdate}}
			if h.name != "Cache-Control" {
				fs = append(fs, fv("Cache-Control", "max-age=2"))
			}
			if validator && h.name != "ETag" {
				fs = append(fs, fv("ETag", etag))
			}
			return fs
		}
		cs = append(cs, ctCase{id: "304-etag-update-response-" + h.name, kind: kind, reqs: []ctReq{
			{resp: response(a, true), setup: true, pause: true, noBodyCheck: h.noBodyChk},
			{resp: response(b, true), typ: "etag_validated", setupTests: []string{"expected_type"},
				wantHeaders: []ctWant{wantIs(h.name, want)}, noBodyCheck: h.noBodyChk},
			{resp: response(want, false), typ: "cached", setupTests: []string{"expected_type"},
				wantHeaders: []ctWant{wantIs(h.name, want)}, noBodyCheck: h.noBodyChk},
		}})
	}
	return cs
}

// updateHead.mjs
func ctUpdateHeadCases() []ctCase {
	head := func(q ctReq) ctReq { q.method, q.wantMethod = "HEAD", "HEAD"; return q }
	return []ctCase{
		{id: "head-writethrough", kind: ctCheck, reqs: []ctReq{ctBecomeStale(ctReq{}), head(ctReq{})}},
		{id: "head-200-retain", kind: ctCheck, reqs: []ctReq{ctBecomeStale(ctReq{}), head(ctReq{wantHeaders: []ctWant{wantIs("Template-A", "1")}})}},
		{id: "head-200-freshness-update", kind: ctCheck, reqs: []ctReq{ctBecomeStale(ctReq{}),
			head(ctReq{resp: []ctField{fv("Cache-Control", "max-age=1000")}}), ctExpect("cached")}},
		{id: "head-200-update", kind: ctCheck, reqs: []ctReq{ctBecomeStale(ctReq{}),
			head(ctReq{resp: []ctField{fv("Template-A", "2"), fv("Cache-Control", "max-age=1000")}}),
			{typ: "cached", setupTests: []string{"expected_type"}, wantHeaders: []ctWant{wantIs("Template-A", "2")}}}},
		{id: "head-410-update", kind: ctCheck, reqs: []ctReq{ctBecomeStale(ctReq{}),
			head(ctReq{status: 410, resp: []ctField{fv("Template-A", "2"), fv("Cache-Control", "max-age=1000")}}),
			{typ: "cached", setupTests: []string{"expected_type"}, wantHeaders: []ctWant{wantIs("Template-A", "2")}}}},
	}
}

// invalidation.mjs
func ctInvalidationCases() []ctCase {
	target := func(file, typ string) ctReq {
		return ctReq{file: file, typ: typ, setup: typ == "",
			resp: []ctField{fv("Cache-Control", "max-age=100000"), fd("Last-Modified", 0), fd("Date", 0)}}
	}
	var cs []ctCase
	for _, m := range []string{"POST", "PUT", "DELETE", "M-SEARCH"} {
		unsafe := ctReq{method: m, body: "abc", setup: true}
		failed := ctReq{method: m, body: "abc", setup: true, status: 500}
		moved := ctReq{method: m, body: "abc", setup: true, magicLocations: true,
			resp: []ctField{fv("Location", "location_target"), fv("Content-Location", "content_location_target")}}
		cs = append(cs,
			ctCase{id: "invalidate-" + m, kind: ctRequired, reqs: []ctReq{ctFresh(ctReq{}), unsafe, ctExpect("not_cached")}},
			ctCase{id: "invalidate-" + m + "-failed", kind: ctOptimal, reqs: []ctReq{ctFresh(ctReq{}), failed, ctExpect("cached")}},
			ctCase{id: "invalidate-" + m + "-location", kind: ctCheck, reqs: []ctReq{
				target("location_target", ""), moved, target("location_target", "not_cached")}},
			ctCase{id: "invalidate-" + m + "-cl", kind: ctCheck, reqs: []ctReq{
				target("content_location_target", ""), moved, target("content_location_target", "not_cached")}},
		)
	}
	return cs
}

// partial.mjs
func ctPartialCases() []ctCase {
	rng := func(r string) []ctField { return []ctField{fv("Range", r)} }
	partial206 := func(contentRange string) ctReq {
		return ctReq{header: rng("bytes=-5"), status: 206, respBody: ctStr("01234"), setup: true,
			resp: []ctField{fv("Cache-Control", "max-age=3600"), fv("Content-Range", contentRange)}}
	}
	complete := func(body string, more ...ctField) ctReq {
		return ctReq{respBody: ctStr(body), setup: true, resp: append([]ctField{fv("Cache-Control", "max-age=3600")}, more...)}
	}
	served := func(r, text string) ctReq {
		return ctReq{header: rng(r), typ: "cached", wantStatus: 206, wantText: ctStr(text)}
	}
	first := partial206("bytes 4-9/10")
	first.wantReq = rng("bytes=-5")
	setupTests := []string{"expected_type", "expected_status", "expected_response_text"}
	useHeaders := served("bytes=0-1", "01")
	useHeaders.setupTests, useHeaders.resp = setupTests, []ctField{fv("A", "2")}
	useStored := served("bytes=0-1", "01")
	useStored.setupTests, useStored.wantHeaders = setupTests, []ctWant{wantIs("A", "1")}
	return []ctCase{
		{id: "partial-store-partial-reuse-partial", kind: ctOptimal, reqs: []ctReq{first, served("bytes=-5", "01234")}},
		{id: "partial-store-complete-reuse-partial", kind: ctOptimal, reqs: []ctReq{complete("01234567890"), served("bytes=0-1", "01")}},
		{id: "partial-store-complete-reuse-partial-no-last", kind: ctOptimal, reqs: []ctReq{complete("01234567890"), served("bytes=1-", "1234567890")}},
		{id: "partial-store-complete-reuse-partial-suffix", kind: ctOptimal, reqs: []ctReq{complete("0123456789A"), served("bytes=-1", "A")}},
		{id: "partial-store-partial-reuse-partial-byterange", kind: ctOptimal, reqs: []ctReq{partial206("bytes 4-9/10"), served("bytes=6-8", "234")}},
		{id: "partial-store-partial-reuse-partial-absent", kind: ctOptimal, reqs: []ctReq{partial206("bytes 4-9/10"), served("bytes=6-", "234")}},
		{id: "partial-store-partial-reuse-partial-suffix", kind: ctOptimal, reqs: []ctReq{partial206("bytes 4-9/10"), served("bytes=-1", "4")}},
		{id: "partial-store-partial-complete", kind: ctOptimal, reqs: []ctReq{partial206("bytes 0-4/10"), {wantReq: []ctField{fv("range", "bytes=5-")}}}},
		{id: "partial-use-headers", kind: ctRequired, reqs: []ctReq{complete("01234567890", fv("A", "1")), useHeaders}},
		{id: "partial-use-stored-headers", kind: ctRequired, reqs: []ctReq{complete("01234567890", fv("A", "1")), useStored}},
	}
}

// authorization.mjs (browser_skip: for shared caches)
func ctAuthorizationCases() []ctCase {
	auth := func(cc string) ctReq {
		return ctReq{header: []ctField{fv("Authorization", "FOO")}, wantReq: []ctField{fv("Authorization", "FOO")}, setup: true,
			resp: []ctField{fv("Cache-Control", cc), fd("Date", 0)}}
	}
	return []ctCase{
		{id: "other-authorization", kind: ctRequired, reqs: []ctReq{auth("max-age=100000"), ctExpect("not_cached")}},
		{id: "other-authorization-public", kind: ctOptimal, reqs: []ctReq{auth("max-age=3600, public"), ctExpect("cached")}},
		{id: "other-authorization-must-revalidate", kind: ctOptimal, reqs: []ctReq{auth("max-age=3600, must-revalidate"), ctExpect("cached")}},
		{id: "other-authorization-smaxage", kind: ctOptimal, reqs: []ctReq{auth("s-maxage=3600"), ctExpect("cached")}},
	}
}

// other.mjs
func ctOtherCases() []ctCase {
	freshPause := func(more ...ctField) ctReq { q := ctFresh(ctReq{resp: more}); q.pause = true; return q }
	expires30d := []ctField{fd("Expires", 30*24*60*60), fd("Date", 0)}
	query := func(q ctReq, arg string) ctReq { q.query = "test=" + ctContent(arg); return q }
	return []ctCase{
		{id: "other-age-gen", kind: ctRequired, reqs: []ctReq{freshPause(), {typ: "cached", wantHeaders: []ctWant{wantOver("Age", 2)}}}},
		// The suite's origin pauses 5 s; 1 s shows the same.
		{id: "other-age-delay", kind: ctCheck, reqs: []ctReq{{respPause: time.Second,
			resp: []ctField{fv("Cache-Control", "max-age=3600"), fd("Date", 0)}, wantHeaders: []ctWant{wantOver("age", 0)}}}},
		{id: "other-age-update-expires", kind: ctRequired, reqs: []ctReq{
			ctStoredPause(append(expires30d, fv("Age", "30"))...), {typ: "cached", wantHeaders: []ctWant{wantOver("Age", 32)}}}},
		{id: "other-age-update-max-age", kind: ctRequired, reqs: []ctReq{
			freshPause(fv("Age", "30")), {typ: "cached", wantHeaders: []ctWant{wantOver("Age", 32)}}}},
		{id: "other-date-update", kind: ctRequired, reqs: []ctReq{freshPause(), {typ: "cached", wantHeaders: []ctWant{wantDate("Date", 0)}}}},
		{id: "other-date-update-expires", kind: ctRequired, reqs: []ctReq{
			ctStoredPause(expires30d...), {typ: "cached", wantHeaders: []ctWant{wantDate("Date", 0)}}}},
		{id: "other-date-update-expires-update", kind: ctCheck, reqs: []ctReq{
			ctStoredPause(expires30d...), {typ: "cached", wantHeaders: []ctWant{wantDate("Expires", 30*24*60*60)}}}},
		{id: "query-args-different", kind: ctRequired, reqs: []ctReq{
			query(ctFresh(ctReq{}), "query-args-different-1"), query(ctExpect("not_cached"), "query-args-different-2")}},
		{id: "query-args-same", kind: ctOptimal, reqs: []ctReq{
			query(ctFresh(ctReq{}), "query-args-same"), query(ctExpect("cached"), "query-args-same")}},
		{id: "other-heuristic-content-disposition-attachment", kind: ctCheck, reqs: []ctReq{
			ctStored(fd("Last-Modified", -100000), fd("Date", 0), fv("Content-Disposition", "attachment; filename=example.txt")), ctExpect("cached")}},
		{id: "other-fresh-content-disposition-attachment", kind: ctCheck, reqs: []ctReq{
			ctFresh(ctReq{resp: []ctField{fv("Content-Disposition", "attachment; filename=example.txt")}}), ctExpect("cached")}},
		{id: "other-set-cookie", kind: ctOptimal, reqs: []ctReq{ctFresh(ctReq{resp: []ctField{fv("Set-Cookie", "a=b")}}), ctExpect("cached")}},
		{id: "other-cookie", kind: ctOptimal, reqs: []ctReq{ctFresh(ctReq{}), {typ: "cached", header: []ctField{fv("Cookie", "a=b")}}}},
	}
}

// interim.mjs (browser_skip)
func ctInterimCases() []ctCase {
	hints := []ctField{fv("link", "</styles.css>; rel=preload; as=style"), fv("x-my-header", "test")}
	first := func(in ctInterim, missing ...ctField) ctReq {
		return ctReq{interim: []ctInterim{in}, wantInterim: []ctInterim{in}, checkInterim: true, wantMissing: missing,
			resp: []ctField{fv("Cache-Control", "max-age=100000"), fd("Date", 0)}}
	}
	return []ctCase{
		{id: "interim-102", kind: ctOptimal, reqs: []ctReq{first(ctInterim{status: 102}), ctExpect("cached")}},
		{id: "interim-103", kind: ctOptimal, reqs: []ctReq{first(ctInterim{status: 103, fields: hints}), ctExpect("cached")}},
		{id: "interim-not-cached", kind: ctRequired, reqs: []ctReq{
			first(ctInterim{status: 103, fields: hints[:1]}), {typ: "cached", checkInterim: true}}},
		{id: "interim-no-header-reuse", kind: ctOptimal, reqs: []ctReq{
			first(ctInterim{status: 103, fields: hints}, ctField{name: "x-my-header"}),
			{typ: "cached", wantMissing: []ctField{{name: "x-my-header"}}}}},
	}
}

// cdn-cache-control.mjs (RFC 9213; the suite marks these for CDNs, and runs them against
// reverse proxies too)
func ctCDNCases() []ctCase {
	cdn := func(v string) ctField { return fu("CDN-Cache-Control", v) }
	stored := func(fs ...ctField) ctReq { return ctStoredPause(fs...) }
	c := func(id string, kind ctKind, typ string, fs ...ctField) ctCase {
		return ctCase{id: id, kind: kind, reqs: []ctReq{stored(fs...), ctExpect(typ)}}
	}
	refreshed := func(id string, want ctWant, fs ...ctField) ctCase {
		return ctCase{id: id, kind: ctCheck, reqs: []ctReq{stored(fs...), {wantHeaders: []ctWant{want}}}}
	}
	return []ctCase{
		c("cdn-max-age", ctOptimal, "cached", cdn("max-age=3600")),
		c("cdn-max-age-max", ctOptimal, "cached", cdn("max-age=2147483648")),
		c("cdn-max-age-max-plus", ctOptimal, "cached", cdn("max-age=99999999999")),
		c("cdn-max-age-age", ctRequired, "not_cached", fd("Date", 0), cdn("max-age=3600"), fv("Age", "7200")),
		c("cdn-max-age-space-before-equals", ctCheck, "not_cached", fv("Cache-Control", "max-age=1"), cdn("max-age =100")),
		c("cdn-max-age-space-after-equals", ctCheck, "not_cached", fv("Cache-Control", "max-age=1"), cdn("max-age= 100")),
		c("cdn-max-age-0", ctRequired, "not_cached", cdn("max-age=0")),
		c("cdn-max-age-extension", ctOptimal, "cached", cdn("foobar, max-age=3600")),
		c("cdn-max-age-case-insensitive", ctCheck, "cached", cdn("MaX-aGe=3600")),
		c("cdn-max-age-expires", ctOptimal, "cached", cdn("max-age=3600"), fd("Expires", -10000), fd("Date", 0)),
		c("cdn-max-age-cc-max-age-invalid-expires", ctOptimal, "cached", cdn("max-age=3600"), fu("Expires", "0"), fd("Date", 0)),
		c("cdn-max-age-0-expires", ctRequired, "not_cached", cdn("max-age=0"), fd("Expires", 10000), fd("Date", 0)),
		c("cdn-max-age-short-cc-max-age", ctOptimal, "cached", fv("Cache-Control", "max-age=1"), cdn("max-age=3600")),
		c("cdn-max-age-long-cc-max-age", ctRequired, "not_cached", fv("Cache-Control", "max-age=3600"), cdn("max-age=1")),
		{id: "cdn-private", kind: ctRequired, reqs: []ctReq{
			ctStored(fv("CDN-Cache-Control", "private"), fv("Cache-Control", "max-age=10000"), fd("Expires", 10000), fd("Date", 0)),
			ctExpect("not_cached")}},
		{id: "cdn-no-cache", kind: ctRequired, reqs: []ctReq{
			ctStored(fv("CDN-Cache-Control", "no-cache"), fv("Cache-Control", "max-age=10000"), fd("Expires", 10000), fd("Date", 0)),
			ctExpect("not_cached")}},
		c("cdn-no-store-cc-fresh", ctRequired, "not_cached", fv("Cache-Control", "max-age=10000"), cdn("no-store"), fd("Expires", 10000), fd("Date", 0)),
		c("cdn-fresh-cc-nostore", ctRequired, "cached", fv("Cache-Control", "no-store"), cdn("max-age=10000")),
		c("cdn-cc-invalid-sh-type-unknown", ctRequired, "not_cached", cdn("max-age=10000, &&&&&"), fv("Cache-Control", "no-store")),
		c("cdn-cc-invalid-sh-type-wrong", ctRequired, "not_cached", cdn(`max-age="10000"`), fv("Cache-Control", "no-store")),
		{id: "cdn-remove-header", kind: ctCheck, reqs: []ctReq{{
			resp:        []ctField{fv("Cache-Control", "max-age=10000"), cdn("foo"), fd("Expires", 10000), fd("Date", 0)},
			wantHeaders: []ctWant{wantIs("CDN-Cache-Control", "foo")}}}},
		refreshed("cdn-remove-age-exceed", wantHas("Age"), fv("Cache-Control", "max-age=1"), fv("CDN-Cache-Control", "max-age=10000"), fd("Date", 0)),
		refreshed("cdn-date-update-exceed", wantDate("Date", 0), fv("Cache-Control", "max-age=1"), fv("CDN-Cache-Control", "max-age=10000"), fd("Date", 0)),
		refreshed("cdn-expires-update-exceed", wantDate("Expires", 1),
			fv("Cache-Control", "max-age=1"), fd("Expires", 1), fv("CDN-Cache-Control", "max-age=10000"), fd("Date", 0)),
	}
}

// ---- Prerequisites ----------------------------------------------------------------------

// ctPrerequisites lists, for the cases that have any, the cases that must pass for them to
// count: a case whose setup depends on another behaviour (storing at all, matching a Vary) is
// only meaningful when that behaviour works. These are the suite's depends_on lists.
var ctPrerequisites = []struct{ deps, cases []string }{
	{deps: []string{"freshness-none"}, cases: []string{
		"freshness-max-age", "freshness-max-age-0", "freshness-max-age-max-minus-1", "freshness-max-age-max",
		"freshness-max-age-max-plus-1", "freshness-max-age-max-plus", "freshness-max-age-0-expires",
		"freshness-max-age-negative", "freshness-s-maxage-shared", "freshness-max-age-two-fresh-stale-sameline",
		"freshness-max-age-two-fresh-stale-sepline", "freshness-max-age-two-stale-fresh-sameline",
		"freshness-max-age-two-stale-fresh-sepline", "freshness-max-age-space-before-equals",
		"freshness-max-age-space-after-equals", "freshness-max-age-leading-zero",
		"freshness-max-age-single-quoted", "freshness-max-age-decimal-zero", "freshness-max-age-decimal-five",
		"freshness-max-age-a100", "freshness-max-age-100a", "freshness-expires-future",
		"freshness-expires-present", "cc-resp-must-revalidate-fresh", "cc-resp-must-revalidate-stale",
		"cdn-max-age", "cdn-max-age-max", "cdn-max-age-max-plus", "cdn-no-store-cc-fresh", "cdn-fresh-cc-nostore",
	}},
	{deps: []string{"freshness-max-age"}, cases: []string{
		"freshness-max-age-stale", "freshness-max-age-age", "freshness-max-age-date", "freshness-max-age-expires",
		"freshness-max-age-expires-invalid", "freshness-max-age-extension", "freshness-max-age-case-insenstive",
		"freshness-max-age-quoted", "freshness-max-age-ignore-quoted", "freshness-max-age-ignore-quoted-rev",
		"status-200-fresh", "status-203-fresh", "status-204-fresh", "status-299-fresh", "status-301-fresh",
		"status-302-fresh", "status-303-fresh", "status-307-fresh", "status-308-fresh", "status-400-fresh",
		"status-404-fresh", "status-410-fresh", "status-499-fresh", "status-500-fresh", "status-502-fresh",
		"status-503-fresh", "status-504-fresh", "status-599-fresh", "ccreq-ma0", "ccreq-ma1", "ccreq-magreaterage",
		"ccreq-max-stale-age", "ccreq-min-fresh", "ccreq-min-fresh-age", "ccreq-no-cache", "ccreq-no-cache-lm",
		"ccreq-no-cache-etag", "ccreq-no-store", "pragma-request-no-cache", "pragma-request-extension",
		"pragma-response-no-cache", "pragma-response-extension", "vary-match", "conditional-lm-fresh",
		"conditional-lm-fresh-earlier", "conditional-lm-fresh-no-lm", "conditional-lm-fresh-rfc850",
		"conditional-etag-strong-respond", "conditional-etag-weak-respond",
		"headers-omit-headers-listed-in-Connection", "headers-store-Test-Header", "headers-store-X-Test-Header",
		"headers-store-Content-Foo", "headers-store-X-Content-Foo", "headers-store-Cache-Control",
		"headers-store-Connection", "headers-store-Content-Encoding", "headers-store-Content-Length",
		"headers-store-Content-Location", "headers-store-Content-MD5", "headers-store-Content-Range",
		"headers-store-Content-Security-Policy", "headers-store-Content-Type", "headers-store-Clear-Site-Data",
		"headers-store-ETag", "headers-store-Expires", "headers-store-Keep-Alive",
		"headers-store-Proxy-Authenticate", "headers-store-Proxy-Authentication-Info",
		"headers-store-Proxy-Authorization", "headers-store-Proxy-Connection", "headers-store-Public-Key-Pins",
		"headers-store-Set-Cookie", "headers-store-Set-Cookie2", "headers-store-TE",
		"headers-store-Transfer-Encoding", "headers-store-Upgrade", "headers-store-X-Frame-Options",
		"headers-store-X-XSS-Protection", "invalidate-POST", "invalidate-PUT", "invalidate-DELETE",
		"invalidate-M-SEARCH", "partial-store-partial-reuse-partial", "partial-store-complete-reuse-partial",
		"partial-store-complete-reuse-partial-no-last", "partial-store-complete-reuse-partial-suffix",
		"partial-store-partial-reuse-partial-byterange", "partial-store-partial-reuse-partial-absent",
		"partial-store-partial-reuse-partial-suffix", "partial-store-partial-complete", "other-authorization",
		"other-age-gen", "other-age-update-max-age", "other-date-update", "query-args-different",
		"query-args-same", "other-fresh-content-disposition-attachment", "other-set-cookie", "other-cookie",
	}},
	{deps: []string{"freshness-s-maxage-shared"}, cases: []string{
		"freshness-max-age-s-maxage-shared-longer", "freshness-max-age-s-maxage-shared-longer-reversed",
		"freshness-max-age-s-maxage-shared-longer-multiple", "freshness-max-age-s-maxage-shared-shorter",
		"freshness-max-age-s-maxage-shared-shorter-expires",
	}},
	{deps: []string{"freshness-max-age-age"}, cases: []string{
		"age-parse-nonnumeric", "age-parse-negative", "age-parse-float", "age-parse-large-minus-one",
		"age-parse-large", "age-parse-larger", "age-parse-suffix", "age-parse-prefix", "age-parse-suffix-twoline",
		"age-parse-prefix-twoline", "age-parse-dup-0", "age-parse-dup-0-twoline", "age-parse-dup-old",
		"age-parse-parameter", "age-parse-numeric-parameter",
	}},
	{deps: []string{"freshness-expires-future"}, cases: []string{
		"freshness-expires-past", "freshness-expires-old-date", "freshness-expires-invalid",
		"freshness-expires-invalid-date", "freshness-expires-age-slow-date", "freshness-expires-age-fast-date",
		"freshness-expires-32bit", "freshness-expires-far-future", "freshness-expires-rfc850",
		"freshness-expires-ansi-c", "freshness-expires-wrong-case-weekday", "freshness-expires-wrong-case-month",
		"freshness-expires-wrong-case-tz", "freshness-expires-invalid-utc", "freshness-expires-invalid-aest",
		"freshness-expires-invalid-2-digit-year", "freshness-expires-invalid-no-comma",
		"freshness-expires-invalid-multiple-spaces", "freshness-expires-invalid-date-dashes",
		"freshness-expires-invalid-time-periods", "freshness-expires-invalid-1-digit-hour",
		"freshness-expires-invalid-multiple-lines", "other-age-update-expires", "other-date-update-expires",
		"other-date-update-expires-update",
	}},
	{deps: []string{"cc-resp-no-store"}, cases: []string{
		"cc-resp-no-store-case-insensitive", "cc-resp-no-store-fresh", "cc-resp-no-store-old-new",
		"cc-resp-no-store-old-max-age",
	}},
	{deps: []string{"cc-resp-no-cache"}, cases: []string{
		"cc-resp-no-cache-case-insensitive", "cc-resp-no-cache-revalidate", "cc-resp-no-cache-revalidate-fresh",
	}},
	{deps: []string{"cc-resp-no-cache-revalidate"}, cases: []string{
		"headers-omit-headers-listed-in-Cache-Control-no-cache-single",
		"headers-omit-headers-listed-in-Cache-Control-no-cache",
	}},
	{deps: []string{"freshness-max-age-stale"}, cases: []string{
		"stale-close", "stale-503", "stale-while-revalidate", "stale-sie-close", "stale-sie-503",
		"ccreq-max-stale", "conditional-lm-stale", "conditional-etag-strong-generate",
		"conditional-etag-weak-generate-weak", "head-writethrough",
	}},
	{deps: []string{"stale-while-revalidate"}, cases: []string{
		"stale-while-revalidate-window",
	}},
	{deps: []string{"stale-close"}, cases: []string{
		"stale-close-must-revalidate", "stale-close-proxy-revalidate", "stale-close-no-cache",
		"stale-close-s-maxage=2", "stale-warning-stored", "stale-warning-become",
	}},
	{deps: []string{"status-200-fresh"}, cases: []string{
		"status-200-stale",
	}},
	{deps: []string{"status-203-fresh"}, cases: []string{
		"status-203-stale",
	}},
	{deps: []string{"status-204-fresh"}, cases: []string{
		"status-204-stale",
	}},
	{deps: []string{"status-299-fresh"}, cases: []string{
		"status-299-stale",
	}},
	{deps: []string{"status-301-fresh"}, cases: []string{
		"status-301-stale",
	}},
	{deps: []string{"status-302-fresh"}, cases: []string{
		"status-302-stale",
	}},
	{deps: []string{"status-303-fresh"}, cases: []string{
		"status-303-stale",
	}},
	{deps: []string{"status-307-fresh"}, cases: []string{
		"status-307-stale",
	}},
	{deps: []string{"status-308-fresh"}, cases: []string{
		"status-308-stale",
	}},
	{deps: []string{"status-400-fresh"}, cases: []string{
		"status-400-stale",
	}},
	{deps: []string{"status-404-fresh"}, cases: []string{
		"status-404-stale",
	}},
	{deps: []string{"status-410-fresh"}, cases: []string{
		"status-410-stale",
	}},
	{deps: []string{"status-499-fresh"}, cases: []string{
		"status-499-stale",
	}},
	{deps: []string{"status-500-fresh"}, cases: []string{
		"status-500-stale",
	}},
	{deps: []string{"status-502-fresh"}, cases: []string{
		"status-502-stale",
	}},
	{deps: []string{"status-503-fresh"}, cases: []string{
		"status-503-stale",
	}},
	{deps: []string{"status-504-fresh"}, cases: []string{
		"status-504-stale",
	}},
	{deps: []string{"status-599-fresh"}, cases: []string{
		"status-599-stale", "status-599-must-understand",
	}},
	{deps: []string{"status-200-fresh", "cc-resp-no-store-fresh"}, cases: []string{
		"status-200-must-understand",
	}},
	{deps: []string{"heuristic-200-cached"}, cases: []string{
		"pragma-response-no-cache-heuristic", "other-heuristic-content-disposition-attachment",
	}},
	{deps: []string{"vary-match"}, cases: []string{
		"vary-no-match", "vary-omit-stored", "vary-omit", "vary-invalidate", "vary-cache-key", "vary-2-match",
		"vary-normalise-combine", "vary-normalise-lang-order", "vary-normalise-lang-case",
		"vary-normalise-lang-space", "vary-normalise-lang-select", "vary-normalise-space", "vary-syntax-star",
		"vary-syntax-star-star", "vary-syntax-star-star-lines", "vary-syntax-empty-star",
		"vary-syntax-empty-star-lines", "vary-syntax-star-foo", "vary-syntax-foo-star",
	}},
	{deps: []string{"vary-2-match"}, cases: []string{
		"vary-2-no-match", "vary-2-match-omit", "vary-3-match",
	}},
	{deps: []string{"vary-3-match"}, cases: []string{
		"vary-3-no-match", "vary-3-order", "vary-3-omit",
	}},
	{deps: []string{"conditional-etag-strong-respond"}, cases: []string{
		"conditional-304-etag", "conditional-etag-precedence", "conditional-etag-strong-respond-obs-text",
		"conditional-etag-quoted-respond-unquoted", "conditional-etag-unquoted-respond-unquoted",
		"conditional-etag-unquoted-respond-quoted", "conditional-etag-strong-respond-multiple-first",
		"conditional-etag-strong-respond-multiple-second", "conditional-etag-strong-respond-multiple-last",
	}},
	{deps: []string{"conditional-etag-weak-respond"}, cases: []string{
		"conditional-etag-weak-respond-lowercase", "conditional-etag-weak-respond-backslash",
		"conditional-etag-weak-respond-omit-slash",
	}},
	{deps: []string{"conditional-etag-vary-headers", "vary-no-match"}, cases: []string{
		"conditional-etag-vary-headers-mismatch",
	}},
	{deps: []string{"conditional-etag-strong-generate"}, cases: []string{
		"conditional-etag-strong-generate-unquoted",
	}},
	{deps: []string{"conditional-etag-forward"}, cases: []string{
		"conditional-etag-forward-unquoted",
	}},
	{deps: []string{"304-lm-use-stored-Test-Header"}, cases: []string{
		"304-etag-update-response-Test-Header", "304-etag-update-response-X-Test-Header",
		"304-etag-update-response-Content-Foo", "304-etag-update-response-X-Content-Foo",
		"304-etag-update-response-Cache-Control", "304-etag-update-response-Content-Encoding",
		"304-etag-update-response-Content-Length", "304-etag-update-response-Content-Location",
		"304-etag-update-response-Content-MD5", "304-etag-update-response-Content-Range",
		"304-etag-update-response-Content-Security-Policy", "304-etag-update-response-Content-Type",
		"304-etag-update-response-Clear-Site-Data", "304-etag-update-response-ETag",
		"304-etag-update-response-Expires", "304-etag-update-response-Public-Key-Pins",
		"304-etag-update-response-Set-Cookie", "304-etag-update-response-Set-Cookie2",
		"304-etag-update-response-X-Frame-Options", "304-etag-update-response-X-XSS-Protection",
	}},
	{deps: []string{"head-writethrough"}, cases: []string{
		"head-200-retain", "head-200-freshness-update",
	}},
	{deps: []string{"head-200-freshness-update"}, cases: []string{
		"head-200-update", "head-410-update",
	}},
	{deps: []string{"invalidate-POST"}, cases: []string{
		"invalidate-POST-failed", "invalidate-POST-location", "invalidate-POST-cl",
	}},
	{deps: []string{"invalidate-PUT"}, cases: []string{
		"invalidate-PUT-failed", "invalidate-PUT-location", "invalidate-PUT-cl",
	}},
	{deps: []string{"invalidate-DELETE"}, cases: []string{
		"invalidate-DELETE-failed", "invalidate-DELETE-location", "invalidate-DELETE-cl",
	}},
	{deps: []string{"invalidate-M-SEARCH"}, cases: []string{
		"invalidate-M-SEARCH-failed", "invalidate-M-SEARCH-location", "invalidate-M-SEARCH-cl",
	}},
	{deps: []string{"partial-store-complete-reuse-partial"}, cases: []string{
		"partial-use-headers", "partial-use-stored-headers",
	}},
	{deps: []string{"other-authorization"}, cases: []string{
		"other-authorization-public", "other-authorization-must-revalidate", "other-authorization-smaxage",
	}},
	{deps: []string{"cdn-max-age"}, cases: []string{
		"cdn-max-age-age", "cdn-max-age-space-before-equals", "cdn-max-age-space-after-equals", "cdn-max-age-0",
		"cdn-max-age-extension", "cdn-max-age-case-insensitive", "cdn-max-age-expires",
		"cdn-max-age-cc-max-age-invalid-expires", "cdn-max-age-0-expires", "cdn-max-age-short-cc-max-age",
		"cdn-max-age-long-cc-max-age", "cdn-cc-invalid-sh-type-unknown", "cdn-cc-invalid-sh-type-wrong",
		"cdn-remove-age-exceed", "cdn-date-update-exceed", "cdn-expires-update-exceed",
	}},
}

var (
	ctDepsOnce sync.Once
	ctDeps     map[string][]string
)

// ctDependsOn returns the prerequisites of case id.
func ctDependsOn(id string) []string {
	ctDepsOnce.Do(func() {
		ctDeps = map[string][]string{}
		for _, p := range ctPrerequisites {
			for _, c := range p.cases {
				ctDeps[c] = append(ctDeps[c], p.deps...)
			}
		}
	})
	return ctDeps[id]
}

// ---- Expected failures --------------------------------------------------------------------

// ctExpectation is a case's expected failed checks and why Sluice fails them.
type ctExpectation struct {
	want []string
	why  string
}

// ctExpected lists the cases Sluice does not pass, by id, with the checks that fail and the
// reason. A required case appears only where Sluice's design, or Envoy in front of it, makes a
// different choice than the case assumes; optimal and check cases record what Sluice does.
func ctExpected() map[string]ctExpectation {
	const (
		twoMaxAges = "Cache-Control carries max-age twice with different values: Sluice takes the freshness as " +
			"invalid, the response as stale (one of the readings RFC 9111 §4.2.1 allows), and without a validator " +
			"there is nothing to keep"
		badMaxAge = "the max-age argument is not a delta-seconds (1*DIGIT, RFC 9111 §1.2.2): the freshness is " +
			"invalid and the response stale, so without a validator it is not kept"
		heuristics = "the shipped policy keeps nothing without explicit freshness: heuristic lifetimes " +
			"(RFC 9111 §4.2.2) are off unless cache.heuristic is set"
		headNoUpdate = "a HEAD that reaches the origin updates nothing stored (RFC 9111 §4.3.5 is a SHOULD Sluice " +
			"does not implement); the stale GET entry is left to its next GET"
		noCookies = "responses with Set-Cookie are not stored by default (store_set_cookie off; with it, they are " +
			"stored without the cookie): one caller's cookie must never reach another caller of the tenant"
		partialNotStored = "Sluice stores complete responses only: a 206 from the origin is passed on, not kept " +
			"(storing partial content is optional, RFC 9111 §3.3); ranges are answered from stored complete responses"
		ageDelay = "Sluice adds Age to answers it serves from storage; an answer the origin made for this very " +
			"request goes on as it came (RFC 9111 §5.1)"
	)
	content := func(name, ab string) string { return strconv.Quote(ctContent(name + "-value-" + ab)) }
	notUpdated := func(name string) []string {
		stored, sent := content(name, "A"), content(name, "B")
		return []string{
			ctMsg(false, "answer 2 has %s %s, expected %s", name, stored, sent),
			ctMsg(false, "answer 3 has %s %s, expected %s", name, stored, sent),
			ctMsg(true, "answer 2 has %s %s, the origin sent %s", name, stored, sent),
		}
	}
	fetched2 := []string{ctFetched(2, false)}
	partial := func(body string) []string {
		return []string{ctFetched(2, false), ctMsg(false, "answer 2 has status 200, expected 206"),
			ctMsg(false, "answer 2 has body the case's token, expected %q", body)}
	}
	e := map[string]ctExpectation{
		// Required.
		"headers-store-Set-Cookie": {want: []string{ctFetched(2, true), ctMsg(false, `answer 2 has Set-Cookie "", expected "a=c"`)},
			why: noCookies + "; the second answer, the origin's, has no cookie of its own"},
		"headers-store-Set-Cookie2": {want: []string{ctFetched(2, true), ctMsg(false, `answer 2 has Set-Cookie2 "", expected "a=c"`)},
			why: noCookies + " (Set-Cookie2 the same)"},
		"headers-store-Transfer-Encoding": {want: []string{
			ctMsg(true, "answer 1 has status 503, expected 200"),
			ctMsg(true, `answer 1 has body "upstream connect error or disconnect/reset before headers. reset reason: connection termination", expected the case's token`),
			ctFetched(2, true),
			ctMsg(true, `answer 1 has Cache-Control "", the origin sent "max-age=3600"`)},
			why: "Envoy's HTTP/1 codec refuses an upstream response framed with a transfer coding it does not know " +
				"(an upstream protocol error: 503 before any filter sees a response), so nothing reaches the cache"},
		"304-etag-update-response-Content-Length": {want: []string{ctMsg(false, `answer 2 has Content-Length "", expected "36"`)},
			why: "the answer to a revalidation is the upstream 304 turned into the stored response by ext_proc " +
				"(CONTINUE_AND_REPLACE, so that it still runs through Envoy's encoder filters); Envoy drops Content-Length " +
				"from a response whose body a processor replaced (ProcessorState::handleHeadersResponse) and sends it " +
				"chunked: the length is right, the field is gone"},

		// Optimal.
		"heuristic-200-cached": {want: fetched2, why: heuristics},
		"heuristic-203-cached": {want: fetched2, why: heuristics},
		"heuristic-204-cached": {want: fetched2, why: heuristics},
		"heuristic-404-cached": {want: fetched2, why: heuristics},
		"heuristic-405-cached": {want: fetched2, why: heuristics},
		"heuristic-410-cached": {want: fetched2, why: heuristics},
		"heuristic-414-cached": {want: fetched2, why: heuristics},
		"heuristic-501-cached": {want: fetched2, why: heuristics},
		"heuristic-599-cached": {want: fetched2, why: heuristics},
		"method-POST":          {want: fetched2, why: "only answers to GET are stored (storing POST answers is optional, RFC 9111 §3); the POST invalidates the URI instead (§4.4)"},
		"vary-normalise-lang-order": {want: fetched2,
			why: "variants are told apart by their normalised request fields: Accept-Language's case and spacing are normalised, the order of its languages is not"},
		"vary-normalise-lang-select": {want: fetched2, why: "Sluice does not negotiate content: a variant is chosen only by equal request fields"},
		"conditional-lm-fresh-no-lm": {want: []string{ctMsg(false, "answer 2 has status 200, expected 304")},
			why: "without Last-Modified the stored Date stands in for it (RFC 9111 §4.3.2); it is later than the date asked about, so the answer is the full 200"},
		"other-set-cookie":                              {want: fetched2, why: noCookies},
		"partial-store-partial-reuse-partial":           {want: partial("01234"), why: partialNotStored},
		"partial-store-partial-reuse-partial-byterange": {want: partial("234"), why: partialNotStored},
		"partial-store-partial-reuse-partial-absent":    {want: partial("234"), why: partialNotStored},
		"partial-store-partial-reuse-partial-suffix":    {want: partial("4"), why: partialNotStored},
		"partial-store-partial-complete": {want: []string{ctMsg(false, `request 2 reached the origin with range "", expected "bytes=5-"`)},
			why: partialNotStored + "; with no partial entry, the request goes on as the client sent it"},

		// Check.
		"freshness-max-age-two-fresh-stale-sameline": {want: fetched2, why: twoMaxAges},
		"freshness-max-age-two-fresh-stale-sepline":  {want: fetched2, why: twoMaxAges},
		"freshness-max-age-two-stale-fresh-sameline": {want: fetched2, why: twoMaxAges},
		"freshness-max-age-two-stale-fresh-sepline":  {want: fetched2, why: twoMaxAges},
		"freshness-max-age-decimal-zero":             {want: fetched2, why: badMaxAge},
		"freshness-max-age-decimal-five":             {want: fetched2, why: badMaxAge},
		"freshness-max-age-a100":                     {want: fetched2, why: badMaxAge},
		"freshness-max-age-100a":                     {want: fetched2, why: badMaxAge},
		"age-parse-parameter": {want: ctReused(2),
			why: "an Age value with a parameter is not delta-seconds, so it is ignored (RFC 9111 §5.1) and the response stays fresh"},
		"age-parse-numeric-parameter": {want: ctReused(2), why: "as age-parse-parameter"},
		"stale-503": {want: []string{ctFetched(2, false), ctMsg(false, "answer 2 has status 503, expected 200")},
			why: "the origin answered the 503 itself: without stale-if-error a stale entry stands in only when the origin " +
				"cannot be reached at all (RFC 9111 §4.2.4), as stale-close shows"},
		"stale-warning-stored": {want: []string{ctMsg(false, "answer 2 lacks warning")},
			why: "RFC 9111 obsoletes Warning (§5.5): the stale answer comes without one"},
		"stale-warning-become":                           {want: []string{ctMsg(false, "answer 2 lacks warning")}, why: "as stale-warning-stored"},
		"pragma-response-no-cache-heuristic":             {want: fetched2, why: heuristics},
		"other-heuristic-content-disposition-attachment": {want: fetched2, why: heuristics},
		"ccreq-no-store": {want: ctReused(2),
			why: "a request's no-store forbids storing the answer to it (RFC 9111 §5.2.1.5), not answering it from storage"},
		"conditional-etag-vary-headers-mismatch": {want: []string{ctMsg(false, `request 2 reached the origin with If-None-Match "", expected "\"abcdef\""`)},
			why: "Sluice validates the variant the request selects; other variants' validators are not sent (RFC 9111 §4.3.1 allows, does not require it)"},
		"conditional-etag-strong-generate-unquoted": {want: []string{ctMsg(false, "request 2 reached the origin without the validator it expected")},
			why: "the origin sent its tag unquoted; Sluice revalidates with the quoted form the grammar requires, which this origin does not recognise"},
		"conditional-etag-forward-unquoted": {want: []string{ctMsg(false, `request 1 reached the origin with If-None-Match "abcdef", expected "\"abcdef\""`)},
			why: "on a miss the client's conditional fields reach the origin as the client wrote them"},
		"304-etag-update-response-Content-Encoding": {want: notUpdated("Content-Encoding"),
			why: "a 304 does not replace Content-Encoding: it describes the stored body (RFC 9111 §3.2 lets a cache keep the fields its stored content depends on)"},
		"304-etag-update-response-Content-Range": {want: notUpdated("Content-Range"), why: "as Content-Encoding: it describes the stored body"},
		"304-etag-update-response-ETag": {want: []string{
			ctMsg(false, `answer 2 has ETag "\"abcdef\"", expected "\"ghijkl\""`), ctFetched(3, true),
			ctMsg(true, `answer 2 has ETag "\"abcdef\"", the origin sent "\"ghijkl\""`)},
			why: "the 304 names another strong validator than the one Sluice sent, so it selects no stored response and must not update one " +
				"(RFC 9111 §4.3.4): the answer is the stored response as it is, which stays stale"},
		"304-etag-update-response-Set-Cookie": {want: []string{
			ctMsg(true, "request 2 reached the origin without the validator it expected"), ctFetched(3, true),
			ctMsg(true, "request 2 reached the origin without If-None-Match")},
			why: noCookies + ": nothing was stored to revalidate"},
		"304-etag-update-response-Set-Cookie2": {want: []string{
			ctMsg(true, "request 2 reached the origin without the validator it expected"), ctFetched(3, true),
			ctMsg(true, "request 2 reached the origin without If-None-Match")},
			why: noCookies + ": nothing was stored to revalidate"},
		"head-200-retain":           {want: []string{ctMsg(false, `answer 2 has Template-A "", expected "1"`)}, why: headNoUpdate},
		"head-200-freshness-update": {want: []string{ctFetched(3, false)}, why: headNoUpdate},
		"head-200-update":           {want: []string{ctFetched(3, true), ctMsg(false, `answer 3 has Template-A "", expected "2"`)}, why: headNoUpdate},
		"head-410-update":           {want: []string{ctFetched(3, true), ctMsg(false, `answer 3 has Template-A "", expected "2"`)}, why: headNoUpdate},
		"other-age-delay":           {want: []string{ctMsg(false, "answer 1 lacks age")}, why: ageDelay},
		"cdn-max-age-case-insensitive": {want: fetched2,
			why: "a targeted field is a Structured Fields Dictionary (RFC 9213 §2.1), whose keys are lower-case: " +
				"\"MaX-aGe\" makes the field invalid, so it is ignored, and there is no other freshness"},
	}
	for _, delta := range []int{5, 10, 30, 60, 300, 600, 1200, 1800, 3600, 3600 * 12, 3600 * 24} {
		e[fmt.Sprintf("heuristic-delta-%d", delta)] = ctExpectation{want: fetched2, why: heuristics}
	}
	return e
}
