package extproc

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluicehq/sluice/internal/header"
)

// modeState is the processing mode in force on one stream, as Envoy's
// decoding and encoding ProcessorStates hold it.
type modeState struct {
	reqHeader, resHeader, reqTrailer, resTrailer procmodev3.ProcessingMode_HeaderSendMode
	reqBody, resBody                             procmodev3.ProcessingMode_BodySendMode
}

func newModeState(pm *procmodev3.ProcessingMode) modeState {
	return modeState{
		reqHeader: pm.GetRequestHeaderMode(), resHeader: pm.GetResponseHeaderMode(),
		reqTrailer: pm.GetRequestTrailerMode(), resTrailer: pm.GetResponseTrailerMode(),
		reqBody: pm.GetRequestBodyMode(), resBody: pm.GetResponseBodyMode(),
	}
}

// proto spells out every field. ProcessingResponse.mode_override replaces
// the filter's mode for the rest of the request: body modes always apply
// (an unset body mode is NONE) and older Envoys also read DEFAULT header and
// trailer modes as sending headers and skipping trailers
// (ProcessorState::setProcessingMode), so nothing is left to a default.
func (m modeState) proto() *procmodev3.ProcessingMode {
	return &procmodev3.ProcessingMode{
		RequestHeaderMode: m.reqHeader, ResponseHeaderMode: m.resHeader,
		RequestBodyMode: m.reqBody, ResponseBodyMode: m.resBody,
		RequestTrailerMode: m.reqTrailer, ResponseTrailerMode: m.resTrailer,
	}
}

func fullDuplex(m procmodev3.ProcessingMode_BodySendMode) bool {
	return m == procmodev3.ProcessingMode_FULL_DUPLEX_STREAMED || m == procmodev3.ProcessingMode_GRPC
}

// stream is the server side of one ext_proc stream: the message order state
// machine and the Exchange its stages share. Used by one goroutine.
type stream struct {
	s   *Server
	ctx context.Context
	x   Exchange

	mode modeState
	// overrideIgnored: Envoy ignores mode_override on this stream
	// (send_body_without_waiting_for_header_response, or a FULL_DUPLEX_STREAMED
	// body mode in the filter config; ext_proc.cc onReceiveMessage).
	overrideIgnored bool
	observability   bool

	last                                     Phase // last message received, 0 before the first
	reqHeaders, reqEnded, resHeaders, resEnd bool
	responseOnly                             bool // response headers without request headers
	reqBytes, resBytes                       int
	finished                                 bool   // immediate response sent: the stream is over
	complete                                 bool   // nothing more is owed to the exchange
	failedStage                              string // stage whose hook returned an error

	// Backing arrays for the reply actions, enough for the identity stage
	// without allocating.
	setBuf    [8]header.Field
	removeBuf [8]string
	valuesBuf [2]keyValue // Exchange.Set: the cache stage keeps its state there
}

func (s *Server) newStream(ctx context.Context) *stream {
	st := &stream{s: s, ctx: ctx, mode: s.mode}
	st.overrideIgnored = fullDuplex(s.mode.reqBody) || fullDuplex(s.mode.resBody)
	st.x.Route = OtherRoute
	st.x.resLimitFields, st.x.resLimitBytes = s.cfg.MaxResponseHeaders, s.cfg.MaxResponseHeadersKB*1024
	st.x.reqBodyMode, st.x.resBodyMode = BodyMode(s.mode.reqBody), BodyMode(s.mode.resBody)
	st.x.reply.set, st.x.reply.remove = st.setBuf[:0], st.removeBuf[:0]
	st.x.values = st.valuesBuf[:0]
	return st
}

