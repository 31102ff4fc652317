// Package emulator plays Envoy's part for Sluice's tests and `sluice dev`: it
// runs each HTTP request through the ext_proc and ratelimit filters exactly as
// envoy.yaml configures them, then to the upstream.
//
// It is not a proxy for production. It emulates one listener's HTTP
// connection manager with the filters Sluice's config uses — compressor(s),
// ext_proc, ratelimit, router, in that order — and rejects configs that use
// features it does not emulate, so a config change cannot silently make it
// diverge from Envoy. Each rule cites the Envoy source file, proto field or
// doc it follows. Known simplifications are listed on the functions that make
// them.
package emulator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/sluicehq/sluice/envoy"
)

// Options configure a Gateway. Settings is required; the rest is optional.
type Options struct {
	// Settings is the parsed Envoy config to emulate (envoy.ParseSettings).
	Settings *envoy.Settings
	// ExtProc is the ext_proc filter's gRPC peer. Nil behaves as if its
	// cluster were down: the stream fails and failure_mode_allow applies.
	ExtProc extprocsvc.ExternalProcessorClient
	// RateLimit is the ratelimit filter's gRPC peer; nil likewise fails every
	// call (failure_mode_deny applies).
	RateLimit rlsv3.RateLimitServiceClient
	// Upstreams overrides where a cluster lives: cluster name -> base URL,
	// e.g. "app" -> "http://127.0.0.1:34567". Other clusters use
	// Settings.Clusters over plain HTTP.
	Upstreams map[string]string
	// Transport carries upstream requests. Nil: a private transport that
	// Close releases. It must not add Accept-Encoding or decompress.
	Transport http.RoundTripper
	// Logger gets one line per request the emulator fails on its own
	// account; nil discards.
	Logger *slog.Logger
}

// Gateway is the emulated Envoy. It is safe for concurrent use; every
// goroutine a request starts ends before ServeHTTP returns.
type Gateway struct {
	opts        Options
	settings    *envoy.Settings
	router      *router
	compressors []*compressor
	extProc     *extProcConfig
	rateLimit   *rateLimitConfig
	transport   http.RoundTripper
	ownTrans    *http.Transport
	log         *slog.Logger
	limits      mutationLimits
	// hcm
	maxRequestHeadersKB int
	rejectUnderscores   bool
	dropUnderscores     bool
}

// New checks that the config's filters are the ones (and in an order) the
// emulator implements and prepares them.
func New(o Options) (*Gateway, error) {
	s := o.Settings
	if s == nil {
		return nil, errors.New("emulator: Options.Settings is required")
	}
	g := &Gateway{opts: o, settings: s, log: o.Logger, transport: o.Transport}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.transport == nil {
		g.ownTrans = &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		}
		g.transport = g.ownTrans
	}
	if err := checkFilterOrder(s); err != nil {
		return nil, err
	}
	r, err := newRouter(s.Routes)
	if err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	g.router = r
	for _, c := range s.Compressors {
		cc, err := newCompressor(c)
		if err != nil {
			return nil, fmt.Errorf("emulator: %w", err)
		}
		g.compressors = append(g.compressors, cc)
	}
	hcm := s.HCM
	if err := checkHCM(hcm); err != nil {
		return nil, err
	}
	g.limits = mutationLimits{maxCount: 100, maxBytes: 60 * 1024}
	if v := hcm.GetCommonHttpProtocolOptions().GetMaxHeadersCount(); v != nil {
		g.limits.maxCount = int(v.GetValue())
	}
	if v := hcm.GetMaxRequestHeadersKb(); v != nil {
		g.limits.maxBytes = int(v.GetValue()) * 1024
	}
	g.maxRequestHeadersKB = g.limits.maxBytes / 1024
	switch hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() {
	case corev3.HttpProtocolOptions_REJECT_REQUEST:
		g.rejectUnderscores = true
	case corev3.HttpProtocolOptions_DROP_HEADER:
		g.dropUnderscores = true
	}
	if s.ExtProc != nil {
		if g.extProc, err = newExtProcConfig(s.ExtProc, s.ExtProcName); err != nil {
			return nil, fmt.Errorf("emulator: %w", err)
		}
		if err := checkExtProcPerRoute(s.Routes, s.ExtProcName); err != nil {
			return nil, fmt.Errorf("emulator: ext_proc: %w", err)
		}
	}
	if s.RateLimit != nil {
		if g.rateLimit, err = newRateLimitConfig(s.RateLimit, s.RateLimitName); err != nil {
			return nil, fmt.Errorf("emulator: %w", err)
		}
		if err := checkRateLimitRoutes(g.rateLimit, s.Routes); err != nil {
			return nil, fmt.Errorf("emulator: ratelimit: %w", err)
		}
	}
	return g, nil
}

