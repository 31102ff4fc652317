package extproc_test

// Conformance of the ext_proc server to Envoy's documented protocol, played
// the way Envoy's filter plays it (ext_proc.cc, processor_state.cc), each
// behaviour tied to the proto comment or filter code it relies on. Proto
// references are to envoyproxy/envoy api/ as vendored by go-control-plane
// v1.40.0:
//
//	EP   api/envoy/service/ext_proc/v3/external_processor.proto
//	PM   api/envoy/extensions/filters/http/ext_proc/v3/processing_mode.proto
//	CFG  api/envoy/extensions/filters/http/ext_proc/v3/ext_proc.proto
//	BASE api/envoy/config/core/v3/base.proto

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/extproc"
	xt "github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/header"
)

// envoySide is one ext_proc stream as Envoy's filter drives it. Unlike
// extproctest.Stream it adds nothing to the messages (each case sets
// protocol_config where Envoy would) and it has a deadline, so a server
// that never answers fails the test instead of hanging it.
type envoySide struct {
	c      extprocv3.ExternalProcessor_ProcessClient
	cancel context.CancelFunc
}

func openEnvoy(t testing.TB, conn grpc.ClientConnInterface) *envoySide {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		cancel()
		t.Fatalf("open stream: %v", err)
	}
	t.Cleanup(cancel)
	return &envoySide{c: c, cancel: cancel}
}

// end reads until the server ends the stream and returns its replies and
// status (nil for OK).
func (e *envoySide) end() ([]*extprocv3.ProcessingResponse, error) {
	var rs []*extprocv3.ProcessingResponse
	for {
		r, err := e.c.Recv()
		if errors.Is(err, io.EOF) {
			return rs, nil
		}
		if err != nil {
			return rs, err
		}
		rs = append(rs, r)
	}
}

// withProtocol adds protocol_config to req, as Envoy does to the first
// message of a stream outside observability mode (EP ProcessingRequest.
// protocol_config: present on the first message of a stream only;
// ext_proc.cc encodeProtocolConfig).
func withProtocol(req *extprocv3.ProcessingRequest, reqBody, resBody procmodev3.ProcessingMode_BodySendMode, sendWithoutWaiting bool) *extprocv3.ProcessingRequest {
	req.ProtocolConfig = &extprocv3.ProtocolConfiguration{
		RequestBodyMode: reqBody, ResponseBodyMode: resBody, SendBodyWithoutWaitingForHeaderResponse: sendWithoutWaiting,
	}
	return req
}

func bodyOf(m *extprocv3.ProcessingRequest) *extprocv3.HttpBody {
	if b := m.GetRequestBody(); b != nil {
		return b
	}
	return m.GetResponseBody()
}

func bodyReply(r *extprocv3.ProcessingResponse) *extprocv3.BodyResponse {
	if b := r.GetRequestBody(); b != nil {
		return b
	}
	return r.GetResponseBody()
}

