package emulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/sluicehq/sluice/internal/header"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// defaultMessageTimeout is ExternalProcessor.message_timeout's default.
const defaultMessageTimeout = 200 * time.Millisecond

// streamedChunk is the size of the body pieces sent in STREAMED mode; Envoy
// sends what each network read delivered, at most min(buffer limit, 16 KiB)
// (Route.request_body_buffer_limit, which also sizes flow control chunks).
const streamedChunk = 16 * 1024

// extProcConfig is the ext_proc filter's config. Immutable; safe for
// concurrent use.
type extProcConfig struct {
	cfg               *extprocv3.ExternalProcessor
	name              string
	checker           *checker
	messageTimeout    time.Duration
	maxMessageTimeout time.Duration
	statusOnError     int
}

func newExtProcConfig(c *extprocv3.ExternalProcessor, name string) (*extProcConfig, error) {
	switch {
	case c.GetHttpService() != nil, c.GetObservabilityMode(), c.GetSendBodyWithoutWaitingForHeaderResponse(),
		len(c.GetRequestAttributes()) > 0, len(c.GetResponseAttributes()) > 0, c.GetProcessingRequestModifier() != nil,
		c.GetOnProcessingResponse() != nil, c.GetForwardRules() != nil:
		return nil, errors.New("ext_proc: http_service, observability_mode, send_body_without_waiting_for_header_response, attributes, forward_rules and extensions are not emulated")
	}
	if mo := c.GetMetadataOptions(); mo != nil {
		if mo.GetReceivingNamespaces() != nil || mo.GetClusterMetadataForwardingNamespaces() != nil || len(mo.GetForwardingNamespaces().GetTyped()) > 0 {
			return nil, errors.New("ext_proc: metadata_options other than forwarding_namespaces.untyped are not emulated")
		}
	}
	if err := checkMode(c.GetProcessingMode()); err != nil {
		return nil, fmt.Errorf("ext_proc: %w", err)
	}
	for _, m := range c.GetAllowedOverrideModes() {
		if err := checkMode(m); err != nil {
			return nil, fmt.Errorf("ext_proc: allowed_override_modes: %w", err)
		}
	}
	ck, err := newChecker(c.GetMutationRules())
	if err != nil {
		return nil, fmt.Errorf("ext_proc: %w", err)
	}
	out := &extProcConfig{cfg: c, name: name, checker: ck, messageTimeout: defaultMessageTimeout, statusOnError: http.StatusInternalServerError}
	if d := c.GetMessageTimeout(); d != nil {
		out.messageTimeout = d.AsDuration()
	}
	if d := c.GetMaxMessageTimeout(); d != nil {
		out.maxMessageTimeout = d.AsDuration()
	}
	// status_on_error: the status sent when the processor fails (default 500).
	if code := int(c.GetStatusOnError().GetCode()); code >= 400 {
		out.statusOnError = code
	}
	return out, nil
}

func checkMode(m *extprocv3.ProcessingMode) error {
	for _, b := range []extprocv3.ProcessingMode_BodySendMode{m.GetRequestBodyMode(), m.GetResponseBodyMode()} {
		switch b {
		case extprocv3.ProcessingMode_NONE, extprocv3.ProcessingMode_BUFFERED, extprocv3.ProcessingMode_STREAMED, extprocv3.ProcessingMode_BUFFERED_PARTIAL:
		default:
			return fmt.Errorf("body send mode %v is not emulated", b)
		}
	}
	return nil
}

// checkExtProcPerRoute rejects ExtProcPerRoute fields the emulator does not
// implement, for every route, virtual host and the route config.
func checkExtProcPerRoute(rc *routev3.RouteConfiguration, name string) error {
	check := func(where string, m map[string]*anypb.Any) error {
		a, ok := m[name]
		if !ok {
			return nil
		}
		var per extprocv3.ExtProcPerRoute
		if err := a.UnmarshalTo(&per); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		o := per.GetOverrides()
		if o.GetGrpcService() != nil || o.GetAsyncMode() || len(o.GetRequestAttributes()) > 0 || len(o.GetResponseAttributes()) > 0 ||
			o.GetMetadataOptions() != nil || o.GetProcessingRequestModifier() != nil {
			return fmt.Errorf("%s: ExtProcPerRoute overrides other than processing_mode, failure_mode_allow and grpc_initial_metadata are not emulated", where)
		}
		if o.GetProcessingMode() != nil {
			if err := checkMode(o.GetProcessingMode()); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		}
		return nil
	}
	if err := check("route_config", rc.GetTypedPerFilterConfig()); err != nil {
		return err
	}
	for _, vh := range rc.GetVirtualHosts() {
		if err := check("virtual host "+vh.GetName(), vh.GetTypedPerFilterConfig()); err != nil {
			return err
		}
		for _, rt := range vh.GetRoutes() {
			if err := check("route "+rt.GetName(), rt.GetTypedPerFilterConfig()); err != nil {
				return err
			}
		}
	}
	return nil
}

// modeState is one direction's ProcessingMode as ProcessorState keeps it.
type modeState struct {
	sendHeaders  bool
	sendTrailers bool
	body         extprocv3.ProcessingMode_BodySendMode
	// headersHeld: the headers wait for the body reply, so a body reply may
	// still mutate them (ProcessorState::headers_ is set).
	headersHeld bool
}