// handle answers one ProcessingRequest. It returns the reply (exactly one
// per request, of the matching type, or an immediate response) or an error
// that ends the stream.
func (st *stream) handle(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	// protocol_config comes on the first message only; it carries the body
	// modes in force after per-route overrides.
	if pc := req.GetProtocolConfig(); pc != nil {
		st.mode.reqBody, st.mode.resBody = pc.GetRequestBodyMode(), pc.GetResponseBodyMode()
		st.x.reqBodyMode, st.x.resBodyMode = BodyMode(st.mode.reqBody), BodyMode(st.mode.resBody)
		if pc.GetSendBodyWithoutWaitingForHeaderResponse() || fullDuplex(st.mode.reqBody) || fullDuplex(st.mode.resBody) {
			st.overrideIgnored = true
		}
	}
	// observability_mode: Envoy ignores replies; the stages still observe.
	st.observability = req.GetObservabilityMode()
	if a := req.GetAttributes(); len(a) > 0 {
		if st.x.Attributes == nil {
			st.x.Attributes = make(map[string]*structpb.Struct, len(a))
		}
		for k, v := range a {
			st.x.Attributes[k] = v
		}
	}
	st.x.reply.reset()

	switch r := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		if st.last != 0 {
			return nil, st.outOfOrder(PhaseRequestHeaders)
		}
		return st.requestHeaders(r.RequestHeaders, req.GetMetadataContext())
	case *extprocv3.ProcessingRequest_RequestBody:
		if !st.reqStarted() || st.reqEnded {
			return nil, st.outOfOrder(PhaseRequestBody)
		}
		return st.body(PhaseRequestBody, r.RequestBody)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		if !st.reqStarted() || st.reqEnded {
			return nil, st.outOfOrder(PhaseRequestTrailers)
		}
		st.last, st.reqEnded, st.x.phase = PhaseRequestTrailers, true, PhaseRequestTrailers
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{},
		}}, nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		if st.resHeaders {
			return nil, st.outOfOrder(PhaseResponseHeaders)
		}
		return st.responseHeaders(r.ResponseHeaders)
	case *extprocv3.ProcessingRequest_ResponseBody:
		if !st.resStarted() || st.resEnd {
			return nil, st.outOfOrder(PhaseResponseBody)
		}
		return st.body(PhaseResponseBody, r.ResponseBody)
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		if !st.resStarted() || st.resEnd {
			return nil, st.outOfOrder(PhaseResponseTrailers)
		}
		st.last, st.resEnd, st.x.phase = PhaseResponseTrailers, true, PhaseResponseTrailers
		st.x.End = st.s.now()
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{},
		}}, nil
	default:
		// A message with no request set (for example a flow-control-only
		// message of FULL_DUPLEX_STREAMED, which Sluice does not use) or one
		// from a newer proto.
		return nil, fmt.Errorf("%w after %s", errUnknown, st.last)
	}
}

// reqStarted reports whether request body and trailer messages may come:
// after the request headers, or at once when the filter is configured not to
// send them (request_header_mode SKIP: ext_proc.cc decodeHeaders skips
// onHeaders and onData opens the stream for the first body chunk; "Which
// ones are set for a particular HTTP request/response depend on the
// processing mode", ProcessingRequest.request). resStarted is the same for
// the response.
func (st *stream) reqStarted() bool {
	return st.reqHeaders || st.mode.reqHeader == procmodev3.ProcessingMode_SKIP
}

func (st *stream) resStarted() bool {
	return st.resHeaders || st.mode.resHeader == procmodev3.ProcessingMode_SKIP
}

func (st *stream) outOfOrder(got Phase) error {
	return fmt.Errorf("%w: %s after %s", errOutOfOrder, got, st.last)
}

func (st *stream) requestHeaders(h *extprocv3.HttpHeaders, md *corev3.Metadata) (*extprocv3.ProcessingResponse, error) {
	x := &st.x
	st.last, st.reqHeaders, st.reqEnded = PhaseRequestHeaders, true, h.GetEndOfStream()
	x.phase = PhaseRequestHeaders
	x.Start = st.s.now()
	x.RequestHeaders = headersFromProto(h.GetHeaders())
	x.RequestEndOfStream = h.GetEndOfStream()
	for _, f := range x.RequestHeaders {
		switch f.Name {
		case ":method":
			x.Method = f.Value
		case ":path":
			x.Path = f.Value
		case ":authority":
			x.Authority = f.Value
		case ":scheme":
			x.Scheme = f.Value
		}
	}
	x.Route = st.s.routes.match(x.Path)
	x.Metadata = md
	for _, hk := range st.s.pipe.requestHeaders {
		if stop, err := st.after(hk.name, hk.hook.RequestHeaders(st.ctx, x)); stop {
			if err != nil {
				return nil, err
			}
			break
		}
	}
	if x.reply.immediate == nil && !st.observability && st.overHeaderLimits() {
		x.respondedBy = "header_limits"
		x.Respond(http.StatusRequestHeaderFieldsTooLarge, header.List{{Name: "content-type", Value: "text/plain"}},
			[]byte("request header fields too large\n"))
	}
	return st.headersReply(true), nil
}

