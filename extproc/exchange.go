package extproc

import (
	"iter"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/internal/header"
)

// Headers Sluice owns: stripped from client requests by the identity stage
// and set only by Sluice (DESIGN.md, "Contracts shared by components").
const (
	HeaderTenant = "x-sluice-tenant"
	HeaderTier   = "x-sluice-tier"
	HeaderUser   = "x-sluice-user"
	// HeaderCost is the number of rate-limit hits a request costs, read by
	// Envoy's RateLimit.hits_addend.format "%REQ(x-sluice-cost)%"; a
	// non-numeric value drops the descriptor, so it is always set.
	HeaderCost = "x-sluice-cost"
	// HeaderBatch marks batch fan-out sub-requests (loop prevention).
	HeaderBatch = "x-sluice-batch"
	// HeaderWarm marks cache-warming traffic.
	HeaderWarm = "x-sluice-warm"
	// HeaderClientAddress carries the address of the client a batch item is
	// sent for to Envoy's internal listener, whose original IP detection
	// (custom_header) makes it the item's remote address (envoy.yaml,
	// listener "internal").
	HeaderClientAddress = "x-sluice-client-address"
	// OwnedPrefix starts every header Sluice owns: the identity stage
	// removes any other the client sent.
	OwnedPrefix = "x-sluice-"
)

// OwnedHeaders lists every header Sluice uses, in a fixed order. Envoy's
// ingress listener lists each in internal_only_headers.
var OwnedHeaders = []string{HeaderTenant, HeaderTier, HeaderUser, HeaderCost, HeaderBatch, HeaderWarm, HeaderClientAddress}

// isOwnedHeader reports whether name is one of OwnedHeaders.
func isOwnedHeader(name string) bool {
	for _, h := range OwnedHeaders {
		if h == name {
			return true
		}
	}
	return false
}

// Anonymous is the tenant and tier of callers without a (valid) identity.
const Anonymous = "anonymous"

// OtherRoute is Exchange.Route for paths no configured route matches.
const OtherRoute = "other"

// single returns the value of name and whether it occurs exactly once.
func single(h header.List, name string) (string, bool) {
	v, n := "", 0
	for _, f := range h {
		if f.Name == name {
			v = f.Value
			n++
		}
	}
	return v, n == 1
}

// Phase is the ext_proc message a hook runs for.
type Phase int

// Phases in the order Envoy sends them.
const (
	PhaseRequestHeaders Phase = iota + 1
	PhaseRequestBody
	PhaseRequestTrailers
	PhaseResponseHeaders
	PhaseResponseBody
	PhaseResponseTrailers
	PhaseDone
)

var phaseNames = [...]string{"start", "request_headers", "request_body", "request_trailers", "response_headers", "response_body", "response_trailers", "done"}

func (p Phase) String() string {
	if p < 0 || int(p) >= len(phaseNames) {
		return "unknown"
	}
	return phaseNames[p]
}

func (p Phase) request() bool { return p >= PhaseRequestHeaders && p <= PhaseRequestTrailers }

// BodyMode is how Envoy sends a body to ext_proc, the subset of
// ProcessingMode.BodySendMode a stage may ask for in a mode_override (Envoy
// ignores mode_override when the filter uses FULL_DUPLEX_STREAMED).
type BodyMode int

// Body modes, numbered as ProcessingMode.BodySendMode.
const (
	BodyNone            BodyMode = 0
	BodyStreamed        BodyMode = 1
	BodyBuffered        BodyMode = 2
	BodyBufferedPartial BodyMode = 3
)