// TestConformanceOneReplyPerMessage plays every message sequence Envoy's
// filter produces for the body modes and checks that each message gets
// exactly one reply, in order, of its own type.
//
//   - EP ProcessingResponse: each ProcessingRequest gets one
//     ProcessingResponse, no more and no fewer.
//   - EP ProcessingRequest.request_body and its siblings: a body message is
//     answered with a BodyResponse or an ImmediateResponse, or the stream is
//     closed; a trailers message with a TrailerResponse.
//   - Sluice changes no body, so outside FULL_DUPLEX_STREAMED a body reply is
//     a plain CONTINUE. In FULL_DUPLEX_STREAMED the body reply has to carry
//     the chunk back as a streamed response (PM FULL_DUPLEX_STREAMED; EP
//     BodyMutation.streamed_response, required in that mode), so each chunk
//     goes back unchanged with its end_of_stream (EP
//     StreamedBodyResponse.end_of_stream). Envoy counts a plain CONTINUE
//     there as a spurious message (processor_state.cc
//     handleStreamedBodyCallback) and fails the request.
func TestConformanceOneReplyPerMessage(t *testing.T) {
	const (
		none     = procmodev3.ProcessingMode_NONE
		streamed = procmodev3.ProcessingMode_STREAMED
		buffered = procmodev3.ProcessingMode_BUFFERED
		partial  = procmodev3.ProcessingMode_BUFFERED_PARTIAL
		duplex   = procmodev3.ProcessingMode_FULL_DUPLEX_STREAMED
	)
	tests := []struct {
		name string
		msgs []*extprocv3.ProcessingRequest
		// pipelined sends every message before reading a reply, as Envoy
		// does with send_body_without_waiting_for_header_response (CFG: the
		// body goes out as it arrives, before the headers are answered) and
		// in FULL_DUPLEX_STREAMED (ext_proc.cc onData sends body while
		// HeadersCallback is pending).
		pipelined  bool
		wantResult string
	}{
		{
			name: "bodies NONE: headers only",
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestHeaders("GET", "/v1/users", true), none, none, false),
				xt.ResponseHeaders(200, false),
			},
			wantResult: "ok",
		},
		{
			name: "trailers SEND, bodies NONE",
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestHeaders("POST", "/v1/upload", false), none, none, false),
				xt.RequestTrailers("x-checksum", "abc"),
				xt.ResponseHeaders(200, false),
				xt.ResponseTrailers("grpc-status", "0"),
			},
			wantResult: "ok",
		},
		{
			name: "STREAMED: chunks with end_of_stream false, false, true",
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestHeaders("POST", "/v1/upload", false), streamed, streamed, false),
				xt.RequestBody([]byte("a"), false),
				xt.RequestBody([]byte("b"), false),
				xt.RequestBody([]byte("c"), true),
				xt.ResponseHeaders(200, false),
				xt.ResponseBody([]byte("x"), false),
				xt.ResponseBody(nil, true),
			},
			wantResult: "ok",
		},
		{
			name: "STREAMED with send_body_without_waiting_for_header_response",
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestHeaders("POST", "/v1/upload", false), streamed, none, true),
				xt.RequestBody([]byte("a"), false),
				xt.RequestBody([]byte("b"), true),
				xt.ResponseHeaders(200, false),
			},
			pipelined:  true,
			wantResult: "ok",
		},
		{
			name: "BUFFERED: the whole body at end_of_stream",
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestHeaders("PUT", "/v1/users/7", false), buffered, buffered, false),
				xt.RequestBody([]byte(`{"name":"x"}`), true),
				xt.ResponseHeaders(200, false),
				xt.ResponseBody([]byte(`{}`), true),
			},
			wantResult: "ok",
		},
		{
			// ext_proc.cc onTrailers: the buffered body goes out with
			// end_of_stream false when trailers end the message.
			name: "BUFFERED ending in trailers",
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestHeaders("POST", "/v1/upload", false), buffered, none, false),
				xt.RequestBody([]byte("all of it"), false),
				xt.RequestTrailers("x-checksum", "abc"),
				xt.ResponseHeaders(200, true),
			},
			wantResult: "ok",
		},
		{
			// PM BUFFERED_PARTIAL: a body larger than the buffer limit is
			// sent up to the limit; the rest is not.
			name: "BUFFERED_PARTIAL: one partial chunk, never an end_of_stream",
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestHeaders("POST", "/v1/upload", false), partial, partial, false),
				xt.RequestBody([]byte("first part"), false),
				xt.ResponseHeaders(200, false),
				xt.ResponseBody([]byte("first part"), false),
			},
			wantResult: "ok",
		},
		{
			name: "FULL_DUPLEX_STREAMED: chunks ending with end_of_stream",
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestHeaders("POST", "/v1/upload", false), duplex, duplex, false),
				xt.RequestBody([]byte("a"), false),
				xt.RequestBody([]byte("b"), true),
				xt.ResponseHeaders(200, false),
				xt.ResponseBody([]byte("x"), false),
				xt.ResponseBody([]byte("y"), true),
			},
			pipelined:  true,
			wantResult: "ok",
		},
		{
			// PM FULL_DUPLEX_STREAMED requires the trailer mode SEND: the
			// trailers tell the server the body is complete.
			name: "FULL_DUPLEX_STREAMED: body ended by trailers",
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestHeaders("POST", "/v1/upload", false), duplex, duplex, false),
				xt.RequestBody([]byte("a"), false),
				xt.RequestBody(nil, false),
				xt.RequestTrailers("x-checksum", "abc"),
				xt.ResponseHeaders(200, false),
				xt.ResponseBody([]byte("x"), false),
				xt.ResponseTrailers("grpc-status", "0"),
			},
			pipelined:  true,
			wantResult: "ok",
		},
		{
			// A local reply of a filter before ext_proc passes ext_proc's
			// encoder path only (FilterManager::sendLocalReplyViaFilterChain).
			name: "response only, FULL_DUPLEX_STREAMED response body",
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.ResponseHeaders(401, false), none, duplex, false),
				xt.ResponseBody([]byte("denied"), true),
			},
			wantResult: "response_only",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, extproc.Config{}, harnessOpts{})
			e := openEnvoy(t, h.conn)
			duplexReq := tt.msgs[0].GetProtocolConfig().GetRequestBodyMode() == duplex
			duplexRes := tt.msgs[0].GetProtocolConfig().GetResponseBodyMode() == duplex
			var replies []*extprocv3.ProcessingResponse
			for _, m := range tt.msgs {
				if err := e.c.Send(m); err != nil {
					t.Fatalf("send %s: %v", owedKind(m), err)
				}
				if tt.pipelined {
					continue
				}
				r, err := e.c.Recv()
				if err != nil {
					t.Fatalf("reply to %s: %v", owedKind(m), err)
				}
				replies = append(replies, r)
			}
			if err := e.c.CloseSend(); err != nil {
				t.Fatal(err)
			}
			rest, err := e.end()
			if err != nil {
				t.Fatalf("stream ended with %v, want OK", err)
			}
			replies = append(replies, rest...)
			if len(replies) != len(tt.msgs) {
				t.Fatalf("%d replies to %d messages", len(replies), len(tt.msgs))
			}
			for i, m := range tt.msgs {
				r := replies[i]
				if replyType(r) != owedKind(m) {
					t.Fatalf("reply %d to %s is %s", i, owedKind(m), replyType(r))
				}
				if r.GetModeOverride() != nil {
					t.Errorf("reply to %s has a mode_override nobody asked for", owedKind(m))
				}
				if err := xt.CheckRawValueOnly(xt.Mutation(r)); err != nil {
					t.Errorf("reply to %s: %v", owedKind(m), err)
				}
				b := bodyOf(m)
				if b == nil {
					continue
				}
				cr := bodyReply(r).GetResponse()
				if cr.GetStatus() != extprocv3.CommonResponse_CONTINUE {
					t.Errorf("reply to %s has status %v", owedKind(m), cr.GetStatus())
				}
				isDuplex := duplexReq && m.GetRequestBody() != nil || duplexRes && m.GetResponseBody() != nil
				sr := cr.GetBodyMutation().GetStreamedResponse()
				switch {
				case isDuplex && sr == nil:
					t.Errorf("reply %d to a FULL_DUPLEX_STREAMED %s has no streamed_response: %v", i, owedKind(m), r)
				case isDuplex && (string(sr.GetBody()) != string(b.GetBody()) || sr.GetEndOfStream() != b.GetEndOfStream()):
					t.Errorf("reply %d streams back %q eos %v, want %q eos %v", i, sr.GetBody(), sr.GetEndOfStream(), b.GetBody(), b.GetEndOfStream())
				case !isDuplex && cr.GetBodyMutation() != nil:
					t.Errorf("reply %d to %s mutates the body: %v", i, owedKind(m), cr.GetBodyMutation())
				}
			}
			h.waitStreams(t, tt.wantResult, 1)
		})
	}
}

