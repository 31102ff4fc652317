package emulator

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	customheaderv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/original_ip_detection/custom_header/v3"
	xffv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/original_ip_detection/xff/v3"
	"github.com/sluicehq/sluice/internal/header"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// hcmFields are the HttpConnectionManager fields the emulator implements;
// a config setting any other is refused (checkFields), so a config change
// cannot silently make the emulator diverge from Envoy.
var hcmFields = map[protoreflect.Name]bool{
	"stat_prefix": true, "codec_type": true, "route_config": true, "http_filters": true,
	"use_remote_address": true, "xff_num_trusted_hops": true, "skip_xff_append": true,
	"original_ip_detection_extensions": true,
	"generate_request_id":              true, "preserve_external_request_id": true, "always_set_request_id_in_response": true,
	"normalize_path": true, "merge_slashes": true, "path_with_escaped_slashes_action": true,
	"common_http_protocol_options": true, "max_request_headers_kb": true,
	"request_headers_timeout": true, "request_timeout": true, "stream_idle_timeout": true,
	"server_name": true, "server_header_transformation": true, "proxy_100_continue": true,
}

// extProcFields, rateLimitFields and routerFields are the filter config
// fields the emulator implements, or that change nothing it models (stats,
// tracing and log settings).
var (
	extProcFields = map[protoreflect.Name]bool{
		"grpc_service": true, "failure_mode_allow": true, "processing_mode": true, "message_timeout": true,
		"max_message_timeout": true, "mutation_rules": true, "allow_mode_override": true, "allowed_override_modes": true,
		"disable_immediate_response": true, "metadata_options": true, "disable_clear_route_cache": true,
		"route_cache_action": true, "status_on_error": true, "allow_content_length_header": true,
		"stat_prefix": true, "filter_metadata": true, "emit_client_span": true,
	}
	rateLimitFields = map[protoreflect.Name]bool{
		"domain": true, "stage": true, "request_type": true, "timeout": true, "failure_mode_deny": true,
		"rate_limited_as_resource_exhausted": true, "rate_limit_service": true, "enable_x_ratelimit_headers": true,
		"disable_x_envoy_ratelimited_header": true, "rate_limited_status": true, "response_headers_to_add": true,
		"status_on_error": true, "stat_prefix": true, "rate_limits": true, "enable_retry_after_header": true,
	}
	routerFields = map[protoreflect.Name]bool{
		"dynamic_stats": true, "start_child_span": true, "upstream_log": true, "upstream_log_options": true,
		"suppress_envoy_headers": true, "suppress_grpc_request_failure_code_stats": true,
	}
)

// protocolOptionFields are the common_http_protocol_options implemented.
var protocolOptionFields = map[protoreflect.Name]bool{
	"headers_with_underscores_action": true, "max_headers_count": true, "idle_timeout": true,
}

// checkFields reports the fields set in m that allowed does not list.
func checkFields(m proto.Message, allowed map[protoreflect.Name]bool, what string) error {
	var bad []string
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !allowed[fd.Name()] {
			bad = append(bad, string(fd.Name()))
		}
		return true
	})
	if len(bad) > 0 {
		return fmt.Errorf("emulator: %s %s not emulated", what, strings.Join(bad, ", "))
	}
	return nil
}

// Envoy's defaults for the connection manager's timeouts
// (http_connection_manager.proto).
const (
	defaultStreamIdleTimeout = 5 * time.Minute // stream_idle_timeout
	defaultIdleTimeout       = time.Hour       // common_http_protocol_options.idle_timeout
)

// hcmConfig is what the emulator applies of the connection manager.
// Immutable; safe for concurrent use.
type hcmConfig struct {
	useRemote     bool
	skipXffAppend bool
	xffHops       uint32
	// detectors are the original IP detection extensions, or (without
	// use_remote_address) the XFF one Envoy adds when none is configured.
	detectors     []ipDetector
	normalizePath bool
	mergeSlashes  bool
	// request_headers_timeout, request_timeout and stream_idle_timeout; 0
	// disables each. idleTimeout is the connection's idle timeout.
	requestHeadersTimeout time.Duration
	requestTimeout        time.Duration
	streamIdleTimeout     time.Duration
	idleTimeout           time.Duration
}