// setDecoding is DecodingProcessorState::setProcessingModeInternal: headers
// are sent unless SKIP, trailers only when SEND.
func (m *modeState) setDecoding(pm *extprocv3.ProcessingMode) {
	m.sendHeaders = pm.GetRequestHeaderMode() != extprocv3.ProcessingMode_SKIP
	m.sendTrailers = pm.GetRequestTrailerMode() == extprocv3.ProcessingMode_SEND
	m.body = pm.GetRequestBodyMode()
}

func (m *modeState) setEncoding(pm *extprocv3.ProcessingMode) {
	m.sendHeaders = pm.GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP
	m.sendTrailers = pm.GetResponseTrailerMode() == extprocv3.ProcessingMode_SEND
	m.body = pm.GetResponseBodyMode()
}

func (m *modeState) noExternalProcess() bool {
	return !m.sendHeaders && m.body == extprocv3.ProcessingMode_NONE && !m.sendTrailers
}

// shouldRemoveContentLength is ProcessorState::shouldRemoveContentLength:
// in the modes where the processor may change the body piecemeal, the
// content-length goes (unless allow_content_length_header).
func (m *modeState) shouldRemoveContentLength(allow bool) bool {
	if allow {
		return false
	}
	switch m.body {
	case extprocv3.ProcessingMode_STREAMED, extprocv3.ProcessingMode_BUFFERED_PARTIAL, extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		return true
	case extprocv3.ProcessingMode_BUFFERED:
		return !m.sendHeaders
	}
	return false
}

// msgKind names the ProcessingRequest/ProcessingResponse oneof cases.
type msgKind int

const (
	kindRequestHeaders msgKind = iota
	kindResponseHeaders
	kindRequestBody
	kindResponseBody
	kindRequestTrailers
	kindResponseTrailers
)

func (k msgKind) headers() bool { return k == kindRequestHeaders || k == kindResponseHeaders }

func responseKind(r *extprocsvc.ProcessingResponse) (msgKind, bool) {
	switch r.GetResponse().(type) {
	case *extprocsvc.ProcessingResponse_RequestHeaders:
		return kindRequestHeaders, true
	case *extprocsvc.ProcessingResponse_ResponseHeaders:
		return kindResponseHeaders, true
	case *extprocsvc.ProcessingResponse_RequestBody:
		return kindRequestBody, true
	case *extprocsvc.ProcessingResponse_ResponseBody:
		return kindResponseBody, true
	case *extprocsvc.ProcessingResponse_RequestTrailers:
		return kindRequestTrailers, true
	case *extprocsvc.ProcessingResponse_ResponseTrailers:
		return kindResponseTrailers, true
	}
	return 0, false
}

// extProcStream is one request's ext_proc filter (ext_proc.cc Filter) and
// its gRPC stream, opened at the first message. Used by the request's
// goroutine; the receive goroutine only forwards messages.
type extProcStream struct {
	s        *stream
	cfg      *extProcConfig
	dec, enc modeState
	failOpen bool
	// initialMetadata is the merged grpc_initial_metadata of the route's
	// ExtProcPerRoute, sent as the gRPC stream's request headers.
	initialMetadata []*corev3.HeaderValue
	// complete is processing_complete_: nothing more goes to the processor.
	complete bool
	merged   bool

	grpc         extprocsvc.ExternalProcessor_ProcessClient
	cancel       context.CancelFunc
	msgs         chan recvMsg
	done         chan struct{}
	protocolSent bool
	// sending is closed when the last Send returned.
	sending chan struct{}
	// respReplaced: CONTINUE_AND_REPLACE replaced the response body.
	respReplaced bool
}

type recvMsg struct {
	resp *extprocsvc.ProcessingResponse
	err  error
}

func newExtProcStream(s *stream) *extProcStream {
	e := &extProcStream{s: s, cfg: s.g.extProc, failOpen: s.g.extProc.cfg.GetFailureModeAllow()}
	e.dec.setDecoding(e.cfg.cfg.GetProcessingMode())
	e.enc.setEncoding(e.cfg.cfg.GetProcessingMode())
	return e
}

// outcome is the result of one message exchange: the matching reply, or a
// local reply to send instead, or neither (processing is complete: carry on
// without the processor).
type outcome struct {
	resp *extprocsvc.ProcessingResponse
	lr   *localReply
}

// mergePerRouteConfig applies ExtProcPerRoute from the route config, the
// virtual host and the route, most specific last (Filter::mergePerRouteConfig;
// FilterConfigPerRoute's merging constructor). It runs once, at
// decodeHeaders (or at encodeHeaders for a reply that never decoded), so a
// route re-selected after clear_route_cache does not change it.
func (e *extProcStream) mergePerRouteConfig() {
	if e.merged {
		return
	}
	e.merged = true
	s := e.s
	if s.route == nil {
		return
	}
	var (
		found    bool
		disabled bool
		mode     *extprocv3.ProcessingMode
		failOpen *bool
	)
	for _, m := range []map[string]*anypb.Any{s.g.settings.Routes.GetTypedPerFilterConfig(), s.vh.GetTypedPerFilterConfig(), s.route.GetTypedPerFilterConfig()} {
		a, ok := m[e.cfg.name]
		if !ok {
			continue
		}
		var per extprocv3.ExtProcPerRoute
		if err := a.UnmarshalTo(&per); err != nil {
			continue
		}
		found = true
		disabled = per.GetDisabled()
		if disabled {
			mode = nil
		} else if pm := per.GetOverrides().GetProcessingMode(); pm != nil {
			mode = pm
		}
		if v := per.GetOverrides().GetFailureModeAllow(); v != nil {
			b := v.GetValue()
			failOpen = &b
		}
		// mergeGrpcInitialMetadata: the less specific level's entries, each
		// replaced by a more specific one of the same key, or appended.
		for _, h := range per.GetOverrides().GetGrpcInitialMetadata() {
			i := slices.IndexFunc(e.initialMetadata, func(m *corev3.HeaderValue) bool { return m.GetKey() == h.GetKey() })
			if i >= 0 {
				e.initialMetadata[i] = h
			} else {
				e.initialMetadata = append(e.initialMetadata, h)
			}
		}
	}
	if !found {
		return
	}
	if disabled {
		// allDisabledMode(): both header modes SKIP, bodies NONE, trailers
		// not sent.
		off := &extprocv3.ProcessingMode{RequestHeaderMode: extprocv3.ProcessingMode_SKIP, ResponseHeaderMode: extprocv3.ProcessingMode_SKIP}
		e.dec.setDecoding(off)
		e.enc.setEncoding(off)
		return
	}
	if mode != nil {
		// overrides.processing_mode replaces the whole mode.
		e.dec.setDecoding(mode)
		e.enc.setEncoding(mode)
	}
	if failOpen != nil {
		e.failOpen = *failOpen
	}
}

