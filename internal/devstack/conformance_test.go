package devstack_test

import (
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

	"github.com/sluicehq/sluice/internal/config"
)

// The HTTP caching conformance suite behind https://cache-tests.fyi
// (github.com/http-tests/cache-tests, tests/*.mjs), ported to Go and run end
// to end: client → Envoy emulator → Sluice (ext_proc, ratelimit) → a scripted
// origin. Every case keeps the suite's id and kind and its requests: what
// the origin answers to request n of the case, what the client must see,
// and what must reach the origin. The checks follow the suite's test engine
// (test-engine/client/test.mjs): "cached" means the response's
// Server-Request-Count (stamped by the origin) is lower than the request's
// number, "not_cached" that the origin saw this very request, and a
// "…_validated" request must reach the origin with the validator, which
// answers 304 when it matches what it sent before (999 otherwise, the
// suite's "304 not generated"). As in the suite, a failing check is a setup
// failure ("setup: …": the case does not apply, e.g. the response was never
// stored) or an assertion failure ("fail: …"). Unlike the suite, which stops
// at the first failure, every check runs, and each case lists the failures
// Sluice is expected to have (want) with the reason (why): a required case
// may only fail where Sluice's documented design differs (see README
// "Response cache"), optimal and check cases record what Sluice does.
//
// Skipped: browser_only cases (private caches) and cdn_only cases
// (CDN-Cache-Control, RFC 9213: Sluice is no CDN), and the header-list
// entry Transfer-Encoding (an origin cannot send an arbitrary framing
// header: Go's server, like Envoy's codec, rejects or rewrites it).
//
// Differences of the stack, and how the port handles them:
//   - every case has its own tenant (x-tenant-id) and path, so no case sees
//     another's entries; the stack has its own Redis prefix (L1 + L2);
//   - the dev stack's default policy stores nothing without explicit
//     freshness (heuristics off): the heuristic cases run on a second stack
//     with cache.heuristic on, as the suite means them;
//   - pauses are the suite's (3 s, pause_after) but only where the case's
//     outcome depends on time (lifetimes of 1-2 s, Age growth); cases run
//     concurrently, so the test takes about two pauses;
//   - the client sends the suite's CLI request fields (Pragma: foo,
//     Cache-Control: nothing-to-see-here) and no Accept-Encoding (Envoy's
//     compressors would otherwise rewrite bodies and ETags); the Vary they
//     add to compressible responses is not held against the cache;
//   - each case's requests are sequential, so none are collapsed; Age is in
//     whole seconds and Date has a resolution of a second, which the
//     suite's timings allow for;
//   - a case that does not give the expected result, or in which the
//     gateway failed open (ext_proc's 200 ms message timeout: Sluice never
//     saw the exchange), runs once more with a new tenant and path: on a
//     loaded machine a late Redis call or a failed-open exchange turns a
//     hit into a miss; a case fails only when both runs do.

// ctPause is the suite's pause_after.
const ctPause = 3 * time.Second

// ctKind is a case's kind in the suite.
type ctKind string

const (
	ctRequired ctKind = "required" // a requirement of RFC 9111 (the suite's default kind)
	ctOptimal  ctKind = "optimal"  // what an optimal cache does
	ctCheck    ctKind = "check"    // information about a cache's behaviour
)

// ctField is a header field of a scripted request or response.
type ctField struct {
	name, value string
	// date: the value is the HTTP-date delta seconds from the origin's clock
	// (the suite's integer values of Date, Expires, Last-Modified and
	// If-Modified-Since).
	date  bool
	delta int
	// unchecked: a response field the client's response is not compared
	// with (the suite's third element false).
	unchecked bool
}

func fv(name, value string) ctField     { return ctField{name: name, value: value} }
func fu(name, value string) ctField     { return ctField{name: name, value: value, unchecked: true} }
func fd(name string, delta int) ctField { return ctField{name: name, date: true, delta: delta} }

// ctWant is an expected response field: present, equal to a value (or a
// date delta from the response's Server-Now), or numerically greater.
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

// ctInterim is an interim (1xx) response.
type ctInterim struct {
	status int
	fields []ctField
}