// Close releases the idle upstream connections of the Gateway's own
// transport. In-flight requests are not interrupted.
func (g *Gateway) Close() error {
	if g.ownTrans != nil {
		g.ownTrans.CloseIdleConnections()
	}
	return nil
}

// checkFilterOrder accepts compressors, then ext_proc, then ratelimit, then
// the router — each optional but the router — which is the only shape the
// stream code below implements.
func checkFilterOrder(s *envoy.Settings) error {
	want := []string{}
	for _, c := range s.Compressors {
		want = append(want, c.Name)
	}
	if s.ExtProc != nil {
		want = append(want, s.ExtProcName)
	}
	if s.RateLimit != nil {
		want = append(want, s.RateLimitName)
	}
	if s.Router == nil {
		return errors.New("emulator: no router filter")
	}
	if len(s.Filters) != len(want)+1 {
		return fmt.Errorf("emulator: http_filters %v: want compressors, ext_proc, ratelimit, router in that order", s.Filters)
	}
	for i, name := range want {
		if s.Filters[i] != name {
			return fmt.Errorf("emulator: http_filters %v: want compressors, ext_proc, ratelimit, router in that order", s.Filters)
		}
	}
	return nil
}

func checkHCM(h *hcmv3.HttpConnectionManager) error {
	if h.GetXffNumTrustedHops() != 0 || len(h.GetOriginalIpDetectionExtensions()) > 0 || h.GetInternalAddressConfig() != nil {
		return errors.New("emulator: xff_num_trusted_hops, original_ip_detection_extensions and internal_address_config are not emulated")
	}
	if h.GetLocalReplyConfig() != nil {
		return errors.New("emulator: local_reply_config is not emulated")
	}
	return nil
}

// ServeHTTP runs one request through the emulated listener.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	s := &stream{g: g, w: w, r: r, ctx: ctx, start: time.Now()}
	defer s.finish()
	resp := s.run()
	s.write(resp)
}

// stream is one request's state. Used by one goroutine.
type stream struct {
	g     *Gateway
	w     http.ResponseWriter
	r     *http.Request
	ctx   context.Context
	start time.Time

	req      *headerMap
	remoteIP string
	isHead   bool
	isGRPC   bool
	vh       *routev3.VirtualHost
	route    *routev3.Route

	// Request body: noBody when the request ended with its headers;
	// bodyBuf holds what a filter buffered (or replaced); bodyRest is what
	// still streams from the client after bodyBuf.
	noBody      bool
	bodyBuf     []byte
	bodyRest    io.Reader
	reqTrailers *headerMap
	// bodyReplaced: ext_proc's CONTINUE_AND_REPLACE replaced the body.
	bodyReplaced bool

	acceptEncoding *string
	encoding       string // chosen by the first compressor to decide (filter state "encoding_decision")
	decided        bool

	ep *extProcStream
	rl *rateLimitStream
}

// response is a response moving through the encoder filters.
type response struct {
	hdr      *headerMap // includes ":status"
	body     []byte     // buffered body, sent before stream
	stream   io.Reader  // rest of the body, streamed
	trailers *headerMap
	noBody   bool // the response ends with its headers (end_stream)
	close    func()
	compress *compressor
	local    bool
	// upstreamTrailers returns the upstream's trailers once its body is read.
	upstreamTrailers func() http.Header
	// interim is the upstream's informational response to pass on first
	// (proxy_100_continue), or nil.
	interim *interimResponse
}

