package extproc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/extproc"
	xt "github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/header"
)

// replyType names the oneof of a ProcessingResponse.
func replyType(r *extprocv3.ProcessingResponse) string {
	switch r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingResponse_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingResponse_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return "response_trailers"
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return "immediate_response"
	}
	return fmt.Sprintf("%T", r.GetResponse())
}

// TestEveryPhase drives the message sequences Envoy sends for the
// processing modes Sluice is configured with and checks each message gets
// exactly the matching reply type (ProcessingResponse: one reply per
// message).
func TestEveryPhase(t *testing.T) {
	tests := []struct {
		name string
		msgs []*extprocv3.ProcessingRequest
		want []string
	}{
		{
			name: "headers only (GET, body mode NONE)",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("GET", "/v1/users", true),
				xt.ResponseHeaders(200, false, "content-type", "application/json"),
			},
			want: []string{"request_headers", "response_headers"},
		},
		{
			name: "HEAD: headers only, end_of_stream on both",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("HEAD", "/v1/users", true),
				xt.ResponseHeaders(200, true),
			},
			want: []string{"request_headers", "response_headers"},
		},
		{
			name: "every phase, streamed bodies and trailers",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("POST", "/v1/upload", false, "content-type", "text/plain"),
				xt.RequestBody([]byte("hello "), false),
				xt.RequestBody([]byte("world"), false),
				xt.RequestTrailers("x-checksum", "abc"),
				xt.ResponseHeaders(201, false),
				xt.ResponseBody([]byte("created"), false),
				xt.ResponseTrailers("grpc-status", "0"),
			},
			want: []string{"request_headers", "request_body", "request_body", "request_trailers",
				"response_headers", "response_body", "response_trailers"},
		},
		{
			name: "buffered bodies ending the stream",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("PUT", "/v1/users/7", false),
				xt.RequestBody([]byte(`{"name":"x"}`), true),
				xt.ResponseHeaders(200, false),
				xt.ResponseBody([]byte(`{}`), true),
			},
			want: []string{"request_headers", "request_body", "response_headers", "response_body"},
		},
		{
			name: "response before the request body ended",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("POST", "/v1/upload", false),
				xt.RequestBody([]byte("part"), false),
				xt.ResponseHeaders(413, false),
				xt.RequestBody([]byte("rest"), true),
			},
			want: []string{"request_headers", "request_body", "response_headers", "request_body"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &probe{name: "probe"}
			h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{p}})
			s := h.open(t)
			var got []string
			for _, m := range tt.msgs {
				r, err := s.Do(m)
				if err != nil {
					t.Fatalf("after %v: %v", got, err)
				}
				got = append(got, replyType(r))
				if r.GetModeOverride() != nil {
					t.Errorf("%s reply has a mode_override nobody asked for", replyType(r))
				}
			}
			if err := s.Finish(); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("replies %v, want %v", got, tt.want)
			}
			h.waitStreams(t, "ok", 1)
			if calls := p.Calls(); calls[len(calls)-1] != "done" {
				t.Fatalf("probe calls %v: want done last", calls)
			}
			if lines := h.logs.lines(t, "ext_proc stream ended"); len(lines) != 0 {
				t.Fatalf("good stream logged: %v", lines)
			}
		})
	}
}

func TestHeadersReadFromRawValueOrValue(t *testing.T) {
	p := &probe{name: "probe"}
	h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{p}})
	s := h.open(t)
	req := xt.RequestHeaders("GET", "/x?q=1", true, "x-raw", "raw")
	// An older sender filling value instead of raw_value.
	hm := req.GetRequestHeaders().GetHeaders()
	hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: "x-old", Value: "old"})
	// request_attributes configured in the filter arrive in attributes,
	// keyed by the filter name.
	attrs, _ := structpb.NewStruct(map[string]any{"request.path": "/x"})
	req.Attributes = map[string]*structpb.Struct{"envoy.filters.http.ext_proc": attrs}
	if _, err := s.Do(req); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	h.waitStreams(t, "ok", 1)
	x := p.Last()
	if x.Method != "GET" || x.Path != "/x?q=1" || x.Authority != "api.example.com" || x.Scheme != "http" {
		t.Errorf("pseudo-headers: %q %q %q %q", x.Method, x.Path, x.Authority, x.Scheme)
	}
	if got := x.RequestHeaders.Get("x-raw"); got != "raw" {
		t.Errorf("x-raw = %q", got)
	}
	if got := x.RequestHeaders.Get("x-old"); got != "old" {
		t.Errorf("x-old (value fallback) = %q", got)
	}
	if got := x.Attributes["envoy.filters.http.ext_proc"].GetFields()["request.path"].GetStringValue(); got != "/x" {
		t.Errorf("attributes: %v", x.Attributes)
	}
}