// Exchange is the state of one HTTP request as one ext_proc stream sees it,
// shared by the stages of that stream, plus the actions queued for the reply
// to the current message. The server creates it; it is not safe for
// concurrent use (hooks of one stream never run concurrently) and must not
// be kept after DoneHook.Done returns.
type Exchange struct {
	resLimitFields, resLimitBytes int // ResponseHeaderLimits

	// Method, Path (":path" as sent, query included), Authority and Scheme
	// are the request's pseudo-headers.
	Method, Path, Authority, Scheme string
	// RequestHeaders are the request headers as Envoy sent them, before any
	// mutation: values a stage strips (x-sluice-*) stay readable here for
	// stages that authenticate their own markers.
	RequestHeaders header.List
	// RequestEndOfStream is HttpHeaders.end_of_stream of the request headers:
	// the request has no body (no body message will follow).
	RequestEndOfStream bool
	// Metadata is ProcessingRequest.metadata_context of the request headers
	// message: the dynamic metadata namespaces listed in the filter's
	// metadata_options.forwarding_namespaces. May be nil.
	Metadata *corev3.Metadata
	// Attributes are ProcessingRequest.attributes (request_attributes and
	// response_attributes of the filter config), merged over the stream.
	Attributes map[string]*structpb.Struct

	// ResponseStatus is the response's ":status", or the status of an
	// immediate response; 0 until known.
	ResponseStatus int
	// ResponseHeaders are the response headers as Envoy sent them.
	ResponseHeaders header.List
	// ResponseEndOfStream is HttpHeaders.end_of_stream of the response
	// headers: the response has no body (a 304, a 204, an answer to HEAD).
	ResponseEndOfStream bool

	// Tenant, Tier and User are the caller's identity, set by the identity
	// stage: Tenant and Tier are Anonymous for unknown callers, User is ""
	// when unknown.
	Tenant, Tier, User string
	// Route is the name of the first configured route matching the path, or
	// OtherRoute. Bounded: safe as a metric label.
	Route string

	// Start is when the request headers arrived, ResponseStart when the
	// response headers arrived (zero if they never did), End when the last
	// response message Sluice sees arrived or the immediate response was
	// sent, or else when the stream ended. End is set before Done hooks run.
	Start, ResponseStart, End time.Time

	phase       Phase
	values      []keyValue
	reply       pendingReply
	respondedBy string
	reqBodyMode BodyMode // current request body mode (config, protocol_config, overrides)
	resBodyMode BodyMode
	dropped     []string // actions ignored as invalid, for one log line

	// extend sends override_message_timeout on the stream at once; nil when
	// the stream cannot (observability mode, tests building an Exchange).
	extend   func(time.Duration) bool
	extended Phase // phase in which extend was used (Envoy honours one per state)
}

type keyValue struct{ key, value any }

// pendingReply collects the actions for the reply to the current message.
type pendingReply struct {
	set         header.List
	remove      []string
	clearRoute  bool
	wantReqBody *BodyMode
	wantResBody *BodyMode
	immediate   *immediate
	replace     *Replacement // ReplaceResponse: a CONTINUE_AND_REPLACE of the response
}

type immediate struct {
	status  int
	headers header.List
	body    []byte
}

// ResponseHeaderLimits are the limits of Envoy's response header map
// (Config.MaxResponseHeaders in fields, MaxResponseHeadersKB in bytes),
// which Envoy checks every response header mutation and immediate response
// against; 0 (no limit) in an Exchange no Server made.
func (x *Exchange) ResponseHeaderLimits() (fields, bytes int) {
	return x.resLimitFields, x.resLimitBytes
}

// Phase is the message the current hook runs for.
func (x *Exchange) Phase() Phase { return x.phase }

// Set stores a value under key for later hooks of any stage on this stream.
// Use an unexported key type, as with context.WithValue.
func (x *Exchange) Set(key, value any) {
	for i := range x.values {
		if x.values[i].key == key {
			x.values[i].value = value
			return
		}
	}
	x.values = append(x.values, keyValue{key, value})
}

// Get returns the value stored under key, or nil.
func (x *Exchange) Get(key any) any {
	for _, kv := range x.values {
		if kv.key == key {
			return kv.value
		}
	}
	return nil
}

// ForwardedRequestHeaders returns the request headers as Envoy will forward
// them once the reply to the request headers applies the mutations queued so
// far (by earlier stages, or by this one): RequestHeaders with their removals
// and sets, so x-sluice-tenant, x-sluice-user and the rest as identity set
// them. What a stage must key on to see the request the origin sees.
// Pseudo-headers are kept. Outside PhaseRequestHeaders it is RequestHeaders.
func (x *Exchange) ForwardedRequestHeaders() header.List {
	r := &x.reply
	if x.phase != PhaseRequestHeaders || len(r.set) == 0 && len(r.remove) == 0 {
		return x.RequestHeaders
	}
	out := make(header.List, 0, len(x.RequestHeaders)+len(r.set))
	for h := range r.forwarded(x.RequestHeaders) {
		out = append(out, h)
	}
	return out
}

// forwarded yields the fields of request headers hdr as Envoy forwards them
// once r applies: those r neither removes nor sets, then r's sets. Building
// no list, it is what counting them needs.
func (r *pendingReply) forwarded(hdr header.List) iter.Seq[header.Field] {
	return func(yield func(header.Field) bool) {
		for _, h := range hdr {
			if !containsName(r.remove, h.Name) && !r.setsName(h.Name) && !yield(h) {
				return
			}
		}
		for _, h := range r.set {
			if !yield(h) {
				return
			}
		}
	}
}