// open starts the gRPC stream on first use (Filter::openStream). ok false
// means the outcome is final (the stream could not be opened).
func (e *extProcStream) open() (outcome, bool) {
	if e.grpc != nil {
		return outcome{}, true
	}
	client := e.s.g.opts.ExtProc
	if client == nil {
		// No peer: as if the cluster had no healthy host.
		return e.onGRPCError(status.Error(codes.Unavailable, "no healthy upstream")), false
	}
	ctx, cancel := context.WithCancel(e.s.ctx)
	for _, h := range e.initialMetadata {
		// Envoy adds them to the grpc_service's initial_metadata
		// (mergeHeaderValuesField): request headers of the stream.
		v := h.GetValue()
		if raw := h.GetRawValue(); len(raw) > 0 {
			v = string(raw)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, h.GetKey(), v)
	}
	// Opening may wait for a connection; bound it by message_timeout as
	// Envoy's timer bounds the first message.
	type opened struct {
		st  extprocsvc.ExternalProcessor_ProcessClient
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		st, err := client.Process(ctx)
		ch <- opened{st, err}
	}()
	var st extprocsvc.ExternalProcessor_ProcessClient
	timer := time.NewTimer(e.cfg.messageTimeout)
	defer timer.Stop()
	select {
	case o := <-ch:
		if o.err != nil {
			cancel()
			return e.onGRPCError(o.err), false
		}
		st = o.st
	case <-timer.C:
		cancel()
		<-ch
		return e.onMessageTimeout(), false
	}
	e.grpc, e.cancel = st, cancel
	e.msgs = make(chan recvMsg)
	e.done = make(chan struct{})
	go func() {
		defer close(e.done)
		for {
			m, err := st.Recv()
			select {
			case e.msgs <- recvMsg{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return outcome{}, true
}

// forwardedMetadata is the dynamic metadata of the namespaces listed in
// metadata_options.forwarding_namespaces.untyped, sent with every message
// (Filter::addDynamicMetadata).
func (e *extProcStream) forwardedMetadata() *corev3.Metadata {
	md := &corev3.Metadata{}
	for _, ns := range e.cfg.cfg.GetMetadataOptions().GetForwardingNamespaces().GetUntyped() {
		if st, ok := e.s.dynMeta[ns]; ok {
			if md.FilterMetadata == nil {
				md.FilterMetadata = map[string]*structpb.Struct{}
			}
			md.FilterMetadata[ns] = st
		}
	}
	return md
}

// close ends the gRPC stream, as ExternalProcessorStreamImpl::close resets
// it (graceful half-close is off by default). Processing is complete
// afterwards.
func (e *extProcStream) close() {
	e.complete = true
	if e.grpc == nil {
		return
	}
	e.cancel()
	if e.sending != nil {
		<-e.sending
		e.sending = nil
	}
	_ = e.grpc.CloseSend()
	<-e.done
	e.grpc = nil
}

// call sends one message and waits for its reply under message_timeout
// (ProcessorState::onStartProcessorCall), handling what arrives on the way:
// override_message_timeout, mode_override, a reply of the wrong type
// (spurious), an ImmediateResponse, the stream closing or failing.
// afterSend runs once the message is on the stream.
func (e *extProcStream) call(req *extprocsvc.ProcessingRequest, want msgKind, afterSend func()) outcome {
	if e.complete {
		return outcome{}
	}
	if o, ok := e.open(); !ok {
		return o
	}
	// The first message carries the protocol configuration
	// (Filter::encodeProtocolConfig); every message carries the (here empty)
	// forwarded metadata (Filter::addDynamicMetadata).
	if !e.protocolSent {
		req.ProtocolConfig = &extprocsvc.ProtocolConfiguration{RequestBodyMode: e.dec.body, ResponseBodyMode: e.enc.body}
		e.protocolSent = true
	}
	req.MetadataContext = e.forwardedMetadata()
	// Send runs aside so that message_timeout also bounds a send blocked by
	// flow control; a failed Send surfaces as the stream's error on Recv.
	sent := make(chan struct{})
	e.sending = sent
	go func(st extprocsvc.ExternalProcessor_ProcessClient) {
		defer close(sent)
		_ = st.Send(req)
	}(e.grpc)
	if afterSend != nil {
		afterSend()
	}
	timer := time.NewTimer(e.cfg.messageTimeout)
	defer timer.Stop()
	newTimeout := false
	for {
		select {
		case m := <-e.msgs:
			if m.err != nil {
				return e.onGRPCError(m.err)
			}
			r := m.resp
			// override_message_timeout: restarts the timer once per message,
			// if 1 ms <= value <= max_message_timeout (Filter::onNewTimeout,
			// ProcessorState::restartMessageTimer). Nothing else in the
			// message is used.
			if r.GetOverrideMessageTimeout() != nil {
				d := r.GetOverrideMessageTimeout().AsDuration()
				if !newTimeout && d >= time.Millisecond && d <= e.cfg.maxMessageTimeout {
					timer.Reset(d)
					newTimeout = true
				}
				continue
			}
			if want.headers() && r.GetModeOverride() != nil {
				e.overrideMode(r.GetModeOverride())
			}
			if k, ok := responseKind(r); ok && k == want {
				<-sent // the reply proves the message was read
				e.sending = nil
				return outcome{resp: r}
			}
			if ir := r.GetImmediateResponse(); ir != nil && !e.cfg.cfg.GetDisableImmediateResponse() {
				// The stream ends; later messages are ignored
				// (Filter::onReceiveMessage, kImmediateResponse).
				e.close()
				return outcome{lr: e.immediateResponse(ir)}
			}
			return e.spurious(r)
		case <-timer.C:
			return e.onMessageTimeout()
		case <-e.s.ctx.Done():
			// The client went away; Envoy would destroy the filter.
			e.close()
			return outcome{}
		}
	}
}

// overrideMode applies ProcessingResponse.mode_override when
// allow_mode_override is set, to a reply to a headers message, unless a
// FULL_DUPLEX_STREAMED mode is configured; header and trailer modes left
// DEFAULT keep the filter config's (not the route's) value, body modes always
// apply; allowed_override_modes, when set, must contain the result
// (Filter::onReceiveMessage, effectiveModeOverride).
func (e *extProcStream) overrideMode(m *extprocv3.ProcessingMode) {
	c := e.cfg.cfg
	base := c.GetProcessingMode()
	if !c.GetAllowModeOverride() || base.GetRequestBodyMode() == extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED ||
		base.GetResponseBodyMode() == extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		return
	}
	eff := &extprocv3.ProcessingMode{
		RequestHeaderMode:   base.GetRequestHeaderMode(),
		ResponseHeaderMode:  base.GetResponseHeaderMode(),
		RequestTrailerMode:  base.GetRequestTrailerMode(),
		ResponseTrailerMode: base.GetResponseTrailerMode(),
		RequestBodyMode:     m.GetRequestBodyMode(),
		ResponseBodyMode:    m.GetResponseBodyMode(),
	}
	if m.GetRequestHeaderMode() != extprocv3.ProcessingMode_DEFAULT {
		eff.RequestHeaderMode = m.GetRequestHeaderMode()
	}
	if m.GetResponseHeaderMode() != extprocv3.ProcessingMode_DEFAULT {
		eff.ResponseHeaderMode = m.GetResponseHeaderMode()
	}
	if m.GetRequestTrailerMode() != extprocv3.ProcessingMode_DEFAULT {
		eff.RequestTrailerMode = m.GetRequestTrailerMode()
	}
	if m.GetResponseTrailerMode() != extprocv3.ProcessingMode_DEFAULT {
		eff.ResponseTrailerMode = m.GetResponseTrailerMode()
	}
	if allowed := c.GetAllowedOverrideModes(); len(allowed) > 0 {
		ok := false
		for _, a := range allowed {
			// request_header_mode is not compared.
			if eff.GetRequestBodyMode() == a.GetRequestBodyMode() && eff.GetRequestTrailerMode() == a.GetRequestTrailerMode() &&
				eff.GetResponseHeaderMode() == a.GetResponseHeaderMode() && eff.GetResponseBodyMode() == a.GetResponseBodyMode() &&
				eff.GetResponseTrailerMode() == a.GetResponseTrailerMode() {
				ok = true
				break
			}
		}
		if !ok {
			return
		}
	}
	if checkMode(eff) != nil {
		return
	}
	held := e.dec.headersHeld
	e.dec.setDecoding(eff)
	e.dec.headersHeld = held
	held = e.enc.headersHeld
	e.enc.setEncoding(eff)
	e.enc.headersHeld = held
}

// onGRPCError: a stream closed with OK (or EOF) ends processing and the
// request carries on (Filter::onGrpcClose); an error does the same with
// failure_mode_allow, else sends status_on_error (Filter::onGrpcError).
func (e *extProcStream) onGRPCError(err error) outcome {
	e.close()
	if errors.Is(err, io.EOF) {
		return outcome{}
	}
	st := status.Convert(err)
	if st.Code() == codes.OK || e.failOpen {
		return outcome{}
	}
	return outcome{lr: &localReply{
		code:    e.cfg.statusOnError,
		details: fmt.Sprintf("ext_proc_error_gRPC_error_%d{%s}", int(st.Code()), st.Message()),
	}}
}

// onMessageTimeout: with failure_mode_allow the processor is ignored for the
// rest of the request; without it, 504 (Filter::onMessageTimeout).
func (e *extProcStream) onMessageTimeout() outcome {
	e.close()
	if e.failOpen {
		return outcome{}
	}
	return outcome{lr: &localReply{code: http.StatusGatewayTimeout, details: "ext_proc_error_per-message_timeout_exceeded"}}
}

// spurious handles a reply of the wrong type (or an unknown one, or a
// disabled ImmediateResponse): ignored with the rest of the stream under
// failure_mode_allow, else status_on_error
// (ext_proc_fail_close_spurious_resp, on by default since 1.35).
func (e *extProcStream) spurious(r *extprocsvc.ProcessingResponse) outcome {
	e.close()
	if e.failOpen {
		return outcome{}
	}
	return outcome{lr: &localReply{code: e.cfg.statusOnError, details: "spurious_message"}}
}

// mutationError is Filter::handleErrorResponse: a rejected mutation ends
// processing with status_on_error and no body.
func (e *extProcStream) mutationError(err error) *localReply {
	e.close()
	return &localReply{code: e.cfg.statusOnError, details: strings.ReplaceAll(err.Error(), " ", "_")}
}

// immediateResponse is Filter::sendImmediateResponse: status 200 when unset
// or below 200, the header mutation applied under the filter's mutation
// rules (failures only logged), grpc_status for gRPC requests.
func (e *extProcStream) immediateResponse(ir *extprocsvc.ImmediateResponse) *localReply {
	code := 200
	if ir.GetStatus() != nil && int(ir.GetStatus().GetCode()) >= 200 {
		code = int(ir.GetStatus().GetCode())
	}
	body := string(ir.GetBody())
	// A 204/304 carries no body, so its Content-Length and Content-Type go
	// (Utility::prepareLocalReply with an empty body; HTTP/1 codec).
	if code == http.StatusNoContent || code == http.StatusNotModified {
		body = ""
	}
	lr := &localReply{code: code, body: body, details: strings.Join(strings.Fields(ir.GetDetails()), "_")}
	if gs := ir.GetGrpcStatus(); gs != nil {
		c := int(gs.GetStatus())
		lr.grpcStatus = &c
	}
	if hm := ir.GetHeaders(); hm != nil {
		lr.modify = func(h *header.List) {
			if err := applyHeaderMutation(hm, h, false, false, e.cfg.checker, e.s.g.limits); err != nil {
				e.s.logf("ext_proc: immediate response mutations failed: %v", err)
			}
		}
	}
	return lr
}

// clearRouteCache is DecodingProcessorState::clearRouteCache: only with a
// header mutation in the same response, per route_cache_action.
func (e *extProcStream) clearRouteCache(cr *extprocsvc.CommonResponse) {
	if cr.GetHeaderMutation() == nil {
		return
	}
	c := e.cfg.cfg
	action := c.GetRouteCacheAction()
	if c.GetDisableClearRouteCache() {
		action = extprocv3.ExternalProcessor_RETAIN
	}
	switch action {
	case extprocv3.ExternalProcessor_DEFAULT:
		if cr.GetClearRouteCache() {
			e.s.rematch()
		}
	case extprocv3.ExternalProcessor_CLEAR:
		e.s.rematch()
	}
}

// closeIfLastHeaders closes the stream once no further message is due
// (Filter::closeGrpcStreamIfLastRespReceived, on by default since 1.37).
func (e *extProcStream) closeIfLastHeaders(k msgKind, noBody bool) {
	if e.complete {
		return
	}
	switch k {
	case kindRequestHeaders:
		if (noBody || (e.dec.body == extprocv3.ProcessingMode_NONE && !e.dec.sendTrailers)) && e.enc.noExternalProcess() {
			e.close()
		}
	case kindResponseHeaders:
		if noBody || (e.enc.body == extprocv3.ProcessingMode_NONE && !e.enc.sendTrailers) {
			e.close()
		}
	}
}

func headersRequest(k msgKind, h *header.List, endOfStream bool) *extprocsvc.ProcessingRequest {
	hh := &extprocsvc.HttpHeaders{Headers: headerProto(*h), EndOfStream: endOfStream}
	if k == kindRequestHeaders {
		return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestHeaders{RequestHeaders: hh}}
	}
	return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseHeaders{ResponseHeaders: hh}}
}

func bodyRequest(k msgKind, body []byte, endOfStream bool) *extprocsvc.ProcessingRequest {
	hb := &extprocsvc.HttpBody{Body: body, EndOfStream: endOfStream}
	if k == kindRequestBody {
		return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestBody{RequestBody: hb}}
	}
	return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseBody{ResponseBody: hb}}
}