// TestModeOverride: mode_override only when a stage asks for a change, with
// every ProcessingMode field spelled out (DESIGN.md).
func TestModeOverride(t *testing.T) {
	buffered := procmodev3.ProcessingMode_BUFFERED
	tests := []struct {
		name string
		// stage behaviour
		reqPhase, resPhase func(x *extproc.Exchange)
		protocol           *extprocv3.ProtocolConfiguration
		cfg                extproc.ProcessingModeConfig
		wantReq, wantRes   *procmodev3.ProcessingMode
	}{
		{
			name:     "response body asked at response headers",
			resPhase: func(x *extproc.Exchange) { x.WantResponseBody(extproc.BodyBuffered) },
			wantRes: &procmodev3.ProcessingMode{
				RequestHeaderMode: procmodev3.ProcessingMode_SEND, ResponseHeaderMode: procmodev3.ProcessingMode_SEND,
				RequestBodyMode: procmodev3.ProcessingMode_NONE, ResponseBodyMode: buffered,
				RequestTrailerMode: procmodev3.ProcessingMode_SKIP, ResponseTrailerMode: procmodev3.ProcessingMode_SKIP,
			},
		},
		{
			name:     "configured trailer modes are repeated",
			cfg:      extproc.ProcessingModeConfig{ResponseTrailerMode: "SEND"},
			resPhase: func(x *extproc.Exchange) { x.WantResponseBody(extproc.BodyStreamed) },
			wantRes: &procmodev3.ProcessingMode{
				RequestHeaderMode: procmodev3.ProcessingMode_SEND, ResponseHeaderMode: procmodev3.ProcessingMode_SEND,
				RequestBodyMode: procmodev3.ProcessingMode_NONE, ResponseBodyMode: procmodev3.ProcessingMode_STREAMED,
				RequestTrailerMode: procmodev3.ProcessingMode_SKIP, ResponseTrailerMode: procmodev3.ProcessingMode_SEND,
			},
		},
		{
			name:     "request body asked at request headers keeps the per-route response mode",
			protocol: &extprocv3.ProtocolConfiguration{ResponseBodyMode: procmodev3.ProcessingMode_STREAMED},
			reqPhase: func(x *extproc.Exchange) { x.WantRequestBody(extproc.BodyBuffered) },
			wantReq: &procmodev3.ProcessingMode{
				RequestHeaderMode: procmodev3.ProcessingMode_SEND, ResponseHeaderMode: procmodev3.ProcessingMode_SEND,
				RequestBodyMode: buffered, ResponseBodyMode: procmodev3.ProcessingMode_STREAMED,
				RequestTrailerMode: procmodev3.ProcessingMode_SKIP, ResponseTrailerMode: procmodev3.ProcessingMode_SKIP,
			},
		},
		{
			name:     "asking for the mode in force is no change",
			protocol: &extprocv3.ProtocolConfiguration{ResponseBodyMode: buffered},
			resPhase: func(x *extproc.Exchange) { x.WantResponseBody(extproc.BodyBuffered) },
		},
		{
			name:     "NONE when NONE is no change",
			resPhase: func(x *extproc.Exchange) { x.WantResponseBody(extproc.BodyNone) },
		},
		{
			name:     "Envoy would ignore it: send_body_without_waiting_for_header_response",
			protocol: &extprocv3.ProtocolConfiguration{SendBodyWithoutWaitingForHeaderResponse: true},
			resPhase: func(x *extproc.Exchange) { x.WantResponseBody(extproc.BodyBuffered) },
		},
		{
			name: "nobody asks",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &probe{name: "probe"}
			if tt.reqPhase != nil {
				p.requestHeaders = func(_ context.Context, x *extproc.Exchange) error { tt.reqPhase(x); return nil }
			}
			if tt.resPhase != nil {
				p.responseHeaders = func(_ context.Context, x *extproc.Exchange) error { tt.resPhase(x); return nil }
			}
			h := newHarness(t, extproc.Config{ProcessingMode: tt.cfg}, harnessOpts{stages: []extproc.Stage{p}})
			s := h.open(t)
			if tt.protocol != nil {
				s.Protocol = tt.protocol
			}
			r1, err := s.Do(xt.RequestHeaders("GET", "/", true))
			if err != nil {
				t.Fatal(err)
			}
			r2, err := s.Do(xt.ResponseHeaders(200, false))
			if err != nil {
				t.Fatal(err)
			}
			if got := r1.GetModeOverride(); !equalMode(got, tt.wantReq) {
				t.Errorf("request headers mode_override = %v, want %v", got, tt.wantReq)
			}
			if got := r2.GetModeOverride(); !equalMode(got, tt.wantRes) {
				t.Errorf("response headers mode_override = %v, want %v", got, tt.wantRes)
			}
			if err := s.Finish(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func equalMode(a, b *procmodev3.ProcessingMode) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.GetRequestHeaderMode() == b.GetRequestHeaderMode() &&
		a.GetResponseHeaderMode() == b.GetResponseHeaderMode() &&
		a.GetRequestBodyMode() == b.GetRequestBodyMode() &&
		a.GetResponseBodyMode() == b.GetResponseBodyMode() &&
		a.GetRequestTrailerMode() == b.GetRequestTrailerMode() &&
		a.GetResponseTrailerMode() == b.GetResponseTrailerMode()
}

// TestResponseBodyAfterOverride follows a cache-like stage: it asks for the
// body only for cacheable responses, reads it, and stores it at Done.
func TestResponseBodyAfterOverride(t *testing.T) {
	var stored []byte
	type bodyKey struct{}
	p := &probe{name: "cache"}
	p.responseHeaders = func(_ context.Context, x *extproc.Exchange) error {
		if x.ResponseHeaders.Get("cache-control") == "public" {
			x.WantResponseBody(extproc.BodyBuffered)
		}
		return nil
	}
	p.responseBody = func(_ context.Context, x *extproc.Exchange, body []byte, eos bool) error {
		x.Set(bodyKey{}, append([]byte(nil), body...))
		return nil
	}
	c := &doneFunc{name: "store", f: func(x *extproc.Exchange) {
		if b, ok := x.Get(bodyKey{}).([]byte); ok {
			stored = b
		}
	}}
	h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{p, c}})
	s := h.open(t)
	if _, err := s.Do(xt.RequestHeaders("GET", "/v1/users", true)); err != nil {
		t.Fatal(err)
	}
	r, err := s.Do(xt.ResponseHeaders(200, false, "cache-control", "public"))
	if err != nil {
		t.Fatal(err)
	}
	if r.GetModeOverride().GetResponseBodyMode() != procmodev3.ProcessingMode_BUFFERED {
		t.Fatalf("mode_override = %v", r.GetModeOverride())
	}
	if r, err = s.Do(xt.ResponseBody([]byte("payload"), true)); err != nil || replyType(r) != "response_body" {
		t.Fatalf("body reply %v, %v", r, err)
	}
	if err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	h.waitStreams(t, "ok", 1)
	if string(stored) != "payload" {
		t.Fatalf("stored %q", stored)
	}
}

type doneFunc struct {
	name string
	f    func(x *extproc.Exchange)
}

func (d *doneFunc) Name() string                                { return d.name }
func (d *doneFunc) Done(_ context.Context, x *extproc.Exchange) { d.f(x) }

func TestImmediateResponse(t *testing.T) {
	tests := []struct {
		name       string
		phase      string // request_headers or response_headers
		status     int
		headers    header.List
		body       []byte
		wantStatus int
		wantBody   string
		wantSet    map[string][]string
	}{
		{
			name: "cache hit at request headers", phase: "request_headers",
			status:  200,
			headers: header.List{{Name: "content-type", Value: "application/json"}, {Name: "vary", Value: "accept"}, {Name: "vary", Value: "accept-encoding"}, {Name: "x-cache", Value: "HIT"}},
			body:    []byte(`{"ok":true}`), wantStatus: 200, wantBody: `{"ok":true}`,
			wantSet: map[string][]string{"content-type": {"application/json"}, "vary": {"accept", "accept-encoding"}, "x-cache": {"HIT"}},
		},
		{
			name: "304 carries no body", phase: "request_headers",
			status: 304, headers: header.List{{Name: "etag", Value: `"abc"`}}, body: []byte("ignored"),
			wantStatus: 304, wantBody: "", wantSet: map[string][]string{"etag": {`"abc"`}},
		},
		{
			name: "headers Envoy refuses are dropped", phase: "request_headers",
			status: 429, headers: header.List{{Name: "x-envoy-foo", Value: "1"}, {Name: ":status", Value: "200"}, {Name: "Retry-After", Value: "3"}}, body: []byte("slow down"),
			wantStatus: 429, wantBody: "slow down", wantSet: map[string][]string{"retry-after": {"3"}},
		},
		{
			name: "status below 200 becomes 200, as Envoy does", phase: "response_headers",
			status: 101, wantStatus: 200, wantSet: map[string][]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			respond := func(_ context.Context, x *extproc.Exchange) error {
				x.Respond(tt.status, tt.headers, tt.body)
				return nil
			}
			first := &probe{name: "cache"}
			later := &probe{name: "later"}
			if tt.phase == "request_headers" {
				first.requestHeaders = respond
			} else {
				first.responseHeaders = respond
			}
			h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{first, later}})
			s := h.open(t)
			r, err := s.Do(xt.RequestHeaders("GET", "/v1/users", true))
			if err != nil {
				t.Fatal(err)
			}
			if tt.phase == "response_headers" {
				if r, err = s.Do(xt.ResponseHeaders(200, false)); err != nil {
					t.Fatal(err)
				}
			}
			ir := r.GetImmediateResponse()
			if ir == nil {
				t.Fatalf("reply %s, want immediate_response", replyType(r))
			}
			if int(ir.GetStatus().GetCode()) != tt.wantStatus || string(ir.GetBody()) != tt.wantBody {
				t.Errorf("status %d body %q, want %d %q", ir.GetStatus().GetCode(), ir.GetBody(), tt.wantStatus, tt.wantBody)
			}
			if ir.GetDetails() != "sluice_cache" {
				t.Errorf("details %q", ir.GetDetails())
			}
			if err := xt.CheckRawValueOnly(ir.GetHeaders()); err != nil {
				t.Error(err)
			}
			if got := xt.SetHeaders(ir.GetHeaders()); fmt.Sprint(got) != fmt.Sprint(tt.wantSet) {
				t.Errorf("headers %v, want %v", got, tt.wantSet)
			}
			// ImmediateResponse ends the stream: the server returns OK
			// without waiting for Envoy.
			if err := s.Wait(); err != nil {
				t.Fatalf("stream end: %v", err)
			}
			h.waitStreams(t, "immediate_response", 1)
			if got := later.Calls(); slices.Contains(got, tt.phase) || !slices.Contains(got, "done") {
				t.Errorf("later stage calls %v: its %s hook must be skipped, Done must run", got, tt.phase)
			}
			x := later.Last()
			if by, ok := x.Responded(); !ok || by != "cache" || x.ResponseStatus != tt.wantStatus {
				t.Errorf("Responded() = %q, %v; status %d", by, ok, x.ResponseStatus)
			}
		})
	}
}