// newHCMConfig checks h and prepares it, refusing what Envoy refuses
// (HttpConnectionManagerConfig's constructor,
// source/extensions/filters/network/http_connection_manager/config.cc) and
// what the emulator does not implement.
func newHCMConfig(h *hcmv3.HttpConnectionManager) (hcmConfig, error) {
	if err := checkFields(h, hcmFields, "http_connection_manager"); err != nil {
		return hcmConfig{}, err
	}
	if o := h.GetCommonHttpProtocolOptions(); o != nil {
		if err := checkFields(o, protocolOptionFields, "common_http_protocol_options"); err != nil {
			return hcmConfig{}, err
		}
	}
	switch h.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcmv3.HttpConnectionManager_KEEP_UNCHANGED:
	default:
		return hcmConfig{}, fmt.Errorf("emulator: path_with_escaped_slashes_action %v is not emulated", h.GetPathWithEscapedSlashesAction())
	}
	c := hcmConfig{
		useRemote:         h.GetUseRemoteAddress().GetValue(),
		skipXffAppend:     h.GetSkipXffAppend(),
		xffHops:           h.GetXffNumTrustedHops(),
		normalizePath:     h.GetNormalizePath().GetValue(),
		mergeSlashes:      h.GetMergeSlashes(),
		streamIdleTimeout: defaultStreamIdleTimeout,
		idleTimeout:       defaultIdleTimeout,
	}
	if d := h.GetRequestHeadersTimeout(); d != nil {
		c.requestHeadersTimeout = d.AsDuration()
	}
	if d := h.GetRequestTimeout(); d != nil {
		c.requestTimeout = d.AsDuration()
	}
	if d := h.GetStreamIdleTimeout(); d != nil {
		c.streamIdleTimeout = d.AsDuration()
	}
	if d := h.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
		c.idleTimeout = d.AsDuration()
	}
	exts := h.GetOriginalIpDetectionExtensions()
	if len(exts) == 0 {
		// "Check if IP detection extensions were configured, otherwise fall
		// back to XFF" (config.cc): the XFF extension with
		// xff_num_trusted_hops, used when use_remote_address is off.
		c.detectors = []ipDetector{xffDetector{hops: c.xffHops}}
		return c, nil
	}
	if c.useRemote {
		return hcmConfig{}, errors.New("emulator: Original IP detection extensions and use_remote_address may not be mixed")
	}
	if c.xffHops > 0 {
		return hcmConfig{}, errors.New("emulator: Original IP detection extensions and xff_num_trusted_hops may not be mixed")
	}
	for _, e := range exts {
		m, err := e.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return hcmConfig{}, fmt.Errorf("emulator: original_ip_detection_extensions %q: %w", e.GetName(), err)
		}
		switch x := m.(type) {
		case *customheaderv3.CustomHeaderConfig:
			d := customHeaderDetector{name: strings.ToLower(x.GetHeaderName()), trusted: x.GetAllowExtensionToSetAddressAsTrusted()}
			if st := x.GetRejectWithStatus(); st != nil {
				// "If this is set to < 400 or > 511, the default status 403
				// will be used instead."
				d.reject = http.StatusForbidden
				if code := int(st.GetCode()); code >= 400 && code <= 511 {
					d.reject = code
				}
			}
			c.detectors = append(c.detectors, d)
		case *xffv3.XffConfig:
			if x.GetXffTrustedCidrs() != nil || x.GetSkipXffAppend() != nil {
				return hcmConfig{}, fmt.Errorf("emulator: original_ip_detection_extensions %q: only xff_num_trusted_hops is emulated", e.GetName())
			}
			c.detectors = append(c.detectors, xffDetector{hops: x.GetXffNumTrustedHops()})
		default:
			return hcmConfig{}, fmt.Errorf("emulator: original_ip_detection_extensions %q: %s is not emulated", e.GetName(), m.ProtoReflect().Descriptor().FullName())
		}
	}
	return c, nil
}