// overHeaderLimits reports whether the request headers, once Envoy applied
// the queued mutation, would exceed the connection manager's limits, so
// that Envoy would refuse the mutation and answer 500
// (MutationUtils::headerMutationResultCheck counts every entry, pseudo-
// headers included, and their bytes). Without a mutation Envoy checks
// nothing.
func (st *stream) overHeaderLimits() bool {
	r := &st.x.reply
	if len(r.set) == 0 && len(r.remove) == 0 {
		return false
	}
	count, size := measure(r.forwarded(st.x.RequestHeaders))
	return count > st.s.cfg.MaxRequestHeaders || size > st.s.cfg.MaxRequestHeadersKB*1024
}

// measure counts fields and their bytes as Envoy's HeaderMap::size and
// byteSize do for its header limits.
func measure(fields iter.Seq[header.Field]) (count, size int) {
	for h := range fields {
		count++
		size += len(h.Name) + len(h.Value)
	}
	return count, size
}

func (st *stream) responseHeaders(h *extprocv3.HttpHeaders) (*extprocv3.ProcessingResponse, error) {
	x := &st.x
	now := st.s.now()
	st.last, st.resHeaders, st.resEnd = PhaseResponseHeaders, true, h.GetEndOfStream()
	x.phase = PhaseResponseHeaders
	x.ResponseStart, x.End = now, now
	x.ResponseHeaders = headersFromProto(h.GetHeaders())
	x.ResponseEndOfStream = h.GetEndOfStream()
	x.ResponseStatus, _ = strconv.Atoi(x.ResponseHeaders.Get(":status"))
	st.complete = true
	if !st.reqHeaders {
		// A local reply of a filter before ext_proc (jwt_authn's 401, say)
		// runs through every encoder filter (FilterManager::
		// sendLocalReplyViaFilterChain), so ext_proc opens a stream with the
		// response headers. No stage saw a request: answer CONTINUE.
		st.responseOnly = true
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extprocv3.HeadersResponse{},
		}}, nil
	}
	for _, hk := range st.s.pipe.responseHeaders {
		if stop, err := st.after(hk.name, hk.hook.ResponseHeaders(st.ctx, x)); stop {
			if err != nil {
				return nil, err
			}
			break
		}
	}
	if x.reply.immediate == nil && !st.observability {
		st.fitResponseLimits()
	}
	return st.headersReply(false), nil
}

// fitResponseLimits leaves out of the reply the response fields that only
// inform (names the response does not carry yet that stages set, such as
// cache-status and x-cache; in a replacement, the fields its Optional names
// and the upstream fields its Keep would leave) when, with them, the
// response header map would exceed the upstream limits: Envoy checks a
// mutation's result against the map's own maxHeadersCount and maxHeadersKb,
// set from the cluster's max_headers_count and max_response_headers_kb, and
// answers 500 for a response the origin sent correctly (MutationUtils::
// headerMutationResultCheck). Replaced and removed fields stay: they add no
// line, and a replacement's own fields are the response. Nothing is logged:
// such an origin would otherwise log a line per response, and the answer is
// the origin's, complete.
func (st *stream) fitResponseLimits() {
	r := &st.x.reply
	if len(r.set) == 0 && r.replace == nil {
		return
	}
	if st.withinResponseLimits() {
		return
	}
	present := st.x.ResponseHeaders.Has
	if rp := r.replace; rp != nil {
		present = rp.has
		if rp.Optional != nil {
			h := make(header.List, 0, len(rp.Headers))
			for _, f := range rp.Headers {
				if !rp.Optional(strings.ToLower(f.Name)) {
					h = append(h, f)
				}
			}
			rp.Headers = h
		}
		rp.Keep = nil
	}
	kept := r.set[:0]
	for _, h := range r.set {
		if present(h.Name) {
			kept = append(kept, h)
		}
	}
	clear(r.set[len(kept):])
	r.set = kept
}

