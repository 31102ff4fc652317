package extproc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/extproc"
	xt "github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/app"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/internal/redistest"
)

// pipeline is the production ext_proc server (internal/app: identity →
// batch → cache → metrics, the cache on the machine's Redis under a private
// prefix) behind a real gRPC loopback connection. Batch sub-requests go to
// a listener of the test that counts them.
type pipeline struct {
	conn    *grpc.ClientConn
	reg     *metricstest.Registry
	subreqs *atomic.Int64
}

// pipelineTiers are the tenants the pipeline knows.
var pipelineTiers = map[string]string{"acme": "pro", "globex": "basic"}

func newPipeline(t testing.TB) *pipeline {
	t.Helper()
	var subreqs atomic.Int64
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		subreqs.Add(1)
		w.Header().Set("content-type", "application/json")
		io.WriteString(w, "{}")
	}))
	t.Cleanup(listener.Close)

	cfg := config.Config{}.WithDefaults()
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Redis.URL = "redis://" + redistest.Addr()
	cfg.Redis.KeyPrefix = redistest.Prefix(t)
	cfg.ExtProc.Identity.Tiers = pipelineTiers
	cfg.Batch.ListenerURL = listener.URL
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := metricstest.NewRegistry()
	a, err := app.New(context.Background(), cfg, slog.New(slog.DiscardHandler), "test", app.Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	// The gRPC server's message limit as internal/app sets it.
	maxMsg := max(cfg.Server.MaxRecvMsgBytes, cfg.ExtProc.MaxRecvMsgBytes(), cfg.Batch.MaxRequestBytes+1<<20)
	conn := xt.Serve(t, a.ExtProc.Register, grpc.MaxRecvMsgSize(maxMsg))
	return &pipeline{conn: conn, reg: reg, subreqs: &subreqs}
}

// streamDeadline bounds one driven stream: the longest wait a stage may
// take (a batch within max_message_timeout, 2s) with room to spare.
const streamDeadline = 10 * time.Second

// frame is one message of a driven stream: a ProcessingRequest, or bytes
// sent as they are (for what Go's proto encoder refuses to produce, such as
// invalid UTF-8 in a string field).
type frame struct {
	msg *extprocv3.ProcessingRequest
	raw []byte
}

func msgs(ms ...*extprocv3.ProcessingRequest) []frame {
	out := make([]frame, len(ms))
	for i, m := range ms {
		out[i] = frame{msg: m}
	}
	return out
}

// outcome is how a driven stream went.
type outcome struct {
	asked    []string                        // reply kind owed for each message sent before the end; "" for none
	replies  []*extprocv3.ProcessingResponse // replies, override_message_timeout messages left out
	err      error                           // the stream's status; nil is OK
	timedOut bool
}

// clientStream is the Envoy side of one stream.
type clientStream interface {
	send(f frame) error
	Recv() (*extprocv3.ProcessingResponse, error)
	Finish() error
	Cancel()
}

type protoStream struct{ *xt.Stream }

func (s protoStream) send(f frame) error { return s.Send(f.msg) }

// rawStream sends frames as bytes (the raw codec) and decodes replies.
type rawStream struct {
	cs     grpc.ClientStream
	cancel context.CancelFunc
}

type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	return proto.Unmarshal(data, m)
}

func openRaw(t testing.TB, conn grpc.ClientConnInterface) *rawStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
		"/"+extproc.ServiceName+"/Process", grpc.ForceCodec(rawCodec{}))
	if err != nil {
		cancel()
		t.Fatalf("open raw stream: %v", err)
	}
	return &rawStream{cs: cs, cancel: cancel}
}

func (s *rawStream) send(f frame) error {
	if f.raw != nil {
		return s.cs.SendMsg(f.raw)
	}
	return s.cs.SendMsg(f.msg)
}

func (s *rawStream) Recv() (*extprocv3.ProcessingResponse, error) {
	r := &extprocv3.ProcessingResponse{}
	if err := s.cs.RecvMsg(r); err != nil {
		return nil, err
	}
	return r, nil
}