// ipDetector is an original IP detection extension
// (envoy/http/original_ip_detection.h OriginalIPDetection::detect).
type ipDetector interface {
	// detect returns the detected address ("" when none), whether the HCM
	// may treat it as trusted (allow_trusted_address_checks) and, when the
	// request is to be refused, the status to refuse it with.
	detect(h *header.List) (addr string, trusted bool, reject int)
}

// customHeaderDetector is envoy.http.original_ip_detection.custom_header
// (source/extensions/http/original_ip_detection/custom_header/
// custom_header.cc): the first value of the header, parsed as an IP
// address (no port).
type customHeaderDetector struct {
	name    string
	trusted bool
	reject  int // 0: carry on when detection fails
}

func (d customHeaderDetector) detect(h *header.List) (string, bool, int) {
	v, ok := h.Lookup(d.name)
	if !ok {
		return "", false, d.reject
	}
	ip, err := parseIP(v)
	if err != nil {
		return "", false, d.reject
	}
	return ip, d.trusted, 0
}

// xffDetector is envoy.http.original_ip_detection.xff
// (source/extensions/http/original_ip_detection/xff/xff.cc) with
// xff_num_trusted_hops.
type xffDetector struct{ hops uint32 }

func (d xffDetector) detect(h *header.List) (string, bool, int) {
	addr, single := lastAddressFromXFF(h, d.hops)
	return addr, single, 0
}

// parseIP is Network::Utility::parseInternetAddressNoThrow without a port:
// an IPv4 or IPv6 literal, no zone, no brackets, no leading zeros; the
// canonical string (addressAsString).
func parseIP(s string) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", err
	}
	if a.Zone() != "" {
		return "", errors.New("zone")
	}
	return a.String(), nil
}

// lastAddressFromXFF is Utility::getLastAddressFromXFF
// (source/common/http/utility.cc): skip the last skip entries of
// x-forwarded-for, parse the entry before them; single reports an XFF of
// exactly one address (and skip 0). Several x-forwarded-for fields count as
// one list, as Envoy's header map joins them.
func lastAddressFromXFF(h *header.List, skip uint32) (addr string, single bool) {
	vals := h.Values("x-forwarded-for")
	if len(vals) == 0 {
		return "", false
	}
	xff := strings.Join(vals, ",")
	for range skip {
		i := strings.LastIndex(xff, ",")
		if i < 0 {
			return "", false
		}
		xff = xff[:i]
	}
	last := xff
	hasComma := false
	if i := strings.LastIndex(xff, ","); i >= 0 {
		hasComma = true
		last = xff[i+1:]
	}
	ip, err := parseIP(strings.TrimSpace(last))
	if err != nil {
		return "", false
	}
	return ip, !hasComma && skip == 0
}

// codecReply is the local reply the HTTP/1 codec sends for a protocol
// error, with the status's reason phrase as its body: the status's reason phrase (ServerConnectionImpl::
// sendProtocolError, CodeUtility::toString).
func codecReply(code int, details string) *localReply {
	return &localReply{code: code, body: http.StatusText(code), details: details, beforeFilters: true}
}

// headerLines is the number of header lines the client sent: Go's server
// keeps Host out of r.Header.
func headerLines(r *http.Request) int {
	n := 0
	for _, vs := range r.Header {
		n += len(vs)
	}
	if r.Host != "" {
		n++
	}
	return n
}