// withinResponseLimits reports whether the response header map, once Envoy
// applied the reply, keeps within the upstream limits, counting fields and
// bytes as HeaderMap::size and byteSize do.
func (st *stream) withinResponseLimits() bool {
	count, size := st.responseResult()
	return count <= st.s.cfg.MaxResponseHeaders && size <= st.s.cfg.MaxResponseHeadersKB*1024
}

// responseResult counts the fields and bytes of the response header map
// once Envoy applied the reply.
func (st *stream) responseResult() (count, size int) {
	r := &st.x.reply
	rp := r.replace
	if rp == nil {
		return measure(r.forwarded(st.x.ResponseHeaders))
	}
	// What replacement sends: ":status", the replacement's fields, the
	// stages' other sets, and the upstream fields Keep leaves.
	count, size = 1, len(":status")+len(strconv.Itoa(rp.Status))
	for _, h := range rp.Headers {
		count++
		size += len(h.Name) + len(h.Value)
	}
	for _, h := range r.set {
		if !rp.has(h.Name) {
			count++
			size += len(h.Name) + len(h.Value)
		}
	}
	if rp.Keep != nil {
		for _, h := range st.x.ResponseHeaders {
			if rp.Keep(h.Name) && !rp.has(h.Name) && !r.setsName(h.Name) && !containsName(r.remove, h.Name) {
				count++
				size += len(h.Name) + len(h.Value)
			}
		}
	}
	return count, size
}

func (st *stream) body(p Phase, b *extprocv3.HttpBody) (*extprocv3.ProcessingResponse, error) {
	x := &st.x
	st.last = p
	x.phase = p
	limit := st.s.cfg.MaxBodyBytes
	request := p == PhaseRequestBody
	if request {
		st.reqBytes += len(b.GetBody())
		st.reqEnded = b.GetEndOfStream()
		if st.reqBytes > limit {
			return nil, fmt.Errorf("%w: request body over %d bytes", errBodyTooLarge, limit)
		}
	} else {
		st.resBytes += len(b.GetBody())
		st.resEnd = b.GetEndOfStream()
		x.End = st.s.now()
		if st.resBytes > limit {
			return nil, fmt.Errorf("%w: response body over %d bytes", errBodyTooLarge, limit)
		}
	}
	// Stages see bodies only of messages whose headers they saw (not of a
	// response-only stream, nor of a part whose headers the filter skips).
	if st.reqHeaders && (request || st.resHeaders) {
		var err error
		if request {
			for _, hk := range st.s.pipe.requestBody {
				if stop, e := st.after(hk.name, hk.hook.RequestBody(st.ctx, x, b.GetBody(), b.GetEndOfStream())); stop {
					err = e
					break
				}
			}
		} else {
			for _, hk := range st.s.pipe.responseBody {
				if stop, e := st.after(hk.name, hk.hook.ResponseBody(st.ctx, x, b.GetBody(), b.GetEndOfStream())); stop {
					err = e
					break
				}
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if x.reply.immediate != nil {
		return st.immediateReply(), nil
	}
	br := &extprocv3.BodyResponse{Response: st.common(request)}
	bodyMode := st.mode.resBody
	if request {
		bodyMode = st.mode.reqBody
	}
	if fullDuplex(bodyMode) {
		// FULL_DUPLEX_STREAMED (and GRPC): Envoy drains each chunk it sends
		// and passes on only what comes back in streamed_response, which
		// these modes require (BodyMutation.streamed_response); a plain
		// CONTINUE is a spurious message to it (ProcessorState::
		// handleStreamedBodyCallback) and fails the request. Sluice does not
		// change bodies: every chunk goes back as it came, end_of_stream
		// included (StreamedBodyResponse.end_of_stream: the server echoes
		// the end_of_stream of the body message it answers).
		if br.Response == nil {
			br.Response = &extprocv3.CommonResponse{}
		}
		br.Response.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
			StreamedResponse: &extprocv3.StreamedBodyResponse{
				Body: b.GetBody(), EndOfStream: b.GetEndOfStream(),
				// GRPC mode only (not implemented in Envoy yet): a half-close
				// without a message, and a compressed message, stay so.
				EndOfStreamWithoutMessage: b.GetEndOfStreamWithoutMessage(),
				GrpcMessageCompressed:     b.GetGrpcMessageCompressed(),
			},
		}}
	}
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}}, nil
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}}, nil
}