// readTrailers picks up the upstream trailers after the body has been read.
func (resp *response) readTrailers() {
	if resp.upstreamTrailers == nil || resp.trailers != nil {
		return
	}
	if t := resp.upstreamTrailers(); len(t) > 0 {
		resp.trailers = &headerMap{}
		fromHTTP(t, resp.trailers)
	}
}

func (resp *response) status() int {
	n, _ := strconv.Atoi(resp.hdr.value(":status"))
	return n
}

// localReply is a sendLocalReply call (FilterManager::sendLocalReply).
type localReply struct {
	code       int
	body       string
	modify     func(*headerMap)
	grpcStatus *int
	details    string
}

func (s *stream) finish() {
	if s.ep != nil {
		s.ep.close()
	}
}

func (s *stream) logf(msg string, args ...any) {
	s.g.log.LogAttrs(s.ctx, slog.LevelWarn, fmt.Sprintf(msg, args...), slog.String("path", s.r.URL.Path))
}

// run is the decoder filter chain, then the encoder chain.
func (s *stream) run() *response {
	if lr := s.decodeHCM(); lr != nil {
		// Rejected by the codec/HCM before any filter ran. Simplification:
		// sent directly; Envoy creates the filter chain for such a reply,
		// where the compressors have no Accept-Encoding but ext_proc's
		// encodeHeaders could still see it.
		return s.prepareLocalReply(lr)
	}
	// Compressor decodeHeaders: remember Accept-Encoding, then (filter
	// closest to upstream) remove it if configured
	// (CompressorFilter::decodeHeaders).
	for _, c := range s.g.compressors {
		if v, ok := s.req.get("accept-encoding"); ok && s.acceptEncoding == nil {
			ae := v
			s.acceptEncoding = &ae
		}
		if c.removeAcceptEnc {
			s.req.remove("accept-encoding")
		}
	}
	if s.g.extProc != nil {
		s.ep = newExtProcStream(s)
		if lr := s.ep.decode(); lr != nil {
			return s.sendLocalReply(lr)
		}
	}
	if s.g.rateLimit != nil {
		s.rl = &rateLimitStream{s: s, cfg: s.g.rateLimit}
		if lr := s.rl.decode(); lr != nil {
			return s.sendLocalReply(lr)
		}
	}
	resp, lr := s.forward()
	if lr != nil {
		return s.sendLocalReply(lr)
	}
	return s.encode(resp)
}

