package extproc

import (
	"errors"
	"fmt"
	"strings"
	"time"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
)

// Identity sources (IdentityConfig.Source).
const (
	// SourceHeader trusts one request header per value (tenant_header,
	// user_header). Only safe when a filter before ext_proc sets that header
	// and overwrites any client copy (an auth filter; Envoy's route-level
	// request_headers_to_remove runs in the router, after ext_proc, and does
	// not help).
	SourceHeader = "header"
	// SourceJWTMetadata trusts the dynamic metadata Envoy's jwt_authn filter
	// writes for a verified token (JwtProvider.payload_in_metadata), which
	// ext_proc forwards only for the namespaces listed in its
	// metadata_options.forwarding_namespaces.untyped.
	SourceJWTMetadata = "jwt_metadata"
)

// Config is the ext_proc server's section of the Sluice config file. Use
// WithDefaults before Validate; New does both. The zero value, defaulted, is
// a working development setup (identity from the x-tenant-id header).
type Config struct {
	// Identity configures the identity stage: where the tenant and user come
	// from and how the tier is resolved.
	Identity IdentityConfig `yaml:"identity"`
	// Metrics configures the per-request metrics stage and the route names
	// every stage sees in Exchange.Route.
	Metrics MetricsConfig `yaml:"metrics"`
	// MaxBodyBytes bounds the request body and, separately, the response body
	// one stream may send (summed over chunks). A stream going over it ends
	// with RESOURCE_EXHAUSTED. Keep it at or above Envoy's buffer limit for
	// BUFFERED bodies (per_connection_buffer_limit_bytes, 1 MiB by default, or
	// the route's request_body_buffer_limit), or Envoy's 413/500 becomes a
	// stream error. Default 1 MiB.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxStreams bounds the ext_proc streams open at once (each holds a goroutine and its
	// buffers: about 16 KB without bodies, measured by bench/streams.sh). A stream beyond it is
	// refused at once with RESOURCE_EXHAUSTED, so Envoy applies failure_mode_allow to that
	// request instead of the process running out of memory. Default 50000.
	MaxStreams int `yaml:"max_streams"`
	// RequestBodyTimeout bounds how long a stream waits for a request body
	// message it is owed (a stage asked for the body, or the route's mode
	// sends it): past it Sluice answers 408 itself (an ImmediateResponse,
	// which Envoy sends whenever it arrives) and the stream ends. Envoy
	// buffers a BUFFERED body until the client sent all of it, so a client
	// trickling its body would otherwise hold the stream, and one of
	// MaxStreams, for as long as it liked. Keep it below Envoy's
	// request_timeout for clear 408s from Sluice; Envoy's own timeouts still
	// apply. Default 10s.
	RequestBodyTimeout time.Duration `yaml:"request_body_timeout"`
	// MaxRequestHeaders and MaxRequestHeadersKB mirror the connection
	// manager's common_http_protocol_options.max_headers_count and
	// max_request_headers_kb in envoy.yaml (Envoy's defaults: 100 and 60).
	// Envoy refuses a header mutation whose result exceeds either, and
	// answers 500 (MutationUtils::headerMutationResultCheck, then
	// Filter::onReceiveMessage's invalid-mutation reply); a request whose
	// own headers are near the limit would get that 500 for the few
	// x-sluice-* fields Sluice adds. Sluice answers such a request 431
	// itself instead. Defaults 100 and 60.
	MaxRequestHeaders   int `yaml:"max_request_headers"`
	MaxRequestHeadersKB int `yaml:"max_request_headers_kb"`
	// MaxResponseHeaders and MaxResponseHeadersKB mirror the upstream
	// cluster's limits on a response's header map (common_http_protocol_
	// options.max_headers_count and max_response_headers_kb; Envoy's
	// defaults: 100 and 60), which Envoy checks a response header mutation
	// against in the same way. When the fields a stage adds to a response
	// (cache-status, x-cache) would push an origin's response past either,
	// Sluice leaves them out rather than have Envoy turn the origin's
	// answer into a 500. Defaults 100 and 60.
	MaxResponseHeaders   int `yaml:"max_response_headers"`
	MaxResponseHeadersKB int `yaml:"max_response_headers_kb"`
	// ProcessingMode mirrors the ext_proc filter's processing_mode in
	// envoy.yaml. Sluice needs it because a mode_override replaces every field
	// (ProcessingResponse.mode_override: body modes always apply, unset means
	// NONE), so an override must repeat the configured values. Per-route
	// body-mode overrides are picked up from ProcessingRequest.protocol_config
	// where Envoy sends it. Default: headers SEND, bodies NONE, trailers SKIP
	// (Envoy's defaults).
	ProcessingMode ProcessingModeConfig `yaml:"processing_mode"`
}