// TestConformanceHeaderValues: Envoy sends header values in raw_value (EP
// HttpHeaders.headers; mutation_utils.cc headersToProto fills value instead
// when the runtime flag send_header_raw_value is off), so Sluice reads
// either. What Sluice sends sets raw_value only (BASE HeaderValue allows one
// of the two; mutation_utils.cc rejects a HeaderValue with both, and reads
// only raw_value under send_header_raw_value), replaces with append_action
// OVERWRITE_IF_EXISTS_OR_ADD and never sets the deprecated append to true
// for a replacement (EP HeaderMutation.set_headers: append is false unless
// set there).
func TestConformanceHeaderValues(t *testing.T) {
	tests := []struct {
		name       string
		tenant     *corev3.HeaderValue
		wantTenant string
	}{
		{name: "raw_value", tenant: &corev3.HeaderValue{Key: "x-tenant-id", RawValue: []byte("acme")}, wantTenant: "acme"},
		{name: "value (send_header_raw_value off)", tenant: &corev3.HeaderValue{Key: "x-tenant-id", Value: "acme"}, wantTenant: "acme"},
		{name: "upper-case key", tenant: &corev3.HeaderValue{Key: "X-Tenant-ID", RawValue: []byte("acme")}, wantTenant: "acme"},
		{name: "both: raw_value wins", tenant: &corev3.HeaderValue{Key: "x-tenant-id", Value: "globex", RawValue: []byte("acme")}, wantTenant: "acme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, extproc.Config{}, harnessOpts{})
			e := openEnvoy(t, h.conn)
			req := xt.RequestHeaders("GET", "/v1/users", true, "x-sluice-tier", "spoofed")
			hm := req.GetRequestHeaders().GetHeaders()
			hm.Headers = append(hm.Headers, tt.tenant)
			if err := e.c.Send(req); err != nil {
				t.Fatal(err)
			}
			r, err := e.c.Recv()
			if err != nil {
				t.Fatal(err)
			}
			m := xt.Mutation(r)
			if err := xt.CheckRawValueOnly(m); err != nil {
				t.Fatal(err)
			}
			if got := xt.SetHeaders(m)[extproc.HeaderTenant]; !slices.Equal(got, []string{tt.wantTenant}) {
				t.Errorf("%s set to %q, want %q", extproc.HeaderTenant, got, tt.wantTenant)
			}
			for _, o := range m.GetSetHeaders() {
				if o.GetHeader().GetKey() != strings.ToLower(o.GetHeader().GetKey()) {
					t.Errorf("key %q is not lower-case", o.GetHeader().GetKey())
				}
				if o.GetAppend().GetValue() || o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
					t.Errorf("%s: append %v, append_action %v: want a replacement", o.GetHeader().GetKey(), o.GetAppend(), o.GetAppendAction())
				}
			}
			// EP CommonResponse.clear_route_cache is honoured only with a
			// header mutation (processor_state.cc clearRouteCache).
			if !xt.Common(r).GetClearRouteCache() || m == nil {
				t.Errorf("clear_route_cache %v with mutation %v", xt.Common(r).GetClearRouteCache(), m)
			}
			if err := e.c.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := e.end(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConformanceFirstMessageFields: the fields Envoy may put beside the
// first request oneof do not change the exchange. protocol_config (EP: on
// the first message only), attributes (EP: the values of the properties the
// filter's request_attributes and response_attributes name, keyed by the
// filter name, ext_proc.cc addAttributes), metadata_context with typed
// namespaces (ext_proc.cc addDynamicMetadata), flow_control_init (hidden as
// not implemented; a server that does no flow control sends no window
// updates, and Sluice does none) and
// the retired async_mode field 1 of older protos, which a newer server
// keeps as an unknown field.
func TestConformanceFirstMessageFields(t *testing.T) {
	attrs, err := structpb.NewStruct(map[string]any{"request.path": "/v1/users", "source.address": "10.0.0.1:5555"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		add  func(req *extprocv3.ProcessingRequest)
	}{
		{name: "protocol_config", add: func(req *extprocv3.ProcessingRequest) {
			withProtocol(req, procmodev3.ProcessingMode_NONE, procmodev3.ProcessingMode_BUFFERED, false)
		}},
		{name: "attributes", add: func(req *extprocv3.ProcessingRequest) {
			req.Attributes = map[string]*structpb.Struct{"envoy.filters.http.ext_proc": attrs}
		}},
		{name: "metadata_context with typed and untyped namespaces", add: func(req *extprocv3.ProcessingRequest) {
			xt.WithMetadata(req, "envoy.filters.http.jwt_authn", map[string]any{"jwt_payload": map[string]any{"sub": "u1"}})
			typed, err := anypb.New(attrs)
			if err != nil {
				t.Fatal(err)
			}
			req.MetadataContext.TypedFilterMetadata = map[string]*anypb.Any{"envoy.lb": typed}
		}},
		{name: "no metadata_context at all", add: func(req *extprocv3.ProcessingRequest) { req.MetadataContext = nil }},
		{name: "flow_control_init", add: func(req *extprocv3.ProcessingRequest) {
			req.FlowControlInit = &extprocv3.ProcessingRequest_FlowControlInit{InitialWindowDownstreamToSidestream: 65536}
		}},
		{name: "async_mode (field 1 of older protos)", add: func(req *extprocv3.ProcessingRequest) {
			req.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, extproc.Config{}, harnessOpts{})
			e := openEnvoy(t, h.conn)
			req := xt.RequestHeaders("GET", "/v1/users", true, "x-tenant-id", "acme")
			tt.add(req)
			for _, m := range []*extprocv3.ProcessingRequest{req, xt.ResponseHeaders(200, true)} {
				if err := e.c.Send(m); err != nil {
					t.Fatal(err)
				}
				r, err := e.c.Recv()
				if err != nil {
					t.Fatalf("reply to %s: %v", owedKind(m), err)
				}
				if replyType(r) != owedKind(m) || r.GetServerWindowUpdate() != nil {
					t.Fatalf("reply to %s: %v", owedKind(m), r)
				}
			}
			if err := e.c.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := e.end(); err != nil {
				t.Fatal(err)
			}
			h.waitStreams(t, "ok", 1)
		})
	}
}

// TestConformanceObservabilityMode: with observability_mode Envoy sends
// headers, STREAMED body chunks and trailers without waiting (ext_proc.cc
// sendHeadersInObservabilityMode, sendDataInObservabilityMode) and ignores
// every reply (onReceiveMessage); EP ProcessingRequest.observability_mode
// asks the server not to answer. Stages still observe; the stream ends OK
// when Envoy closes it.
func TestConformanceObservabilityMode(t *testing.T) {
	tests := []struct {
		name   string
		msgs   []*extprocv3.ProcessingRequest
		cancel bool // Envoy resets instead of half-closing (deferred close)
	}{
		{
			name: "headers only",
			msgs: []*extprocv3.ProcessingRequest{xt.RequestHeaders("GET", "/v1/users", true), xt.ResponseHeaders(200, true)},
		},
		{
			name: "streamed bodies and trailers",
			msgs: []*extprocv3.ProcessingRequest{
				xt.RequestHeaders("POST", "/v1/upload", false),
				xt.RequestBody([]byte("a"), false),
				xt.RequestBody([]byte("b"), false),
				xt.RequestTrailers("x-checksum", "abc"),
				xt.ResponseHeaders(200, false),
				xt.ResponseBody([]byte("x"), false),
				xt.ResponseTrailers("grpc-status", "0"),
			},
		},
		{
			name:   "reset after the response headers",
			msgs:   []*extprocv3.ProcessingRequest{xt.RequestHeaders("GET", "/v1/users", true), xt.ResponseHeaders(200, false)},
			cancel: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A stage that would answer from cache and ask for bodies: in
			// observability mode neither may reach Envoy.
			p := &probe{name: "probe"}
			p.requestHeaders = func(_ context.Context, x *extproc.Exchange) error {
				x.WantResponseBody(extproc.BodyBuffered)
				x.Respond(200, nil, []byte("cached"))
				return nil
			}
			h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{p}})
			e := openEnvoy(t, h.conn)
			for _, m := range tt.msgs {
				if err := e.c.Send(xt.Observed(m)); err != nil {
					t.Fatal(err)
				}
			}
			if tt.cancel {
				// Let the server read what was sent before the reset.
				deadline := time.Now().Add(5 * time.Second)
				for !slices.Contains(p.Calls(), "response_headers") && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				e.cancel()
				h.waitStreams(t, "ok", 1)
				return
			}
			if err := e.c.CloseSend(); err != nil {
				t.Fatal(err)
			}
			replies, err := e.end()
			if err != nil || len(replies) != 0 {
				t.Fatalf("replies %v, end %v: want no reply and OK", replies, err)
			}
			h.waitStreams(t, "ok", 1)
			if got := p.Calls(); got[0] != "request_headers" || got[len(got)-1] != "done" {
				t.Fatalf("stage calls %v", got)
			}
		})
	}
}