// TestReplaceResponse: a response replaced at the response headers is a headers reply with
// CONTINUE_AND_REPLACE (not an ImmediateResponse, which Envoy sends past every encoder filter
// once response headers exist): ":status" and the replacement's fields set, the upstream's other
// fields removed, the body replaced — unless the upstream response has no body and the
// replacement brings none (an answer to HEAD keeps its Content-Length).
func TestReplaceResponse(t *testing.T) {
	tests := []struct {
		name        string
		upstreamEOS bool
		body        []byte
		wantBody    string // "" with wantBodyMut: the body is cleared
		wantBodyMut bool
	}{
		{name: "upstream body replaced", body: []byte("stored"), wantBody: "stored", wantBodyMut: true},
		{name: "bodiless upstream (304) gets a body", upstreamEOS: true, body: []byte("stored"), wantBody: "stored", wantBodyMut: true},
		{name: "upstream body cleared", body: nil, wantBodyMut: true},
		{name: "bodiless upstream, bodiless replacement (HEAD)", upstreamEOS: true, body: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := &probe{name: "cache", responseHeaders: func(_ context.Context, x *extproc.Exchange) error {
				x.ReplaceResponse(extproc.Replacement{
					Status:  200,
					Headers: header.List{{Name: "content-type", Value: "text/plain"}, {Name: "content-length", Value: "6"}, {Name: "vary", Value: "a"}, {Name: "vary", Value: "b"}, {Name: "x-envoy-nope", Value: "1"}},
					Body:    tt.body,
					Keep:    func(name string) bool { return name == "ratelimit" },
				})
				return nil
			}}
			later := &probe{name: "later"}
			h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{cache, later}})
			s := h.open(t)
			if _, err := s.Do(xt.RequestHeaders("GET", "/r", true)); err != nil {
				t.Fatal(err)
			}
			r, err := s.Do(xt.ResponseHeaders(304, tt.upstreamEOS, "etag", `"x"`, "date", "d", "x-envoy-upstream-service-time", "3", "vary", "z", "ratelimit", `"r";r=1`))
			if err != nil {
				t.Fatal(err)
			}
			hr := r.GetResponseHeaders()
			if hr == nil {
				t.Fatalf("reply %s, want response_headers", replyType(r))
			}
			cr := hr.GetResponse()
			if cr.GetStatus() != extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
				t.Errorf("status %v, want CONTINUE_AND_REPLACE", cr.GetStatus())
			}
			if err := xt.CheckRawValueOnly(cr.GetHeaderMutation()); err != nil {
				t.Error(err)
			}
			want := map[string][]string{":status": {"200"}, "content-type": {"text/plain"}, "content-length": {"6"}, "vary": {"a", "b"}}
			if got := xt.SetHeaders(cr.GetHeaderMutation()); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("set %v, want %v", got, want)
			}
			if got := cr.GetHeaderMutation().GetRemoveHeaders(); fmt.Sprint(got) != "[etag date]" {
				t.Errorf("removed %v, want [etag date] (x-envoy-* cannot be mutated, vary is set, ratelimit kept)", got)
			}
			bm := cr.GetBodyMutation()
			if (bm != nil) != tt.wantBodyMut || string(bm.GetBody()) != tt.wantBody || (tt.wantBodyMut && tt.wantBody == "" && !bm.GetClearBody()) {
				t.Errorf("body mutation %v, want present=%v body %q", bm, tt.wantBodyMut, tt.wantBody)
			}
			if r.GetModeOverride() != nil {
				t.Errorf("mode_override %v beside a replacement", r.GetModeOverride())
			}
			if err := s.Finish(); err != nil {
				t.Fatal(err)
			}
			if x := later.Last(); x.ResponseStatus != 200 {
				t.Errorf("ResponseStatus %d after the replacement, want 200", x.ResponseStatus)
			}
		})
	}
}