// ctReq is one request of a case: what is sent, what the origin answers
// when it is reached, and what is expected (the suite's request object).
type ctReq struct {
	method         string    // request_method; default GET
	header         []ctField // request_headers
	body           string    // request_body
	file, query    string    // filename (a path segment after the case's), query_arg
	magicIMS       bool      // If-Modified-Since relative to the previous response's Server-Now
	rfc850         bool      // If-Modified-Since as an rfc850-date
	magicLocations bool      // Location, Content-Location: relative to this request's path
	pause          bool      // pause_after
	disconnect     bool      // the origin closes the connection
	respPause      time.Duration
	interim        []ctInterim

	status   int       // response_status; 0: 200 (304 or 999 for validated types)
	resp     []ctField // response_headers
	respBody *string   // response_body; nil: the case's token
	noBody   bool      // response_body: null (the origin still sends the token, as the suite's does)

	typ            string // expected_type: cached, not_cached, etag_validated, lm_validated
	wantStatus     int    // expected_status; 0: response_status or 200; -1: not checked (null)
	wantHeaders    []ctWant
	wantMissing    []ctField // value "": absent; else absent or without the value
	wantInterim    []ctInterim
	checkInterim   bool      // wantInterim is set (possibly empty)
	wantReq        []ctField // expected_request_headers; value "": present
	wantReqMissing []string
	wantText       *string // expected_response_text
	noTextCheck    bool    // expected_response_text: null
	noBodyCheck    bool    // check_body: false
	wantMethod     string
	setup          bool     // setup: every check of the request is setup
	setupTests     []string // setup_tests
}

func (q *ctReq) isSetup(check string) bool { return q.setup || slices.Contains(q.setupTests, check) }

// ctCase is one test of the suite.
type ctCase struct {
	id        string
	kind      ctKind
	heuristic bool // on the stack with heuristic freshness on
	reqs      []ctReq
	// want are the failures Sluice has, in check order (nil: it passes),
	// and why explains them; both come from ctDivergences.
	want []string
	why  string
}

func ctStr(s string) *string { return &s }

// ctToken is a case's default response body, 36 bytes like the suite's
// per-test UUID.
func ctToken(idx int) string { return fmt.Sprintf("%08d-c0de-4c7e-8a11-%012d", idx, idx) }

// ctContent returns 15 lower-case letters derived from key: the suite's
// arbitrary header values.
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

// ---- The scripted origin ---------------------------------------------------

// ctOrigin answers /ct/<run key>[/file] with the response the case
// scripts for the request's number (the Req-Num field the client sends, as
// the suite's server does) and records every request.
type ctOrigin struct {
	*httptest.Server
	cases []ctCase

	mu   sync.Mutex           // guards seen
	seen map[string][]*ctSeen // by run key, in arrival order
}

// ctSeen is a request the origin received and what it answered.
type ctSeen struct {
	num    int // Req-Num
	method string
	header http.Header
	sent   [][2]string // checked response fields: name, joined value
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
	// /ct/<run key>[/file]; the run key is the case index, then "r1" for
	// a second attempt.
	key, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/ct/"), "/")
	n, _, _ := strings.Cut(key, "r")
	idx, err := strconv.Atoi(n)
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
		http.Error(w, fmt.Sprintf("%s: no request %d", c.id, num), http.StatusConflict)
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
			h.Del(fl.name) // interim fields are not the final response's
		}
	}

	status := q.status
	if status == 0 {
		status = 200
	}
	if strings.HasSuffix(q.typ, "validated") && num > 1 {
		// The suite's server: 304 when the request carries the validator
		// the previous response was scripted with, else 999.
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
	for _, fl := range q.resp {
		v := o.value(fl, q, r, nowMs)
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
		// A client of the suite's server reads Content-Length bytes of the
		// longer body it writes; Go's server would send none.
		body = body[:n]
	}
	switch {
	case q.disconnect:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	case status == http.StatusNotModified:
		ctWriteRaw304(w, h)
	default:
		w.WriteHeader(status)
		if status != http.StatusNoContent && r.Method != "HEAD" {
			io.WriteString(w, body)
		}
	}
}

// value is a response field's value as sent: dates from the origin's
// clock, magic locations relative to the request.
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

// previousValidators returns the Last-Modified and ETag of request num's
// scripted response: as sent, or as scripted when it never reached the
// origin (a date delta never sent matches nothing).
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

// ctWriteRaw304 writes a 304 with every field the case scripts: Go's server
// drops Content-Type and Content-Length from a 304, which the suite's
// update cases send. The connection is closed after it.
func ctWriteRaw304(w http.ResponseWriter, h http.Header) {
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
	buf.WriteString("HTTP/1.1 304 Not Modified\r\n")
	for _, k := range names {
		for _, v := range h[k] {
			fmt.Fprintf(buf, "%s: %s\r\n", k, v)
		}
	}
	buf.WriteString("Connection: close\r\n\r\n")
	buf.Flush()
}

// ctOr returns a, or b when a is empty.
func ctOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ---- Running a case -------------------------------------------------------

// ctResult is a response the client got.
type ctResult struct {
	status  int
	header  http.Header
	body    string
	interim []int
	err     error
}

// ctRun runs one case against a stack.
type ctRun struct {
	c       *ctCase
	idx     int
	key     string // the run's path segment and tenant suffix
	base    string
	client  *http.Client
	sem     chan struct{} // bounds the cases sending requests at once
	origin  *ctOrigin
	results []*ctResult
	fails   []string
}