// decodeHCM is the HCM's part before the filters: codec-level checks,
// hop-by-hop headers, ConnectionManagerUtility::mutateRequestHeaders, route
// selection.
func (s *stream) decodeHCM() *localReply {
	r := s.r
	s.req = &headerMap{}
	s.req.add(":method", r.Method)
	path := r.RequestURI
	if path == "" || r.Method == http.MethodConnect {
		path = r.URL.RequestURI()
	}
	s.req.add(":path", path)
	s.req.add(":authority", r.Host)
	fromHTTP(r.Header, s.req)
	s.isHead = r.Method == http.MethodHead
	s.isGRPC = strings.HasPrefix(s.req.value("content-type"), "application/grpc")

	// headers_with_underscores_action (HttpProtocolOptions): REJECT_REQUEST
	// answers 400, DROP_HEADER drops them.
	for _, e := range append([]headerEntry(nil), s.req.kv...) {
		if strings.Contains(e.key, "_") && !strings.HasPrefix(e.key, ":") {
			if s.g.rejectUnderscores {
				return &localReply{code: http.StatusBadRequest, details: "http1.unexpected_underscore"}
			}
			if s.g.dropUnderscores {
				s.req.remove(e.key)
			}
		}
	}
	if s.req.byteSize() > s.g.maxRequestHeadersKB*1024 {
		return &localReply{code: http.StatusRequestHeaderFieldsTooLarge, details: "http1.headers_too_large"}
	}
	// Hop-by-hop headers (RFC 9110 §7.6.1) never reach the filters: the
	// headers Connection nominates (Utility::sanitizeConnectionHeader, which
	// rejects nominating X-Forwarded-* or a pseudo-header), then Connection,
	// Keep-Alive, Proxy-Connection, Transfer-Encoding and Upgrade; TE is kept
	// only as "trailers".
	if conn, ok := s.req.get("connection"); ok {
		for _, tok := range strings.Split(conn, ",") {
			t := strings.ToLower(strings.TrimSpace(tok))
			switch t {
			case "", "close", "keep-alive", "upgrade", "http2-settings":
			case "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto":
				return &localReply{code: http.StatusBadRequest, details: "http1.invalid_characters"}
			default:
				if strings.HasPrefix(t, ":") {
					return &localReply{code: http.StatusBadRequest, details: "http1.invalid_characters"}
				}
				s.req.remove(t)
			}
		}
	}
	for _, h := range []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"} {
		s.req.remove(h)
	}
	if te, ok := s.req.get("te"); ok {
		if hasToken(te, "trailers") {
			s.req.set("te", "trailers")
		} else {
			s.req.remove("te")
		}
	}

	// use_remote_address: the trusted client address is the TCP peer; it is
	// appended to X-Forwarded-For (the listener's own address instead when
	// the peer is loopback), x-forwarded-proto is overwritten, and the
	// request counts as an edge request (no internal_address_config: since
	// Envoy 1.33 no address is internal by default)
	// (ConnectionManagerUtility::mutateRequestHeaders).
	hcm := s.g.settings.HCM
	peer, _, _ := net.SplitHostPort(r.RemoteAddr)
	s.remoteIP = peer
	if hcm.GetUseRemoteAddress().GetValue() {
		if !hcm.GetSkipXffAppend() {
			xffAddr := peer
			if ip := net.ParseIP(peer); ip != nil && ip.IsLoopback() {
				if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
					if h, _, err := net.SplitHostPort(la.String()); err == nil {
						xffAddr = h
					}
				}
			}
			if xff, ok := s.req.get("x-forwarded-for"); ok && xff != "" {
				s.req.set("x-forwarded-for", xff+","+xffAddr)
			} else {
				s.req.set("x-forwarded-for", xffAddr)
			}
		}
		s.req.set("x-forwarded-proto", "http")
	} else {
		return &localReply{code: http.StatusInternalServerError, details: "emulator: use_remote_address false is not emulated"}
	}
	if !s.req.has(":scheme") {
		s.req.add(":scheme", s.req.value("x-forwarded-proto"))
	}
	// Edge request: cleanInternalHeaders, x-envoy-external-address.
	s.req.remove("x-envoy-internal")
	for _, h := range []string{
		"x-envoy-decorator-operation", "x-envoy-downstream-service-cluster", "x-envoy-downstream-service-node",
		"x-envoy-retriable-status-codes", "x-envoy-retriable-header-names", "x-envoy-retry-on", "x-envoy-retry-grpc-on",
		"x-envoy-max-retries", "x-envoy-upstream-alt-stat-name", "x-envoy-upstream-rq-timeout-ms",
		"x-envoy-upstream-rq-per-try-timeout-ms", "x-envoy-upstream-rq-timeout-alt-response",
		"x-envoy-expected-rq-timeout-ms", "x-envoy-force-trace", "x-envoy-ip-tags", "x-envoy-original-url",
		"x-envoy-hedge-on-per-try-timeout",
	} {
		s.req.remove(h)
	}
	for _, h := range s.g.settings.Routes.GetInternalOnlyHeaders() {
		s.req.remove(h)
	}
	if peer != "" {
		s.req.set("x-envoy-external-address", peer)
	}
	// generate_request_id (default true): an edge request always gets a new
	// id unless preserve_external_request_id.
	if hcm.GetGenerateRequestId() == nil || hcm.GetGenerateRequestId().GetValue() {
		if !s.req.has("x-request-id") || !hcm.GetPreserveExternalRequestId() {
			s.req.set("x-request-id", newUUID())
		}
	}
	// end_stream with the headers when the request has no body.
	s.noBody = r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody
	if !s.noBody {
		s.bodyRest = r.Body
	}
	s.vh, s.route = s.g.router.match(s.req)
	return nil
}