// TestBadStreams: each ends with a gRPC status, one log line and a result.
func TestBadStreams(t *testing.T) {
	big := make([]byte, 600)
	tests := []struct {
		name       string
		cfg        extproc.Config
		serverOpts []grpc.ServerOption
		msgs       []*extprocv3.ProcessingRequest
		wantCode   codes.Code
		wantResult string
	}{
		{
			name: "second request_headers",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("GET", "/", true), xt.RequestHeaders("GET", "/", true),
			},
			wantCode: codes.FailedPrecondition, wantResult: "protocol_error",
		},
		{
			name:     "request_body first",
			msgs:     []*extprocv3.ProcessingRequest{xt.RequestBody([]byte("x"), true)},
			wantCode: codes.FailedPrecondition, wantResult: "protocol_error",
		},
		{
			name: "request_body after end_of_stream",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("GET", "/", true), xt.RequestBody([]byte("x"), true),
			},
			wantCode: codes.FailedPrecondition, wantResult: "protocol_error",
		},
		{
			name: "response_body before response_headers",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("GET", "/", true), xt.ResponseBody([]byte("x"), true),
			},
			wantCode: codes.FailedPrecondition, wantResult: "protocol_error",
		},
		{
			name: "second response_headers",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("GET", "/", true), xt.ResponseHeaders(200, false), xt.ResponseHeaders(200, false),
			},
			wantCode: codes.FailedPrecondition, wantResult: "protocol_error",
		},
		{
			name: "response_trailers after the response ended",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("GET", "/", true), xt.ResponseHeaders(204, true), xt.ResponseTrailers(),
			},
			wantCode: codes.FailedPrecondition, wantResult: "protocol_error",
		},
		{
			name: "request_headers after response_headers",
			msgs: []*extprocv3.ProcessingRequest{
				xt.ResponseHeaders(401, false), xt.RequestHeaders("GET", "/", true),
			},
			wantCode: codes.FailedPrecondition, wantResult: "protocol_error",
		},
		{
			name:     "no known oneof",
			msgs:     []*extprocv3.ProcessingRequest{{ObservabilityMode: false}},
			wantCode: codes.InvalidArgument, wantResult: "protocol_error",
		},
		{
			name: "request body over max_body_bytes in chunks",
			cfg:  extproc.Config{MaxBodyBytes: 1000},
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("POST", "/", false), xt.RequestBody(big, false), xt.RequestBody(big, true),
			},
			wantCode: codes.ResourceExhausted, wantResult: "body_too_large",
		},
		{
			name: "response body over max_body_bytes",
			cfg:  extproc.Config{MaxBodyBytes: 500},
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("GET", "/", true), xt.ResponseHeaders(200, false), xt.ResponseBody(big, true),
			},
			wantCode: codes.ResourceExhausted, wantResult: "body_too_large",
		},
		{
			name:       "message over the gRPC server's MaxRecvMsgSize",
			serverOpts: []grpc.ServerOption{grpc.MaxRecvMsgSize(1024)},
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("POST", "/", false), xt.RequestBody(make([]byte, 4096), true),
			},
			wantCode: codes.ResourceExhausted, wantResult: "message_too_large",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &probe{name: "probe"}
			h := newHarness(t, tt.cfg, harnessOpts{stages: []extproc.Stage{p}, serverOpts: tt.serverOpts})
			s := h.open(t)
			var err error
			for i, m := range tt.msgs {
				if i < len(tt.msgs)-1 {
					if _, err = s.Do(m); err != nil {
						t.Fatalf("message %d: %v", i, err)
					}
					continue
				}
				if err = s.Send(m); err != nil {
					t.Fatalf("send last: %v", err)
				}
			}
			err = s.Wait()
			if status.Code(err) != tt.wantCode {
				t.Fatalf("stream ended with %v, want code %v", err, tt.wantCode)
			}
			h.waitStreams(t, tt.wantResult, 1)
			lines := h.logs.lines(t, "ext_proc stream ended")
			if len(lines) != 1 || lines[0]["result"] != tt.wantResult || lines[0]["level"] != "WARN" {
				t.Fatalf("log lines %v, want one WARN with result %s", lines, tt.wantResult)
			}
		})
	}
}

