package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/sluicehq/sluice/internal/header"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ServiceName is the gRPC service Envoy calls (and health-checks).
const ServiceName = "envoy.service.ext_proc.v3.ExternalProcessor"

// Register adds the server to a gRPC server as
// envoy.service.ext_proc.v3.ExternalProcessor. That server's MaxRecvMsgSize
// must be at least Config.MaxRecvMsgBytes(): a BUFFERED body arrives as one
// message.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	extprocv3.RegisterExternalProcessorServer(g, s)
}

// Process serves one ext_proc stream, which is one HTTP request. It answers
// every message in order on the calling goroutine and starts none, so
// nothing outlives the stream. It returns nil when Envoy half-closes the
// stream or after an immediate response; otherwise a gRPC status, logged
// once.
func (s *Server) Process(ps extprocv3.ExternalProcessor_ProcessServer) error {
	if s.active.Add(1) > int64(s.cfg.MaxStreams) {
		s.active.Add(-1)
		s.metrics.ended("overloaded")
		// Envoy treats a stream error like any other processor failure: failure_mode_allow
		// decides whether the request goes on without Sluice (Filter::onGrpcError).
		return status.Errorf(codes.ResourceExhausted, "extproc: %d streams open, the max_streams limit", s.cfg.MaxStreams)
	}
	defer s.active.Add(-1)
	st := s.newStream(ps.Context())
	st.x.extend = func(d time.Duration) bool {
		if st.observability {
			return false
		}
		// Sent before the hook's reply on the same goroutine: Envoy restarts
		// its message timer and keeps waiting for the reply
		// (ProcessingResponse.override_message_timeout).
		return ps.Send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(d)}) == nil
	}
	err := st.serve(ps)
	st.done()
	return s.finish(st, err)
}

func (st *stream) serve(ps extprocv3.ExternalProcessor_ProcessServer) error {
	bt := &bodyTimer{}
	for {
		if st.owesRequestBody() {
			bt.arm(st.s.cfg.RequestBodyTimeout, func() { st.bodyTimedOut(ps) })
		}
		req, err := ps.Recv()
		if bt.disarm() {
			// The 408 went out; Envoy ends the stream on it.
			st.finished, st.complete = true, true
			st.x.ResponseStatus, st.x.End = http.StatusRequestTimeout, st.s.now()
			return errBodyTimeout
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			switch status.Code(err) {
			case codes.ResourceExhausted:
				// grpc-go refused a message above MaxRecvMsgSize.
				return fmt.Errorf("%w: %w", errMsgTooLarge, err)
			case codes.Internal:
				// grpc-go could not decode the message (invalid UTF-8 in a
				// string field, nesting beyond the decoder's limit, a
				// truncated frame) and has already sent Envoy that status:
				// a protocol error, not a cancellation.
				return fmt.Errorf("%w: %w", errUndecodable, err)
			}
			return fmt.Errorf("%w: %w", errCancelled, err)
		}
		resp, err := st.handle(req)
		if err != nil {
			return err
		}
		// observability_mode: Envoy ignores replies, and the proto asks the
		// server to send none.
		if !req.GetObservabilityMode() {
			if err := ps.Send(resp); err != nil {
				return fmt.Errorf("%w: %w", errCancelled, err)
			}
		}
		if st.finished {
			return nil
		}
	}
}

// owesRequestBody reports whether Envoy still owes the stream a request
// body message that Sluice will answer: the request headers came without
// end_of_stream and the request body mode in force sends the body.
func (st *stream) owesRequestBody() bool {
	return st.reqHeaders && !st.reqEnded && !st.finished && !st.observability &&
		st.mode.reqBody != procmodev3.ProcessingMode_NONE
}

// bodyTimedOut runs on the timer's goroutine while serve waits in Recv: it
// answers 408 with an ImmediateResponse, which ends the request.
func (st *stream) bodyTimedOut(ps extprocv3.ExternalProcessor_ProcessServer) {
	d := st.s.cfg.RequestBodyTimeout
	_ = ps.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_RequestTimeout},
			Body:   []byte("request body not received within " + d.String() + "\n"),
			Headers: headerMutation(header.List{
				{Name: "content-type", Value: "text/plain; charset=utf-8"},
				{Name: "cache-control", Value: "no-store"},
			}, nil),
			Details: "sluice_request_body_timeout",
		},
	}})
}