// decodeHCM is the connection manager's part before the filters, in
// Envoy's order: the codec's checks (underscores, header size, hop-by-hop
// fields), ActiveStream::decodeHeaders's path checks and normalisation,
// ConnectionManagerUtility::mutateRequestHeaders (client address, XFF,
// internal_only_headers, request id), then route selection. A local reply it
// returns is sent through the encoder filters (sendLocalReplyViaFilterChain).
func (s *stream) decodeHCM() *localReply {
	r := s.r
	s.req = &header.List{}
	s.req.Add(":method", r.Method)
	path := r.RequestURI
	if path == "" || r.Method == http.MethodConnect {
		path = r.URL.RequestURI()
	}
	s.req.Add(":path", path)
	s.req.Add(":authority", r.Host)
	fromHTTP(r.Header, s.req)
	s.isHead = r.Method == http.MethodHead
	s.isGRPC = strings.HasPrefix(s.req.Get("content-type"), "application/grpc")

	// headers_with_underscores_action (HttpProtocolOptions): REJECT_REQUEST
	// answers 400, DROP_HEADER drops them.
	for _, e := range append(header.List(nil), *s.req...) {
		if strings.Contains(e.Name, "_") && !strings.HasPrefix(e.Name, ":") {
			if s.g.rejectUnderscores {
				return codecReply(http.StatusBadRequest, "http1.unexpected_underscore")
			}
			if s.g.dropUnderscores {
				s.req.Del(e.Name)
			}
		}
	}
	if s.req.ByteSize() > s.g.maxRequestHeadersKB*1024 {
		return codecReply(http.StatusRequestHeaderFieldsTooLarge, "http1.headers_too_large")
	}
	// max_headers_count: the HTTP/1 codec counts every header line, Host
	// included, as it parses them and refuses the request past the limit
	// (ConnectionImpl::completeCurrentHeader, source/common/http/http1/
	// codec_impl.cc: "headers count exceeds limit").
	if lines := headerLines(r); lines > s.g.limits.maxCount {
		return codecReply(http.StatusRequestHeaderFieldsTooLarge, "http1.too_many_headers")
	}
	// Hop-by-hop headers (RFC 9110 §7.6.1) never reach the filters: the
	// headers Connection nominates (Utility::sanitizeConnectionHeader, which
	// rejects nominating X-Forwarded-* or a pseudo-header), then Connection,
	// Keep-Alive, Proxy-Connection, Transfer-Encoding and Upgrade; TE is kept
	// only as "trailers".
	if conn, ok := s.req.Lookup("connection"); ok {
		for _, tok := range strings.Split(conn, ",") {
			t := strings.ToLower(strings.TrimSpace(tok))
			switch t {
			case "", "close", "keep-alive", "upgrade", "http2-settings":
			case "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto":
				return codecReply(http.StatusBadRequest, "http1.invalid_characters")
			default:
				if strings.HasPrefix(t, ":") {
					return codecReply(http.StatusBadRequest, "http1.invalid_characters")
				}
				s.req.Del(t)
			}
		}
	}
	for _, h := range []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"} {
		s.req.Del(h)
	}
	if te, ok := s.req.Lookup("te"); ok {
		if hasToken(te, "trailers") {
			s.req.Set("te", "trailers")
		} else {
			s.req.Del("te")
		}
	}

	// ActiveStream::decodeHeaders: only relative paths (404 otherwise), then
	// maybeNormalizePath (400 path_normalization_failed): a fragment is
	// refused, normalize_path canonicalises, merge_slashes merges.
	if !strings.HasPrefix(path, "/") {
		return &localReply{code: http.StatusNotFound, details: "absolute_path", beforeFilters: true}
	}
	if strings.Contains(path, "#") {
		return &localReply{code: http.StatusBadRequest, details: "path_normalization_failed", beforeFilters: true}
	}
	if s.g.hcm.normalizePath {
		p, ok := canonicalPath(path)
		if !ok {
			return &localReply{code: http.StatusBadRequest, details: "path_normalization_failed", beforeFilters: true}
		}
		path = p
	}
	if s.g.hcm.mergeSlashes {
		path = mergeSlashes(path)
	}
	s.req.Set(":path", path)

	if lr := s.mutateRequestHeaders(); lr != nil {
		return lr
	}
	// end_stream with the headers when the request has no body.
	s.noBody = r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody
	if !s.noBody {
		s.body = s.timedBody(r.Body)
		s.bodyRest = s.body
	}
	s.vh, s.route = s.g.router.match(s.req)
	return nil
}

