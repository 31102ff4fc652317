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
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/internal/header"
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
	jwt         *jwtConfig
	extProc     *extProcConfig
	rateLimit   *rateLimitConfig
	transport   http.RoundTripper
	ownTrans    *http.Transport
	log         *slog.Logger
	limits      mutationLimits
	hcm         hcmConfig
	// codec
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
	if err := checkFields(s.Router, routerFields, "router"); err != nil {
		return nil, err
	}
	if s.ExtProc != nil {
		if err := checkFields(s.ExtProc, extProcFields, "ext_proc"); err != nil {
			return nil, err
		}
	}
	if s.RateLimit != nil {
		if err := checkFields(s.RateLimit, rateLimitFields, "ratelimit"); err != nil {
			return nil, err
		}
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
	if g.hcm, err = newHCMConfig(hcm); err != nil {
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
	if s.JWTAuthn != nil {
		if g.jwt, err = newJWTConfig(s.JWTAuthn); err != nil {
			return nil, err
		}
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

// checkFilterOrder accepts compressors, then jwt_authn, then ext_proc, then
// ratelimit, then the router — each optional but the router — which is the
// only shape the stream code below implements.
func checkFilterOrder(s *envoy.Settings) error {
	want := []string{}
	for _, c := range s.Compressors {
		want = append(want, c.Name)
	}
	if s.JWTAuthn != nil {
		want = append(want, s.JWTAuthnName)
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
		return fmt.Errorf("emulator: http_filters %v: want compressors, jwt_authn, ext_proc, ratelimit, router in that order", s.Filters)
	}
	for i, name := range want {
		if s.Filters[i] != name {
			return fmt.Errorf("emulator: http_filters %v: want compressors, jwt_authn, ext_proc, ratelimit, router in that order", s.Filters)
		}
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

	req      *header.List
	remoteIP string
	isHead   bool
	isGRPC   bool
	vh       *routev3.VirtualHost
	route    *routev3.Route

	// Request body: noBody when the request ended with its headers;
	// bodyBuf holds what a filter buffered (or replaced); bodyRest is what
	// still streams from the client after bodyBuf.
	noBody   bool
	bodyBuf  []byte
	bodyRest io.Reader
	// body is the client's body under the HCM's timeouts (nil without one).
	body        *deadlineBody
	reqTrailers *header.List
	// bodyReplaced: ext_proc's CONTINUE_AND_REPLACE replaced the body.
	bodyReplaced bool

	acceptEncoding *string
	encoding       string // chosen by the first compressor to decide (filter state "encoding_decision")
	decided        bool

	// dynMeta is the stream's dynamic metadata (StreamInfo::dynamicMetadata)
	// by namespace, as filters (jwt_authn) set it.
	dynMeta map[string]*structpb.Struct

	ep *extProcStream
	rl *rateLimitStream
}

// response is a response moving through the encoder filters.
type response struct {
	hdr      *header.List // includes ":status"
	body     []byte       // buffered body, sent before stream
	stream   io.Reader    // rest of the body, streamed
	trailers *header.List
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
		resp.trailers = &header.List{}
		fromHTTP(t, resp.trailers)
	}
}

func (resp *response) status() int {
	n, _ := strconv.Atoi(resp.hdr.Get(":status"))
	return n
}

// localReply is a sendLocalReply call (FilterManager::sendLocalReply).
type localReply struct {
	code       int
	body       string
	modify     func(*header.List)
	grpcStatus *int
	details    string
	// beforeFilters: sent by the codec or the connection manager before
	// the filter chain ran (no route, nothing decoded).
	beforeFilters bool
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
		// Refused by the codec or the connection manager before any filter
		// ran. Envoy still creates the filter chain for the reply ("For
		// early error handling, do a best-effort attempt to create a filter
		// chain", DownstreamFilterManager::sendLocalReplyViaFilterChain) and
		// sends it through every encoder filter: ext_proc opens a stream
		// with the response headers alone; the compressors never saw an
		// Accept-Encoding, so they do not compress. Simplification: no route
		// is selected for such a reply.
		if s.g.extProc != nil {
			s.ep = newExtProcStream(s)
		}
		return s.sendLocalReply(lr)
	}
	// Compressor decodeHeaders: remember Accept-Encoding, then (filter
	// closest to upstream) remove it if configured
	// (CompressorFilter::decodeHeaders).
	for _, c := range s.g.compressors {
		if v, ok := s.req.Lookup("accept-encoding"); ok && s.acceptEncoding == nil {
			ae := v
			s.acceptEncoding = &ae
		}
		if c.removeAcceptEnc {
			s.req.Del("accept-encoding")
		}
	}
	if s.g.jwt != nil {
		if lr := s.g.jwt.decode(s); lr != nil {
			// The filters after jwt_authn exist but never decoded: ext_proc
			// sees the reply's headers alone.
			if s.g.extProc != nil {
				s.ep = newExtProcStream(s)
			}
			return s.sendLocalReply(lr)
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

// metadata returns the stream's dynamic metadata namespace ns, created
// empty when missing.
func (s *stream) metadata(ns string) *structpb.Struct {
	if s.dynMeta == nil {
		s.dynMeta = map[string]*structpb.Struct{}
	}
	st, ok := s.dynMeta[ns]
	if !ok {
		st = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		s.dynMeta[ns] = st
	}
	return st
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
		s.reqTrailers = &header.List{}
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
	h := &header.List{}
	h.Add(":status", strconv.Itoa(lr.code))
	s.finalizeResponseHeaders(h)
	if lr.modify != nil {
		lr.modify(h)
	}
	body := lr.body
	resp := &response{hdr: h, local: true}
	if s.isGRPC {
		h.Set(":status", "200")
		h.Set("content-type", "application/grpc")
		if !h.Has("grpc-status") {
			code := httpToGRPC(lr.code)
			if lr.grpcStatus != nil {
				code = *lr.grpcStatus
			}
			h.Set("grpc-status", strconv.Itoa(code))
		}
		if body != "" && !s.isHead {
			h.Set("grpc-message", percentEncode(body))
		}
		h.Del("content-length")
		resp.noBody = true
		return resp
	}
	if body != "" {
		h.Set("content-length", strconv.Itoa(len(body)))
		if !h.Has("content-type") {
			h.Set("content-type", "text/plain")
		}
	} else {
		h.Del("content-length")
		h.Del("content-type")
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
func (s *stream) finalizeResponseHeaders(h *header.List) {
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
func applyHeaderOptions(h *header.List, add []*corev3.HeaderValueOption, remove []string) {
	for _, name := range remove {
		h.Del(strings.ToLower(name))
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
				h.Set(name, v)
			} else {
				h.Add(name, v)
			}
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !h.Has(name) {
				h.Add(name, v)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h.Set(name, v)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if h.Has(name) {
				h.Set(name, v)
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
	etagOK := !(c.disableOnEtag && !c.weakenEtag && h.Has("etag"))
	compressible := lenOK && c.isContentTypeAllowed(h) && !hasToken(h.Get("cache-control"), "no-transform") &&
		etagOK && !h.Has("content-encoding")
	if !endStream && lenOK && s.acceptEncodingAllows(c, h) && compressible && c.isTransferEncodingAllowed(h) &&
		!c.uncompressibleCode[resp.status()] {
		c.sanitizeEtag(h)
		h.Del("content-length")
		h.Set("content-encoding", c.encoding)
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
func (s *stream) acceptEncodingAllows(c *compressor, h *header.List) bool {
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
		h.Set("server", name)
	case hcmv3.HttpConnectionManager_APPEND_IF_ABSENT:
		if !h.Has("server") {
			name := hcm.GetServerName()
			if name == "" {
				name = "envoy"
			}
			h.Set("server", name)
		}
	}
	if hcm.GetAlwaysSetRequestIdInResponse() {
		h.Set("x-request-id", s.req.Get("x-request-id"))
	}
	// ConnectionManagerUtility::mutateResponseHeaders (clear_hop_by_hop,
	// non-upgrade response): Connection, Upgrade, Transfer-Encoding,
	// Keep-Alive and Proxy-Connection go; the fields Connection nominates
	// are NOT removed (unlike on requests), so they reach the client unless
	// a filter removes them.
	for _, name := range []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"} {
		h.Del(name)
	}
	dst := s.w.Header()
	if in := resp.interim; in != nil {
		// Its fields go with it only: Go's server sends the header map with a
		// 1xx and keeps it for the final response.
		toHTTP(*in.hdr, dst)
		s.w.WriteHeader(in.code)
		clear(dst)
	}
	toHTTP(*h, dst)
	if resp.trailers != nil {
		for _, e := range *resp.trailers {
			dst.Add("Trailer", e.Name)
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
		for _, e := range *resp.trailers {
			dst.Add(http.TrailerPrefix+e.Name, e.Value)
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