func (r *ctRun) fail(setup bool, format string, args ...any) {
	r.fails = append(r.fails, ctMsg(setup, format, args...))
}

// run sends the case's requests in order and checks them. It holds a slot
// of sem until its first pause, so that requests meant to follow each other
// at once (a response fresh for 2 s, then its reuse) never queue behind
// other cases; after a pause it goes on without one (cases come back from
// their pauses spread out as they started, and a wait would age entries
// beyond what the case means).
func (r *ctRun) run() {
	r.sem <- struct{}{}
	held := true
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
			r.fail(false, "request %d: %v", n, res.err)
		} else {
			r.checkResponse(n, q, res)
		}
		if q.pause {
			if held {
				<-r.sem
				held = false
			}
			time.Sleep(ctPause)
		}
	}
	if held {
		<-r.sem
	}
	r.checkOrigin()
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
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		res.err = err
		return res
	}
	// The suite's CLI runner sends these on every request, so that fetch()
	// adds no no-cache fields of its own; a request Cache-Control also makes
	// caches ignore Pragma (RFC 9111 §5.4).
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
	req.Header.Set("x-tenant-id", "ct"+r.key)
	resp, err := r.client.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	res.status, res.header, res.body, res.err = resp.StatusCode, resp.Header, string(b), err
	return res
}

func ctHeaderValue(h http.Header, name string) (string, bool) {
	vs := h.Values(name)
	return strings.Join(vs, ", "), len(vs) > 0
}

// checkResponse is the suite's checkResponse: type (client side), status,
// fields, interim responses, body.
func (r *ctRun) checkResponse(n int, q *ctReq, res *ctResult) {
	resNum, numErr := strconv.Atoi(res.header.Get("Server-Request-Count"))
	switch q.typ {
	case "cached":
		if !(res.status == 304 && numErr != nil) && (numErr != nil || resNum >= n) {
			r.fail(q.isSetup("expected_type"), "Response %d does not come from cache", n)
		}
	case "not_cached":
		if numErr != nil || resNum != n {
			r.fail(q.isSetup("expected_type"), "Response %d comes from cache", n)
		}
	}
	switch {
	case q.wantStatus == -1:
	case q.wantStatus != 0:
		if res.status != q.wantStatus {
			r.fail(q.isSetup("expected_status"), "Response %d status is %d, not %d", n, res.status, q.wantStatus)
		}
	case q.status != 0:
		if res.status != q.status {
			r.fail(true, "Response %d status is %d, not %d", n, res.status, q.status)
		}
	case res.status == 999:
		r.fail(q.isSetup("expected_type"), "Request %d should have been conditional, but it was not.", n)
	case res.status != 200:
		r.fail(true, "Response %d status is %d, not 200", n, res.status)
	}

	setup := q.isSetup("expected_response_headers")
	for _, w := range q.wantHeaders {
		got, ok := ctHeaderValue(res.header, w.name)
		switch {
		case !ok && (w.present || w.greater):
			r.fail(setup, "Response %d %s header not present.", n, w.name)
		case w.present:
		case w.greater:
			if v, err := strconv.Atoi(got); err != nil || v <= w.n {
				r.fail(setup, "Response %d header %s is %s, should be bigger than %d", n, w.name, got, w.n)
			}
		default:
			want := w.value
			if w.date {
				now, _ := strconv.ParseInt(res.header.Get("Server-Now"), 10, 64)
				want = ctDate(now, w.delta, false)
			}
			if got != want || !ok {
				r.fail(setup, "Response %d header %s is %q, not %q", n, w.name, got, want)
			}
		}
	}
	setup = q.isSetup("expected_response_headers_missing")
	for _, m := range q.wantMissing {
		got, ok := ctHeaderValue(res.header, m.name)
		switch {
		case m.value == "" && ok:
			r.fail(setup, "Response %d includes unexpected header %s: %q", n, m.name, got)
		case m.value != "" && ok && strings.Contains(got, m.value):
			r.fail(setup, "Response %d header %s still has value %q", n, m.name, got)
		}
	}
	if q.checkInterim {
		setup = q.isSetup("expected_interim_responses")
		for i, in := range q.wantInterim {
			switch {
			case i >= len(res.interim):
				r.fail(setup, "Interim response %d not received", i+1)
			case res.interim[i] != in.status:
				r.fail(setup, "Interim response %d status is %d, not %d", i+1, res.interim[i], in.status)
			}
		}
		if len(res.interim) != len(q.wantInterim) {
			r.fail(setup, "Received %d interim response(s), expected %d", len(res.interim), len(q.wantInterim))
		}
	}

	switch {
	case q.noBodyCheck:
	case q.wantText != nil:
		if res.body != *q.wantText {
			r.fail(q.isSetup("expected_response_text"), "Response body is %s, not %q", r.show(res.body), *q.wantText)
		}
	case q.noTextCheck:
	case q.respBody != nil && !q.noBody:
		if res.body != *q.respBody {
			r.fail(true, "Response body is %s, not %q", r.show(res.body), *q.respBody)
		}
	case res.status == 204, res.status == 304, q.method == "HEAD":
	default:
		if res.body != ctToken(r.idx) {
			r.fail(true, "Response body is %s, not the token", r.show(res.body))
		}
	}
}