func TestStageError(t *testing.T) {
	boom := &probe{name: "boom", requestHeaders: func(context.Context, *extproc.Exchange) error {
		return errors.New("tier store: connection refused secret-dsn")
	}}
	h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{boom}})
	s := h.open(t)
	if err := s.Send(xt.RequestHeaders("GET", "/", true)); err != nil {
		t.Fatal(err)
	}
	err := s.Wait()
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "secret") {
		t.Fatalf("stream ended with %v: want INTERNAL without the stage's error text", err)
	}
	h.waitStreams(t, "stage_error", 1)
	lines := h.logs.lines(t, "ext_proc stream ended")
	if len(lines) != 1 || lines[0]["stage"] != "boom" || lines[0]["level"] != "ERROR" {
		t.Fatalf("log lines %v", lines)
	}
	if got := boom.Calls(); !slices.Equal(got, []string{"request_headers", "done"}) {
		t.Fatalf("calls %v", got)
	}
}

// TestCancelledStreams: Envoy resets the stream when the request goes away
// (and, with the stream-close optimisation, right after the last reply).
func TestCancelledStreams(t *testing.T) {
	tests := []struct {
		name       string
		msgs       []*extprocv3.ProcessingRequest
		block      bool // a stage blocks until the stream's ctx is done
		wantResult string
		wantLog    bool
		wantClass  string
	}{
		{
			name:       "after request headers: the exchange was cut short",
			msgs:       []*extprocv3.ProcessingRequest{xt.RequestHeaders("GET", "/v1/users", true)},
			wantResult: "cancelled", wantLog: true, wantClass: "none",
		},
		{
			name:       "while a stage waits",
			block:      true,
			wantResult: "cancelled", wantLog: true, wantClass: "none",
		},
		{
			name: "after the response headers: a normal end",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("GET", "/v1/users", true), xt.ResponseHeaders(200, false),
			},
			wantResult: "ok", wantLog: false, wantClass: "2xx",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &probe{name: "probe"}
			entered := make(chan struct{})
			if tt.block {
				p.requestHeaders = func(ctx context.Context, _ *extproc.Exchange) error {
					close(entered)
					<-ctx.Done()
					return ctx.Err()
				}
			}
			h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{p}})
			s := h.open(t)
			for _, m := range tt.msgs {
				if _, err := s.Do(m); err != nil {
					t.Fatal(err)
				}
			}
			if tt.block {
				if err := s.Send(xt.RequestHeaders("GET", "/v1/users", true)); err != nil {
					t.Fatal(err)
				}
				<-entered
			}
			s.Cancel()
			h.waitStreams(t, tt.wantResult, 1)
			lines := h.logs.lines(t, "ext_proc stream ended")
			if tt.wantLog != (len(lines) == 1) || len(lines) > 1 {
				t.Fatalf("log lines %v, want %v", lines, tt.wantLog)
			}
			if got := counter(t, h.reg, "sluice_http_requests_total", map[string]string{
				"route": "other", "method": "GET", "status_class": tt.wantClass, "tier": "anonymous",
			}); got != 1 {
				t.Fatalf("requests_total{status_class=%s} = %v", tt.wantClass, got)
			}
		})
	}
}