// IdentityConfig is the identity stage's configuration.
type IdentityConfig struct {
	// Source is where identity comes from: "header" (default) or
	// "jwt_metadata". Only that source is trusted.
	Source string `yaml:"source"`
	// TenantHeader carries the tenant when Source is "header". Default
	// "x-tenant-id" (for development: anyone can send it unless a filter
	// before ext_proc overwrites it).
	TenantHeader string `yaml:"tenant_header"`
	// UserHeader carries the user when Source is "header". Default
	// "x-user-id"; "-" disables it.
	UserHeader string `yaml:"user_header"`
	// JWTMetadata locates the claims when Source is "jwt_metadata".
	JWTMetadata JWTMetadataConfig `yaml:"jwt_metadata"`
	// DefaultTier is the tier of a known tenant the tier store does not
	// know. Default "free". Anonymous callers always get tier "anonymous".
	DefaultTier string `yaml:"default_tier"`
	// Tiers is a static tenant → tier map, used when no other tier store is
	// given to New. Default empty.
	Tiers map[string]string `yaml:"tiers"`
	// MaxValueLength bounds tenant, user and tier values; longer values, and
	// values with characters outside A-Z a-z 0-9 . _ : @ + -, are treated as
	// absent. Default 128.
	MaxValueLength int `yaml:"max_value_length"`
}

// JWTMetadataConfig says where Envoy's jwt_authn filter leaves the verified
// claims. With
//
//	jwt_authn:  providers: {p: {payload_in_metadata: jwt_payload, ...}}
//	ext_proc:   metadata_options: {forwarding_namespaces: {untyped: [envoy.filters.http.jwt_authn]}}
//
// (jwt_authn listed before ext_proc in http_filters), the claims arrive as
// ProcessingRequest.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"]
// with fields jwt_payload.<claim>.
type JWTMetadataConfig struct {
	// Namespace is the filter_metadata key. Default
	// "envoy.filters.http.jwt_authn".
	Namespace string `yaml:"namespace"`
	// TenantClaim is a dot-separated path into the namespace's struct, for
	// example "jwt_payload.tenant_id". Required when Source is
	// "jwt_metadata". String claims and integral numbers are accepted.
	TenantClaim string `yaml:"tenant_claim"`
	// UserClaim is the user's path, for example "jwt_payload.sub". Optional.
	UserClaim string `yaml:"user_claim"`
}

// MetricsConfig is the metrics stage's configuration.
type MetricsConfig struct {
	// Routes name the paths worth their own label value. The first entry
	// matching a request's path (query excluded) gives Exchange.Route and
	// the route label; unmatched paths are "other". Default none.
	Routes []Route `yaml:"routes"`
	// SlowThreshold counts a request in sluice_http_slow_requests_total and
	// logs it once its duration exceeds this. Default 1s; negative disables.
	SlowThreshold time.Duration `yaml:"slow_threshold"`
	// SlowLogPerSecond caps slow-request log lines (the counter still counts
	// every one). Default 10.
	SlowLogPerSecond int `yaml:"slow_log_per_second"`
	// MaxTiers bounds the distinct tier label values; tiers seen after that
	// many are reported as "other". Default 32.
	MaxTiers int `yaml:"max_tiers"`
}

// Route is one named path for Exchange.Route. Exactly one of Prefix and Path
// is set. Prefix matching is plain string prefix, as Envoy's route prefix.
type Route struct {
	// Name is the label value: lower-case letters, digits and '_', at most
	// 64 bytes, not "other".
	Name string `yaml:"name"`
	// Prefix matches paths starting with it.
	Prefix string `yaml:"prefix"`
	// Path matches this path exactly.
	Path string `yaml:"path"`
}