// show quotes a body for a failure message; the case's token, which
// depends on the case's place in the table, is "the token".
func (r *ctRun) show(body string) string {
	if body == ctToken(r.idx) {
		return "the token"
	}
	return strconv.Quote(body)
}

// checkOrigin is the suite's checkServerRequests: what reached the origin,
// and whether the client got the fields the origin sent.
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
				r.fail(setup, "Response %d comes from cache (not seen by the origin)", n)
			}
		case "etag_validated", "lm_validated":
			name := "If-None-Match"
			if q.typ == "lm_validated" {
				name = "If-Modified-Since"
			}
			switch {
			case rec == nil:
				r.fail(setup, "request %d wasn't sent to server", n)
			case len(rec.header.Values(name)) == 0:
				r.fail(setup, "request %d doesn't have %s header", n, strings.ToLower(name))
			}
		}
		if rec == nil {
			if len(q.wantReq) > 0 || q.wantMethod != "" {
				r.fail(q.isSetup("expected_request_headers"), "request %d wasn't sent to server", n)
			}
			continue
		}
		setup = q.isSetup("expected_request_headers")
		for _, w := range q.wantReq {
			got, ok := ctHeaderValue(rec.header, w.name)
			switch {
			case w.value == "" && !ok:
				r.fail(setup, "Request %d %s header not present.", n, w.name)
			case w.value != "" && got != w.value:
				r.fail(setup, "Request %d header %s is %q, not %q", n, w.name, got, w.value)
			}
		}
		for _, name := range q.wantReqMissing {
			if _, ok := ctHeaderValue(rec.header, name); ok {
				r.fail(q.isSetup("expected_request_headers_missing"), "Request %d %s header present.", n, name)
			}
		}
		if res := r.results[i]; res.err == nil {
			for _, s := range rec.sent {
				if strings.EqualFold(s[0], "date") {
					continue // the suite skips Date: it only causes spurious failures
				}
				got, _ := ctHeaderValue(res.header, s[0])
				if strings.EqualFold(s[0], "vary") {
					// Envoy's compressors add Accept-Encoding to the Vary of
					// every compressible response, after the cache
					// (CompressorFilter::insertVaryHeader).
					got = strings.TrimSuffix(got, ", Accept-Encoding")
				}
				if got != s[1] {
					r.fail(true, "Response %d header %s is %q, not %q", n, s[0], got, s[1])
				}
			}
		}
		if q.wantMethod != "" && rec.method != q.wantMethod {
			r.fail(q.isSetup("expected_method"), "Request %d had method %s, not %s", n, rec.method, q.wantMethod)
		}
	}
}

// failedOpen reports a GET or HEAD answered without x-cache: the gateway
// gave up on Sluice (ext_proc's message_timeout, failure_mode_allow) and
// forwarded it as if there were no cache. (Unsafe methods get no x-cache.)
func (r *ctRun) failedOpen() bool {
	for i, res := range r.results {
		m := r.c.reqs[i].method
		if res.err == nil && (m == "" || m == "HEAD") && res.header.Get("x-cache") == "" {
			return true
		}
	}
	return false
}

// trace summarises the responses for a failure message.
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