func (s *rawStream) Finish() error {
	if err := s.cs.CloseSend(); err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func (s *rawStream) Cancel() { s.cancel() }

// drive plays one stream as Envoy would, with whatever messages it is given:
// it sends each, waits for the reply each one is owed (none in
// observability_mode), stops at an immediate response or the end of the
// stream, then half-closes and collects the status.
func drive(t testing.TB, conn grpc.ClientConnInterface, frames []frame) outcome {
	t.Helper()
	var s clientStream
	for _, f := range frames {
		if f.raw != nil {
			s = openRaw(t, conn)
			break
		}
	}
	if s == nil {
		xs := xt.Open(t, conn)
		xs.Protocol = nil // the frames carry protocol_config, if any
		s = protoStream{xs}
	}
	var fired atomic.Bool
	watchdog := time.AfterFunc(streamDeadline, func() { fired.Store(true); s.Cancel() })
	defer watchdog.Stop()

	var out outcome
	ended := false
	for _, f := range frames {
		if err := s.send(f); err != nil {
			break // the server ended the stream: Finish reports how
		}
		m := f.msg
		if m == nil {
			if m = (&extprocv3.ProcessingRequest{}); proto.Unmarshal(f.raw, m) != nil {
				m = nil
			}
		}
		kind := owedKind(m)
		switch {
		case m == nil:
			// Undecodable here, so for the server too: no reply may come.
			kind = "?"
		case m.GetObservabilityMode():
			kind = "" // observability_mode: the server sends no reply
		}
		out.asked = append(out.asked, kind)
		if kind == "" {
			continue
		}
		resp, err := recvReply(s)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				out.err = err
			}
			ended = true
			break
		}
		out.replies = append(out.replies, resp)
		if resp.GetImmediateResponse() != nil {
			break
		}
	}
	if !ended {
		out.err = s.Finish()
	}
	out.timedOut = fired.Load()
	return out
}

// recvReply reads the next reply, skipping override_message_timeout
// messages (sent ahead of a reply a stage needs time for).
func recvReply(s clientStream) (*extprocv3.ProcessingResponse, error) {
	for {
		r, err := s.Recv()
		if err != nil {
			return nil, err
		}
		if r.GetResponse() == nil && r.GetOverrideMessageTimeout() != nil {
			continue
		}
		return r, nil
	}
}

// owedKind is the reply type a message must get (or an immediate response);
// "" for a message with no request set, which ends the stream.
func owedKind(m *extprocv3.ProcessingRequest) string {
	switch m.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingRequest_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingRequest_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return "response_trailers"
	}
	return ""
}

// cleanCodes are the statuses a stream may end with: OK, or a clear
// refusal of what Envoy sent. Internal would mean a stage failed (stages
// fail open), Unknown a panic, Canceled a stream the client did not cancel.
var cleanCodes = map[codes.Code]bool{
	codes.OK: true, codes.InvalidArgument: true, codes.FailedPrecondition: true, codes.ResourceExhausted: true,
}

