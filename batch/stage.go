package batch

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/internal/header"
)

// Stage answers batch requests in the ext_proc pipeline (extproc.WithStages).
// Place it after identity (extproc.New puts identity first) and before the
// cache, so the batch request itself is never looked up or stored; each
// sub-request then comes back through Envoy and every stage, cache included.
//
//   - request headers of a request to Config.BatchPath (any ASCII case, one
//     optional trailing slash: the paths envoy.yaml's batch route matches
//     after Envoy's normalize_path and merge_slashes): a request carrying
//     x-sluice-batch (a sub-request, or a client forging the marker) is
//     answered 400 nestedBatch; a method other than POST 405; one without a
//     client address (x-envoy-external-address, which Envoy's client-facing
//     listener sets with use_remote_address) 500 noClientAddress, since its
//     items could only be limited as Sluice's own address; otherwise the
//     stage asks for the body BUFFERED (a no-op when envoy.yaml's
//     ExtProcPerRoute already does: Exchange.RequestBodyMode reports it from
//     protocol_config) and marks the exchange.
//   - request body: chunks are collected up to MaxRequestBytes (413 over
//     it), so STREAMED delivery also works; at end of stream the stage asks
//     Envoy for MaxMessageTimeout (override_message_timeout), runs the
//     batch within Deadline (within 150 ms when Envoy cannot extend: the
//     default message_timeout is 200 ms) and answers with Respond.
//
// Stage is safe for concurrent use.
type Stage struct {
	r   *Runner
	log *slog.Logger
}

var (
	_ extproc.RequestHeadersHook = (*Stage)(nil)
	_ extproc.RequestBodyHook    = (*Stage)(nil)
)

// shortDeadline bounds a batch when Envoy's message timeout could not be
// extended (message_timeout default 200 ms).
const shortDeadline = 150 * time.Millisecond

// NewStage returns the batch stage running batches with r, which must
// outlive the ext_proc server. log may be nil.
func NewStage(r *Runner, log *slog.Logger) *Stage {
	if r == nil {
		panic("batch: NewStage needs a Runner")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Stage{r: r, log: log}
}

// Name implements extproc.Stage.
func (*Stage) Name() string { return "batch" }

// exchangeKey holds the *pending body of a batch exchange (Exchange.Set).
type exchangeKey struct{}

type pending struct {
	body   []byte
	client string // the client's address
}

var jsonHeaders = header.List{{Name: "content-type", Value: "application/json"}, {Name: "cache-control", Value: "no-store"}}

// RequestHeaders implements extproc.RequestHeadersHook.
func (s *Stage) RequestHeaders(ctx context.Context, x *extproc.Exchange) error {
	if !s.IsBatchPath(x.Path) {
		return nil
	}
	if x.RequestHeaders.Get(HeaderBatch) != "" {
		s.respondError(x, &Error{Status: http.StatusBadRequest, Code: CodeNestedBatch, Message: "a batch cannot contain or be sent by a batch"})
		return nil
	}
	if x.Method != http.MethodPost {
		e := &Error{Status: http.StatusMethodNotAllowed, Code: CodeInvalidRequest, Message: "use POST for a batch"}
		x.Respond(e.Status, append(header.List{{Name: "allow", Value: "POST"}}, jsonHeaders...), errorJSON(e))
		return nil
	}
	client, err := netip.ParseAddr(x.RequestHeaders.Get("x-envoy-external-address"))
	if err != nil || client.Zone() != "" {
		s.log.WarnContext(ctx, "batch refused: no x-envoy-external-address on the batch request; Envoy's client-facing listener must set use_remote_address")
		s.respondError(x, &Error{Status: http.StatusInternalServerError, Code: CodeNoClientAddress, Message: "the batch cannot be limited as its client"})
		return nil
	}
	if x.RequestEndOfStream || x.RequestHeaders.Get("content-length") == "0" {
		// No body message will follow (end_of_stream on the headers, e.g. an
		// HTTP/2 POST without DATA frames): answer here rather than let the
		// request reach the application.
		s.respondError(x, &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: "empty batch body"})
		return nil
	}
	if x.RequestBodyMode() != extproc.BodyBuffered {
		x.WantRequestBody(extproc.BodyBuffered)
	}
	x.Set(exchangeKey{}, &pending{client: client.String()})
	return nil
}

// IsBatchPath reports whether the request path (query ignored) is the batch
// endpoint: Config.BatchPath in any ASCII case, with or without one
// trailing slash. envoy.yaml's batch route (safe_regex "(?i)/api/v1/batch/?")
// matches the same set, so a spelling the stage answers never reaches the
// application.
func (s *Stage) IsBatchPath(path string) bool {
	path, _, _ = strings.Cut(path, "?")
	return asciiEqualFold(strings.TrimSuffix(path, "/"), strings.TrimSuffix(s.r.cfg.BatchPath, "/"))
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// RequestBody implements extproc.RequestBodyHook.
func (s *Stage) RequestBody(ctx context.Context, x *extproc.Exchange, body []byte, endOfStream bool) error {
	p, ok := x.Get(exchangeKey{}).(*pending)
	if !ok {
		return nil
	}
	if len(p.body)+len(body) > s.r.cfg.MaxRequestBytes {
		x.Set(exchangeKey{}, nil)
		s.respondError(x, &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeRequestTooLarge, Message: "batch body too large"})
		return nil
	}
	p.body = append(p.body, body...)
	if !endOfStream {
		return nil
	}
	x.Set(exchangeKey{}, nil)
	deadline := s.r.cfg.Deadline
	if !x.ExtendMessageTimeout(s.r.cfg.MaxMessageTimeout) {
		deadline = min(deadline, shortDeadline)
	}
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	start := time.Now()
	status, reply := s.r.Handle(ctx, Parent{Header: httpHeader(x.RequestHeaders), Host: x.Authority, ClientAddress: p.client}, p.body)
	s.log.DebugContext(ctx, "batch answered", "tenant", x.Tenant, "status", status, "bytes", len(reply), "duration", time.Since(start))
	x.Respond(status, jsonHeaders, reply)
	return nil
}

func (s *Stage) respondError(x *extproc.Exchange, e *Error) {
	x.Respond(e.Status, jsonHeaders, errorJSON(e))
}

// httpHeader converts Envoy's header list, pseudo-headers left out.
func httpHeader(hs header.List) http.Header {
	h := make(http.Header, len(hs))
	for _, f := range hs {
		if strings.HasPrefix(f.Name, ":") {
			continue
		}
		h.Add(f.Name, f.Value)
	}
	return h
}