func TestConformance(t *testing.T) {
	cases := ctCases()
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.id] {
			t.Fatalf("duplicate case %s", c.id)
		}
		seen[c.id] = true
	}
	for id, d := range ctDivergences() {
		i := slices.IndexFunc(cases, func(c ctCase) bool { return c.id == id })
		if i < 0 {
			t.Fatalf("divergence for unknown case %s", id)
		}
		cases[i].want, cases[i].why = d.want, d.why
	}
	o := newCTOrigin(t, cases)
	// Hundreds of cases run concurrently, under -race on a shared machine:
	// give Redis calls more than the 20 ms default (within Envoy's 200 ms
	// message timeout) and the L1 a longer lease, so that a put or lookup
	// running late seldom turns a hit into a miss (the documented
	// degradation, which these cases do not test).
	loaded := func(c *config.Config) {
		c.Cache.Store.RedisTimeout = 150 * time.Millisecond
		c.Cache.Store.SubscriptionLease = 2 * time.Second
	}
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{
		Transport: tr,
		Timeout:   10 * time.Second,
		// The suite fetches with redirect: 'manual': a 3xx is the answer.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	// Cases sending at once (the others pause or wait): few enough that no
	// ext_proc message misses Envoy's 200 ms timeout on a loaded machine
	// (the filter would then fail open, uncached).
	sem := make(chan struct{}, 4)
	runCases := func(t *testing.T, heuristic bool, base string) {
		var wg sync.WaitGroup
		for i := range cases {
			c := &cases[i]
			if c.heuristic != heuristic {
				continue
			}
			runCase(t, &wg, c, i, base, client, sem, o)
		}
		wg.Wait()
	}
	if external.Gateway == "" {
		// Both stacks at once behind their emulators.
		plain := start(t, o.URL, true, loaded)
		heuristic := start(t, o.URL, true, func(c *config.Config) { loaded(c); c.Cache.Heuristic = true })
		var wg sync.WaitGroup
		wg.Go(func() { runCases(t, false, plain.URL()) })
		wg.Go(func() { runCases(t, true, heuristic.URL()) })
		wg.Wait()
	} else {
		// One Sluice at a time behind the real gateway: the heuristic cases get theirs after.
		for _, heuristic := range []bool{false, true} {
			t.Run(map[bool]string{false: "plain", true: "heuristic"}[heuristic], func(t *testing.T) {
				s := start(t, o.URL, true, func(c *config.Config) { loaded(c); c.Cache.Heuristic = heuristic })
				runCases(t, heuristic, s.URL())
			})
		}
	}
	counts := map[ctKind]int{}
	for _, c := range cases {
		counts[c.kind]++
	}
	t.Logf("%d cases: %d required, %d optimal, %d check", len(cases), counts[ctRequired], counts[ctOptimal], counts[ctCheck])
}