// after inspects a hook's result: stop reports whether later stages must be
// skipped for this message (an error, or a Respond).
func (st *stream) after(name string, err error) (stop bool, _ error) {
	if err != nil {
		if st.ctx.Err() != nil {
			return true, fmt.Errorf("%w: stage %s: %w", errCancelled, name, err)
		}
		st.failedStage = name
		return true, fmt.Errorf("%w: %s: %w", errStage, name, err)
	}
	if st.x.reply.immediate != nil {
		if st.observability {
			// Envoy ignores every reply in observability mode, and ending
			// the stream early would only cut the observation short.
			st.x.reply.immediate = nil
			return false, nil
		}
		st.x.respondedBy = name
		return true, nil
	}
	return false, nil
}

// headersMsg holds the messages of a reply to headers, allocated together (one allocation
// where five separate ones were: a stream sends two such replies).
type headersMsg struct {
	resp   extprocv3.ProcessingResponse
	req    extprocv3.ProcessingResponse_RequestHeaders
	res    extprocv3.ProcessingResponse_ResponseHeaders
	hr     extprocv3.HeadersResponse
	common extprocv3.CommonResponse
	mut    extprocv3.HeaderMutation
}

// headersReply builds the reply to request or response headers.
func (st *stream) headersReply(request bool) *extprocv3.ProcessingResponse {
	if st.x.reply.immediate != nil {
		return st.immediateReply()
	}
	m := &headersMsg{}
	m.hr.Response = st.fillCommon(request, &m.common, &m.mut)
	if !request && st.x.reply.replace != nil && !st.observability {
		m.hr.Response = st.replacement()
	}
	m.resp.ModeOverride = st.modeOverride()
	if request {
		m.req.RequestHeaders = &m.hr
		m.resp.Response = &m.req
	} else {
		m.res.ResponseHeaders = &m.hr
		m.resp.Response = &m.res
	}
	return &m.resp
}

// common turns the queued header actions into a CommonResponse, or nil for
// a plain CONTINUE.
func (st *stream) common(request bool) *extprocv3.CommonResponse {
	if r := &st.x.reply; len(r.set) == 0 && len(r.remove) == 0 {
		return nil
	}
	return st.fillCommon(request, &extprocv3.CommonResponse{}, &extprocv3.HeaderMutation{})
}

// fillCommon is common writing into c and m, which it returns (c) or leaves unused (nil).
func (st *stream) fillCommon(request bool, c *extprocv3.CommonResponse, m *extprocv3.HeaderMutation) *extprocv3.CommonResponse {
	r := &st.x.reply
	if len(r.set) == 0 && len(r.remove) == 0 {
		// CommonResponse.clear_route_cache is honoured only with a header
		// mutation in the same response (DESIGN.md): nothing to send.
		return nil
	}
	fillHeaderMutation(m, r.set, r.remove)
	c.HeaderMutation = m
	// CommonResponse.clear_route_cache has no effect on responses.
	c.ClearRouteCache = request && r.clearRoute
	return c
}

// modeOverride returns the mode_override for a header reply when a stage
// asked for a body mode different from the one in force, else nil.
func (st *stream) modeOverride() *procmodev3.ProcessingMode {
	r := &st.x.reply
	next := st.mode
	if r.wantReqBody != nil {
		next.reqBody = procmodev3.ProcessingMode_BodySendMode(*r.wantReqBody)
	}
	if r.wantResBody != nil {
		next.resBody = procmodev3.ProcessingMode_BodySendMode(*r.wantResBody)
	}
	if next == st.mode || st.observability {
		return nil
	}
	if st.overrideIgnored {
		st.x.drop("mode_override: Envoy ignores it on this stream (full duplex or send_body_without_waiting_for_header_response)")
		return nil
	}
	st.mode = next
	st.x.reqBodyMode, st.x.resBodyMode = BodyMode(next.reqBody), BodyMode(next.resBody)
	return next.proto()
}