// TestResponseOnly: a local reply from a filter before ext_proc (jwt_authn's
// 401) reaches ext_proc as a stream starting with response headers.
func TestResponseOnly(t *testing.T) {
	p := &probe{name: "probe"}
	h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{p}})
	s := h.open(t)
	r, err := s.Do(xt.ResponseHeaders(401, false, "www-authenticate", "Bearer"))
	if err != nil {
		t.Fatal(err)
	}
	if replyType(r) != "response_headers" || xt.Common(r) != nil || r.GetModeOverride() != nil {
		t.Fatalf("reply %v: want plain CONTINUE", r)
	}
	if err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	h.waitStreams(t, "response_only", 1)
	if got := p.Calls(); len(got) != 0 {
		t.Fatalf("stages ran without a request: %v", got)
	}
}

// TestObservabilityMode: Envoy expects no replies (EP ProcessingRequest.
// observability_mode); the stages still observe.
func TestObservabilityMode(t *testing.T) {
	// A stage answering from cache would end the stream; here Envoy ignores
	// replies, so the stream goes on.
	p := &probe{name: "probe", requestHeaders: func(_ context.Context, x *extproc.Exchange) error {
		x.Respond(200, nil, []byte("cached"))
		return nil
	}}
	h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{p}})
	s := h.open(t)
	for _, m := range []*extprocv3.ProcessingRequest{
		xt.Observed(xt.RequestHeaders("GET", "/v1/users", true, "x-tenant-id", "acme")),
		xt.Observed(xt.ResponseHeaders(200, true)),
	} {
		if err := s.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("first read: %v, %v; want the end of the stream and no reply", r, err)
	}
	h.waitStreams(t, "ok", 1)
	if got := p.Calls(); !slices.Equal(got, []string{"request_headers", "response_headers", "done"}) {
		t.Fatalf("calls %v", got)
	}
	if x := p.Last(); x.Tenant != "acme" || x.ResponseStatus != 200 {
		t.Fatalf("exchange tenant %q status %d", x.Tenant, x.ResponseStatus)
	}
}

