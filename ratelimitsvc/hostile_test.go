package ratelimitsvc_test

import (
	"testing"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

// TestHostileDescriptors: descriptors the limiter cannot count as sent (more
// hits than any counter holds, an override window beyond time.Duration) are
// still decided, alongside the request's other descriptors, instead of
// failing the whole request open as if Redis were down. A request with more
// hits than any limit is refused every time, charging nothing (nothing is
// charged unless the whole request is allowed); one with an absurd override
// window is counted like any other.
func TestHostileDescriptors(t *testing.T) {
	tests := []struct {
		name string
		odd  *commonrl.RateLimitDescriptor
		// wantOdd is the odd descriptor's status.
		wantOdd rlsv3.RateLimitResponse_Code
		// refused: every call is OVER_LIMIT and charges nothing.
		refused bool
	}{
		{
			name:    "hits_addend 2^64-1",
			odd:     &commonrl.RateLimitDescriptor{Entries: desc("tier", "free", "tenant_id", "big").Entries, HitsAddend: wrapperspb.UInt64(^uint64(0))},
			wantOdd: rlsv3.RateLimitResponse_OVER_LIMIT,
			refused: true,
		},
		{
			name:    "hits_addend 2^53",
			odd:     &commonrl.RateLimitDescriptor{Entries: desc("tier", "free", "tenant_id", "big").Entries, HitsAddend: wrapperspb.UInt64(1 << 53)},
			wantOdd: rlsv3.RateLimitResponse_OVER_LIMIT,
			refused: true,
		},
		{
			name: "override of 5 per 2^32-1 years",
			odd: &commonrl.RateLimitDescriptor{Entries: desc("k", "v").Entries, Limit: &commonrl.RateLimitDescriptor_RateLimitOverride{
				RequestsPerUnit: 5, Unit: typev3.RateLimitUnit_YEAR, UnitMultiplier: wrapperspb.UInt32(^uint32(0)),
			}},
			wantOdd: rlsv3.RateLimitResponse_OK,
		},
		{
			name: "override of 5 per million days",
			odd: &commonrl.RateLimitDescriptor{Entries: desc("k", "v").Entries, Limit: &commonrl.RateLimitDescriptor_RateLimitOverride{
				RequestsPerUnit: 5, Unit: typev3.RateLimitUnit_DAY, UnitMultiplier: wrapperspb.UInt32(1_000_000),
			}},
			wantOdd: rlsv3.RateLimitResponse_OK,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, redistest.Client(t), ratelimitsvc.Config{}, testRules)
			legit := desc("tier", "free", "tenant_id", "legit") // 3 per hour
			for i := range 4 {
				resp := h.call(t, "api", tt.odd, legit)
				if got := resp.Statuses[0].Code; got != tt.wantOdd {
					t.Fatalf("call %d: odd descriptor %v, want %v", i+1, got, tt.wantOdd)
				}
				if tt.refused {
					if resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || resp.Statuses[1].LimitRemaining != 3 {
						t.Fatalf("call %d: %v, legit remaining %d; want OVER_LIMIT with nothing charged", i+1, resp.OverallCode, resp.Statuses[1].LimitRemaining)
					}
					continue
				}
				// The request's ordinary descriptor is still counted: the
				// fourth call is over its limit of 3 (a fail-open answer
				// would be OK with nothing counted).
				want := rlsv3.RateLimitResponse_OK
				if i == 3 {
					want = rlsv3.RateLimitResponse_OVER_LIMIT
				}
				if got := resp.Statuses[1].Code; got != want {
					t.Fatalf("call %d: legit descriptor %v, want %v", i+1, got, want)
				}
			}
		})
	}
}
