package grpccodec_test

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/internal/grpccodec"
)

// BenchmarkMarshal marshals a one-descriptor RateLimitResponse with rate limit headers, as
// Sluice answers, with this codec and with gRPC's protobuf codec; the codec differs from it
// only when built with -tags vtprotobuf.
func BenchmarkMarshal(b *testing.B) {
	resp := &rlsv3.RateLimitResponse{
		OverallCode: rlsv3.RateLimitResponse_OK,
		Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{
			Code:               rlsv3.RateLimitResponse_OK,
			CurrentLimit:       &rlsv3.RateLimitResponse_RateLimit{Name: "tier_pro.tenant_id#0", RequestsPerUnit: 1000, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE},
			LimitRemaining:     998,
			DurationUntilReset: durationpb.New(59_000_000_000),
		}},
		ResponseHeadersToAdd: []*corev3.HeaderValue{
			{Key: "ratelimit-policy", Value: `"tier_pro.tenant_id#0";q=1000;w=60`},
			{Key: "ratelimit", Value: `"tier_pro.tenant_id#0";r=998;t=59`},
		},
	}
	for _, c := range []encoding.CodecV2{grpccodec.New(), encoding.GetCodecV2("proto")} {
		name := "protobuf"
		if _, ok := c.(grpccodec.Codec); ok {
			name = "grpccodec"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				data, err := c.Marshal(resp)
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
		})
	}
}
