package grpccodec_test

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluicehq/sluice/internal/grpccodec"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRoundTrip marshals messages with the codec and unmarshals them with protobuf: the same
// message comes back, whichever marshaler this build uses (vtprotobuf with -tags vtprotobuf,
// protobuf without), for a small response, one large enough for a pooled buffer, and a message
// without vtprotobuf code.
func TestRoundTrip(t *testing.T) {
	c := grpccodec.New()
	if c.Name() != "proto" {
		t.Fatalf("Name() = %q, want proto (the content-subtype clients send)", c.Name())
	}
	status := func(name string) *rlsv3.RateLimitResponse_DescriptorStatus {
		return &rlsv3.RateLimitResponse_DescriptorStatus{
			Code:               rlsv3.RateLimitResponse_OVER_LIMIT,
			CurrentLimit:       &rlsv3.RateLimitResponse_RateLimit{Name: name, RequestsPerUnit: 100, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE, UnitMultiplier: wrapperspb.UInt32(5)},
			LimitRemaining:     7,
			DurationUntilReset: durationpb.New(1500000000),
		}
	}
	large := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
	for range 200 {
		large.Statuses = append(large.Statuses, status(strings.Repeat("x", 40)))
	}
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{name: "rate limit response", msg: &rlsv3.RateLimitResponse{
			OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT,
			Statuses:    []*rlsv3.RateLimitResponse_DescriptorStatus{status("burst"), {Code: rlsv3.RateLimitResponse_OK}},
			ResponseHeadersToAdd: []*corev3.HeaderValue{
				{Key: "ratelimit", Value: `"burst";r=0;t=2`}, {Key: "retry-after", Value: "2"},
			},
		}},
		{name: "empty response", msg: &rlsv3.RateLimitResponse{}},
		{name: "pooled buffer", msg: large},
		{name: "no vtprotobuf code", msg: &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := c.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			defer data.Free()
			got := tc.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(data.Materialize(), got); err != nil {
				t.Fatalf("unmarshal what the codec wrote: %v", err)
			}
			if !proto.Equal(got, tc.msg) {
				t.Errorf("round trip: got %v, want %v", got, tc.msg)
			}
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if data.Len() != len(want) {
				t.Errorf("codec wrote %d bytes, protobuf %d", data.Len(), len(want))
			}
			back := tc.msg.ProtoReflect().New().Interface()
			if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, back); err != nil || !proto.Equal(back, tc.msg) {
				t.Errorf("Unmarshal: %v, %v", err, back)
			}
			t.Logf("vtprotobuf marshaler: %v", grpccodec.VT(tc.msg))
		})
	}
}
