// Package extproc implements Envoy's ext_proc v3 ExternalProcessor: one
// stream per HTTP request, run through a pipeline of stages.
//
// Envoy's ext_proc filter opens a gRPC stream
// (envoy.service.ext_proc.v3.ExternalProcessor/Process) for each request and
// sends the parts of the request and response its processing_mode selects:
// request_headers, request_body, request_trailers, response_headers,
// response_body, response_trailers. Server answers each with exactly the
// matching response type, or ends the request with an immediate_response.
// What to do is decided by stages (identity, metrics, and later the response
// cache and batching) that share one Exchange per stream; see Stage.
//
// Envoy behaviour this package relies on is cited where it is used; the
// filter config it expects (envoy.yaml) is:
//
//	http_filters:
//	  # ... compressors, then jwt_authn when identity.source is jwt_metadata
//	  - name: envoy.filters.http.ext_proc
//	    typed_config:
//	      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
//	      grpc_service: {envoy_grpc: {cluster_name: sluice_extproc}}
//	      processing_mode: {request_header_mode: SEND, response_header_mode: SEND}  # = Config.ProcessingMode
//	      allow_mode_override: true  # stages ask for bodies per request (mode_override)
//	      # identity.source jwt_metadata: forward jwt_authn's payload_in_metadata
//	      metadata_options: {forwarding_namespaces: {untyped: [envoy.filters.http.jwt_authn]}}
//	  # ... ratelimit (descriptors from x-sluice-tier, x-sluice-tenant), router
//
// The gRPC server needs MaxRecvMsgSize of at least Config.MaxRecvMsgBytes.
package extproc

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/tier"
)

// Server answers Envoy's ext_proc streams through a fixed pipeline of
// stages. Create it with New; it is safe for concurrent use (one gRPC
// handler goroutine per stream) and starts no goroutines of its own.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	pipe    *pipeline
	routes  routeTable
	mode    modeState // Config.ProcessingMode: the filter's configured mode
	metrics *serverMetrics
	active  *atomic.Int64 // streams open now, bounded by cfg.MaxStreams
}

var _ extprocv3.ExternalProcessorServer = (*Server)(nil)

// Option changes how New builds a Server.
type Option func(*options)

type options struct {
	stages []Stage
	now    func() time.Time
}

// WithStages inserts stages between the identity stage and the metrics
// stage, in the given order: identity → stages… → metrics. Later issues plug
// the batch fan-out and the response cache in here.
func WithStages(stages ...Stage) Option {
	return func(o *options) { o.stages = append(o.stages, stages...) }
}

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// New returns a server running identity → (WithStages…) → metrics. tiers
// resolves tenants' tiers; nil means the static map cfg.Identity.Tiers. reg
// may be nil (metrics are then kept but not exported); log may be nil.
func New(cfg Config, tiers tier.Store, reg prometheus.Registerer, log *slog.Logger, opts ...Option) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if tiers == nil {
		tiers = tier.Static(cfg.Identity.Tiers)
	}
	active := new(atomic.Int64)
	sm, hm, err := newMetrics(reg, func() float64 { return float64(active.Load()) })
	if err != nil {
		return nil, err
	}
	stages := make([]Stage, 0, len(o.stages)+2)
	stages = append(stages, newIdentity(cfg.Identity, tiers))
	stages = append(stages, o.stages...)
	stages = append(stages, newMetricsStage(cfg.Metrics, hm, log, o.now))
	pipe, err := newPipeline(stages)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg:     cfg,
		log:     log,
		now:     o.now,
		pipe:    pipe,
		routes:  newRouteTable(cfg.Metrics.Routes),
		mode:    newModeState(cfg.ProcessingMode.proto()),
		metrics: sm,
		active:  active,
	}, nil
}

// Stages returns the names of the pipeline's stages in order.
func (s *Server) Stages() []string {
	names := make([]string, len(s.pipe.stages))
	for i, st := range s.pipe.stages {
		names[i] = st.Name()
	}
	return names
}

// Errors ending a stream. The server maps them to gRPC codes (server.go).
var (
	errOutOfOrder   = errors.New("extproc: message out of order")
	errUnknown      = errors.New("extproc: message with no known request type")
	errBodyTooLarge = errors.New("extproc: body larger than max_body_bytes")
	errStage        = errors.New("extproc: stage failed")
	errNilStage     = errors.New("extproc: nil stage")
)

type stageNameError struct {
	name string
	dup  bool
}

func (e *stageNameError) Error() string {
	if e.dup {
		return "extproc: duplicate stage name " + e.name
	}
	return "extproc: stage name " + e.name + " must be 1-64 of a-z 0-9 _"
}