// replacement builds the CONTINUE_AND_REPLACE a stage asked for with
// ReplaceResponse: ":status", the stage's fields (and any other stage's
// queued ones) set, every other upstream field removed, the body replaced.
func (st *stream) replacement() *extprocv3.CommonResponse {
	rp := st.x.reply.replace
	r := &st.x.reply
	set := st.appendValid(header.List{{Name: ":status", Value: strconv.Itoa(rp.Status)}}, rp.Headers, "replace response")
	names := map[string]bool{}
	for _, h := range set[1:] {
		names[h.Name] = true
	}
	for _, h := range r.set {
		if !names[h.Name] {
			set = append(set, h)
			names[h.Name] = true
		}
	}
	var remove []string
	for _, h := range st.x.ResponseHeaders {
		if !names[h.Name] && validHeaderName(h.Name) && (rp.Keep == nil || !rp.Keep(h.Name)) && !slices.Contains(remove, h.Name) {
			remove = append(remove, h.Name)
		}
	}
	for _, n := range r.remove {
		if !names[n] && !slices.Contains(remove, n) {
			remove = append(remove, n)
		}
	}
	cr := &extprocv3.CommonResponse{
		Status:         extprocv3.CommonResponse_CONTINUE_AND_REPLACE,
		HeaderMutation: headerMutation(set, remove),
	}
	if rp.Body != nil || !st.x.ResponseEndOfStream {
		if len(rp.Body) == 0 {
			cr.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: true}}
		} else {
			cr.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: rp.Body}}
		}
	}
	// Envoy sends nothing more of the response (body mode NONE): the
	// exchange is over once this reply is sent.
	st.x.ResponseStatus = rp.Status
	r.wantResBody = nil
	return cr
}

// immediateMsg holds the messages of an ImmediateResponse, allocated together.
type immediateMsg struct {
	resp   extprocv3.ProcessingResponse
	wrap   extprocv3.ProcessingResponse_ImmediateResponse
	ir     extprocv3.ImmediateResponse
	status typev3.HttpStatus
	mut    extprocv3.HeaderMutation
}

// immediateReply builds the ImmediateResponse a stage asked for and marks
// the stream finished: Envoy sends the local reply, ignores later messages
// and closes the stream, so the server returns.
func (st *stream) immediateReply() *extprocv3.ProcessingResponse {
	im := st.x.reply.immediate
	st.finished, st.complete = true, true
	st.x.ResponseStatus = im.status
	st.x.End = st.s.now()
	m := &immediateMsg{}
	m.status.Code = typev3.StatusCode(im.status)
	m.ir.Status = &m.status
	m.ir.Body = im.body
	// Shown by %RESPONSE_CODE_DETAILS% in Envoy's access log; Envoy
	// replaces whitespace, stage names have none.
	m.ir.Details = "sluice_" + st.x.respondedBy
	// A cache hit's fields are lower-case and valid already: sent as they
	// are, without a filtered copy.
	set := im.headers
	if !sendable(set) {
		set = st.appendValid(make(header.List, 0, len(im.headers)), im.headers, "respond")
	}
	if len(set) > 0 {
		fillHeaderMutation(&m.mut, set, nil)
		m.ir.Headers = &m.mut
	}
	m.wrap.ImmediateResponse = &m.ir
	m.resp.Response = &m.wrap
	return &m.resp
}

// sendable reports whether every field of hs has a lower-case name and
// both name and value pass validHeaderName and validHeaderValue.
// appendValid appends the fields of hs to dst with lower-cased names. Fields Envoy would refuse
// (an invalid name or value) are left out and noted as dropped by what.
func (st *stream) appendValid(dst, hs header.List, what string) header.List {
	for _, h := range hs {
		name := strings.ToLower(h.Name)
		if !validHeaderName(name) || !validHeaderValue(h.Value) {
			st.x.drop(what + ": header " + name + " dropped")
			continue
		}
		dst = append(dst, header.Field{Name: name, Value: h.Value})
	}
	return dst
}

