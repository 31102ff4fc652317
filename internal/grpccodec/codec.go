// Package grpccodec is the gRPC codec of Sluice's server: messages that carry vtprotobuf
// marshalers are marshaled by them, and the ext_proc requests Envoy sends for every HTTP request
// are decoded by a decoder of their own (extproc.go); everything else goes through gRPC's
// default protobuf codec.
//
// go-control-plane generates vtprotobuf marshalers for Envoy's messages (RateLimitResponse,
// ProcessingResponse, ...) in *_vtproto.pb.go files behind the vtprotobuf build tag: built with
// `-tags vtprotobuf` (the Dockerfile and the benchmarks do), they marshal without reflection.
// gRPC's own codec calls proto.Marshal and never uses them, hence this codec, installed with
// grpc.ForceServerCodecV2. Built without the tag it behaves exactly as gRPC's codec.
// go-control-plane generates no vtprotobuf unmarshalers, so requests other than ext_proc's are
// unmarshaled by protobuf as before.
package grpccodec

import (
	"fmt"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/encoding"
	// The default protobuf codec, registered by its init; Codec falls back to it.
	_ "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// vtMarshaler is what vtprotobuf generates for a message: its size and a marshal into a buffer
// of exactly that size, filled from the end.
type vtMarshaler interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict(b []byte) (int, error)
}

// Codec marshals with vtprotobuf where a message has it, and falls back to gRPC's protobuf
// codec. The zero value is not usable: use New. It is safe for concurrent use.
type Codec struct {
	fallback encoding.CodecV2
}

var _ encoding.CodecV2 = Codec{}

// New returns the codec.
func New() Codec {
	return Codec{fallback: encoding.GetCodecV2("proto")}
}

// Name is "proto": the content-subtype Envoy and every gRPC client send.
func (Codec) Name() string { return "proto" }

// Marshal marshals v with its vtprotobuf marshaler if it has one, into a pooled buffer when it
// is large enough for gRPC to pool it, as gRPC's codec does.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMarshaler)
	if !ok {
		return c.fallback.Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVTStrict(buf); err != nil {
			return nil, fmt.Errorf("grpccodec: marshal %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVTStrict((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, fmt.Errorf("grpccodec: marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Unmarshal decodes ext_proc's ProcessingRequest with decodeProcessingRequest where it can, and
// everything else (and what that decoder leaves) as gRPC's protobuf codec does.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*extprocv3.ProcessingRequest)
	if !ok {
		return c.fallback.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if decodeProcessingRequest(buf.ReadOnlyData(), m) {
		return nil
	}
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// VT reports whether this build marshals v with vtprotobuf (built with -tags vtprotobuf and v
// has the generated marshaler).
func VT(v any) bool {
	_, ok := v.(vtMarshaler)
	return ok
}