// TestConformanceModeOverride: mode_override goes only on replies to header
// messages (EP ProcessingResponse.mode_override: honoured in replies to
// request or response headers, ignored in replies to bodies and trailers;
// ext_proc.cc onReceiveMessage applies it only in inHeaderProcessState),
// never where Envoy ignores it (EP: ignored with
// send_body_without_waiting_for_header_response; CFG allow_mode_override:
// unavailable when the body send mode is FULL_DUPLEX_STREAMED), and spells
// out every field (PM HeaderSendMode: DEFAULT in a mode_override keeps the
// filter's configured mode, not the route's; older Envoys read it as SEND
// for headers and SKIP for trailers).
func TestConformanceModeOverride(t *testing.T) {
	type ask func(x *extproc.Exchange)
	wantBody := func(x *extproc.Exchange) { x.WantResponseBody(extproc.BodyBuffered) }
	tests := []struct {
		name       string
		protocol   *extprocv3.ProtocolConfiguration
		atReqHdr   ask
		atReqBody  ask
		atResHdr   ask
		wantOn     string // the one reply kind carrying a mode_override, "" for none
		wantResult string
	}{
		{name: "asked at request headers", atReqHdr: wantBody, wantOn: "request_headers"},
		{name: "asked at response headers", atResHdr: wantBody, wantOn: "response_headers"},
		{name: "asked at request body: too late, nothing sent", atReqBody: wantBody},
		{
			name:     "send_body_without_waiting_for_header_response",
			protocol: &extprocv3.ProtocolConfiguration{RequestBodyMode: procmodev3.ProcessingMode_STREAMED, SendBodyWithoutWaitingForHeaderResponse: true},
			atReqHdr: wantBody, atResHdr: wantBody,
		},
		{
			name:     "FULL_DUPLEX_STREAMED",
			protocol: &extprocv3.ProtocolConfiguration{RequestBodyMode: procmodev3.ProcessingMode_FULL_DUPLEX_STREAMED, ResponseBodyMode: procmodev3.ProcessingMode_FULL_DUPLEX_STREAMED},
			atReqHdr: wantBody, atResHdr: wantBody,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call := func(a ask) func(context.Context, *extproc.Exchange) error {
				return func(_ context.Context, x *extproc.Exchange) error {
					if a != nil {
						a(x)
					}
					return nil
				}
			}
			p := &probe{name: "probe", requestHeaders: call(tt.atReqHdr), responseHeaders: call(tt.atResHdr)}
			p.requestBody = func(_ context.Context, x *extproc.Exchange, _ []byte, _ bool) error {
				return call(tt.atReqBody)(context.Background(), x)
			}
			h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{p}})
			e := openEnvoy(t, h.conn)
			first := xt.RequestHeaders("POST", "/v1/upload", false)
			first.ProtocolConfig = tt.protocol
			if first.ProtocolConfig == nil {
				first.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: procmodev3.ProcessingMode_STREAMED}
			}
			msgs := []*extprocv3.ProcessingRequest{first, xt.RequestBody([]byte("a"), true), xt.ResponseHeaders(200, true)}
			for _, m := range msgs {
				if err := e.c.Send(m); err != nil {
					t.Fatal(err)
				}
				r, err := e.c.Recv()
				if err != nil {
					t.Fatal(err)
				}
				mo := r.GetModeOverride()
				if (mo != nil) != (owedKind(m) == tt.wantOn) {
					t.Errorf("reply to %s: mode_override %v, want one only on %q", owedKind(m), mo, tt.wantOn)
				}
				if mo == nil {
					continue
				}
				for _, hm := range []procmodev3.ProcessingMode_HeaderSendMode{mo.GetRequestHeaderMode(), mo.GetResponseHeaderMode(), mo.GetRequestTrailerMode(), mo.GetResponseTrailerMode()} {
					if hm == procmodev3.ProcessingMode_DEFAULT {
						t.Errorf("mode_override leaves a header or trailer mode DEFAULT: %v", mo)
					}
				}
				if mo.GetResponseBodyMode() != procmodev3.ProcessingMode_BUFFERED || mo.GetRequestBodyMode() != procmodev3.ProcessingMode_STREAMED {
					t.Errorf("mode_override %v: want the response body BUFFERED and the request body mode in force kept", mo)
				}
			}
			if err := e.c.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := e.end(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConformanceStreamEnds: Envoy ends a stream by half-closing it (after
// the last expected reply with ext_proc_stream_close_optimization, or
// gracefully: ext_proc.cc halfCloseAndWaitForRemoteClose) or by resetting it
// (client gone, filter destroyed: onDestroy → closeStream), at any phase.
// The server's handler returns at once, OK for a half-close, and leaves no
// goroutine behind (goleak in TestMain; GracefulStop in the harness waits
// for every handler).
func TestConformanceStreamEnds(t *testing.T) {
	all := []*extprocv3.ProcessingRequest{
		withProtocol(xt.RequestHeaders("POST", "/v1/upload", false), procmodev3.ProcessingMode_STREAMED, procmodev3.ProcessingMode_STREAMED, false),
		xt.RequestBody([]byte("a"), false),
		xt.RequestTrailers("x-checksum", "abc"),
		xt.ResponseHeaders(200, false),
		xt.ResponseBody([]byte("x"), false),
		xt.ResponseTrailers("grpc-status", "0"),
	}
	tests := []struct {
		name       string
		sent       int  // messages answered before the end
		reset      bool // cancel instead of half-close
		wantResult string
	}{
		{name: "half-close before any message", sent: 0, wantResult: "ok"},
		{name: "half-close after request headers", sent: 1, wantResult: "ok"},
		{name: "half-close mid request body", sent: 2, wantResult: "ok"},
		{name: "half-close after response headers", sent: 4, wantResult: "ok"},
		{name: "half-close after response trailers", sent: 6, wantResult: "ok"},
		{name: "reset mid request body", sent: 2, reset: true, wantResult: "cancelled"},
		{name: "reset after request trailers", sent: 3, reset: true, wantResult: "cancelled"},
		{name: "reset mid response body", sent: 5, reset: true, wantResult: "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, extproc.Config{}, harnessOpts{})
			e := openEnvoy(t, h.conn)
			for _, m := range all[:tt.sent] {
				if err := e.c.Send(m); err != nil {
					t.Fatal(err)
				}
				if _, err := e.c.Recv(); err != nil {
					t.Fatalf("reply to %s: %v", owedKind(m), err)
				}
			}
			if tt.reset {
				e.cancel()
				h.waitStreams(t, tt.wantResult, 1)
				return
			}
			if err := e.c.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if rs, err := e.end(); err != nil || len(rs) != 0 {
				t.Fatalf("after half-close: replies %v, status %v; want none and OK", rs, err)
			}
			h.waitStreams(t, tt.wantResult, 1)
		})
	}
}

// TestConformanceUnexpectedMessages: messages Envoy never sends in that
// order, or never at all, end the stream with a clear gRPC status at once
// (Envoy then applies failure_mode_allow, ext_proc.cc onGrpcError), and
// oversize but valid header maps are simply answered. Nothing panics or
// hangs (the stream has a deadline).
func TestConformanceUnexpectedMessages(t *testing.T) {
	many := func(n int, name func(i int) string) *extprocv3.ProcessingRequest {
		req := xt.RequestHeaders("GET", "/v1/users", true)
		hm := req.GetRequestHeaders().GetHeaders()
		for i := range n {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: name(i), RawValue: []byte("v")})
		}
		return req
	}
	tests := []struct {
		name     string
		msgs     []*extprocv3.ProcessingRequest // all but the last are answered
		wantCode codes.Code                     // the status after the last; OK: it is answered too
	}{
		{name: "no request oneof", msgs: []*extprocv3.ProcessingRequest{{}}, wantCode: codes.InvalidArgument},
		{
			name:     "no request oneof after request headers",
			msgs:     []*extprocv3.ProcessingRequest{xt.RequestHeaders("GET", "/", false), {MetadataContext: &corev3.Metadata{}}},
			wantCode: codes.InvalidArgument,
		},
		{name: "response_body first", msgs: []*extprocv3.ProcessingRequest{xt.ResponseBody([]byte("x"), true)}, wantCode: codes.FailedPrecondition},
		{name: "response_trailers first", msgs: []*extprocv3.ProcessingRequest{xt.ResponseTrailers()}, wantCode: codes.FailedPrecondition},
		{name: "request_body first", msgs: []*extprocv3.ProcessingRequest{xt.RequestBody([]byte("x"), true)}, wantCode: codes.FailedPrecondition},
		{
			name:     "duplicate request_headers",
			msgs:     []*extprocv3.ProcessingRequest{xt.RequestHeaders("GET", "/", true), xt.RequestHeaders("GET", "/", true)},
			wantCode: codes.FailedPrecondition,
		},
		{
			name:     "request_body after the request ended",
			msgs:     []*extprocv3.ProcessingRequest{xt.RequestHeaders("GET", "/", true), xt.RequestBody([]byte("x"), true)},
			wantCode: codes.FailedPrecondition,
		},
		{
			name:     "response_headers twice",
			msgs:     []*extprocv3.ProcessingRequest{xt.RequestHeaders("GET", "/", true), xt.ResponseHeaders(200, false), xt.ResponseHeaders(200, false)},
			wantCode: codes.FailedPrecondition,
		},
		{
			// A local reply of an earlier filter: ext_proc sees only the
			// response (FilterManager::sendLocalReplyViaFilterChain).
			name:     "response_headers first",
			msgs:     []*extprocv3.ProcessingRequest{xt.ResponseHeaders(401, false)},
			wantCode: codes.OK,
		},
		{name: "20,000 distinct headers", msgs: []*extprocv3.ProcessingRequest{many(20000, func(i int) string { return "x-h-" + strconv.Itoa(i) })}, wantCode: codes.OK},
		{name: "20,000 copies of one header", msgs: []*extprocv3.ProcessingRequest{many(20000, func(int) string { return "x-same" })}, wantCode: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Header limits off: the cases are about the protocol, not Envoy's
			// map limits (TestHostileMessages).
			h := newHarness(t, extproc.Config{MaxRequestHeaders: 1 << 30, MaxRequestHeadersKB: 1 << 30}, harnessOpts{})
			e := openEnvoy(t, h.conn)
			for i, m := range tt.msgs {
				if err := e.c.Send(m); err != nil {
					t.Fatal(err)
				}
				if i == len(tt.msgs)-1 && tt.wantCode != codes.OK {
					break
				}
				r, err := e.c.Recv()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if replyType(r) != owedKind(m) {
					t.Fatalf("reply to %s is %s", owedKind(m), replyType(r))
				}
			}
			if tt.wantCode == codes.OK {
				if err := e.c.CloseSend(); err != nil {
					t.Fatal(err)
				}
			}
			rs, err := e.end()
			if status.Code(err) != tt.wantCode || len(rs) != 0 {
				t.Fatalf("stream ended with %v after %d more replies, want %v", err, len(rs), tt.wantCode)
			}
		})
	}
}

