package grpccodec

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func headerMap(kv ...string) *corev3.HeaderMap {
	hm := &corev3.HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return hm
}

// requestHeaders is the first message of a stream as Envoy sends it.
func requestHeaders() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: headerMap(":authority", "api.example.com", ":path", "/api/v1/items/42", ":method", "GET",
				":scheme", "https", "user-agent", "curl/8.5.0", "x-tenant-id", "acme", "x-empty", ""),
			EndOfStream: true,
		}},
		MetadataContext: &corev3.Metadata{},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{
			RequestBodyMode: procmodev3.ProcessingMode_NONE, ResponseBodyMode: procmodev3.ProcessingMode_BUFFERED,
			SendBodyWithoutWaitingForHeaderResponse: true,
		},
	}
}

// decodeCases are messages the decoder takes (fast) or leaves to protobuf.
func decodeCases() []struct {
	name string
	msg  *extprocv3.ProcessingRequest
	fast bool
} {
	withValue := requestHeaders()
	withValue.GetRequestHeaders().Headers.Headers[0].Value = "api.example.com" // older Envoys: value, not raw_value
	many := &extprocv3.HttpHeaders{Headers: headerMap()}
	for range 100 {
		many.Headers.Headers = append(many.Headers.Headers, &corev3.HeaderValue{Key: "x-h", RawValue: []byte("v")})
	}
	attrs := requestHeaders()
	attrs.Attributes = map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{"request.path": structpb.NewStringValue("/")}}}
	md := requestHeaders()
	md.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"jwt": {}}}
	return []struct {
		name string
		msg  *extprocv3.ProcessingRequest
		fast bool
	}{
		{"request headers", requestHeaders(), true},
		{"value instead of raw_value", withValue, true},
		{"response headers", &extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
				Headers: headerMap(":status", "200", "content-type", "application/json", "cache-control", "no-store")}},
			MetadataContext: &corev3.Metadata{},
		}, true},
		{"more headers than the stack holds", &extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: many}}, true},
		{"empty headers", &extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{}, EndOfStream: true}}}, true},
		{"request body", &extprocv3.ProcessingRequest{
			Request:         &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(`{"a":1}`), EndOfStream: true}},
			MetadataContext: &corev3.Metadata{}}, true},
		{"response body, every flag", &extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte("x"),
				EndOfStreamWithoutMessage: true, GrpcMessageCompressed: true, DrainComplete: true}},
			ObservabilityMode: true}, true},
		{"empty body", &extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{EndOfStream: true}}}, true},
		{"empty message", &extprocv3.ProcessingRequest{}, true},
		{"trailers", &extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{Trailers: headerMap("grpc-status", "0")}}}, false},
		{"attributes", attrs, false},
		{"metadata", md, false},
		{"flow control", &extprocv3.ProcessingRequest{FlowControlInit: &extprocv3.ProcessingRequest_FlowControlInit{InitialWindowDownstreamToSidestream: 1}}, false},
	}
}

// TestDecodeProcessingRequest: what the decoder takes comes out as protobuf decodes it, and
// what it leaves, the codec decodes with protobuf.
func TestDecodeProcessingRequest(t *testing.T) {
	c := New()
	for _, tc := range decodeCases() {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			got := &extprocv3.ProcessingRequest{}
			if fast := decodeProcessingRequest(b, got); fast != tc.fast {
				t.Fatalf("decoded: %v, want %v", fast, tc.fast)
			}
			if tc.fast && !proto.Equal(got, tc.msg) {
				t.Errorf("decoded %v, want %v", got, tc.msg)
			}
			back := &extprocv3.ProcessingRequest{}
			if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, back); err != nil || !proto.Equal(back, tc.msg) {
				t.Errorf("Unmarshal: %v, %v", err, back)
			}
		})
	}
}