// mutateRequestHeaders is ConnectionManagerUtility::mutateRequestHeaders
// (source/common/http/conn_manager_utility.cc):
//   - use_remote_address: the trusted client address is the TCP peer, or
//     with xff_num_trusted_hops N the Nth address from the right of the XFF
//     the client sent; the peer is appended to XFF (the listener's own
//     address when the peer is loopback) unless skip_xff_append;
//     x-forwarded-proto is overwritten (unless trusted hops and the client
//     sent one);
//   - otherwise the original IP detection extensions run in order (the
//     first to detect an address wins; one configured to reject refuses the
//     request), and XFF is left as it came;
//   - a request is internal only with a trusted single address that
//     internal_address_config lists; none is listed (and the emulator
//     refuses that field), so every request is external: internal_only_
//     headers and Envoy's retry/timeout control headers are removed — after
//     the detection above, which may read one of them;
//   - an edge request (external with use_remote_address) gets
//     x-envoy-external-address and, with generate_request_id, a new
//     x-request-id; a non-edge request keeps its id.
func (s *stream) mutateRequestHeaders() *localReply {
	r := s.r
	hcm := s.g.settings.HCM
	c := &s.g.hcm
	peer, _, _ := net.SplitHostPort(r.RemoteAddr)
	if ip, err := parseIP(peer); err == nil {
		peer = ip
	}
	remote := ""
	if c.useRemote {
		if c.xffHops > 0 {
			remote, _ = lastAddressFromXFF(s.req, c.xffHops-1)
		}
		if remote == "" {
			remote = peer
		}
		if !c.skipXffAppend {
			xffAddr := peer
			if ip := net.ParseIP(peer); ip != nil && ip.IsLoopback() {
				if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
					if h, _, err := net.SplitHostPort(la.String()); err == nil {
						xffAddr = h
					}
				}
			}
			if vals := s.req.Values("x-forwarded-for"); len(vals) > 0 {
				s.req.Set("x-forwarded-for", strings.Join(vals, ",")+","+xffAddr)
			} else {
				s.req.Set("x-forwarded-for", xffAddr)
			}
		}
		if c.xffHops == 0 || !s.req.Has("x-forwarded-proto") {
			s.req.Set("x-forwarded-proto", "http")
		}
	} else {
		for _, d := range c.detectors {
			addr, _, reject := d.detect(s.req)
			if reject != 0 {
				return &localReply{code: reject, details: "rejecting_because_detection_failed", beforeFilters: true}
			}
			if addr != "" {
				remote = addr
				break
			}
		}
		if remote == "" {
			remote = peer
		}
	}
	if !s.req.Has("x-forwarded-proto") {
		s.req.Set("x-forwarded-proto", "http")
	}
	s.remoteIP = remote
	if !s.req.Has(":scheme") {
		s.req.Add(":scheme", s.req.Get("x-forwarded-proto"))
	}
	edge := c.useRemote
	s.req.Del("x-envoy-internal")
	// cleanInternalHeaders: edge-only ones first, then those of every
	// external request, then internal_only_headers.
	if edge {
		for _, h := range []string{"x-envoy-decorator-operation", "x-envoy-downstream-service-cluster", "x-envoy-downstream-service-node"} {
			s.req.Del(h)
		}
	}
	for _, h := range []string{
		"x-envoy-retriable-status-codes", "x-envoy-retriable-header-names", "x-envoy-retry-on", "x-envoy-retry-grpc-on",
		"x-envoy-max-retries", "x-envoy-upstream-alt-stat-name", "x-envoy-upstream-rq-timeout-ms",
		"x-envoy-upstream-rq-per-try-timeout-ms", "x-envoy-upstream-rq-timeout-alt-response",
		"x-envoy-expected-rq-timeout-ms", "x-envoy-force-trace", "x-envoy-ip-tags", "x-envoy-original-url",
		"x-envoy-hedge-on-per-try-timeout",
	} {
		s.req.Del(h)
	}
	for _, h := range s.g.settings.Routes.GetInternalOnlyHeaders() {
		s.req.Del(strings.ToLower(h))
	}
	if edge && remote != "" {
		s.req.Set("x-envoy-external-address", remote)
	}
	// generate_request_id (default true): set when missing; an edge
	// request's own id is replaced unless preserve_external_request_id.
	if hcm.GetGenerateRequestId() == nil || hcm.GetGenerateRequestId().GetValue() {
		if !s.req.Has("x-request-id") || (edge && !hcm.GetPreserveExternalRequestId()) {
			s.req.Set("x-request-id", newUUID())
		}
	}
	return nil
}