func trailersRequest(k msgKind, h *header.List) *extprocsvc.ProcessingRequest {
	ht := &extprocsvc.HttpTrailers{Trailers: headerProto(*h)}
	if k == kindRequestTrailers {
		return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestTrailers{RequestTrailers: ht}}
	}
	return &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseTrailers{ResponseTrailers: ht}}
}

func commonResponse(r *extprocsvc.ProcessingResponse) *extprocsvc.CommonResponse {
	switch x := r.GetResponse().(type) {
	case *extprocsvc.ProcessingResponse_RequestHeaders:
		return x.RequestHeaders.GetResponse()
	case *extprocsvc.ProcessingResponse_ResponseHeaders:
		return x.ResponseHeaders.GetResponse()
	case *extprocsvc.ProcessingResponse_RequestBody:
		return x.RequestBody.GetResponse()
	case *extprocsvc.ProcessingResponse_ResponseBody:
		return x.ResponseBody.GetResponse()
	}
	return nil
}

func trailerMutation(r *extprocsvc.ProcessingResponse) *extprocsvc.HeaderMutation {
	switch x := r.GetResponse().(type) {
	case *extprocsvc.ProcessingResponse_RequestTrailers:
		return x.RequestTrailers.GetHeaderMutation()
	case *extprocsvc.ProcessingResponse_ResponseTrailers:
		return x.ResponseTrailers.GetHeaderMutation()
	}
	return nil
}