// TestDecodeProcessingRequestLeaves covers encodings protobuf accepts with a meaning the decoder
// does not implement (it must leave them), and ones protobuf refuses (the codec must too).
func TestDecodeProcessingRequestLeaves(t *testing.T) {
	hv := func(key string) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte(key))
	}
	headers := func(field protowire.Number, hvs ...[]byte) []byte {
		var hm []byte
		for _, h := range hvs {
			hm = protowire.AppendBytes(protowire.AppendTag(hm, 1, protowire.BytesType), h)
		}
		hh := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), hm)
		return protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), hh)
	}
	valid := headers(2, hv("a"))
	for _, tc := range []struct {
		name    string
		b       []byte
		invalid bool // protobuf refuses it
	}{
		{"oneof field twice (merged)", append(append([]byte{}, valid...), valid...), false},
		{"two oneof members (last wins)", append(append([]byte{}, valid...), headers(3, hv("b"))...), false},
		{"unknown field", protowire.AppendVarint(protowire.AppendTag(append([]byte{}, valid...), 99, protowire.VarintType), 1), false},
		{"known field, other wire type", protowire.AppendFixed32(protowire.AppendTag(append([]byte{}, valid...), 10, protowire.Fixed32Type), 1), false},
		{"key twice in a header", headers(2, append(hv("a"), hv("b")...)), false},
		{"invalid UTF-8 key", headers(2, hv("\xff")), true},
		{"truncated", valid[:len(valid)-1], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if decodeProcessingRequest(tc.b, &extprocv3.ProcessingRequest{}) {
				t.Fatal("decoded; want it left to protobuf")
			}
			want := &extprocv3.ProcessingRequest{}
			wantErr := proto.Unmarshal(tc.b, want)
			if (wantErr != nil) != tc.invalid {
				t.Fatalf("protobuf: %v, want invalid %v", wantErr, tc.invalid)
			}
			got := &extprocv3.ProcessingRequest{}
			err := New().Unmarshal(mem.BufferSlice{mem.SliceBuffer(tc.b)}, got)
			if (err != nil) != tc.invalid || !tc.invalid && !proto.Equal(got, want) {
				t.Errorf("Unmarshal: %v, %v; want %v, %v", err, got, wantErr, want)
			}
		})
	}
}

// TestDecodedRawValuesApart: appending to one decoded raw value must not change the next,
// although they share one allocation.
func TestDecodedRawValuesApart(t *testing.T) {
	b, err := proto.Marshal(requestHeaders())
	if err != nil {
		t.Fatal(err)
	}
	m := &extprocv3.ProcessingRequest{}
	if !decodeProcessingRequest(b, m) {
		t.Fatal("not decoded")
	}
	hs := m.GetRequestHeaders().GetHeaders().GetHeaders()
	_ = append(hs[0].RawValue, "XXXX"...)
	if got := string(hs[1].RawValue); got != "/api/v1/items/42" {
		t.Errorf("second raw value = %q after an append to the first", got)
	}
}

// FuzzProcessingRequest: whenever the decoder takes a message, protobuf decodes it without
// error to an equal message.
func FuzzProcessingRequest(f *testing.F) {
	for _, tc := range decodeCases() {
		b, err := proto.Marshal(tc.msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := &extprocv3.ProcessingRequest{}
		if !decodeProcessingRequest(b, got) {
			return
		}
		want := &extprocv3.ProcessingRequest{}
		if err := proto.Unmarshal(b, want); err != nil {
			t.Fatalf("decoded a message protobuf refuses (%v): %v", err, got)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("decoded %v, protobuf %v", got, want)
		}
	})
}

func BenchmarkUnmarshalProcessingRequest(b *testing.B) {
	msg := requestHeaders()
	for range 7 {
		msg.GetRequestHeaders().Headers.Headers = append(msg.GetRequestHeaders().Headers.Headers,
			&corev3.HeaderValue{Key: "x-forwarded-for", RawValue: []byte("10.0.0.1")})
	}
	data, err := proto.Marshal(msg)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		fn   func([]byte, *extprocv3.ProcessingRequest) error
	}{
		{"grpccodec", func(d []byte, m *extprocv3.ProcessingRequest) error {
			return New().Unmarshal(mem.BufferSlice{mem.SliceBuffer(d)}, m)
		}},
		{"protobuf", func(d []byte, m *extprocv3.ProcessingRequest) error { return proto.Unmarshal(d, m) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.fn(data, &extprocv3.ProcessingRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
