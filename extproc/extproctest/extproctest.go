// Package extproctest plays Envoy's side of ext_proc streams in tests: it
// serves an ext_proc server on a loopback gRPC connection and builds the
// messages Envoy's ext_proc filter sends (ext_proc.cc buildHeaderRequest,
// setupBodyChunk, sendTrailers), with the fields that filter fills in.
package extproctest

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

// Serve starts a gRPC server on 127.0.0.1 with the services register adds
// and returns a client connection to it. Both stop when the test ends
// (GracefulStop, so handlers have returned by then).
func Serve(t testing.TB, register func(grpc.ServiceRegistrar), opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("extproctest: listen: %v", err)
	}
	g := grpc.NewServer(opts...)
	register(g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(ln)
	}()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		g.Stop()
		<-done
		t.Fatalf("extproctest: dial: %v", err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		g.GracefulStop()
		<-done
	})
	return conn
}

// Stream is one ext_proc stream as Envoy drives it: one per HTTP request.
// Not safe for concurrent use.
type Stream struct {
	c      extprocv3.ExternalProcessor_ProcessClient
	cancel context.CancelFunc
	sent   bool

	// Protocol is sent as ProcessingRequest.protocol_config with the first
	// message (the only one that carries it), as Envoy does outside
	// observability mode. Set it before the first Send; nil
	// sends none (older Envoys).
	Protocol *extprocv3.ProtocolConfiguration
}

// Open starts a stream on conn. It is cancelled when the test ends.
func Open(t testing.TB, conn grpc.ClientConnInterface) *Stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		cancel()
		t.Fatalf("extproctest: open stream: %v", err)
	}
	t.Cleanup(cancel)
	return &Stream{c: c, cancel: cancel, Protocol: &extprocv3.ProtocolConfiguration{
		RequestBodyMode:  procmodev3.ProcessingMode_NONE,
		ResponseBodyMode: procmodev3.ProcessingMode_NONE,
	}}
}

// Send sends req, adding protocol_config to the first message.
func (s *Stream) Send(req *extprocv3.ProcessingRequest) error {
	if !s.sent && s.Protocol != nil && !req.GetObservabilityMode() {
		req.ProtocolConfig = s.Protocol
	}
	s.sent = true
	return s.c.Send(req)
}

// Recv receives the next reply.
func (s *Stream) Recv() (*extprocv3.ProcessingResponse, error) { return s.c.Recv() }

// Do sends req and waits for its reply.
func (s *Stream) Do(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	if err := s.Send(req); err != nil {
		return nil, err
	}
	return s.c.Recv()
}

// CloseSend half-closes the stream without waiting.
func (s *Stream) CloseSend() error { return s.c.CloseSend() }

// Finish half-closes the stream, as Envoy's closeStream does before its
// reset, and waits for the server to end it. It returns nil when the server
// returned OK, else the server's status error.
func (s *Stream) Finish() error {
	if err := s.c.CloseSend(); err != nil {
		return err
	}
	return s.Wait()
}

// Wait reads until the server ends the stream; nil means OK. Replies still
// arriving are discarded.
func (s *Stream) Wait() error {
	for {
		if _, err := s.c.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// Cancel resets the stream, as Envoy does when the downstream request goes
// away (ExternalProcessorStreamImpl::close → resetStream).
func (s *Stream) Cancel() { s.cancel() }

// headerMap builds an Envoy header map: keys lower-case, values in
// raw_value only (HttpHeaders.headers, send_header_raw_value).
func headerMap(kv []string) *corev3.HeaderMap {
	if len(kv)%2 != 0 {
		panic("extproctest: odd number of header arguments")
	}
	hm := &corev3.HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return hm
}

// base is what every Envoy message carries: metadata_context, always set
// (Filter::addDynamicMetadata assigns it, empty when no namespace is
// forwarded).
func base() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{MetadataContext: &corev3.Metadata{}}
}

// RequestHeaders is a request_headers message for method and path with the
// pseudo-headers Envoy sends (:authority api.example.com, :scheme http,
// then :method and :path) followed by the name/value pairs in kv.
// endOfStream is true for requests without a body (GET, HEAD).
func RequestHeaders(method, path string, endOfStream bool, kv ...string) *extprocv3.ProcessingRequest {
	all := append([]string{":authority", "api.example.com", ":path", path, ":method", method, ":scheme", "http"}, kv...)
	r := base()
	r.Request = &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: headerMap(all), EndOfStream: endOfStream,
	}}
	return r
}

// ResponseHeaders is a response_headers message with :status and kv.
func ResponseHeaders(status int, endOfStream bool, kv ...string) *extprocv3.ProcessingRequest {
	all := append([]string{":status", strconv.Itoa(status)}, kv...)
	r := base()
	r.Request = &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: headerMap(all), EndOfStream: endOfStream,
	}}
	return r
}