// payload is one direction's message as the body phases see it.
type payload struct {
	hdr      *header.List
	body     *[]byte
	rest     *io.Reader
	trailers **header.List
	noBody   bool
	limit    int64
	// readRest reads up to limit bytes of rest into body; over reports a
	// body past the limit.
	readRest func(limit int64) (over bool, err error)
	// tooLarge is the local reply for a buffered body past the limit.
	tooLarge *localReply
}

// decode is the request path: decodeHeaders, then the body and trailers per
// the (possibly overridden) mode. It returns a local reply to send instead of
// continuing, or nil.
func (e *extProcStream) decode() *localReply {
	e.mergePerRouteConfig()
	s := e.s
	removeCL := false
	if e.dec.sendHeaders && !e.complete {
		e.dec.headersHeld = true
		o := e.call(headersRequest(kindRequestHeaders, s.req, s.noBody), kindRequestHeaders, func() {
			// Filter::decodeHeaders removes content-length as it returns,
			// with the mode in force then (before the reply).
			removeCL = e.dec.shouldRemoveContentLength(e.cfg.cfg.GetAllowContentLengthHeader())
		})
		if o.lr != nil {
			return o.lr
		}
		if removeCL {
			s.req.Del("content-length")
		}
		if o.resp != nil {
			if lr := e.applyHeadersReply(kindRequestHeaders, commonResponse(o.resp), e.requestPayload()); lr != nil {
				return lr
			}
			e.closeIfLastHeaders(kindRequestHeaders, s.noBody)
		}
	} else if !e.complete && e.dec.shouldRemoveContentLength(e.cfg.cfg.GetAllowContentLengthHeader()) {
		s.req.Del("content-length")
	}
	if !e.dec.sendHeaders {
		e.dec.headersHeld = false
	}
	if lr := e.bodyPhase(kindRequestBody, &e.dec, e.requestPayload()); lr != nil {
		return lr
	}
	return e.trailersPhase(kindRequestTrailers, &e.dec, s.reqTrailers)
}