// check returns what is wrong with an outcome: the stream must end in time
// with a clean status, every reply must be of the type its message is owed
// (or an immediate response, which ends the stream), a stream ending OK
// must have answered every message owed a reply, and every header mutation
// must be one Envoy accepts (raw_value only).
func (o outcome) check() error {
	if o.timedOut {
		return fmt.Errorf("stream still open after %v", streamDeadline)
	}
	if c := status.Code(o.err); !cleanCodes[c] && !(c == codes.Internal && slices.Contains(o.asked, "?")) {
		// grpc-go answers a message it cannot decode with Internal itself,
		// before Sluice sees it.
		return fmt.Errorf("stream ended with %v", o.err)
	}
	var owed []string
	for _, k := range o.asked {
		if k != "" {
			owed = append(owed, k)
		}
	}
	if len(o.replies) > len(owed) {
		return fmt.Errorf("%d replies to %d messages owed one", len(o.replies), len(owed))
	}
	for i, r := range o.replies {
		got := replyType(r)
		if got == "immediate_response" {
			if i != len(o.replies)-1 {
				return fmt.Errorf("reply %d: immediate response followed by more replies", i)
			}
			if c := r.GetImmediateResponse().GetStatus().GetCode(); c < 200 || c > 999 {
				return fmt.Errorf("immediate response with status %d", c)
			}
		} else if got != owed[i] {
			return fmt.Errorf("reply %d is %s, want %s", i, got, owed[i])
		}
		if err := xt.CheckRawValueOnly(xt.Mutation(r)); err != nil {
			return fmt.Errorf("reply %d: %w", i, err)
		}
	}
	if o.err == nil && len(o.replies) < len(owed) {
		last := len(o.replies) - 1
		if last < 0 || replyType(o.replies[last]) != "immediate_response" {
			return fmt.Errorf("stream ended OK with %d of %d messages unanswered", len(owed)-len(o.replies), len(owed))
		}
	}
	return nil
}

// setTenant is the x-sluice-tenant a request_headers reply sets, or "".
func setTenant(r *extprocv3.ProcessingResponse) string {
	if v := xt.SetHeaders(xt.Mutation(r))[extproc.HeaderTenant]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// healthy checks the pipeline still serves a plain request properly.
func (p *pipeline) healthy(t *testing.T) {
	t.Helper()
	out := drive(t, p.conn, msgs(
		xt.RequestHeaders("GET", "/api/v1/healthy", true, "x-tenant-id", "acme"),
		xt.ResponseHeaders(200, true, "cache-control", "no-store"),
	))
	if err := out.check(); err != nil || out.err != nil || len(out.replies) != 2 {
		t.Fatalf("plain request after a hostile stream: %+v (%v)", out, err)
	}
	if got := setTenant(out.replies[0]); got != "acme" {
		t.Fatalf("plain request after a hostile stream: tenant %q, want acme", got)
	}
}

// hv builds a HeaderValue with the value in raw_value, as Envoy sends it.
func hv(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }

// requestHeaders is a request_headers message with exactly the given headers.
func requestHeaders(eos bool, hs ...*corev3.HeaderValue) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{
		MetadataContext: &corev3.Metadata{},
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: hs}, EndOfStream: eos,
		}},
	}
}

// pseudo are a GET's pseudo-headers.
func pseudo(path string) []*corev3.HeaderValue {
	return []*corev3.HeaderValue{
		hv(":authority", "api.example.com"), hv(":path", path), hv(":method", "GET"), hv(":scheme", "http"),
	}
}

// withInvalidUTF8 returns m encoded with every occurrence of marker (which
// must appear in a string field) replaced by bytes that are not UTF-8,
// which Go's encoder refuses to write but Envoy's C++ encoder does not
// check.
func withInvalidUTF8(t testing.TB, m *extprocv3.ProcessingRequest, marker string) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Repeat("\xff", len(marker))
	out := []byte(strings.ReplaceAll(string(b), marker, bad))
	if string(out) == string(b) {
		t.Fatalf("marker %q not in the message", marker)
	}
	return out
}

// nestedMetadata is an encoded request_headers message (tenant acme by
// header) whose metadata_context has a jwt_authn namespace nesting depth
// structs, encoded by hand (each level is Struct{fields: {"a":
// Value{struct_value: ...}}}): Go's encoder would recurse as deep.
func nestedMetadata(depth int) []byte {
	inner := []byte{}
	for range depth {
		var v []byte // Value.struct_value = 5
		v = protowire.AppendTag(v, 5, protowire.BytesType)
		v = protowire.AppendBytes(v, inner)
		var entry []byte // map entry: key 1, value 2
		entry = protowire.AppendTag(entry, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, "a")
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendBytes(entry, v)
		var s []byte // Struct.fields = 1
		s = protowire.AppendTag(s, 1, protowire.BytesType)
		s = protowire.AppendBytes(s, entry)
		inner = s
	}
	// Metadata.filter_metadata = 1: entry {key: namespace, value: inner}.
	var entry []byte
	entry = protowire.AppendTag(entry, 1, protowire.BytesType)
	entry = protowire.AppendString(entry, extproc.DefaultJWTNamespace)
	entry = protowire.AppendTag(entry, 2, protowire.BytesType)
	entry = protowire.AppendBytes(entry, inner)
	var md []byte
	md = protowire.AppendTag(md, 1, protowire.BytesType)
	md = protowire.AppendBytes(md, entry)

	b, err := proto.Marshal(xt.RequestHeaders("GET", "/api/v1/nested", true, "x-tenant-id", "acme"))
	if err != nil {
		panic(err)
	}
	// ProcessingRequest.metadata_context = 8, appended (the last one wins
	// for a message field: fields are merged).
	b = protowire.AppendTag(b, 8, protowire.BytesType)
	return protowire.AppendBytes(b, md)
}