// rematch re-runs route selection after clear_route_cache.
func (s *stream) rematch() {
	s.vh, s.route = s.g.router.match(s.req)
}

// newUUID is a random (v4) UUID, as the default request ID extension makes.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// bufferLimit is the request body buffer limit: the route's
// request_body_buffer_limit, else min(per_request_buffer_limit_bytes,
// per_connection_buffer_limit_bytes), else the listener's limit
// (Route.request_body_buffer_limit).
func (s *stream) requestBufferLimit() int64 {
	conn := int64(s.g.settings.BufferLimit)
	if s.route != nil {
		if v := s.route.GetRequestBodyBufferLimit(); v != nil {
			return int64(v.GetValue())
		}
		if v := s.route.GetPerRequestBufferLimitBytes(); v != nil {
			return min(int64(v.GetValue()), conn)
		}
	}
	if s.vh != nil {
		if v := s.vh.GetRequestBodyBufferLimit(); v != nil {
			return int64(v.GetValue())
		}
		if v := s.vh.GetPerRequestBufferLimitBytes(); v != nil {
			return min(int64(v.GetValue()), conn)
		}
	}
	return conn
}

// responseBufferLimit is the encoder-side buffer limit: the listener's.
func (s *stream) responseBufferLimit() int64 { return int64(s.g.settings.BufferLimit) }

// readRequestBody moves up to limit bytes of the rest of the request body
// into bodyBuf; over reports whether the body exceeded limit.
func (s *stream) readRequestBody(limit int64) (over bool, err error) {
	if s.bodyRest == nil {
		return false, nil
	}
	b, err := io.ReadAll(io.LimitReader(s.bodyRest, limit-int64(len(s.bodyBuf))+1))
	s.bodyBuf = append(s.bodyBuf, b...)
	if err != nil {
		return false, err
	}
	if int64(len(s.bodyBuf)) > limit {
		return true, nil
	}
	s.bodyRest = nil
	s.readTrailers()
	return false, nil
}

func (s *stream) readTrailers() {
	if len(s.r.Trailer) > 0 {
		s.reqTrailers = &headerMap{}
		fromHTTP(s.r.Trailer, s.reqTrailers)
	}
}

// sendLocalReply sends a local reply through the encoder filters from their
// start (DownstreamFilterManager::sendLocalReplyViaFilterChain): every
// encoder filter sees it, so ext_proc's response phase and the compressors
// apply to it.
func (s *stream) sendLocalReply(lr *localReply) *response {
	return s.encode(s.prepareLocalReply(lr))
}

// prepareLocalReply is Utility::prepareLocalReply: ":status", the route's
// response_headers_to_add and the caller's header changes, then
// Content-Length and a text/plain Content-Type when there is a body (both
// removed when there is none); gRPC requests get a trailers-only reply.
func (s *stream) prepareLocalReply(lr *localReply) *response {
	h := &headerMap{}
	h.add(":status", strconv.Itoa(lr.code))
	s.finalizeResponseHeaders(h)
	if lr.modify != nil {
		lr.modify(h)
	}
	body := lr.body
	resp := &response{hdr: h, local: true}
	if s.isGRPC {
		h.set(":status", "200")
		h.set("content-type", "application/grpc")
		if !h.has("grpc-status") {
			code := httpToGRPC(lr.code)
			if lr.grpcStatus != nil {
				code = *lr.grpcStatus
			}
			h.set("grpc-status", strconv.Itoa(code))
		}
		if body != "" && !s.isHead {
			h.set("grpc-message", percentEncode(body))
		}
		h.remove("content-length")
		resp.noBody = true
		return resp
	}
	if body != "" {
		h.set("content-length", strconv.Itoa(len(body)))
		if !h.has("content-type") {
			h.set("content-type", "text/plain")
		}
	} else {
		h.remove("content-length")
		h.remove("content-type")
	}
	if s.isHead || body == "" {
		resp.noBody = true
	} else {
		resp.body = []byte(body)
	}
	return resp
}

