package batch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// Runner parses and executes batches for one Config. Safe for concurrent
// use; Close releases its idle connections.
type Runner struct {
	cfg    Config
	l      listener
	parse  *parser
	client *http.Client
	dialer *pinnedDialer
}

// New returns a Runner for cfg, defaulted and validated.
func New(cfg Config) (*Runner, error) {
	return newRunner(cfg, nil)
}

func newRunner(cfg Config, r resolver) (*Runner, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l, err := parseListener(cfg.ListenerURL)
	if err != nil {
		return nil, fmt.Errorf("batch: listener_url: %w", err)
	}
	client, d := newClient(cfg, l, r)
	return &Runner{cfg: cfg, l: l, parse: newParser(cfg), client: client, dialer: d}, nil
}

// Config returns the defaulted configuration in use.
func (r *Runner) Config() Config { return r.cfg }

// Close closes idle connections to the listener. Safe to call more than
// once; the Runner stays usable.
func (r *Runner) Close() { r.client.CloseIdleConnections() }

// Parent is what sub-requests inherit from the batch request.
type Parent struct {
	// Header holds the batch request's headers; only Config.ForwardHeaders
	// and User-Agent are copied.
	Header http.Header
	// Host is the batch request's authority, sent as every sub-request's
	// Host so routing and cache keys match a direct call; "" or an invalid
	// value sends the listener's host. It never chooses what is dialed.
	Host string
	// ClientAddress is the IP address of the client that sent the batch
	// (Envoy's x-envoy-external-address on it). Every sub-request carries it
	// in x-sluice-client-address, which Envoy's internal listener takes as
	// the request's remote address (rate limits per address), and in
	// x-envoy-external-address for the application. "" sends neither: the
	// items are then limited as Sluice's own address.
	ClientAddress string
}

// Response is the batch reply body, one entry per item in request order.
type Response struct {
	Responses []ItemResponse `json:"responses"`
}