// ProcessingModeConfig mirrors envoy.extensions.filters.http.ext_proc.v3.ProcessingMode
// with the enum names as strings.
type ProcessingModeConfig struct {
	// RequestHeaderMode is SEND (default) or SKIP.
	RequestHeaderMode string `yaml:"request_header_mode"`
	// ResponseHeaderMode is SEND (default) or SKIP.
	ResponseHeaderMode string `yaml:"response_header_mode"`
	// RequestBodyMode is NONE (default), STREAMED, BUFFERED,
	// BUFFERED_PARTIAL, FULL_DUPLEX_STREAMED or GRPC.
	RequestBodyMode string `yaml:"request_body_mode"`
	// ResponseBodyMode takes the same values; default NONE.
	ResponseBodyMode string `yaml:"response_body_mode"`
	// RequestTrailerMode is SKIP (default) or SEND.
	RequestTrailerMode string `yaml:"request_trailer_mode"`
	// ResponseTrailerMode is SKIP (default) or SEND.
	ResponseTrailerMode string `yaml:"response_trailer_mode"`
}

// Defaults.
const (
	DefaultMaxBodyBytes         = 1 << 20
	DefaultMaxStreams           = 50000
	DefaultRequestBodyTimeout   = 10 * time.Second
	DefaultMaxRequestHeaders    = 100
	DefaultMaxRequestHeadersKB  = 60
	DefaultMaxResponseHeaders   = 100
	DefaultMaxResponseHeadersKB = 60
	DefaultTenantHeader         = "x-tenant-id"
	DefaultUserHeader           = "x-user-id"
	DefaultJWTNamespace         = "envoy.filters.http.jwt_authn"
	DefaultTier                 = "free"
	DefaultMaxValueLength       = 128
)

// WithDefaults returns c with every unset field given its documented default.
func (c Config) WithDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.RequestBodyTimeout == 0 {
		c.RequestBodyTimeout = DefaultRequestBodyTimeout
	}
	if c.MaxRequestHeaders == 0 {
		c.MaxRequestHeaders = DefaultMaxRequestHeaders
	}
	if c.MaxRequestHeadersKB == 0 {
		c.MaxRequestHeadersKB = DefaultMaxRequestHeadersKB
	}
	if c.MaxResponseHeaders == 0 {
		c.MaxResponseHeaders = DefaultMaxResponseHeaders
	}
	if c.MaxResponseHeadersKB == 0 {
		c.MaxResponseHeadersKB = DefaultMaxResponseHeadersKB
	}
	id := &c.Identity
	if id.Source == "" {
		id.Source = SourceHeader
	}
	if id.TenantHeader == "" {
		id.TenantHeader = DefaultTenantHeader
	}
	if id.UserHeader == "" {
		id.UserHeader = DefaultUserHeader
	}
	if id.JWTMetadata.Namespace == "" {
		id.JWTMetadata.Namespace = DefaultJWTNamespace
	}
	if id.DefaultTier == "" {
		id.DefaultTier = DefaultTier
	}
	if id.MaxValueLength == 0 {
		id.MaxValueLength = DefaultMaxValueLength
	}
	m := &c.Metrics
	if m.SlowThreshold == 0 {
		m.SlowThreshold = time.Second
	}
	if m.SlowLogPerSecond == 0 {
		m.SlowLogPerSecond = 10
	}
	if m.MaxTiers == 0 {
		m.MaxTiers = 32
	}
	pm := &c.ProcessingMode
	for _, f := range []struct {
		p   *string
		def string
	}{
		{&pm.RequestHeaderMode, "SEND"}, {&pm.ResponseHeaderMode, "SEND"},
		{&pm.RequestBodyMode, "NONE"}, {&pm.ResponseBodyMode, "NONE"},
		{&pm.RequestTrailerMode, "SKIP"}, {&pm.ResponseTrailerMode, "SKIP"},
	} {
		if *f.p == "" {
			*f.p = f.def
		}
	}
	return c
}