// NewServer returns an HTTP server for the Gateway with the connection
// manager's limits applied where Go's server takes them:
// request_headers_timeout as ReadHeaderTimeout (simplification: Envoy
// answers 408, Go's server closes the connection), the connection idle
// timeout, and max_request_headers_kb as MaxHeaderBytes. request_timeout and
// stream_idle_timeout apply per request in ServeHTTP.
func (g *Gateway) NewServer() *http.Server {
	return &http.Server{
		Handler:           g,
		ReadHeaderTimeout: g.hcm.requestHeadersTimeout,
		IdleTimeout:       g.hcm.idleTimeout,
		// Go counts the request line and line ends too: leave it room, the
		// emulator checks Envoy's own measure (HeaderMap::byteSize).
		MaxHeaderBytes: g.maxRequestHeadersKB*1024 + 4<<10,
	}
}

// Timeouts of the request body (ActiveStream::onRequestTimeout and
// onIdleTimeout, source/common/http/conn_manager_impl.cc): 408 while the
// response has not started.
var (
	errRequestTimeout    = errors.New("emulator: request_timeout expired")
	errStreamIdleTimeout = errors.New("emulator: stream_idle_timeout expired")
)

// timeoutReply is the local reply for a body read that ran out of time, or
// nil for another error.
func timeoutReply(err error) *localReply {
	switch {
	case errors.Is(err, errRequestTimeout):
		return &localReply{code: http.StatusRequestTimeout, body: "request timeout", details: "request_overall_timeout"}
	case errors.Is(err, errStreamIdleTimeout):
		return &localReply{code: http.StatusRequestTimeout, body: "stream timeout", details: "stream_idle_timeout"}
	}
	return nil
}

// timedBody bounds reading the client's body by request_timeout (from the
// start of the request) and stream_idle_timeout (per read), through the
// connection's read deadline. Without a deadline-capable connection (a
// ResponseWriter without http.ResponseController support) it reads without.
func (s *stream) timedBody(body io.Reader) *deadlineBody {
	return &deadlineBody{
		r:        body,
		rc:       http.NewResponseController(s.w),
		deadline: s.start.Add(s.g.hcm.requestTimeout),
		overall:  s.g.hcm.requestTimeout > 0,
		idle:     s.g.hcm.streamIdleTimeout,
	}
}

// deadlineBody is the client's body read under the HCM's timeouts. Read is
// used by one goroutine at a time; abort may be called from another.
type deadlineBody struct {
	r        io.Reader
	rc       *http.ResponseController
	deadline time.Time
	overall  bool
	idle     time.Duration
	done     bool
	aborted  atomic.Bool
}

// errAborted ends a body read the stream gave up on (a local reply was sent
// while the body was still arriving).
var errAborted = errors.New("emulator: request body read aborted")

// abort makes a pending or later Read fail at once: the stream answered
// while the client was still sending.
func (b *deadlineBody) abort() {
	b.aborted.Store(true)
	_ = b.rc.SetReadDeadline(time.Now())
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("emulator: body already ended")
	}
	if b.aborted.Load() {
		return 0, errAborted
	}
	var dl time.Time
	cause := errStreamIdleTimeout
	if b.idle > 0 {
		dl = time.Now().Add(b.idle)
	}
	if b.overall && (dl.IsZero() || b.deadline.Before(dl)) {
		dl, cause = b.deadline, errRequestTimeout
	}
	armed := !dl.IsZero() && b.rc.SetReadDeadline(dl) == nil
	if b.aborted.Load() {
		// abort ran between the check above and the deadline just set.
		_ = b.rc.SetReadDeadline(time.Now())
	}
	n, err := b.r.Read(p)
	if err != nil && b.aborted.Load() {
		return n, errAborted
	}
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		b.done = true
		if armed {
			// Clear it: Go's server reads the connection in the background
			// once the body is done, and a deadline left behind would cancel
			// the request's context mid-response.
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	default:
		var ne net.Error
		if armed && errors.As(err, &ne) && ne.Timeout() {
			// The deadline stays in the past: Go's server then gives up
			// discarding the unread body and closes the connection after the
			// reply, as Envoy does with a request it did not read whole.
			b.done = true
			return n, fmt.Errorf("%w: %w", cause, err)
		}
	}
	return n, err
}