func sendable(hs header.List) bool {
	for _, h := range hs {
		if !validHeaderName(h.Name) || !validHeaderValue(h.Value) || hasUpper(h.Name) {
			return false
		}
	}
	return true
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// done runs the DoneHooks once the stream is over.
func (st *stream) done() {
	if !st.reqHeaders {
		return
	}
	if st.x.End.IsZero() {
		st.x.End = st.s.now()
	}
	st.x.phase = PhaseDone
	ctx := context.WithoutCancel(st.ctx)
	for _, hk := range st.s.pipe.done {
		hk.hook.Done(ctx, &st.x)
	}
}

func (r *pendingReply) reset() {
	*r = pendingReply{set: r.set[:0], remove: r.remove[:0]}
}

// headersFromProto reads Envoy's header map: each value is in raw_value
// (HttpHeaders.headers; the default since envoy.reloadable_features.
// send_header_raw_value), falling back to value for older senders. The
// values share one allocation.
func headersFromProto(hm *corev3.HeaderMap) header.List {
	hs := hm.GetHeaders()
	n := 0
	for _, h := range hs {
		n += len(h.GetRawValue())
	}
	var b strings.Builder
	b.Grow(n)
	for _, h := range hs {
		b.Write(h.GetRawValue())
	}
	all := b.String()
	out := make(header.List, len(hs))
	off := 0
	for i, h := range hs {
		v := h.GetValue()
		if raw := h.GetRawValue(); len(raw) > 0 {
			v = all[off : off+len(raw)]
			off += len(raw)
		}
		out[i] = header.Field{Name: strings.ToLower(h.GetKey()), Value: v}
	}
	return out
}

// headerMutation writes set and remove as a HeaderMutation. Values go in
// raw_value only: Envoy rejects a HeaderValue with both value and raw_value
// (the whole reply then becomes a 500) and, reading raw_value, turns a
// value-only mutation into an empty header (envoy#31555).
//
// The first value of a name replaces what is there: append_action
// OVERWRITE_IF_EXISTS_OR_ADD, which Envoys honouring append_action apply and
// older ones, reading only the append field (default false in
// HeaderMutation), treat as a replace as well. Further values of the same
// name (only in immediate responses) are appended with append: true, which
// both read as append.
func headerMutation(set header.List, remove []string) *extprocv3.HeaderMutation {
	m := &extprocv3.HeaderMutation{}
	fillHeaderMutation(m, set, remove)
	return m
}

// setHeader is one header to set: the option and the value it points to, allocated together.
type setHeader struct {
	opt corev3.HeaderValueOption
	val corev3.HeaderValue
}

// fillHeaderMutation is headerMutation writing into m.
func fillHeaderMutation(m *extprocv3.HeaderMutation, set header.List, remove []string) {
	if len(remove) > 0 {
		m.RemoveHeaders = append([]string(nil), remove...)
	}
	if len(set) == 0 {
		return
	}
	// One allocation each for the options with their values, the pointers to
	// them and the bytes: the messages are never copied, only pointed to.
	hs := make([]setHeader, len(set))
	n := 0
	for _, h := range set {
		n += len(h.Value)
	}
	buf := make([]byte, 0, n)
	m.SetHeaders = make([]*corev3.HeaderValueOption, len(set))
	for i, h := range set {
		start := len(buf)
		buf = append(buf, h.Value...)
		o := &hs[i]
		o.val.Key = h.Name
		o.val.RawValue = buf[start:len(buf):len(buf)]
		o.opt.Header = &o.val
		if seenName(set[:i], h.Name) {
			o.opt.Append = wrapperspb.Bool(true)
		} else {
			o.opt.AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		}
		m.SetHeaders[i] = &o.opt
	}
}

func seenName(hs header.List, name string) bool {
	for _, h := range hs {
		if h.Name == name {
			return true
		}
	}
	return false
}

var errCancelled = errors.New("extproc: stream cancelled")