func containsName(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

func (r *pendingReply) setsName(name string) bool {
	for _, h := range r.set {
		if h.Name == name {
			return true
		}
	}
	return false
}

// SetRequestHeader sets (replacing any value) a request header in the reply
// to the current request-side message. Envoy applies request header
// mutations from replies to request headers, and to a request body only in
// BUFFERED mode (CommonResponse.header_mutation). Ignored (and logged) in
// other phases, for invalid names or values, and for names Envoy refuses to
// mutate (":"-headers, host, x-envoy-*).
func (x *Exchange) SetRequestHeader(name, value string) { x.setHeader(true, name, value) }

// RemoveRequestHeader removes a request header; see SetRequestHeader.
func (x *Exchange) RemoveRequestHeader(name string) { x.removeHeader(true, name) }

// SetResponseHeader sets (replacing any value) a response header in the
// reply to the current response-side message; see SetRequestHeader.
func (x *Exchange) SetResponseHeader(name, value string) { x.setHeader(false, name, value) }

// RemoveResponseHeader removes a response header; see SetResponseHeader.
func (x *Exchange) RemoveResponseHeader(name string) { x.removeHeader(false, name) }

func (x *Exchange) setHeader(request bool, name, value string) {
	name = strings.ToLower(name)
	if !x.mutable(request, name, "set "+name) {
		return
	}
	if !validHeaderValue(value) {
		x.drop("set " + name + ": invalid value")
		return
	}
	r := &x.reply
	r.remove = deleteString(r.remove, name)
	for i := range r.set {
		if r.set[i].Name == name {
			r.set[i].Value = value
			return
		}
	}
	r.set = append(r.set, header.Field{Name: name, Value: value})
}

func (x *Exchange) removeHeader(request bool, name string) {
	name = strings.ToLower(name)
	if !x.mutable(request, name, "remove "+name) {
		return
	}
	r := &x.reply
	for i := range r.set {
		if r.set[i].Name == name {
			r.set = append(r.set[:i], r.set[i+1:]...)
			break
		}
	}
	for _, n := range r.remove {
		if n == name {
			return
		}
	}
	r.remove = append(r.remove, name)
}

func (x *Exchange) mutable(request bool, name, what string) bool {
	if request != x.phase.request() || x.phase == PhaseDone {
		x.drop(what + ": wrong phase " + x.phase.String())
		return false
	}
	if !validHeaderName(name) {
		x.drop(what + ": name Envoy would reject or ignore")
		return false
	}
	return true
}

// ClearRouteCache asks Envoy to recompute the route after this reply's
// request header mutations (CommonResponse.clear_route_cache). Envoy honours
// it only together with a header mutation and only on the request path, so
// the server sends it only then.
func (x *Exchange) ClearRouteCache() { x.reply.clearRoute = true }

// Respond ends the request with a locally generated response
// (ProcessingResponse.immediate_response): Envoy sends it through the
// encoder filters before ext_proc (compressors included), ignores anything
// later on the stream, and the server ends the stream. Later stages' hooks
// for the current message are skipped. Envoy turns a status below 200 into
// 200, and a 304 carries no body (Sluice drops it). headers are set with
// raw_value; names Envoy refuses to mutate are ignored. Not available in
// DoneHook.Done, and ignored in observability_mode, where Envoy ignores
// every reply.
func (x *Exchange) Respond(status int, headers header.List, body []byte) {
	if x.phase == PhaseDone || x.phase == 0 {
		x.drop("respond: wrong phase " + x.phase.String())
		return
	}
	if status < 200 || status > 999 {
		status = 200 // as Envoy: MutationUtils::isValidHttpStatus
	}
	if status == 304 || status == 204 {
		body = nil
	}
	x.reply.immediate = &immediate{status: status, headers: headers, body: body}
}

// Replacement is a response that replaces the upstream one (ReplaceResponse).
type Replacement struct {
	// Status is the new ":status" (200-999; Envoy refuses lower ones).
	Status int
	// Headers are the replacement's fields; repeated names are sent in order.
	Headers header.List
	// Body replaces the upstream body. nil with a bodiless upstream response
	// (Exchange.ResponseEndOfStream) sends no body_mutation, so that a
	// Content-Length in Headers stays (an answer to HEAD).
	Body []byte
	// Keep reports upstream fields to leave as they are although Headers
	// does not name them (fields another filter added, such as the
	// ratelimit filter's RateLimit headers); nil keeps none.
	Keep func(name string) bool
	// Optional reports which of Headers (by lower-case name) only inform
	// (cache-status, say): they are left out, as are the fields Keep would
	// leave, when the replacement would otherwise exceed Envoy's response
	// header limits (Config.MaxResponseHeaders). nil: none.
	Optional func(name string) bool
}

// has reports whether the replacement names name (a lower-case name), as
// replacement sends its fields: lower-cased.
func (rp *Replacement) has(name string) bool {
	for _, h := range rp.Headers {
		if strings.EqualFold(h.Name, name) {
			return true
		}
	}
	return false
}

// ReplaceResponse replaces the response whose headers are being processed
// (PhaseResponseHeaders only), so that the replacement travels the rest of
// Envoy's encoder chain as the upstream response would: compressors, and the
// filters before ext_proc. Respond in this phase would instead become a
// local reply Envoy sends directly, skipping every encoder filter
// (DownstreamFilterManager::sendDirectLocalReply, once response headers
// exist).
//
// It is a headers reply with CommonResponse.status CONTINUE_AND_REPLACE:
// ":status" is set (Envoy's mutation rules must allow it: envoy.yaml leaves
// HeaderMutationRules.disallow_system unset), every upstream field neither
// named in r.Headers nor kept by r.Keep is removed, those in r.Headers are
// set, and the body is replaced by body_mutation (ProcessorState::
// handleHeadersResponse, which also removes Content-Length: the replacement
// goes out chunked). Envoy then sends nothing more of the response to
// ext_proc (body mode NONE, no trailers). Fields Envoy refuses to mutate
// (x-envoy-*, host, invalid names or values) are left as they are. Ignored
// in observability_mode and in other phases.
func (x *Exchange) ReplaceResponse(r Replacement) {
	if x.phase != PhaseResponseHeaders {
		x.drop("replace response: wrong phase " + x.phase.String())
		return
	}
	if r.Status < 200 || r.Status > 999 {
		x.drop("replace response: status " + strconv.Itoa(r.Status) + " Envoy refuses (Checker::isValidValue)")
		return
	}
	x.reply.replace = &r
}

// ExtendMessageTimeout asks Envoy to wait up to d (instead of the filter's
// message_timeout, default 200 ms) for the reply to the current message, by
// sending ProcessingResponse.override_message_timeout right away. Envoy
// honours it once per message, only when 1 ms <= d <= the filter's
// max_message_timeout (default 0: disabled; envoy.yaml sets 2s), and
// otherwise ignores it (Filter::onNewTimeout). It reports whether the
// override was sent; a hook that blocks must still bound its wait, by d when
// true and below message_timeout when false, as Envoy gives no answer.
func (x *Exchange) ExtendMessageTimeout(d time.Duration) bool {
	if x.extend == nil || x.phase == PhaseDone || x.phase == 0 || x.extended == x.phase || d < time.Millisecond {
		return false
	}
	if !x.extend(d) {
		return false
	}
	x.extended = x.phase
	return true
}

// Responded reports whether a stage called Respond on this stream, and which.
func (x *Exchange) Responded() (stage string, ok bool) { return x.respondedBy, x.respondedBy != "" }

// WantRequestBody asks Envoy to send the request body in mode m, through a
// mode_override on the reply to the request headers (the only phase where
// it can change the request body mode). Envoy honours mode_override only
// with allow_mode_override: true in the filter config, and not with
// send_body_without_waiting_for_header_response or FULL_DUPLEX_STREAMED.
func (x *Exchange) WantRequestBody(m BodyMode) {
	if x.phase != PhaseRequestHeaders || !m.valid() {
		x.drop("want request body: wrong phase or mode")
		return
	}
	x.reply.wantReqBody = &m
}

// WantResponseBody asks Envoy to send the response body in mode m, through a
// mode_override on the reply to the request or response headers. Ask only
// when the body will be used: every body byte then crosses the gRPC stream.
func (x *Exchange) WantResponseBody(m BodyMode) {
	if (x.phase != PhaseRequestHeaders && x.phase != PhaseResponseHeaders) || !m.valid() {
		x.drop("want response body: wrong phase or mode")
		return
	}
	x.reply.wantResBody = &m
}

// RequestBodyMode is the request body mode in force for this stream. It may
// be a BodySendMode beyond BodyBufferedPartial (FULL_DUPLEX_STREAMED = 4,
// GRPC = 5) when Envoy is configured so.
func (x *Exchange) RequestBodyMode() BodyMode { return x.reqBodyMode }

// ResponseBodyMode is the response body mode in force for this stream,
// including a mode_override already sent.
func (x *Exchange) ResponseBodyMode() BodyMode { return x.resBodyMode }

func (m BodyMode) valid() bool { return m >= BodyNone && m <= BodyBufferedPartial }

func (x *Exchange) drop(what string) {
	if len(x.dropped) < 8 {
		x.dropped = append(x.dropped, what)
	}
}

func deleteString(s []string, v string) []string {
	for i, e := range s {
		if e == v {
			return append(s[:i], s[i+1:]...)
		}
	}
	return s
}
