package extproc

import "context"

// Stage is one step of the pipeline each ext_proc stream runs through. A
// stage implements any of the hook interfaces below; the server calls the
// hooks it implements, in pipeline order, once per matching message.
//
// What callers may rely on:
//   - Hooks of one stream run one at a time on the stream's goroutine, so a
//     stage needs no locking for the Exchange. Different streams run
//     concurrently, so a stage's own fields must be safe for concurrent use.
//   - A hook sees the Exchange as the earlier stages left it (Tenant, Tier,
//     values from Set) and may queue actions on the reply to the current
//     message (SetRequestHeader, Respond, WantResponseBody, …).
//   - After a stage calls Respond, later stages' hooks for that message are
//     not called and the stream ends; every DoneHook still runs.
//   - A hook returning an error ends the stream with a gRPC INTERNAL status
//     (Envoy then applies its failure_mode_allow); the error is logged, not
//     sent. A stage that should fail open handles its own errors.
//   - ctx is the stream's context: it is cancelled when Envoy resets the
//     stream. Hooks that block must honour it.
//
// Name is used in logs, in ImmediateResponse.details ("sluice_<name>") and
// must be unique within a pipeline: 1-64 of a-z 0-9 _.
type Stage interface {
	Name() string
}

// RequestHeadersHook runs on ProcessingRequest.request_headers, the first
// message of a normal stream. Exchange.Method, Path, Authority, Scheme,
// RequestHeaders and Route are set.
type RequestHeadersHook interface {
	RequestHeaders(ctx context.Context, x *Exchange) error
}

// RequestBodyHook runs on each ProcessingRequest.request_body: one message
// with the whole body in BUFFERED mode, chunks in STREAMED and
// FULL_DUPLEX_STREAMED mode (where the server sends each chunk back
// unchanged in streamed_response). body must not be modified; copy it to
// keep it past the call.
type RequestBodyHook interface {
	RequestBody(ctx context.Context, x *Exchange, body []byte, endOfStream bool) error
}

// ResponseHeadersHook runs on ProcessingRequest.response_headers.
// Exchange.ResponseStatus and ResponseHeaders are set. It is the place to
// ask for the response body (Exchange.WantResponseBody), and to replace the
// response (Respond) before it starts.
type ResponseHeadersHook interface {
	ResponseHeaders(ctx context.Context, x *Exchange) error
}

// ResponseBodyHook runs on each ProcessingRequest.response_body (only sent
// when the response body mode is not NONE). body must not be modified; copy
// it to keep it past the call.
type ResponseBodyHook interface {
	ResponseBody(ctx context.Context, x *Exchange, body []byte, endOfStream bool) error
}

// DoneHook runs once when the stream ends, however it ends (completed,
// immediate response, cancelled, protocol error), after the last reply was
// sent, for every stage of a stream whose request headers were seen. ctx
// carries the stream's values but is not cancelled with it, so end-of-stream
// work (storing a cached body) can finish; the stage must bound its own time,
// because Done runs on the stream's goroutine and delays its release.
type DoneHook interface {
	Done(ctx context.Context, x *Exchange)
}

// pipeline is a fixed list of stages with their hooks resolved once.
type pipeline struct {
	stages          []Stage
	requestHeaders  []named[RequestHeadersHook]
	requestBody     []named[RequestBodyHook]
	responseHeaders []named[ResponseHeadersHook]
	responseBody    []named[ResponseBodyHook]
	done            []named[DoneHook]
}

type named[H any] struct {
	name string
	hook H
}

func newPipeline(stages []Stage) (*pipeline, error) {
	p := &pipeline{stages: stages}
	seen := make(map[string]bool, len(stages))
	for _, s := range stages {
		if s == nil {
			return nil, errNilStage
		}
		n := s.Name()
		if !validLabel(n) {
			return nil, &stageNameError{name: n}
		}
		if seen[n] {
			return nil, &stageNameError{name: n, dup: true}
		}
		seen[n] = true
		if h, ok := s.(RequestHeadersHook); ok {
			p.requestHeaders = append(p.requestHeaders, named[RequestHeadersHook]{n, h})
		}
		if h, ok := s.(RequestBodyHook); ok {
			p.requestBody = append(p.requestBody, named[RequestBodyHook]{n, h})
		}
		if h, ok := s.(ResponseHeadersHook); ok {
			p.responseHeaders = append(p.responseHeaders, named[ResponseHeadersHook]{n, h})
		}
		if h, ok := s.(ResponseBodyHook); ok {
			p.responseBody = append(p.responseBody, named[ResponseBodyHook]{n, h})
		}
		if h, ok := s.(DoneHook); ok {
			p.done = append(p.done, named[DoneHook]{n, h})
		}
	}
	return p, nil
}