func (e *extProcStream) requestPayload() *payload {
	s := e.s
	return &payload{
		hdr: s.req, body: &s.bodyBuf, rest: &s.bodyRest, trailers: &s.reqTrailers, noBody: s.noBody,
		limit:    s.requestBufferLimit(),
		readRest: s.readRequestBody,
		// The filter manager's answer to a request body past the buffer
		// limit (request_payload_too_large).
		tooLarge: &localReply{code: http.StatusRequestEntityTooLarge, body: "Payload Too Large", details: "request_payload_too_large"},
	}
}

// applyHeadersReply is ProcessorState::handleHeadersResponse.
func (e *extProcStream) applyHeadersReply(k msgKind, cr *extprocsvc.CommonResponse, p *payload) *localReply {
	st := &e.dec
	if k == kindResponseHeaders {
		st = &e.enc
	}
	replacing := cr.GetStatus() == extprocsvc.CommonResponse_CONTINUE_AND_REPLACE
	if cr.GetHeaderMutation() != nil {
		if err := applyHeaderMutation(cr.GetHeaderMutation(), p.hdr, replacing, st.shouldRemoveContentLength(e.cfg.cfg.GetAllowContentLengthHeader()), e.cfg.checker, e.s.g.limits); err != nil {
			return e.mutationError(err)
		}
	}
	if k == kindRequestHeaders {
		e.clearRouteCache(cr)
	}
	if replacing {
		// CONTINUE_AND_REPLACE: a body_mutation replaces the whole body
		// (content-length removed), and nothing more of this direction goes
		// to the processor.
		if bm := cr.GetBodyMutation(); bm != nil {
			p.hdr.Del("content-length")
			*p.body = applyBodyMutation(bm, nil)
			*p.rest = nil
			e.markReplaced(k)
		}
		st.body = extprocv3.ProcessingMode_NONE
		st.sendTrailers = false
	}
	if st.body == extprocv3.ProcessingMode_NONE || st.body == extprocv3.ProcessingMode_STREAMED || p.noBody {
		// Headers continue now; later replies cannot change them.
		st.headersHeld = false
	}
	return nil
}

// markReplaced records a CONTINUE_AND_REPLACE body: the client's (or
// upstream's) own body is dropped (ProcessorState::body_replaced_).
func (e *extProcStream) markReplaced(k msgKind) {
	if k == kindRequestHeaders {
		e.s.noBody = false
		e.s.bodyReplaced = true
	} else {
		e.respReplaced = true
	}
}