// bodyTimer bounds one wait for a request body. The timer's function runs
// on its own goroutine while serve is blocked in Recv; the mutex makes the
// timer's Send and serve's next Send never overlap (grpc-go allows one
// sender at a time), and tells serve whether the timer fired. The zero
// value is ready; used by one stream.
type bodyTimer struct {
	mu    sync.Mutex // guards armed and fired; held while the timer sends
	t     *time.Timer
	armed bool
	fired bool
}

func (b *bodyTimer) arm(d time.Duration, fire func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = true
	b.t = time.AfterFunc(d, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if !b.armed {
			return
		}
		b.armed, b.fired = false, true
		fire()
	})
}

// disarm stops a pending timer and reports whether it fired.
func (b *bodyTimer) disarm() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.t != nil {
		b.t.Stop()
		b.t = nil
	}
	b.armed = false
	return b.fired
}

var (
	errBodyTimeout = errors.New("extproc: request body not received within request_body_timeout")
	errMsgTooLarge = errors.New("extproc: message larger than the gRPC server's MaxRecvMsgSize")
	errUndecodable = errors.New("extproc: message not decodable")
)

// finish counts the stream's result, logs a stream that ended badly (one
// line), and maps its error to the gRPC status returned to Envoy. Envoy
// answers a failed stream with a 500 (status_on_error) unless
// failure_mode_allow is set.
func (s *Server) finish(st *stream, err error) error {
	var (
		result string
		level  = slog.LevelWarn
		logged = true
		ret    error
	)
	switch {
	case err == nil:
		logged = false
		switch {
		case st.finished:
			result = "immediate_response"
		case st.responseOnly:
			result = "response_only"
		default:
			result = "ok"
		}
	case errors.Is(err, errCancelled):
		// Envoy resets the stream when the request ends (client gone, local
		// reply, filter destroyed; ExternalProcessorStreamImpl::close), also
		// right after the last expected reply. Only a reset before the
		// response headers cut an exchange short; it is routine, so Debug.
		result, logged, level = "ok", false, slog.LevelDebug
		if !st.complete {
			result, logged = "cancelled", true
		}
		ret = status.Error(codes.Canceled, "extproc: stream cancelled")
	case errors.Is(err, errOutOfOrder):
		result = "protocol_error"
		ret = status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, errUnknown), errors.Is(err, errUndecodable):
		result = "protocol_error"
		ret = status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errBodyTooLarge):
		result = "body_too_large"
		ret = status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, errBodyTimeout):
		// A slow or stalled client; Sluice answered 408. Routine enough for
		// Info, counted apart.
		result, level = "body_timeout", slog.LevelInfo
	case errors.Is(err, errMsgTooLarge):
		result = "message_too_large"
		ret = status.Error(codes.ResourceExhausted, "extproc: message too large")
	default: // errStage
		result, level = "stage_error", slog.LevelError
		// The stage's error is logged, not sent: Envoy would put it in
		// response details and logs outside Sluice's control.
		ret = status.Error(codes.Internal, "extproc: stage "+st.failedStage+" failed")
	}
	// Counted once logged, so that a counted stream's line is already written.
	defer s.metrics.ended(result)

	if len(st.x.dropped) > 0 {
		// A stage asked for something Envoy would refuse: a bug worth a line
		// even on a good stream.
		logged, level = true, max(level, slog.LevelWarn)
	}
	if !logged || !s.log.Enabled(st.ctx, level) {
		return ret
	}
	attrs := []slog.Attr{
		slog.String("result", result),
		slog.String("phase", st.last.String()),
		slog.String("route", st.x.Route),
	}
	if st.x.Tenant != "" {
		attrs = append(attrs, slog.String("tenant", st.x.Tenant))
	}
	if st.failedStage != "" {
		attrs = append(attrs, slog.String("stage", st.failedStage))
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	if len(st.x.dropped) > 0 {
		attrs = append(attrs, slog.Any("ignored_actions", st.x.dropped))
	}
	s.log.LogAttrs(context.WithoutCancel(st.ctx), level, "ext_proc stream ended", attrs...)
	return ret
}