// Validate reports every problem with a defaulted c. It changes nothing.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes < 1 {
		errs = append(errs, errors.New("extproc: max_body_bytes must be positive"))
	}
	if c.MaxStreams < 1 {
		errs = append(errs, errors.New("extproc: max_streams must be positive"))
	}
	if c.MaxRequestHeaders < 1 || c.MaxRequestHeadersKB < 1 {
		errs = append(errs, errors.New("extproc: max_request_headers and max_request_headers_kb must be positive"))
	}
	if c.MaxResponseHeaders < 1 || c.MaxResponseHeadersKB < 1 {
		errs = append(errs, errors.New("extproc: max_response_headers and max_response_headers_kb must be positive"))
	}
	if c.RequestBodyTimeout < time.Millisecond {
		errs = append(errs, fmt.Errorf("extproc: request_body_timeout %v must be at least 1ms", c.RequestBodyTimeout))
	}
	id := c.Identity
	switch id.Source {
	case SourceHeader:
		if !validHeaderName(id.TenantHeader) {
			errs = append(errs, fmt.Errorf("extproc: identity.tenant_header %q is not a valid lower-case header name", id.TenantHeader))
		}
		if id.UserHeader != "-" && !validHeaderName(id.UserHeader) {
			errs = append(errs, fmt.Errorf("extproc: identity.user_header %q is not a valid lower-case header name", id.UserHeader))
		}
		if strings.HasPrefix(id.TenantHeader, OwnedPrefix) || strings.HasPrefix(id.UserHeader, OwnedPrefix) {
			errs = append(errs, errors.New("extproc: identity headers must not be headers Sluice sets (x-sluice-*)"))
		}
	case SourceJWTMetadata:
		if id.JWTMetadata.TenantClaim == "" {
			errs = append(errs, errors.New("extproc: identity.jwt_metadata.tenant_claim is required with source jwt_metadata"))
		}
		for _, p := range []string{id.JWTMetadata.TenantClaim, id.JWTMetadata.UserClaim} {
			if p != "" && !validClaimPath(p) {
				errs = append(errs, fmt.Errorf("extproc: identity.jwt_metadata claim path %q has an empty segment", p))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("extproc: identity.source %q must be %s or %s", id.Source, SourceHeader, SourceJWTMetadata))
	}
	if id.MaxValueLength < 1 || id.MaxValueLength > 1024 {
		errs = append(errs, fmt.Errorf("extproc: identity.max_value_length %d must be in [1, 1024]", id.MaxValueLength))
	}
	if !validValue(id.DefaultTier, id.MaxValueLength) || id.DefaultTier == Anonymous {
		errs = append(errs, fmt.Errorf("extproc: identity.default_tier %q is not a valid tier name", id.DefaultTier))
	}
	for tenant, t := range id.Tiers {
		if !validValue(tenant, id.MaxValueLength) || !validValue(t, id.MaxValueLength) {
			errs = append(errs, fmt.Errorf("extproc: identity.tiers: %q: %q is not a valid tenant and tier", tenant, t))
		}
	}

	m := c.Metrics
	if m.SlowLogPerSecond < 0 {
		errs = append(errs, errors.New("extproc: metrics.slow_log_per_second must not be negative"))
	}
	if m.MaxTiers < 1 {
		errs = append(errs, errors.New("extproc: metrics.max_tiers must be at least 1"))
	}
	seen := make(map[string]bool, len(m.Routes))
	for i, r := range m.Routes {
		switch {
		case !validLabel(r.Name) || r.Name == OtherRoute:
			errs = append(errs, fmt.Errorf("extproc: metrics.routes[%d]: name %q must be 1-64 of a-z 0-9 _ and not %q", i, r.Name, OtherRoute))
		case seen[r.Name]:
			errs = append(errs, fmt.Errorf("extproc: metrics.routes[%d]: duplicate name %q", i, r.Name))
		}
		seen[r.Name] = true
		if (r.Prefix == "") == (r.Path == "") {
			errs = append(errs, fmt.Errorf("extproc: metrics.routes[%d] (%s): set exactly one of prefix and path", i, r.Name))
		} else if !strings.HasPrefix(r.Prefix+r.Path, "/") {
			errs = append(errs, fmt.Errorf("extproc: metrics.routes[%d] (%s): prefix or path must start with /", i, r.Name))
		}
	}

	pm := c.ProcessingMode
	for _, f := range []struct{ name, v string }{
		{"request_header_mode", pm.RequestHeaderMode}, {"response_header_mode", pm.ResponseHeaderMode},
		{"request_trailer_mode", pm.RequestTrailerMode}, {"response_trailer_mode", pm.ResponseTrailerMode},
	} {
		if f.v != "SEND" && f.v != "SKIP" {
			errs = append(errs, fmt.Errorf("extproc: processing_mode.%s %q must be SEND or SKIP", f.name, f.v))
		}
	}
	for _, f := range []struct{ name, v string }{
		{"request_body_mode", pm.RequestBodyMode}, {"response_body_mode", pm.ResponseBodyMode},
	} {
		if _, ok := procmodev3.ProcessingMode_BodySendMode_value[f.v]; !ok {
			errs = append(errs, fmt.Errorf("extproc: processing_mode.%s %q is not a body send mode", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// MaxRecvMsgBytes is the smallest gRPC MaxRecvMsgSize the server needs: a
// body message of MaxBodyBytes plus headers, metadata and attributes (Envoy's
// request headers alone may reach max_request_headers_kb, 60 KiB by default;
// 1 MiB of headroom covers generous settings). A smaller server limit makes
// gRPC reject the message with RESOURCE_EXHAUSTED before Sluice sees it.
func (c Config) MaxRecvMsgBytes() int {
	c = c.WithDefaults()
	return c.MaxBodyBytes + 1<<20
}

// proto converts the validated strings to the proto message.
func (pm ProcessingModeConfig) proto() *procmodev3.ProcessingMode {
	hm := func(s string) procmodev3.ProcessingMode_HeaderSendMode {
		if s == "SKIP" {
			return procmodev3.ProcessingMode_SKIP
		}
		return procmodev3.ProcessingMode_SEND
	}
	bm := func(s string) procmodev3.ProcessingMode_BodySendMode {
		return procmodev3.ProcessingMode_BodySendMode(procmodev3.ProcessingMode_BodySendMode_value[s])
	}
	return &procmodev3.ProcessingMode{
		RequestHeaderMode:   hm(pm.RequestHeaderMode),
		ResponseHeaderMode:  hm(pm.ResponseHeaderMode),
		RequestBodyMode:     bm(pm.RequestBodyMode),
		ResponseBodyMode:    bm(pm.ResponseBodyMode),
		RequestTrailerMode:  hm(pm.RequestTrailerMode),
		ResponseTrailerMode: hm(pm.ResponseTrailerMode),
	}
}

func validClaimPath(p string) bool {
	for seg := range strings.SplitSeq(p, ".") {
		if seg == "" {
			return false
		}
	}
	return true
}

// validLabel reports whether s is a route or stage name: 1-64 of a-z 0-9 _.
func validLabel(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// validValue reports whether s may be used as a tenant, user or tier: 1..max
// bytes of A-Z a-z 0-9 . _ : @ + -. These values become header values, rate
// limit descriptor values, Redis key parts and (tiers) metric labels, so the
// set is deliberately small.
func validValue(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '@', c == '+', c == '-':
		default:
			return false
		}
	}
	return true
}

// validHeaderName reports whether s is a lower-case HTTP token (RFC 9110
// tchar) that Envoy lets ext_proc mutate: not a pseudo-header, not host, not
// x-envoy-* (HeaderMutation.set_headers: such mutations are ignored).
func validHeaderName(s string) bool {
	if s == "" || s == "host" || strings.HasPrefix(s, "x-envoy-") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s can be sent as a header value: no NUL,
// CR or LF (Envoy's HeaderUtility::headerValueIsValid; an invalid value
// makes Envoy reject the whole mutation and answer 500).
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		// A byte loop: strings.ContainsAny builds its byte set on every call, and every
		// field of a cached answer passes through here.
		if c := s[i]; c == 0 || c == '\r' || c == '\n' {
			return false
		}
	}
	return true
}