// bodyPhase sends the body per the direction's body mode
// (Filter::onData and its handleData*Mode helpers).
//
// Simplification: STREAMED chunks are exchanged one at a time (Envoy
// pipelines them) and the processed chunks are collected before the request
// goes upstream, so STREAMED bodies are limited like buffered ones.
func (e *extProcStream) bodyPhase(k msgKind, st *modeState, p *payload) *localReply {
	if e.complete || p.noBody || e.replaced(k) {
		return nil
	}
	switch st.body {
	case extprocv3.ProcessingMode_BUFFERED:
		over, err, lr := e.readWatching(k, func() (bool, error) { return p.readRest(p.limit) })
		if lr != nil {
			return lr
		}
		if err != nil {
			return e.readError(k, err)
		}
		if over {
			return p.tooLarge
		}
		eos := *p.trailers == nil
		o := e.call(bodyRequest(k, *p.body, eos), k, nil)
		if o.lr != nil || o.resp == nil {
			return o.lr
		}
		cr := commonResponse(o.resp)
		if cr.GetHeaderMutation() != nil && st.headersHeld {
			if err := applyHeaderMutation(cr.GetHeaderMutation(), p.hdr, false, st.shouldRemoveContentLength(e.cfg.cfg.GetAllowContentLengthHeader()), e.cfg.checker, e.s.g.limits); err != nil {
				return e.mutationError(err)
			}
		}
		if bm := cr.GetBodyMutation(); bm != nil {
			// The mutated body must match a content-length the headers still
			// carry (ProcessorState::handleBodyResponse).
			if cl, ok := p.hdr.Lookup("content-length"); ok && st.headersHeld {
				if n, err := strconv.Atoi(cl); err == nil && n != len(bm.GetBody()) {
					return e.mutationError(errors.New("mismatch between content length and the length of the mutated body"))
				}
			}
			*p.body = applyBodyMutation(bm, *p.body)
		}
		if k == kindRequestBody {
			e.clearRouteCache(cr)
		}
		st.headersHeld = false
	case extprocv3.ProcessingMode_STREAMED:
		var out []byte
		for {
			if int64(len(out)) > p.limit {
				return p.tooLarge
			}
			chunk, last, err := e.nextChunk(p)
			if err != nil {
				return e.readError(k, err)
			}
			eos := last && *p.trailers == nil
			o := e.call(bodyRequest(k, chunk, eos), k, nil)
			if o.lr != nil {
				return o.lr
			}
			if o.resp == nil {
				// Processing ended (fail open): the rest passes unprocessed.
				*p.body = append(out, chunk...)
				return nil
			}
			cr := commonResponse(o.resp)
			if bm := cr.GetBodyMutation(); bm != nil {
				chunk = applyBodyMutation(bm, chunk)
			}
			if k == kindRequestBody {
				e.clearRouteCache(cr)
			}
			out = append(out, chunk...)
			if last {
				*p.body = out
				if eos && !st.sendTrailers {
					e.close() // the last streamed body reply (isLastBodyResponse)
				}
				return nil
			}
		}
	case extprocv3.ProcessingMode_BUFFERED_PARTIAL:
		// Buffer up to the limit; send what is there (end_of_stream if that
		// is all of it); the rest then flows unprocessed.
		over, err, lr := e.readWatching(k, func() (bool, error) { return p.readRest(p.limit) })
		if lr != nil {
			return lr
		}
		if err != nil {
			return e.readError(k, err)
		}
		eos := !over && *p.trailers == nil
		if over {
			// Keep the first limit bytes for the processor; the byte read
			// past the limit goes back in front of the rest.
			extra := (*p.body)[p.limit:]
			*p.body = (*p.body)[:p.limit:p.limit]
			*p.rest = io.MultiReader(bytes.NewReader(append([]byte(nil), extra...)), *p.rest)
		}
		o := e.call(bodyRequest(k, *p.body, eos), k, nil)
		if o.lr != nil || o.resp == nil {
			return o.lr
		}
		cr := commonResponse(o.resp)
		if cr.GetHeaderMutation() != nil && st.headersHeld {
			if err := applyHeaderMutation(cr.GetHeaderMutation(), p.hdr, false, true, e.cfg.checker, e.s.g.limits); err != nil {
				return e.mutationError(err)
			}
		}
		if bm := cr.GetBodyMutation(); bm != nil {
			*p.body = applyBodyMutation(bm, *p.body)
		}
		if k == kindRequestBody {
			e.clearRouteCache(cr)
		}
		st.headersHeld = false
	}
	return nil
}

// readWatching runs read (the rest of a request body Envoy buffers before
// sending it) while listening to the processor. Envoy handles a message
// whenever it arrives (Filter::onReceiveMessage), not only as a reply: an
// ImmediateResponse, or a stream failure without failure_mode_allow,
// answers the client while it is still sending its body, and the read is
// abandoned. With failure_mode_allow a failure only ends processing: the
// body is read and goes upstream. Response bodies are read as before.
func (e *extProcStream) readWatching(k msgKind, read func() (bool, error)) (bool, error, *localReply) {
	if k != kindRequestBody || e.grpc == nil || e.complete || e.s.body == nil {
		over, err := read()
		return over, err, nil
	}
	type result struct {
		over bool
		err  error
	}
	done := make(chan result, 1)
	go func() {
		over, err := read()
		done <- result{over, err}
	}()
	for {
		select {
		case r := <-done:
			return r.over, r.err, nil
		case m := <-e.msgs:
			if m.err != nil && e.s.ctx.Err() != nil {
				// The request's context ended (Go's server cancels it when a
				// body read fails, a timeout included), which cancelled the
				// gRPC stream too: not a processor failure. The read's own
				// error decides.
				e.close()
				r := <-done
				return r.over, r.err, nil
			}
			o := e.unsolicited(m)
			if o.lr != nil {
				e.s.body.abort()
				<-done
				return false, nil, o.lr
			}
			if e.complete {
				r := <-done
				return r.over, r.err, nil
			}
		}
	}
}