// TestConformanceImmediateResponse checks the shape of an ImmediateResponse
// (EP ImmediateResponse): status as a type.v3.HttpStatus enum value (Envoy
// turns codes below 200 into 200, MutationUtils::isValidHttpStatus), headers
// as a HeaderMutation in raw_value (as Envoy encodes header values),
// repeated names appended, no grpc_status (Envoy derives
// grpc-status from the HTTP status for gRPC requests in sendLocalReply),
// details without whitespace (ext_proc.cc replaces it; shown by
// %RESPONSE_CODE_DETAILS%), no mode_override; the server then ends the
// stream OK without waiting (EP: after an ImmediateResponse the filter
// ignores whatever else the server sends).
func TestConformanceImmediateResponse(t *testing.T) {
	tests := []struct {
		name     string
		protocol *extprocv3.ProtocolConfiguration
		at       string // phase of the Respond
		status   int
		wantCode typev3.StatusCode
		wantBody string
	}{
		{name: "at request headers", at: "request_headers", status: 429, wantCode: typev3.StatusCode_TooManyRequests, wantBody: "slow down"},
		{name: "304 at request headers carries no body", at: "request_headers", status: 304, wantCode: typev3.StatusCode_NotModified},
		{name: "at response headers", at: "response_headers", status: 200, wantCode: typev3.StatusCode_OK, wantBody: "slow down"},
		{
			name:     "at a FULL_DUPLEX_STREAMED request body chunk",
			protocol: &extprocv3.ProtocolConfiguration{RequestBodyMode: procmodev3.ProcessingMode_FULL_DUPLEX_STREAMED},
			at:       "request_body", status: 429, wantCode: typev3.StatusCode_TooManyRequests, wantBody: "slow down",
		},
		{name: "status 0 becomes 200", at: "request_headers", status: 0, wantCode: typev3.StatusCode_OK, wantBody: "slow down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			respond := func(x *extproc.Exchange) {
				x.WantResponseBody(extproc.BodyBuffered)
				x.Respond(tt.status, header.List{
					{Name: "Content-Type", Value: "text/plain"}, {Name: "vary", Value: "accept"}, {Name: "vary", Value: "accept-encoding"},
				}, []byte("slow down"))
			}
			p := &probe{name: "limiter"}
			switch tt.at {
			case "request_headers":
				p.requestHeaders = func(_ context.Context, x *extproc.Exchange) error { respond(x); return nil }
			case "request_body":
				p.requestBody = func(_ context.Context, x *extproc.Exchange, _ []byte, _ bool) error { respond(x); return nil }
			case "response_headers":
				p.responseHeaders = func(_ context.Context, x *extproc.Exchange) error { respond(x); return nil }
			}
			h := newHarness(t, extproc.Config{}, harnessOpts{stages: []extproc.Stage{p}})
			e := openEnvoy(t, h.conn)
			first := xt.RequestHeaders("POST", "/v1/upload", false)
			first.ProtocolConfig = tt.protocol
			var ir *extprocv3.ImmediateResponse
			for _, m := range []*extprocv3.ProcessingRequest{first, xt.RequestBody([]byte("a"), true), xt.ResponseHeaders(200, false)} {
				if err := e.c.Send(m); err != nil {
					t.Fatal(err)
				}
				r, err := e.c.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if owedKind(m) != tt.at {
					continue
				}
				if ir = r.GetImmediateResponse(); ir == nil || r.GetModeOverride() != nil {
					t.Fatalf("reply to %s: %v; want an immediate_response without mode_override", owedKind(m), r)
				}
				break
			}
			if ir.GetStatus().GetCode() != tt.wantCode || string(ir.GetBody()) != tt.wantBody {
				t.Errorf("status %v body %q, want %v %q", ir.GetStatus().GetCode(), ir.GetBody(), tt.wantCode, tt.wantBody)
			}
			if _, ok := typev3.StatusCode_name[int32(ir.GetStatus().GetCode())]; !ok {
				t.Errorf("status %d is not a StatusCode enum value", ir.GetStatus().GetCode())
			}
			if err := xt.CheckRawValueOnly(ir.GetHeaders()); err != nil {
				t.Error(err)
			}
			var got []string
			for _, o := range ir.GetHeaders().GetSetHeaders() {
				got = append(got, o.GetHeader().GetKey()+"="+string(o.GetHeader().GetRawValue())+" append="+strconv.FormatBool(o.GetAppend().GetValue()))
			}
			if want := []string{"content-type=text/plain append=false", "vary=accept append=false", "vary=accept-encoding append=true"}; !slices.Equal(got, want) {
				t.Errorf("headers %v, want %v", got, want)
			}
			if ir.GetGrpcStatus() != nil || ir.GetDetails() != "sluice_limiter" || strings.ContainsAny(ir.GetDetails(), " \t\n") {
				t.Errorf("grpc_status %v, details %q", ir.GetGrpcStatus(), ir.GetDetails())
			}
			// The server ends the stream by itself.
			if rs, err := e.end(); err != nil || len(rs) != 0 {
				t.Fatalf("after the immediate response: replies %v, status %v", rs, err)
			}
			h.waitStreams(t, "immediate_response", 1)
		})
	}
}