// ItemResponse is one item's answer. Body is JSON when the content-type is
// JSON (and the body valid JSON), else a base64 string; absent when empty.
// Header names are lower-case; repeated fields are joined with ", ".
type ItemResponse struct {
	ID      string            `json:"id"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
}

// ErrorBody is the Graph-style error document of a failed batch or item.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is ErrorBody's content.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Parse decodes and validates a batch body; see parser.Parse.
func (r *Runner) Parse(body []byte) (*Batch, *Error) { return r.parse.Parse(body) }

// Handle parses body and runs it, returning the HTTP status and JSON body of
// the batch reply: 200 with a Response, or the batch error's status with an
// ErrorBody. It never fails as a whole because of an item.
func (r *Runner) Handle(ctx context.Context, p Parent, body []byte) (int, []byte) {
	b, berr := r.Parse(body)
	if berr != nil {
		return berr.Status, errorJSON(berr)
	}
	out, err := json.Marshal(r.Run(ctx, p, b))
	if err != nil { // only RawMessage bodies could fail, and they are validated
		e := &Error{Status: http.StatusInternalServerError, Code: "internalError", Message: "encoding the batch reply failed"}
		return e.Status, errorJSON(e)
	}
	return http.StatusOK, out
}

// Run executes b: independent items in parallel under Config.Concurrency,
// each item after its dependencies, an item whose dependency answered
// non-2xx answered 424 without being sent. Each item is bounded by
// ItemTimeout and the whole run by Deadline (and ctx). Run returns when
// every item has an answer; it leaves no goroutine behind.
func (r *Runner) Run(ctx context.Context, p Parent, b *Batch) *Response {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Deadline)
	defer cancel()
	n := len(b.Items)
	results := make([]ItemResponse, n)
	done := make([]chan struct{}, n)
	for i := range done {
		done[i] = make(chan struct{})
	}
	sem := make(chan struct{}, r.cfg.Concurrency)
	var budget atomic.Int64
	budget.Store(int64(r.cfg.MaxTotalResponseBytes))
	base := r.baseHeader(p)
	host := r.l.host
	if validAuthority(p.Host) {
		host = p.Host
	}
	var wg sync.WaitGroup
	for i := range b.Items {
		wg.Go(func() {
			defer close(done[i])
			it := &b.Items[i]
			results[i] = r.runItem(ctx, it, base, host, sem, done, results, &budget)
			results[i].ID = it.ID
		})
	}
	wg.Wait()
	return &Response{Responses: results}
}

// runItem waits for its dependencies and a concurrency slot, then sends it.
// results[d] is read only after done[d] is closed.
func (r *Runner) runItem(ctx context.Context, it *Item, base http.Header, host string, sem chan struct{}, done []chan struct{}, results []ItemResponse, budget *atomic.Int64) ItemResponse {
	if it.Err != nil {
		return errorResponse(it.Err)
	}
	for _, d := range it.Deps {
		select {
		case <-done[d]:
		case <-ctx.Done():
			return ctxError(ctx.Err())
		}
	}
	for _, d := range it.Deps {
		if s := results[d].Status; s < 200 || s > 299 {
			return errorResponse(&Error{Status: http.StatusFailedDependency, Code: CodeFailedDependency,
				Message: fmt.Sprintf("dependency %s answered %d", quoteShort(results[d].ID), s)})
		}
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return ctxError(ctx.Err())
	}
	defer func() { <-sem }()
	return r.send(ctx, it, base, host, budget)
}

// send performs one sub-request and turns its answer into an ItemResponse.
func (r *Runner) send(batchCtx context.Context, it *Item, base http.Header, host string, budget *atomic.Int64) ItemResponse {
	ctx, cancel := context.WithTimeout(batchCtx, r.cfg.ItemTimeout)
	defer cancel()
	var body io.Reader
	if it.HasBody {
		body = bytes.NewReader(it.Body)
	}
	req, err := http.NewRequestWithContext(ctx, it.Method, r.l.scheme+"://"+r.l.host+"/", body)
	if err != nil {
		return errorResponse(&Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: "cannot build the request"})
	}
	// Opaque is sent verbatim as the request-target (url.URL.RequestURI):
	// the validated bytes, not a re-encoding of them.
	req.URL.Path, req.URL.RawPath, req.URL.Opaque, req.URL.RawQuery = "", "", it.Path, it.Query
	req.Host = host
	req.Header = base.Clone()
	for k, v := range it.Header {
		req.Header[k] = v
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return r.transportError(batchCtx, ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(r.cfg.MaxItemResponseBytes)+1))
	if err != nil {
		return r.transportError(batchCtx, ctx, err)
	}
	if len(data) > r.cfg.MaxItemResponseBytes {
		return errorResponse(&Error{Status: http.StatusInsufficientStorage, Code: CodeItemTooLarge,
			Message: fmt.Sprintf("response body over %d bytes", r.cfg.MaxItemResponseBytes)})
	}
	out := ItemResponse{Status: resp.StatusCode, Headers: responseHeaders(resp.Header)}
	if len(data) > 0 {
		if isJSONType(resp.Header.Get("Content-Type")) && json.Valid(data) {
			out.Body = data
		} else {
			out.Body = base64JSON(data)
		}
	}
	size := int64(len(out.Body))
	for k, v := range out.Headers {
		size += int64(len(k) + len(v) + 6)
	}
	if budget.Add(-size) < 0 {
		budget.Add(size)
		return errorResponse(&Error{Status: http.StatusInsufficientStorage, Code: CodeBatchTooLarge,
			Message: fmt.Sprintf("the batch reply reached its %d byte limit", r.cfg.MaxTotalResponseBytes)})
	}
	return out
}

// baseHeader is what every sub-request carries: the forwarded parent
// headers, the parent's User-Agent, the loop-prevention marker, and what
// makes the item the parent client's request for Envoy and the application:
// its address (HeaderClientAddress, x-envoy-external-address) and the
// parent's X-Forwarded-For and X-Forwarded-Proto as Envoy's ingress wrote
// them (the internal listener passes them on unchanged, so the application
// sees the same client, and the cache the same scheme, as on a direct
// call). Items may not set any of these (reservedHeader, itemForbidden).
func (r *Runner) baseHeader(p Parent) http.Header {
	h := make(http.Header, len(r.cfg.ForwardHeaders)+6)
	for _, name := range r.cfg.ForwardHeaders {
		key := http.CanonicalHeaderKey(name)
		for _, v := range p.Header.Values(key) {
			if validHeaderValue(v) {
				h.Add(key, v)
			}
		}
	}
	ua := p.Header.Get("User-Agent")
	if ua == "" || !validHeaderValue(ua) {
		ua = "sluice-batch"
	}
	h.Set("User-Agent", ua)
	h.Set(HeaderBatch, "1")
	if p.ClientAddress != "" {
		h.Set(HeaderClientAddress, p.ClientAddress)
		h.Set("X-Envoy-External-Address", p.ClientAddress)
	}
	for _, key := range []string{"X-Forwarded-For", "X-Forwarded-Proto"} {
		if vs := p.Header.Values(key); len(vs) > 0 {
			v := strings.Join(vs, ",")
			if validHeaderValue(v) {
				h.Set(key, v)
			}
		}
	}
	return h
}

// HeaderBatch marks sub-requests (extproc.HeaderBatch, loop prevention).
const HeaderBatch = "x-sluice-batch"

// HeaderClientAddress carries the parent client's address to Envoy's
// internal listener (extproc.HeaderClientAddress).
const HeaderClientAddress = "x-sluice-client-address"

// ctxError answers an item stopped by the batch context: its deadline
// (Config.Deadline, or the shorter one of the caller's ctx) or cancellation.
func ctxError(err error) ItemResponse {
	if errors.Is(err, context.DeadlineExceeded) {
		return errorResponse(&Error{Status: http.StatusGatewayTimeout, Code: CodeDeadlineExceeded,
			Message: "the batch ran past its deadline before this item completed"})
	}
	return errorResponse(&Error{Status: http.StatusServiceUnavailable, Code: CodeDeadlineExceeded, Message: "the batch request was cancelled"})
}

// transportError classifies a failed exchange: the batch deadline, the
// item timeout, or an upstream failure (502).
func (r *Runner) transportError(batchCtx, itemCtx context.Context, err error) ItemResponse {
	if batchCtx.Err() != nil {
		return ctxError(batchCtx.Err())
	}
	var ne net.Error
	if itemCtx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
		return errorResponse(&Error{Status: http.StatusGatewayTimeout, Code: CodeItemTimeout,
			Message: fmt.Sprintf("the item ran past its %v timeout", r.cfg.ItemTimeout)})
	}
	return errorResponse(&Error{Status: http.StatusBadGateway, Code: CodeUpstream, Message: "the request could not be completed"})
}

func errorResponse(e *Error) ItemResponse {
	return ItemResponse{Status: e.Status, Headers: map[string]string{"content-type": "application/json"}, Body: errorJSON(e)}
}

func errorJSON(e *Error) []byte {
	b, err := json.Marshal(ErrorBody{Error: ErrorDetail{Code: e.Code, Message: e.Message}})
	if err != nil {
		return []byte(`{"error":{"code":"internalError","message":""}}`)
	}
	return b
}

func base64JSON(data []byte) []byte {
	out := make([]byte, 0, base64.StdEncoding.EncodedLen(len(data))+2)
	out = append(out, '"')
	out = base64.StdEncoding.AppendEncode(out, data)
	return append(out, '"')
}

func responseHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		lk := strings.ToLower(k)
		if responseHeaderDropped(lk) {
			continue
		}
		out[lk] = strings.Join(vs, ", ")
	}
	return out
}

// validAuthority reports whether host is a plain host[:port] worth sending
// as Host: letters, digits, "-", ".", ":" and IPv6 brackets only.
func validAuthority(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	for i := 0; i < len(host); i++ {
		b := host[i]
		if !(isAlnum(b) || b == '-' || b == '.' || b == ':' || b == '[' || b == ']') {
			return false
		}
	}
	return true
}