// unsolicited handles a message that arrived while no message was
// outstanding.
func (e *extProcStream) unsolicited(m recvMsg) outcome {
	if m.err != nil {
		return e.onGRPCError(m.err)
	}
	r := m.resp
	if r.GetOverrideMessageTimeout() != nil {
		// No timer runs: nothing to extend.
		return outcome{}
	}
	if ir := r.GetImmediateResponse(); ir != nil && !e.cfg.cfg.GetDisableImmediateResponse() {
		e.close()
		return outcome{lr: e.immediateResponse(ir)}
	}
	return e.spurious(r)
}

// nextChunk reads the next STREAMED chunk and whether it is the last.
func (e *extProcStream) nextChunk(p *payload) ([]byte, bool, error) {
	if *p.rest == nil {
		b := *p.body
		*p.body = nil
		return b, true, nil
	}
	buf := make([]byte, streamedChunk)
	n, err := io.ReadFull(*p.rest, buf)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		*p.rest = nil
		if p.trailers != nil && e.s.r != nil && p.hdr == e.s.req {
			e.s.readTrailers()
		}
		return append(*p.body, buf[:n]...), true, nil
	case err != nil:
		return nil, false, err
	}
	prev := *p.body
	*p.body = nil
	return append(prev, buf[:n]...), false, nil
}

func (e *extProcStream) readError(k msgKind, err error) *localReply {
	e.close()
	if k == kindRequestBody {
		if lr := timeoutReply(err); lr != nil {
			return lr
		}
		// The client reset mid-body; Envoy would reset the stream.
		return &localReply{code: http.StatusBadRequest, details: "downstream_remote_disconnect"}
	}
	return &localReply{code: http.StatusServiceUnavailable, body: "upstream connect error or disconnect/reset before headers. reset reason: connection termination", details: "upstream_reset_after_response_started"}
}

func (e *extProcStream) replaced(k msgKind) bool {
	if k == kindRequestBody {
		return e.s.bodyReplaced
	}
	return e.respReplaced
}

// trailersPhase sends trailers when the mode asks and the message has them.
// Simplification: trailers are seen only when the body was read by a body
// phase; with body mode NONE they pass unprocessed.
func (e *extProcStream) trailersPhase(k msgKind, st *modeState, tr *header.List) *localReply {
	if e.complete || !st.sendTrailers || tr == nil {
		return nil
	}
	o := e.call(trailersRequest(k, tr), k, nil)
	if o.lr != nil || o.resp == nil {
		return o.lr
	}
	if m := trailerMutation(o.resp); m != nil {
		if err := applyHeaderMutation(m, tr, false, false, e.cfg.checker, e.s.g.limits); err != nil {
			return e.mutationError(err)
		}
	}
	if k == kindResponseTrailers {
		e.close()
	}
	return nil
}

// encode is the response path (Filter::encodeHeaders/encodeData): it may
// return a local reply, which the filter manager then sends directly,
// bypassing the encoder filters (the response has already entered them).
func (e *extProcStream) encode(resp *response) (*response, *localReply) {
	e.mergePerRouteConfig()
	if e.enc.noExternalProcess() {
		e.close()
	}
	removeCL := false
	if !e.complete && e.enc.sendHeaders {
		e.enc.headersHeld = true
		o := e.call(headersRequest(kindResponseHeaders, resp.hdr, resp.noBody), kindResponseHeaders, func() {
			removeCL = e.enc.shouldRemoveContentLength(e.cfg.cfg.GetAllowContentLengthHeader())
		})
		if o.lr != nil {
			return resp, o.lr
		}
		if removeCL {
			resp.hdr.Del("content-length")
		}
		if o.resp != nil {
			p := e.responsePayload(resp)
			if lr := e.applyHeadersReply(kindResponseHeaders, commonResponse(o.resp), p); lr != nil {
				return resp, lr
			}
			if e.respReplaced && resp.close != nil {
				resp.close()
				resp.close = nil
				resp.noBody = false
			}
			e.closeIfLastHeaders(kindResponseHeaders, resp.noBody)
		}
	} else if !e.complete && e.enc.shouldRemoveContentLength(e.cfg.cfg.GetAllowContentLengthHeader()) {
		resp.hdr.Del("content-length")
	}
	if !e.enc.sendHeaders {
		e.enc.headersHeld = false
	}
	p := e.responsePayload(resp)
	if lr := e.bodyPhase(kindResponseBody, &e.enc, p); lr != nil {
		return resp, lr
	}
	if e.enc.body != extprocv3.ProcessingMode_NONE && resp.stream == nil && resp.trailers == nil {
		resp.readTrailers()
	}
	if lr := e.trailersPhase(kindResponseTrailers, &e.enc, resp.trailers); lr != nil {
		return resp, lr
	}
	return resp, nil
}

func (e *extProcStream) responsePayload(resp *response) *payload {
	return &payload{
		hdr: resp.hdr, body: &resp.body, rest: &resp.stream, trailers: &resp.trailers, noBody: resp.noBody,
		limit: e.s.responseBufferLimit(),
		readRest: func(limit int64) (bool, error) {
			if resp.stream == nil {
				return int64(len(resp.body)) > limit, nil
			}
			b, err := io.ReadAll(io.LimitReader(resp.stream, limit-int64(len(resp.body))+1))
			resp.body = append(resp.body, b...)
			if err != nil {
				return false, err
			}
			if int64(len(resp.body)) > limit {
				return true, nil
			}
			resp.stream = nil
			resp.readTrailers()
			return false, nil
		},
		// A response body past the buffer limit: 500
		// (response_payload_too_large), sent directly.
		tooLarge: &localReply{code: http.StatusInternalServerError, body: "Internal Server Error", details: "response_payload_too_large"},
	}
}