// TestConformanceSkippedHeaders: with a header mode SKIP (PM HeaderSendMode
// SKIP: that side's headers are not sent) Envoy sends that side's body and
// trailers without its headers (ext_proc.cc decodeHeaders skips onHeaders;
// onData and onTrailers open the stream themselves; EP ProcessingRequest:
// the processing mode decides which messages a stream carries). Sluice,
// configured the same, answers them like any other message; stages, which
// never saw those headers, are not called for them. Configured SEND, the
// same sequence is out of order (TestConformanceUnexpectedMessages).
func TestConformanceSkippedHeaders(t *testing.T) {
	tests := []struct {
		name       string
		mode       extproc.ProcessingModeConfig
		msgs       []*extprocv3.ProcessingRequest
		wantCalls  []string
		wantResult string
	}{
		{
			name: "request_header_mode SKIP: the request starts with its body",
			mode: extproc.ProcessingModeConfig{RequestHeaderMode: "SKIP", RequestBodyMode: "STREAMED", RequestTrailerMode: "SEND"},
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestBody([]byte("a"), false), procmodev3.ProcessingMode_STREAMED, procmodev3.ProcessingMode_NONE, false),
				xt.RequestTrailers("x-checksum", "abc"),
				xt.ResponseHeaders(200, true),
			},
			wantCalls:  nil,
			wantResult: "response_only",
		},
		{
			name: "request_header_mode SKIP, bodies NONE: trailers alone",
			mode: extproc.ProcessingModeConfig{RequestHeaderMode: "SKIP", RequestTrailerMode: "SEND"},
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestTrailers("x-checksum", "abc"), procmodev3.ProcessingMode_NONE, procmodev3.ProcessingMode_NONE, false),
				xt.ResponseHeaders(200, true),
			},
			wantResult: "response_only",
		},
		{
			name: "response_header_mode SKIP: the response is its body and trailers",
			mode: extproc.ProcessingModeConfig{ResponseHeaderMode: "SKIP", ResponseBodyMode: "STREAMED", ResponseTrailerMode: "SEND"},
			msgs: []*extprocv3.ProcessingRequest{
				withProtocol(xt.RequestHeaders("GET", "/v1/users", true), procmodev3.ProcessingMode_NONE, procmodev3.ProcessingMode_STREAMED, false),
				xt.ResponseBody([]byte("x"), false),
				xt.ResponseTrailers("grpc-status", "0"),
			},
			wantCalls:  []string{"request_headers", "done"},
			wantResult: "ok",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &probe{name: "probe"}
			h := newHarness(t, extproc.Config{ProcessingMode: tt.mode}, harnessOpts{stages: []extproc.Stage{p}})
			e := openEnvoy(t, h.conn)
			for _, m := range tt.msgs {
				if err := e.c.Send(m); err != nil {
					t.Fatal(err)
				}
				r, err := e.c.Recv()
				if err != nil {
					t.Fatalf("reply to %s: %v", owedKind(m), err)
				}
				if replyType(r) != owedKind(m) || r.GetModeOverride() != nil {
					t.Fatalf("reply to %s: %v", owedKind(m), r)
				}
			}
			if err := e.c.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := e.end(); err != nil {
				t.Fatal(err)
			}
			h.waitStreams(t, tt.wantResult, 1)
			if got := p.Calls(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("stage calls %v, want %v", got, tt.wantCalls)
			}
		})
	}
}