// sendDirectLocalReply is DownstreamFilterManager::sendDirectLocalReply, used
// once the response has entered the encoder filters: the reply skips them.
func (s *stream) sendDirectLocalReply(lr *localReply, old *response) *response {
	if old != nil && old.close != nil {
		old.close()
	}
	return s.prepareLocalReply(lr)
}

// finalizeResponseHeaders adds the route's, virtual host's and route
// config's response_headers_to_add and removes response_headers_to_remove
// (RouteEntryImplBase::finalizeResponseHeaders: route, virtual host, then
// route configuration).
func (s *stream) finalizeResponseHeaders(h *headerMap) {
	if s.route == nil {
		return
	}
	rc := s.g.settings.Routes
	applyHeaderOptions(h, s.route.GetResponseHeadersToAdd(), s.route.GetResponseHeadersToRemove())
	applyHeaderOptions(h, s.vh.GetResponseHeadersToAdd(), s.vh.GetResponseHeadersToRemove())
	applyHeaderOptions(h, rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove())
}

// applyHeaderOptions applies HeaderValueOptions with literal values (no
// substitution formatters) per append_action.
func applyHeaderOptions(h *headerMap, add []*corev3.HeaderValueOption, remove []string) {
	for _, name := range remove {
		h.remove(strings.ToLower(name))
	}
	for _, o := range add {
		name := strings.ToLower(o.GetHeader().GetKey())
		v := o.GetHeader().GetValue()
		if v == "" {
			v = string(o.GetHeader().GetRawValue())
		}
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			if a := o.GetAppend(); a != nil && !a.GetValue() {
				h.set(name, v)
			} else {
				h.add(name, v)
			}
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !h.has(name) {
				h.add(name, v)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h.set(name, v)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if h.has(name) {
				h.set(name, v)
			}
		}
	}
}

// encode runs the encoder filters in reverse config order: ratelimit (its
// response_headers_to_add), ext_proc's response phase, then the compressors
// from the one closest to the router to the first configured.
func (s *stream) encode(resp *response) *response {
	if s.rl != nil {
		s.rl.encodeHeaders(resp.hdr)
	}
	if s.ep != nil {
		out, lr := s.ep.encode(resp)
		if lr != nil {
			return s.sendDirectLocalReply(lr, out)
		}
		resp = out
	}
	for i := len(s.g.compressors) - 1; i >= 0; i-- {
		s.compressEncodeHeaders(s.g.compressors[i], resp)
	}
	return resp
}

// compressEncodeHeaders is CompressorFilter::encodeHeaders.
func (s *stream) compressEncodeHeaders(c *compressor, resp *response) {
	h := resp.hdr
	endStream := resp.noBody
	lenOK := c.isMinimumContentLength(h)
	etagOK := !(c.disableOnEtag && !c.weakenEtag && h.has("etag"))
	compressible := lenOK && c.isContentTypeAllowed(h) && !hasToken(h.value("cache-control"), "no-transform") &&
		etagOK && !h.has("content-encoding")
	if !endStream && lenOK && s.acceptEncodingAllows(c, h) && compressible && c.isTransferEncodingAllowed(h) &&
		!c.uncompressibleCode[resp.status()] {
		c.sanitizeEtag(h)
		h.remove("content-length")
		h.set("content-encoding", c.encoding)
		resp.compress = c
	}
	// Vary is added even when this client did not accept the encoding, so
	// that caches in front know the resource can be compressed.
	if compressible {
		insertVary(h)
	}
}