// TestHostileMessages sends the production pipeline messages Envoy would
// never send, or sends in ways a proxy in front could distort, and checks
// each stream gets well-formed replies or ends with a clear gRPC status, the
// server keeps serving, and no goroutine is left behind.
func TestHostileMessages(t *testing.T) {
	p := newPipeline(t)
	p.healthy(t)
	baseline := runtime.NumGoroutine()

	mib := strings.Repeat("a", 1<<20)
	many := func(n int, name func(i int) string) []*corev3.HeaderValue {
		hs := pseudo("/api/v1/many")
		for i := range n {
			hs = append(hs, hv(name(i), "v"+strconv.Itoa(i)))
		}
		return hs
	}
	chunk := make([]byte, 600<<10)

	tests := []struct {
		name string
		// frames is the stream; build makes it when it needs the test.
		frames []frame
		build  func(t *testing.T) []frame
		want   codes.Code
		// replies are the reply types expected, in order.
		replies []string
		// tenant, when set, is the x-sluice-tenant the first reply must set.
		tenant string
		// result, when set, is how the server counts the stream
		// (sluice_extproc_streams_total).
		result string
		// status, when set, is the first reply's immediate_response status.
		status int
	}{
		{
			name:   "no request oneof",
			frames: msgs(&extprocv3.ProcessingRequest{}),
			want:   codes.InvalidArgument,
			result: "protocol_error",
		},
		{
			name: "only attributes and metadata, no request",
			frames: msgs(&extprocv3.ProcessingRequest{
				MetadataContext: &corev3.Metadata{},
				Attributes:      map[string]*structpb.Struct{"x": {}},
			}),
			want: codes.InvalidArgument,
		},
		{
			name:   "a field number from a newer proto, no request",
			frames: []frame{{raw: protowire.AppendBytes(protowire.AppendTag(nil, 999, protowire.BytesType), []byte("future"))}},
			want:   codes.InvalidArgument,
		},
		{
			name:   "request_body without request_headers",
			frames: msgs(xt.RequestBody([]byte(`{"requests":[]}`), true)),
			want:   codes.FailedPrecondition,
		},
		{
			name:   "request_trailers first",
			frames: msgs(xt.RequestTrailers("x", "y")),
			want:   codes.FailedPrecondition,
		},
		{
			name:   "response_body before any headers",
			frames: msgs(xt.ResponseBody([]byte("x"), true)),
			want:   codes.FailedPrecondition,
		},
		{
			name:   "response_trailers first",
			frames: msgs(xt.ResponseTrailers()),
			want:   codes.FailedPrecondition,
		},
		{
			// Legitimate: a local reply of a filter before ext_proc.
			name:    "response_headers first",
			frames:  msgs(xt.ResponseHeaders(401, true, "set-cookie", "a=b")),
			want:    codes.OK,
			replies: []string{"response_headers"},
		},
		{
			name:    "request_headers after response_headers",
			frames:  msgs(xt.ResponseHeaders(401, false), xt.RequestHeaders("GET", "/api/v1/x", true, "x-tenant-id", "acme")),
			want:    codes.FailedPrecondition,
			replies: []string{"response_headers"},
		},
		{
			name: "duplicate request_headers, the second claiming another tenant",
			frames: msgs(
				xt.RequestHeaders("GET", "/api/v1/dup", true, "x-tenant-id", "acme"),
				xt.RequestHeaders("GET", "/api/v1/dup", true, "x-tenant-id", "globex"),
			),
			want:    codes.FailedPrecondition,
			replies: []string{"request_headers"},
			tenant:  "acme",
		},
		{
			name: "response_body after a bodiless response",
			frames: msgs(
				xt.RequestHeaders("GET", "/api/v1/x", true, "x-tenant-id", "acme"),
				xt.ResponseHeaders(204, true),
				xt.ResponseBody([]byte("smuggled"), true),
			),
			want:    codes.FailedPrecondition,
			replies: []string{"request_headers", "response_headers"},
		},
		{
			name: "headers with both value and raw_value: raw_value wins",
			frames: msgs(requestHeaders(true, append(pseudo("/api/v1/both"),
				&corev3.HeaderValue{Key: "x-tenant-id", Value: "globex", RawValue: []byte("acme")})...)),
			want:    codes.OK,
			replies: []string{"request_headers"},
			tenant:  "acme",
		},
		{
			name: "header with value only (older Envoy)",
			frames: msgs(requestHeaders(true, append(pseudo("/api/v1/value"),
				&corev3.HeaderValue{Key: "x-tenant-id", Value: "globex"})...)),
			want:    codes.OK,
			replies: []string{"request_headers"},
			tenant:  "globex",
		},
		{
			name:    "invalid UTF-8 in the tenant's raw_value",
			frames:  msgs(xt.RequestHeaders("GET", "/api/v1/utf8", true, "x-tenant-id", "ac\xffme", "x-user-id", "\xc0\xae")),
			want:    codes.OK,
			replies: []string{"request_headers"},
			tenant:  extproc.Anonymous,
		},
		{
			// Go refuses to decode the message: grpc-go fails the Recv and
			// answers Internal itself.
			name: "invalid UTF-8 in a header key",
			build: func(t *testing.T) []frame {
				m := xt.RequestHeaders("GET", "/api/v1/key", true, "x-tenant-id", "acme", "x-MARK", "v")
				return []frame{{raw: withInvalidUTF8(t, m, "MARK")}}
			},
			want:   codes.Internal,
			result: "protocol_error",
		},
		{
			name: "invalid UTF-8 in a jwt_authn metadata string",
			build: func(t *testing.T) []frame {
				m := xt.WithMetadata(xt.RequestHeaders("GET", "/api/v1/jwt", true), extproc.DefaultJWTNamespace,
					map[string]any{"jwt_payload": map[string]any{"tenant_id": "MARKacme"}})
				return []frame{{raw: withInvalidUTF8(t, m, "MARK")}}
			},
			want:   codes.Internal,
			result: "protocol_error",
		},
		{
			name:   "metadata nested deeper than the decoder allows",
			frames: []frame{{raw: nestedMetadata(12000)}},
			want:   codes.Internal,
			result: "protocol_error",
		},
		{
			name:    "metadata nested 90 deep",
			frames:  []frame{{raw: nestedMetadata(90)}},
			want:    codes.OK,
			replies: []string{"request_headers"},
			tenant:  "acme",
		},
		{
			// Over max_request_headers_kb once Sluice's fields are set:
			// Envoy would refuse that mutation with a 500, so Sluice
			// answers 431 itself.
			name:    "1 MiB tenant value",
			frames:  msgs(xt.RequestHeaders("GET", "/api/v1/big", true, "x-tenant-id", mib)),
			want:    codes.OK,
			replies: []string{"immediate_response"},
			status:  431,
		},
		{
			name:    "1 MiB value in an ordinary request header",
			frames:  msgs(xt.RequestHeaders("GET", "/api/v1/big-other", true, "x-tenant-id", "acme", "x-junk", mib)),
			want:    codes.OK,
			replies: []string{"immediate_response"},
			status:  431,
		},
		{
			name: "1 MiB value in a cacheable response's header",
			frames: msgs(
				xt.RequestHeaders("GET", "/api/v1/big-response", true, "x-tenant-id", "acme"),
				xt.ResponseHeaders(200, false, "cache-control", "max-age=60", "x-junk", mib),
			),
			want:    codes.OK,
			replies: []string{"request_headers", "response_headers"},
			tenant:  "acme",
		},
		{
			name:    "10,000 distinct headers",
			frames:  msgs(requestHeaders(true, append(many(10000, func(i int) string { return "x-h" + strconv.Itoa(i) }), hv("x-tenant-id", "acme"))...)),
			want:    codes.OK,
			replies: []string{"immediate_response"},
			status:  431,
		},
		{
			name:    "10,000 copies of the tenant header",
			frames:  msgs(requestHeaders(true, many(10000, func(int) string { return "x-tenant-id" })...)),
			want:    codes.OK,
			replies: []string{"immediate_response"},
			status:  431,
		},
		{
			name:    "10,000 spoofed x-sluice-tenant headers",
			frames:  msgs(requestHeaders(true, append(many(10000, func(int) string { return "x-sluice-tenant" }), hv("x-tenant-id", "acme"))...)),
			want:    codes.OK,
			replies: []string{"request_headers"},
			tenant:  "acme",
		},
		{
			name: "empty and NUL header names, NUL and CR LF in values",
			frames: msgs(requestHeaders(true, append(pseudo("/api/v1/nul"),
				hv("", "empty-name"), hv("\x00", "nul-name"), hv("x-a\x00b", "v"),
				hv("x-tenant-id", "acme\x00globex"), hv("x-user-id", "u\r\nx-sluice-tenant: globex"),
				hv("cache-control", "max-age=60\x00"))...)),
			want:    codes.OK,
			replies: []string{"request_headers"},
			tenant:  extproc.Anonymous,
		},
		{
			name:    "no pseudo-headers at all",
			frames:  msgs(requestHeaders(true, hv("x-tenant-id", "acme"))),
			want:    codes.OK,
			replies: []string{"request_headers"},
			tenant:  "acme",
		},
		{
			name: "no pseudo-headers, then a cacheable response",
			frames: msgs(
				requestHeaders(true, hv("x-tenant-id", "acme")),
				xt.ResponseHeaders(200, false, "cache-control", "public, max-age=60"),
				xt.ResponseBody([]byte("x"), true),
			),
			want:    codes.OK,
			replies: []string{"request_headers", "response_headers", "response_body"},
			tenant:  "acme",
		},
		{
			name:   "only :path, no :method",
			frames: msgs(requestHeaders(true, hv(":path", "/api/v1/batch"), hv("x-tenant-id", "acme"))),
			want:   codes.OK,
			// The batch stage refuses any method but POST.
			replies: []string{"immediate_response"},
		},
		{
			// The last :path and :method count (Envoy's codecs refuse
			// repeated pseudo-headers): a bodiless POST to the batch
			// path, which the batch stage answers 400.
			name: "conflicting repeated pseudo-headers",
			frames: msgs(requestHeaders(true, append(pseudo("/api/v1/a"),
				hv(":path", "/api/v1/batch"), hv(":method", "POST"), hv(":authority", "evil.example"), hv("x-tenant-id", "acme"))...)),
			want:    codes.OK,
			replies: []string{"immediate_response"},
		},
		{
			name:    "response_headers with a non-numeric :status",
			frames:  msgs(xt.RequestHeaders("GET", "/api/v1/st", true, "x-tenant-id", "acme"), responseHeadersOnly(hv(":status", "2OO"), hv("cache-control", "max-age=60"))),
			want:    codes.OK,
			replies: []string{"request_headers", "response_headers"},
			tenant:  "acme",
		},
		{
			name: "message over the server's MaxRecvMsgSize",
			frames: msgs(
				xt.RequestHeaders("POST", "/api/v1/upload", false, "x-tenant-id", "acme"),
				xt.RequestBody(make([]byte, 5<<20), true), // over 4 MiB
			),
			want:    codes.ResourceExhausted,
			replies: []string{"request_headers"},
			result:  "message_too_large",
		},
		{
			name: "request body over max_body_bytes in chunks",
			frames: msgs(
				xt.RequestHeaders("POST", "/api/v1/upload", false, "x-tenant-id", "acme"),
				xt.RequestBody(chunk, false), xt.RequestBody(chunk, true),
			),
			want:    codes.ResourceExhausted,
			replies: []string{"request_headers", "request_body"},
		},
		{
			name: "batch body over max_request_bytes in chunks",
			frames: msgs(
				xt.RequestHeaders("POST", "/api/v1/batch", false, "x-tenant-id", "acme", "x-envoy-external-address", "192.0.2.10"),
				xt.RequestBody(chunk, false), xt.RequestBody(chunk, true),
			),
			want:    codes.ResourceExhausted,
			replies: []string{"request_headers", "request_body"},
		},
		{
			name: "observability mode throughout",
			frames: msgs(
				xt.Observed(xt.RequestHeaders("GET", "/api/v1/obs", true, "x-tenant-id", "acme")),
				xt.Observed(xt.ResponseHeaders(200, true)),
			),
			want: codes.OK,
		},
		{
			name: "observability mode switched on mid-stream",
			frames: msgs(
				xt.RequestHeaders("GET", "/api/v1/obs2", true, "x-tenant-id", "acme"),
				xt.Observed(xt.ResponseHeaders(200, false)),
				xt.ResponseBody([]byte("x"), true),
			),
			want:    codes.OK,
			replies: []string{"request_headers", "response_body"},
			tenant:  "acme",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before float64
			if tt.result != "" {
				before = counter(t, p.reg, "sluice_extproc_streams_total", map[string]string{"result": tt.result})
			}
			frames := tt.frames
			if tt.build != nil {
				frames = tt.build(t)
			}
			out := drive(t, p.conn, frames)
			if err := out.check(); err != nil {
				t.Fatalf("%v (outcome %+v)", err, out)
			}
			if got := status.Code(out.err); got != tt.want {
				t.Errorf("stream ended with %v, want %v", out.err, tt.want)
			}
			var got []string
			for _, r := range out.replies {
				got = append(got, replyType(r))
			}
			if strings.Join(got, ",") != strings.Join(tt.replies, ",") {
				t.Errorf("replies %v, want %v", got, tt.replies)
			}
			if tt.tenant != "" && len(out.replies) > 0 {
				if got := setTenant(out.replies[0]); got != tt.tenant {
					t.Errorf("x-sluice-tenant set to %q, want %q", got, tt.tenant)
				}
			}
			if tt.status != 0 && len(out.replies) > 0 {
				if got := int(out.replies[0].GetImmediateResponse().GetStatus().GetCode()); got != tt.status {
					t.Errorf("immediate_response status %d, want %d", got, tt.status)
				}
			}
			if tt.result != "" {
				waitCounter(t, p.reg, tt.result, before+1)
			}
			p.healthy(t)
		})
	}
	if n := p.subreqs.Load(); n != 0 {
		t.Errorf("%d batch sub-requests reached the listener", n)
	}
	waitGoroutines(t, baseline)
}

// responseHeadersOnly is a response_headers message with exactly hs.
func responseHeadersOnly(hs ...*corev3.HeaderValue) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{
		MetadataContext: &corev3.Metadata{},
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: hs},
		}},
	}
}

// waitCounter waits until sluice_extproc_streams_total{result} reaches
// want: the client may see the status before the server counts it.
func waitCounter(t *testing.T, reg *metricstest.Registry, result string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := counter(t, reg, "sluice_extproc_streams_total", map[string]string{"result": result})
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("streams{result=%s} = %v, want %v", result, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitGoroutines waits until the goroutine count is back to baseline.
func waitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the hostile streams:\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
