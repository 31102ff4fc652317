package ratelimitsvc

import (
	"encoding/json"
	"errors"
	"net/http"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Register adds the service to a gRPC server as
// envoy.service.ratelimit.v3.RateLimitService.
func (s *Service) Register(g grpc.ServiceRegistrar) {
	rlsv3.RegisterRateLimitServiceServer(g, s)
}

// toStatus maps decide's errors to gRPC codes at the edge. Envoy treats any
// error as a failed call and applies its own failure_mode_deny.
func toStatus(err error) error {
	switch {
	case errors.Is(err, ErrNoDomain), errors.Is(err, ErrNoDescriptors), errors.Is(err, errTooMany):
		return status.Error(codes.InvalidArgument, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}

// DebugHandler serves the effective limits as JSON (GET /debug/ratelimit).
func (s *Service) DebugHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		rules := s.rules.Load()
		if rules == nil {
			http.Error(w, "rate limit rules not loaded", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		lc := s.cfg.LimiterConfig()
		body := struct {
			Service any    `json:"service"`
			Rules   *Rules `json:"rules"`
		}{
			Service: map[string]any{
				"timeout":           s.cfg.Timeout.String(),
				"failure_mode_deny": s.cfg.FailureModeDeny,
				"headers":           s.cfg.Headers,
				"near_limit_ratio":  s.cfg.NearLimitRatio,
				"local_cache_size":  s.cfg.LocalCacheSize,
				"lease": map[string]any{
					"max_overshoot": lc.Lease.MaxOvershoot,
					"horizon":       lc.Lease.Horizon.String(),
					"max_keys":      lc.Lease.MaxKeys,
				},
				"hot_key_threshold": lc.HotKeyThreshold,
			},
			Rules: rules,
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(body)
	})
}