// acceptEncodingAllows is CompressorFilter::isAcceptEncodingAllowed: the
// first compressor to ask decides the encoding for the whole chain.
func (s *stream) acceptEncodingAllows(c *compressor, h *headerMap) bool {
	if s.acceptEncoding == nil {
		return false
	}
	if !s.decided {
		s.encoding = chooseEncoding(*s.acceptEncoding, s.g.compressors, h)
		s.decided = true
	}
	return strings.EqualFold(s.encoding, c.encoding)
}

// write hands the response to the client: the HCM's response header
// changes (server_name, default "envoy", overwrite), hop-by-hop headers
// dropped, then the body, compressed by the chosen compressor with a flush
// per chunk as Envoy's compressors do.
func (s *stream) write(resp *response) {
	defer func() {
		if resp.close != nil {
			resp.close()
		}
	}()
	h := resp.hdr
	hcm := s.g.settings.HCM
	switch hcm.GetServerHeaderTransformation() {
	case hcmv3.HttpConnectionManager_OVERWRITE:
		name := hcm.GetServerName()
		if name == "" {
			name = "envoy"
		}
		h.set("server", name)
	case hcmv3.HttpConnectionManager_APPEND_IF_ABSENT:
		if !h.has("server") {
			name := hcm.GetServerName()
			if name == "" {
				name = "envoy"
			}
			h.set("server", name)
		}
	}
	if hcm.GetAlwaysSetRequestIdInResponse() {
		h.set("x-request-id", s.req.value("x-request-id"))
	}
	// ConnectionManagerUtility::mutateResponseHeaders (clear_hop_by_hop,
	// non-upgrade response): Connection, Upgrade, Transfer-Encoding,
	// Keep-Alive and Proxy-Connection go; the fields Connection nominates
	// are NOT removed (unlike on requests), so they reach the client unless
	// a filter removes them.
	for _, name := range []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"} {
		h.remove(name)
	}
	dst := s.w.Header()
	if in := resp.interim; in != nil {
		// Its fields go with it only: Go's server sends the header map with a
		// 1xx and keeps it for the final response.
		in.hdr.toHTTP(dst)
		s.w.WriteHeader(in.code)
		clear(dst)
	}
	h.toHTTP(dst)
	if resp.trailers != nil {
		for _, e := range resp.trailers.kv {
			dst.Add("Trailer", e.key)
		}
	}
	status := resp.status()
	if status == 0 {
		status = http.StatusBadGateway
	}
	s.w.WriteHeader(status)
	if resp.noBody || s.isHead || status == http.StatusNoContent || status == http.StatusNotModified {
		return
	}
	var out io.Writer = s.w
	var cw io.WriteCloser
	if resp.compress != nil {
		var err error
		cw, err = resp.compress.newWriter(s.w)
		if err != nil {
			s.logf("compressor %s: %v", resp.compress.name, err)
			return
		}
		out = cw
	}
	fl, _ := s.w.(http.Flusher)
	flush := func() {
		if f, ok := cw.(interface{ Flush() error }); ok {
			_ = f.Flush()
		}
		if fl != nil {
			fl.Flush()
		}
	}
	if len(resp.body) > 0 {
		if _, err := out.Write(resp.body); err != nil {
			return
		}
		flush()
	}
	if resp.stream != nil {
		buf := make([]byte, 16*1024)
		for {
			n, err := resp.stream.Read(buf)
			if n > 0 {
				if _, werr := out.Write(buf[:n]); werr != nil {
					return
				}
				flush()
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				// The upstream reset (or the route timeout fired) after the
				// response started: Envoy resets the downstream stream.
				if cw != nil {
					_ = cw.Close()
				}
				panic(http.ErrAbortHandler)
			}
		}
	}
	if cw != nil {
		_ = cw.Close()
		if fl != nil {
			fl.Flush()
		}
	}
	if resp.trailers != nil {
		for _, e := range resp.trailers.kv {
			dst.Add(http.TrailerPrefix+e.key, e.value)
		}
	}
}

// httpToGRPC is Grpc::Utility::httpToGrpcStatus.
func httpToGRPC(code int) int {
	switch code {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	default:
		return 2 // UNKNOWN
	}
}

func percentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c > '~' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