// TestMaxStreams: streams beyond extproc.max_streams are refused at once with RESOURCE_EXHAUSTED
// (Envoy then applies failure_mode_allow to that request), counted as overloaded, and the open
// streams are unaffected; once one ends, a new stream is served again.
func TestMaxStreams(t *testing.T) {
	h := newHarness(t, extproc.Config{MaxStreams: 2}, harnessOpts{})
	held := []*xt.Stream{h.open(t), h.open(t)}
	for _, s := range held {
		if _, err := s.Do(xt.RequestHeaders("GET", "/v1/users", true)); err != nil {
			t.Fatalf("held stream: %v", err)
		}
	}
	if got := counter(t, h.reg, "sluice_extproc_streams_open", nil); got != 2 {
		t.Errorf("streams_open = %v, want 2", got)
	}
	extra := h.open(t)
	// The server may refuse the stream before the message goes out: Send
	// then reports io.EOF and the status comes with the next read (grpc
	// ClientStream.SendMsg).
	if err := extra.Send(xt.RequestHeaders("GET", "/v1/users", true)); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("third stream: send: %v", err)
	}
	if err := extra.Wait(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third stream: %v, want RESOURCE_EXHAUSTED", err)
	}
	h.waitStreams(t, "overloaded", 1)
	// The held streams still complete.
	if _, err := held[0].Do(xt.ResponseHeaders(200, true)); err != nil {
		t.Fatalf("held stream after the refusal: %v", err)
	}
	if err := held[0].Finish(); err != nil {
		t.Fatalf("held stream end: %v", err)
	}
	h.waitStreams(t, "ok", 1)
	next := h.open(t)
	if _, err := next.Do(xt.RequestHeaders("GET", "/v1/users", true)); err != nil {
		t.Fatalf("a stream after one ended: %v", err)
	}
}