// runCase runs one suite case against the gateway at base, as a subtest of t
// started on wg.
func runCase(t *testing.T, wg *sync.WaitGroup, c *ctCase, i int, base string, client *http.Client, sem chan struct{}, o *ctOrigin) {
	wg.Go(func() {
		t.Run(string(c.kind)+"/"+c.id, func(t *testing.T) {
			if len(c.want) > 0 && c.why == "" {
				t.Errorf("a case with expected failures needs a why")
			}
			r := &ctRun{c: c, idx: i, key: strconv.Itoa(i), base: base, client: client, sem: sem, origin: o}
			r.run()
			if r.failedOpen() || !slices.Equal(r.fails, c.want) {
				// The cases are deterministic, but on a loaded machine
				// the gateway may fail open (Sluice never sees the
				// exchange) and a Redis call missing its deadline makes
				// the store distrust its L1 for a moment (a documented
				// degradation): either turns a hit into a miss. Once
				// more, with a new tenant and path; a second miss fails.
				t.Logf("first run (failed open: %v): %q%s", r.failedOpen(), r.fails, r.trace())
				r = &ctRun{c: c, idx: i, key: strconv.Itoa(i) + "r1", base: base, client: client, sem: sem, origin: o}
				r.run()
			}
			if !slices.Equal(r.fails, c.want) {
				t.Errorf("failures:\n  got  %q\n  want %q\nresponses:%s", r.fails, c.want, r.trace())
			}
		})
	})
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
		cs = append(cs, ctCase{id: fmt.Sprintf("heuristic-%d-%s", s.code, typ), kind: kind, heuristic: true, reqs: []ctReq{
			first, {typ: typ, status: s.code, respBody: body, noBody: s.noBody}}})
	}
	for _, delta := range []int{5, 10, 30, 60, 300, 600, 1200, 1800, 3600, 3600 * 12, 3600 * 24} {
		cs = append(cs, ctCase{id: fmt.Sprintf("heuristic-delta-%d", delta), kind: ctCheck, heuristic: true, reqs: []ctReq{
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
		{id: "pragma-response-no-cache-heuristic", kind: ctCheck, heuristic: true, reqs: []ctReq{
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

// ctHeaders is the suite's list but Transfer-Encoding (see the top).
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
	return cs
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
		{id: "other-heuristic-content-disposition-attachment", kind: ctCheck, heuristic: true, reqs: []ctReq{
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

// ctDivergence is how Sluice differs from what a case expects.
type ctDivergence struct {
	want []string
	why  string
}

// Messages of the checks, for the divergences below.
func ctNotFromCache(n int, setup bool) string {
	return ctMsg(setup, "Response %d does not come from cache", n)
}

func ctFromCache(n int) []string {
	return []string{ctMsg(false, "Response %d comes from cache", n), ctMsg(false, "Response %d comes from cache (not seen by the origin)", n)}
}

func ctMsg(setup bool, format string, args ...any) string {
	if setup {
		return "setup: " + fmt.Sprintf(format, args...)
	}
	return "fail: " + fmt.Sprintf(format, args...)
}

// divergences are the cases Sluice does not pass, by id, with the checks
// that fail and why. Required cases are here only for documented design
// choices of Sluice or for what the cache cannot see (1xx); where the
// suite counts the failure as setup (the case does not apply), that is
// said.
func ctDivergences() map[string]ctDivergence {
	const (
		oneRefreshes = "in a stale window (stale-while-revalidate, or the request's max-stale) the first request " +
			"refreshes the entry upstream and only requests arriving meanwhile get the stale entry (README " +
			"\"Validation\"): ext_proc answers or forwards the request in hand and cannot fetch in the background"
		invalidMaxAge = "a max-age that is not 1*DIGIT is invalid (RFC 9111 §1.2.2), and Sluice considers a response " +
			"with invalid freshness information stale (§4.2.1): without a validator it is not stored"
		conflictingMaxAge = "max-age given twice with different values: Sluice considers the response stale, " +
			"one of the two choices RFC 9111 §4.2.1 offers; without a validator it is not stored"
		noRanges = "Sluice neither stores 206 responses nor serves ranges from stored responses: requests with Range " +
			"bypass the cache (cachefilter CheckRequest; both are optional, RFC 9111 §3.3, RFC 9110 §14.2)"
		noHeadUpdate = "Sluice forwards a HEAD for a stale or missing entry and neither updates nor invalidates " +
			"stored GET responses from its answer (RFC 9111 §4.3.5 SHOULD, not implemented); the GET entry, " +
			"without a validator, was dropped when it went stale"
		noCookies = "by design Sluice does not store responses with Set-Cookie (store_set_cookie off), and with " +
			"store_set_cookie stores them without the cookie: a cache shared by a tenant's callers must never " +
			"hand one caller's cookie to another (README \"Not stored\")"
		interim = "1xx responses are the gateway's business: ext_proc never sees them, the emulator drops them " +
			"and Envoy does not pass 102/103 on by default (envoyproxy/envoy#35263, #19044). What the cache " +
			"owes is checked and holds: the final response is stored and the cached answer carries no " +
			"interim response nor its fields"
		staleOnError = "Sluice serves a stale entry on an upstream error only within stale-if-error (RFC 5861 §4; " +
			"RFC 9111 §4.2.4 allows more but requires nothing); this entry has no such window and, without " +
			"a validator, is not kept once stale, so the 503 goes on"
		noWarning = staleOnError + "; and Warning is obsolete (RFC 9111 §5.5): Sluice sends none"
	)
	content := func(name, ab string) string { return strconv.Quote(ctContent(name + "-value-" + ab)) }
	keptField := func(name string) []string {
		got, want := content(name, "A"), content(name, "B")
		return []string{
			ctMsg(false, "Response 2 header %s is %s, not %s", name, got, want),
			ctMsg(false, "Response 3 header %s is %s, not %s", name, got, want),
			ctMsg(true, "Response 2 header %s is %s, not %s", name, got, want),
		}
	}
	partial := func(text string) []string {
		return []string{ctNotFromCache(2, false), ctMsg(false, "Response 2 status is 200, not 206"),
			ctMsg(false, "Response body is the token, not %q", text)}
	}
	const reset = `"upstream connect error or disconnect/reset before headers. reset reason: connection termination"`
	return map[string]ctDivergence{
		// Required.
		"headers-store-Set-Cookie": {
			want: []string{ctNotFromCache(2, true), ctMsg(false, `Response 2 header Set-Cookie is "", not "a=c"`)},
			why: noCookies + ". The suite counts the uncached response as setup failure; the missing field " +
				"follows from it (the origin's second response has none)",
		},
		"headers-store-Set-Cookie2": {
			want: []string{ctNotFromCache(2, true), ctMsg(false, `Response 2 header Set-Cookie2 is "", not "a=c"`)},
			why:  noCookies + " (Set-Cookie2 likewise); as for headers-store-Set-Cookie",
		},
		"interim-not-cached": {
			want: []string{ctMsg(false, "Interim response 1 not received"), ctMsg(false, "Received 0 interim response(s), expected 1")},
			why:  interim,
		},
		"partial-use-headers": {
			want: []string{ctNotFromCache(2, true), ctMsg(true, "Response 2 status is 200, not 206"), ctMsg(true, `Response body is the token, not "01"`)},
			why:  noRanges + "; setup failures only: the case does not apply",
		},
		"partial-use-stored-headers": {
			want: []string{ctNotFromCache(2, true), ctMsg(true, "Response 2 status is 200, not 206"),
				ctMsg(false, `Response 2 header A is "", not "1"`), ctMsg(true, `Response body is the token, not "01"`)},
			why: noRanges + ". The suite stops at the setup failure (no 206); the missing A follows from it: " +
				"the origin answers the forwarded range request without A",
		},
		"stale-while-revalidate-window": {
			want: []string{ctNotFromCache(2, true)},
			why:  oneRefreshes + "; the requirement itself (no stale answer after the window) holds",
		},

		// Optimal.
		"stale-while-revalidate":                        {want: []string{ctNotFromCache(2, false)}, why: oneRefreshes},
		"conditional-lm-fresh-no-lm":                    {want: []string{ctMsg(false, "Response 2 status is 200, not 304")}, why: "without Last-Modified Sluice evaluates If-Modified-Since against the stored Date (RFC 9111 §4.3.2), which is later than the date asked about: the condition is true, 200"},
		"method-POST":                                   {want: []string{ctNotFromCache(2, false)}, why: "Sluice stores GET responses only (storing POST responses is optional, RFC 9111 §3); the POST also invalidates its URI (§4.4)"},
		"other-set-cookie":                              {want: []string{ctNotFromCache(2, false)}, why: noCookies},
		"interim-102":                                   {want: []string{ctMsg(false, "Interim response 1 not received"), ctMsg(false, "Received 0 interim response(s), expected 1")}, why: interim},
		"interim-103":                                   {want: []string{ctMsg(false, "Interim response 1 not received"), ctMsg(false, "Received 0 interim response(s), expected 1")}, why: interim},
		"interim-no-header-reuse":                       {want: []string{ctMsg(false, "Interim response 1 not received"), ctMsg(false, "Received 0 interim response(s), expected 1")}, why: interim},
		"vary-normalise-lang-order":                     {want: []string{ctNotFromCache(2, false)}, why: "Sluice normalises Accept-Language's case and whitespace for Vary, not the order of its members (cachefilter VariantKey)"},
		"vary-normalise-lang-select":                    {want: []string{ctNotFromCache(2, false)}, why: "Sluice does not negotiate: a variant is selected by equal (normalised) request fields only"},
		"partial-store-partial-reuse-partial":           {want: partial("01234"), why: noRanges},
		"partial-store-complete-reuse-partial":          {want: partial("01"), why: noRanges},
		"partial-store-complete-reuse-partial-no-last":  {want: partial("1234567890"), why: noRanges},
		"partial-store-complete-reuse-partial-suffix":   {want: partial("A"), why: noRanges},
		"partial-store-partial-reuse-partial-byterange": {want: partial("234"), why: noRanges},
		"partial-store-partial-reuse-partial-absent":    {want: partial("234"), why: noRanges},
		"partial-store-partial-reuse-partial-suffix":    {want: partial("4"), why: noRanges},
		"partial-store-partial-complete":                {want: []string{ctMsg(false, `Request 2 header range is "", not "bytes=5-"`)}, why: noRanges},

		// Check.
		"freshness-max-age-two-fresh-stale-sameline": {want: []string{ctNotFromCache(2, false)}, why: conflictingMaxAge},
		"freshness-max-age-two-fresh-stale-sepline":  {want: []string{ctNotFromCache(2, false)}, why: conflictingMaxAge},
		"freshness-max-age-two-stale-fresh-sameline": {want: []string{ctNotFromCache(2, false)}, why: conflictingMaxAge},
		"freshness-max-age-two-stale-fresh-sepline":  {want: []string{ctNotFromCache(2, false)}, why: conflictingMaxAge},
		"freshness-max-age-decimal-zero":             {want: []string{ctNotFromCache(2, false)}, why: invalidMaxAge},
		"freshness-max-age-decimal-five":             {want: []string{ctNotFromCache(2, false)}, why: invalidMaxAge},
		"freshness-max-age-a100":                     {want: []string{ctNotFromCache(2, false)}, why: invalidMaxAge},
		"freshness-max-age-100a":                     {want: []string{ctNotFromCache(2, false)}, why: invalidMaxAge},
		"age-parse-parameter":                        {want: ctFromCache(2), why: "an Age that is not delta-seconds is ignored (RFC 9111 §5.1), as in the required age-parse-nonnumeric: the response stays fresh"},
		"age-parse-numeric-parameter":                {want: ctFromCache(2), why: "as age-parse-parameter"},
		"ccreq-max-stale":                            {want: []string{ctNotFromCache(2, false)}, why: oneRefreshes},
		"ccreq-max-stale-age":                        {want: []string{ctNotFromCache(2, false)}, why: "the response arrives stale (Age 2000 > max-age 1500) without a validator: Sluice keeps entries without a validator only for their freshness and stale windows, so nothing is stored for a later max-stale"},
		"ccreq-no-store":                             {want: ctFromCache(2), why: "request no-store forbids storing the response to this request (RFC 9111 §5.2.1.5), not answering it from a stored one"},
		"pragma-response-no-cache-heuristic": {want: []string{ctNotFromCache(2, false)}, why: "the emulator's Go HTTP client turns a response's Pragma: no-cache into Cache-Control: no-cache " +
			"when it has no Cache-Control (net/http fixPragmaCacheControl); Envoy does not, and Sluice ignores response Pragma " +
			"(cachefilter TestStorable), so here the response is no-cache and is revalidated"},
		"stale-close":          {want: []string{ctNotFromCache(2, false), ctMsg(true, "Response 2 status is 503, not 200"), ctMsg(true, "Response body is %s, not the token", reset)}, why: staleOnError},
		"stale-503":            {want: []string{ctNotFromCache(2, false), ctMsg(false, "Response 2 status is 503, not 200")}, why: staleOnError},
		"stale-warning-stored": {want: []string{ctNotFromCache(2, true), ctMsg(true, "Response 2 status is 503, not 200"), ctMsg(false, "Response 2 warning header not present."), ctMsg(true, "Response body is %s, not the token", reset)}, why: noWarning},
		"stale-warning-become": {want: []string{ctNotFromCache(2, true), ctMsg(true, "Response 2 status is 503, not 200"), ctMsg(false, "Response 2 warning header not present."), ctMsg(true, "Response body is %s, not the token", reset)}, why: noWarning},
		"heuristic-delta-5":    {want: []string{ctNotFromCache(2, false)}, why: "10% of 5 s truncates to no heuristic lifetime: not stored"},
		"heuristic-delta-10":   {want: []string{ctNotFromCache(2, false)}, why: "10% of 10 s is 1 s: stale after the pause, revalidated"},
		"heuristic-delta-30":   {want: []string{ctNotFromCache(2, false)}, why: "10% of 30 s is 3 s: stale after the 3 s pause, revalidated"},
		"conditional-etag-forward-unquoted": {want: []string{ctMsg(false, `Request 1 header If-None-Match is "abcdef", not "\"abcdef\""`)},
			why: "on a miss Sluice forwards the client's conditional fields as they are"},
		"conditional-etag-strong-generate-unquoted": {want: []string{ctMsg(false, "Request 2 should have been conditional, but it was not.")},
			why: "Sluice sends the quoted tag the case asks for (If-None-Match: \"abcdef\"), but the suite's origin answers 304 only to the unquoted form it sent, else 999"},
		"conditional-etag-vary-headers-mismatch": {want: []string{ctMsg(false, `Request 2 header If-None-Match is "", not "\"abcdef\""`)},
			why: "Sluice validates only the variant the request selects; another variant's validators are not sent (RFC 9111 §4.3.1 MAY)"},
		"other-age-delay": {want: []string{ctMsg(false, "Response 1 age header not present.")},
			why: "Sluice adds Age to responses it serves from the cache; a forwarded response was generated by the origin for this very request (RFC 9111 §5.1)"},
		"head-200-retain":           {want: []string{ctMsg(false, `Response 2 header Template-A is "", not "1"`)}, why: noHeadUpdate},
		"head-200-freshness-update": {want: []string{ctNotFromCache(3, false)}, why: noHeadUpdate},
		"head-200-update":           {want: []string{ctNotFromCache(3, true), ctMsg(false, `Response 3 header Template-A is "", not "2"`)}, why: noHeadUpdate},
		"head-410-update":           {want: []string{ctNotFromCache(3, true), ctMsg(false, `Response 3 header Template-A is "", not "2"`)}, why: noHeadUpdate},
		"304-etag-update-response-Content-Encoding": {want: keptField("Content-Encoding"),
			why: "a 304 does not update Content-Encoding: it describes the stored body (RFC 9111 §3.2 lets a cache keep fields the integrity of the stored response depends on)"},
		"304-etag-update-response-Content-Range": {want: keptField("Content-Range"), why: "as Content-Encoding: Content-Range describes the stored body"},
		"304-etag-update-response-ETag": {want: []string{
			ctMsg(false, `Response 2 header ETag is "\"abcdef\"", not "\"ghijkl\""`), ctNotFromCache(3, true),
			ctMsg(true, `Response 2 header ETag is "\"abcdef\"", not "\"ghijkl\""`)},
			why: "the 304 names another strong validator than the one Sluice sent, so it selects no stored response and must not update it " +
				"(RFC 9111 §4.3.4): Sluice answers from the stored response as it is (200, the old ETag), which stays stale"},
		"304-etag-update-response-Set-Cookie": {want: []string{ctMsg(true, "Request 2 should have been conditional, but it was not."), ctNotFromCache(3, true),
			ctMsg(true, "request 2 doesn't have if-none-match header")}, why: noCookies + ": nothing to validate"},
		"304-etag-update-response-Set-Cookie2": {want: []string{ctMsg(true, "Request 2 should have been conditional, but it was not."), ctNotFromCache(3, true),
			ctMsg(true, "request 2 doesn't have if-none-match header")}, why: noCookies + ": nothing to validate"},
	}
}