// RequestBody is a request_body message (the whole body in BUFFERED mode,
// one chunk in STREAMED mode).
func RequestBody(body []byte, endOfStream bool) *extprocv3.ProcessingRequest {
	r := base()
	r.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: endOfStream}}
	return r
}

// ResponseBody is a response_body message.
func ResponseBody(body []byte, endOfStream bool) *extprocv3.ProcessingRequest {
	r := base()
	r.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: endOfStream}}
	return r
}

// RequestTrailers is a request_trailers message.
func RequestTrailers(kv ...string) *extprocv3.ProcessingRequest {
	r := base()
	r.Request = &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{Trailers: headerMap(kv)}}
	return r
}

// ResponseTrailers is a response_trailers message.
func ResponseTrailers(kv ...string) *extprocv3.ProcessingRequest {
	r := base()
	r.Request = &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{Trailers: headerMap(kv)}}
	return r
}

// WithMetadata adds fields under filter_metadata[namespace] of req's
// metadata_context, as ext_proc forwards a namespace listed in
// metadata_options.forwarding_namespaces.untyped (jwt_authn writes the
// verified payload there under payload_in_metadata). fields must be
// acceptable to structpb.NewStruct.
func WithMetadata(req *extprocv3.ProcessingRequest, namespace string, fields map[string]any) *extprocv3.ProcessingRequest {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		panic("extproctest: metadata: " + err.Error())
	}
	if req.MetadataContext == nil {
		req.MetadataContext = &corev3.Metadata{}
	}
	if req.MetadataContext.FilterMetadata == nil {
		req.MetadataContext.FilterMetadata = map[string]*structpb.Struct{}
	}
	req.MetadataContext.FilterMetadata[namespace] = s
	return req
}

// Observed marks req as sent in observability_mode: no reply is expected.
func Observed(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingRequest {
	req.ObservabilityMode = true
	return req
}

// Common returns the CommonResponse of a headers or body reply, or nil.
func Common(resp *extprocv3.ProcessingResponse) *extprocv3.CommonResponse {
	switch r := resp.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return r.RequestHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return r.ResponseHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_RequestBody:
		return r.RequestBody.GetResponse()
	case *extprocv3.ProcessingResponse_ResponseBody:
		return r.ResponseBody.GetResponse()
	}
	return nil
}

// Mutation returns the header mutation of a reply (headers, body, trailers
// or immediate response), or nil.
func Mutation(resp *extprocv3.ProcessingResponse) *extprocv3.HeaderMutation {
	switch r := resp.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return r.ImmediateResponse.GetHeaders()
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return r.RequestTrailers.GetHeaderMutation()
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return r.ResponseTrailers.GetHeaderMutation()
	}
	return Common(resp).GetHeaderMutation()
}

// SetHeaders returns the headers a mutation sets, name → values in order,
// read from raw_value.
func SetHeaders(m *extprocv3.HeaderMutation) map[string][]string {
	out := map[string][]string{}
	for _, o := range m.GetSetHeaders() {
		out[o.GetHeader().GetKey()] = append(out[o.GetHeader().GetKey()], string(o.GetHeader().GetRawValue()))
	}
	return out
}

// CheckRawValueOnly returns an error naming the first header of m that sets
// value or leaves raw_value empty: Envoy answers 500 to a HeaderValue with
// both, and turns a value-only one into an empty header (envoy#31555).
func CheckRawValueOnly(m *extprocv3.HeaderMutation) error {
	for _, o := range m.GetSetHeaders() {
		h := o.GetHeader()
		if h.GetValue() != "" {
			return errors.New("extproctest: header " + h.GetKey() + " sets value")
		}
		if len(h.GetRawValue()) == 0 {
			return errors.New("extproctest: header " + h.GetKey() + " has an empty raw_value")
		}
	}
	return nil
}

// Continue is the least an ext_proc server can do, the baseline benchmarks
// compare Sluice with: it answers every message with its matching empty
// reply (CONTINUE, no mutation) until Envoy half-closes the stream.
type Continue struct {
	extprocv3.UnimplementedExternalProcessorServer
}

// Process implements extprocv3.ExternalProcessorServer.
func (Continue) Process(ps extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := ps.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp := &extprocv3.ProcessingResponse{}
		switch req.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp.Response = &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}
		case *extprocv3.ProcessingRequest_RequestBody:
			resp.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp.Response = &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}
		case *extprocv3.ProcessingRequest_RequestTrailers:
			resp.Response = &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			resp.Response = &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}
		default:
			return errors.New("extproctest.Continue: a message of no known kind")
		}
		if err := ps.Send(resp); err != nil {
			return err
		}
	}
}