// TestRequestBodyTimeout: a stream that asked for the request body (here a
// stage's mode_override; the batch route's BUFFERED mode alike) waits for
// it at most request_body_timeout. A client trickling its body would
// otherwise hold the stream (and a max_streams slot) as long as it liked:
// Sluice answers 408 itself, which Envoy sends at once, ending the stream
// (Filter::onReceiveMessage handles an ImmediateResponse whenever it
// arrives).
func TestRequestBodyTimeout(t *testing.T) {
	p := &probe{name: "wants_body"}
	p.requestHeaders = func(_ context.Context, x *extproc.Exchange) error {
		x.WantRequestBody(extproc.BodyBuffered)
		return nil
	}
	h := newHarness(t, extproc.Config{RequestBodyTimeout: 200 * time.Millisecond, MaxStreams: 1}, harnessOpts{stages: []extproc.Stage{p}})
	s := h.open(t)
	start := time.Now()
	r, err := s.Do(xt.RequestHeaders("POST", "/v1/upload", false, "x-tenant-id", "acme"))
	if err != nil || r.GetModeOverride().GetRequestBodyMode() != procmodev3.ProcessingMode_BUFFERED {
		t.Fatalf("headers reply %v, %v", r, err)
	}
	r, err = s.Recv()
	if err != nil {
		t.Fatalf("waiting for the body timeout: %v", err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("answered after %v, before the timeout", took)
	}
	ir := r.GetImmediateResponse()
	if ir.GetStatus().GetCode() != 408 || !strings.Contains(string(ir.GetBody()), "request body") {
		t.Fatalf("reply %v; want an immediate 408", r)
	}
	// Envoy closes the stream after an immediate response.
	_ = s.Finish()
	h.waitStreams(t, "body_timeout", 1)
	if got := counter(t, h.reg, "sluice_extproc_streams_open", nil); got != 0 {
		t.Errorf("streams_open = %v; the slot was not given back", got)
	}
	// The slot is free for the next request.
	next := h.open(t)
	if _, err := next.Do(xt.RequestHeaders("GET", "/v1/users", true)); err != nil {
		t.Fatalf("next stream: %v", err)
	}
	if err := next.Finish(); err != nil {
		t.Fatal(err)
	}
	h.waitStreams(t, "ok", 1)

	// A body that arrives in time is answered normally.
	s2 := h.open(t)
	if _, err := s2.Do(xt.RequestHeaders("POST", "/v1/upload", false)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if r, err := s2.Do(xt.RequestBody([]byte("{}"), true)); err != nil || replyType(r) != "request_body" {
		t.Fatalf("body reply %v, %v", r, err)
	}
}

// TestResponseHeaderLimits: a stage's added response fields are left out
// when, with them, Envoy's response header map would exceed
// max_response_headers (Envoy refuses the mutation and answers 500); fields
// it replaces or removes stay, and nothing is logged for it.
func TestResponseHeaderLimits(t *testing.T) {
	tests := []struct {
		name     string
		upstream int // response fields besides :status
		want     map[string][]string
		wantRm   []string
	}{
		{name: "room left", upstream: 10,
			want: map[string][]string{"cache-status": {"s"}, "x-cache": {"MISS"}, "x-f0": {"replaced"}}, wantRm: []string{"x-f1"}},
		// With :status, 99 fields; one removed and two added: 100, the limit.
		{name: "exactly at the limit", upstream: 98,
			want: map[string][]string{"cache-status": {"s"}, "x-cache": {"MISS"}, "x-f0": {"replaced"}}, wantRm: []string{"x-f1"}},
		// 100 fields; one removed and two added would be 101.
		{name: "one over", upstream: 99,
			want: map[string][]string{"x-f0": {"replaced"}}, wantRm: []string{"x-f1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := &probe{name: "cache", responseHeaders: func(_ context.Context, x *extproc.Exchange) error {
				x.SetResponseHeader("cache-status", "s")
				x.SetResponseHeader("x-cache", "MISS")
				x.SetResponseHeader("x-f0", "replaced")
				x.RemoveResponseHeader("x-f1")
				return nil
			}}
			h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{cache}})
			s := h.open(t)
			if _, err := s.Do(xt.RequestHeaders("GET", "/r", true)); err != nil {
				t.Fatal(err)
			}
			var kv []string
			for i := range tt.upstream {
				kv = append(kv, fmt.Sprintf("x-f%d", i), "v")
			}
			r, err := s.Do(xt.ResponseHeaders(200, true, kv...))
			if err != nil {
				t.Fatal(err)
			}
			m := r.GetResponseHeaders().GetResponse().GetHeaderMutation()
			if got := xt.SetHeaders(m); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("set %v, want %v", got, tt.want)
			}
			if got := m.GetRemoveHeaders(); fmt.Sprint(got) != fmt.Sprint(tt.wantRm) {
				t.Errorf("removed %v, want %v", got, tt.wantRm)
			}
			s.Cancel()
			h.waitStreams(t, "ok", 1)
			if lines := h.logs.lines(t, "ext_proc stream ended"); len(lines) != 0 {
				t.Errorf("logged %v", lines)
			}
		})
	}
}
