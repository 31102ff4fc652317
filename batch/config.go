// Package batch answers Microsoft Graph–style JSON batch requests
// (POST /api/v1/batch) inside Sluice's ext_proc pipeline: it parses and
// validates the batch, sends each item back through the Envoy listener (so
// every sub-request passes the same identity, rate limiting, caching and
// metrics as a direct call) with a locked-down HTTP client, and assembles one
// combined response.
//
// Layout: config.go (Config), parse.go (strict request parsing and the
// dependency graph), url.go (the SSRF validator), client.go (the HTTP client
// that can only reach the listener), run.go (the executor), stage.go (the
// extproc stage).
package batch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Config configures batch fan-out: the `batch` section of Sluice's config
// file. The zero value plus WithDefaults is a working configuration for
// envoy.yaml's internal listener on 127.0.0.1:8082.
type Config struct {
	// ListenerURL is the Envoy listener sub-requests are sent to:
	// "http://host:port", no path, query or userinfo. The client dials only
	// this address (a host name is resolved at each dial and only its
	// addresses are dialed). It must be a listener that takes the client
	// address from x-sluice-client-address (envoy.yaml's "internal"), or
	// every item is limited as Sluice's own address. Default
	// "http://127.0.0.1:8082".
	ListenerURL string `yaml:"listener_url"`
	// BatchPath is the path of the batch endpoint; items may not target it.
	// Default "/api/v1/batch".
	BatchPath string `yaml:"batch_path"`
	// PathPrefixes are the only path prefixes items may target; each starts
	// and ends with "/". Default ["/api/"].
	PathPrefixes []string `yaml:"path_prefixes"`
	// MaxItems is the most items one batch may hold. Default 20.
	MaxItems int `yaml:"max_items"`
	// Concurrency is the most items of one batch in flight at once. Default 20
	// (= max_items: a full batch costs about one item's latency); lower it to
	// spread a batch's load on the upstream.
	Concurrency int `yaml:"concurrency"`
	// ItemTimeout bounds one sub-request, headers and body. Default 1s.
	ItemTimeout time.Duration `yaml:"item_timeout"`
	// Deadline bounds the whole batch. It must fit inside the ext_proc
	// message timeout the stage asks Envoy for (MaxMessageTimeout) with
	// room to encode and send the reply. Default 1.8s.
	Deadline time.Duration `yaml:"deadline"`
	// MaxMessageTimeout is the ext_proc filter's max_message_timeout in
	// envoy.yaml: the stage asks Envoy to wait this long for the batch
	// reply (ProcessingResponse.override_message_timeout). Default 2s.
	MaxMessageTimeout time.Duration `yaml:"max_message_timeout"`
	// MaxURLLength is the longest item url, in bytes. Default 2048.
	MaxURLLength int `yaml:"max_url_length"`
	// MaxRequestBytes is the largest batch request body. Envoy answers 413
	// above the listener's per_connection_buffer_limit_bytes (1 MiB) first.
	// Default 1 MiB.
	MaxRequestBytes int `yaml:"max_request_bytes"`
	// MaxItemResponseBytes is the largest sub-response body read; a larger
	// one becomes a 507 entry. Default 1 MiB.
	MaxItemResponseBytes int `yaml:"max_item_response_bytes"`
	// MaxTotalResponseBytes caps the sum of the item bodies (as encoded in
	// the reply) and headers; items past it become 507 entries. The reply
	// travels in one gRPC message to Envoy. Default 4 MiB.
	MaxTotalResponseBytes int `yaml:"max_total_response_bytes"`
	// ForwardHeaders are the parent request's headers copied to every
	// sub-request (credentials), lower-case. Items may not set them.
	// Default [authorization, cookie, x-tenant-id, x-user-id].
	ForwardHeaders []string `yaml:"forward_headers"`
}

// Defaults of Config.
const (
	DefaultListenerURL           = "http://127.0.0.1:8082"
	DefaultBatchPath             = "/api/v1/batch"
	DefaultMaxItems              = 20
	DefaultConcurrency           = 20
	DefaultItemTimeout           = time.Second
	DefaultDeadline              = 1800 * time.Millisecond
	DefaultMaxMessageTimeout     = 2 * time.Second
	DefaultMaxURLLength          = 2048
	DefaultMaxRequestBytes       = 1 << 20
	DefaultMaxItemResponseBytes  = 1 << 20
	DefaultMaxTotalResponseBytes = 4 << 20
)

// DefaultPathPrefixes and DefaultForwardHeaders are the defaults of the
// list fields; WithDefaults copies them.
var (
	DefaultPathPrefixes   = []string{"/api/"}
	DefaultForwardHeaders = []string{"authorization", "cookie", "x-tenant-id", "x-user-id"}
)

// Hard limits Validate enforces.
const (
	maxItemsLimit      = 1000
	maxBytesLimit      = 64 << 20
	minReplyHeadroom   = 50 * time.Millisecond
	maxURLLengthLimit  = 16 << 10
	maxMessageTimeout  = 10 * time.Second // beyond any sane ext_proc wait
	minPrefixLen       = 2
	maxForwardHeaders  = 32
	maxPathPrefixCount = 64
)

// WithDefaults returns c with every unset field given its documented
// default.
func (c Config) WithDefaults() Config {
	if c.ListenerURL == "" {
		c.ListenerURL = DefaultListenerURL
	}
	if c.BatchPath == "" {
		c.BatchPath = DefaultBatchPath
	}
	if c.PathPrefixes == nil {
		c.PathPrefixes = append([]string(nil), DefaultPathPrefixes...)
	}
	if c.MaxItems == 0 {
		c.MaxItems = DefaultMaxItems
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.ItemTimeout == 0 {
		c.ItemTimeout = DefaultItemTimeout
	}
	if c.Deadline == 0 {
		c.Deadline = DefaultDeadline
	}
	if c.MaxMessageTimeout == 0 {
		c.MaxMessageTimeout = DefaultMaxMessageTimeout
	}
	if c.MaxURLLength == 0 {
		c.MaxURLLength = DefaultMaxURLLength
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxItemResponseBytes == 0 {
		c.MaxItemResponseBytes = DefaultMaxItemResponseBytes
	}
	if c.MaxTotalResponseBytes == 0 {
		c.MaxTotalResponseBytes = DefaultMaxTotalResponseBytes
	}
	if c.ForwardHeaders == nil {
		c.ForwardHeaders = append([]string(nil), DefaultForwardHeaders...)
	}
	return c
}

// Validate reports every problem with a defaulted c. It changes nothing.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("batch: "+format, args...)) }
	if _, err := parseListener(c.ListenerURL); err != nil {
		bad("listener_url: %w", err)
	}
	if !validConfigPath(c.BatchPath) {
		bad("batch_path %q must be an absolute path of a-z A-Z 0-9 - . _ ~ / without dot segments", c.BatchPath)
	}
	if len(c.PathPrefixes) == 0 || len(c.PathPrefixes) > maxPathPrefixCount {
		bad("path_prefixes must hold 1-%d prefixes", maxPathPrefixCount)
	}
	for i, p := range c.PathPrefixes {
		if len(p) < minPrefixLen || !strings.HasSuffix(p, "/") || !validConfigPath(p) {
			bad("path_prefixes[%d] %q must start and end with / and be a clean path other than /", i, p)
		}
	}
	if c.MaxItems < 1 || c.MaxItems > maxItemsLimit {
		bad("max_items %d must be in [1, %d]", c.MaxItems, maxItemsLimit)
	}
	if c.Concurrency < 1 || c.Concurrency > c.MaxItems {
		bad("concurrency %d must be in [1, max_items]", c.Concurrency)
	}
	if c.ItemTimeout <= 0 {
		bad("item_timeout %v must be positive", c.ItemTimeout)
	}
	if c.Deadline <= 0 {
		bad("deadline %v must be positive", c.Deadline)
	}
	if c.MaxMessageTimeout < time.Millisecond || c.MaxMessageTimeout > maxMessageTimeout {
		bad("max_message_timeout %v must be in [1ms, %v]", c.MaxMessageTimeout, maxMessageTimeout)
	} else if c.Deadline+minReplyHeadroom > c.MaxMessageTimeout {
		bad("deadline %v must leave at least %v of max_message_timeout %v to send the reply", c.Deadline, minReplyHeadroom, c.MaxMessageTimeout)
	}
	if c.MaxURLLength < 16 || c.MaxURLLength > maxURLLengthLimit {
		bad("max_url_length %d must be in [16, %d]", c.MaxURLLength, maxURLLengthLimit)
	}
	for name, v := range map[string]int{
		"max_request_bytes":        c.MaxRequestBytes,
		"max_item_response_bytes":  c.MaxItemResponseBytes,
		"max_total_response_bytes": c.MaxTotalResponseBytes,
	} {
		if v < 1 || v > maxBytesLimit {
			bad("%s %d must be in [1, %d]", name, v, maxBytesLimit)
		}
	}
	if len(c.ForwardHeaders) > maxForwardHeaders {
		bad("forward_headers: at most %d", maxForwardHeaders)
	}
	for i, h := range c.ForwardHeaders {
		if h != strings.ToLower(h) || !validHeaderName(h) || reservedHeader(h) {
			bad("forward_headers[%d] %q must be a lower-case header name other than host, hop-by-hop, x-sluice-* or x-envoy-*", i, h)
		}
	}
	return errors.Join(errs...)
}

// listener is a parsed ListenerURL.
type listener struct {
	scheme string // "http"
	host   string // host[:port] as configured, for the URL
	name   string // host without port
	port   uint16
	ip     netip.Addr // valid when name is an IP literal
}

// parseListener checks a ListenerURL: http, a host and port, nothing else.
// TLS to a sidecar Envoy on loopback buys nothing, so only http is allowed.
func parseListener(raw string) (listener, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return listener{}, fmt.Errorf("parse %q: %w", raw, err)
	}
	if u.Scheme != "http" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return listener{}, fmt.Errorf("%q must be http://host:port with nothing else", raw)
	}
	name, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		name, portStr = u.Hostname(), "80"
	}
	var port uint16
	if p, err := netip.ParseAddrPort("0.0.0.0:" + portStr); err == nil && p.Port() != 0 {
		port = p.Port()
	} else {
		return listener{}, fmt.Errorf("%q: bad port %q", raw, portStr)
	}
	if name == "" {
		return listener{}, fmt.Errorf("%q: empty host", raw)
	}
	l := listener{scheme: u.Scheme, host: u.Host, name: name, port: port}
	if ip, err := netip.ParseAddr(name); err == nil {
		if ip.Zone() != "" || ip.IsUnspecified() || ip.IsMulticast() {
			return listener{}, fmt.Errorf("%q: address %s cannot be dialed", raw, ip)
		}
		l.ip = ip.Unmap()
	}
	return l, nil
}

// validConfigPath reports whether p is an absolute path of unreserved
// characters and "/" with no empty or dot segments (apart from a trailing
// "/").
func validConfigPath(p string) bool {
	if len(p) < 1 || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		b := p[i]
		if !(isAlnum(b) || b == '-' || b == '.' || b == '_' || b == '~' || b == '/') {
			return false
		}
	}
	segs := strings.Split(strings.TrimSuffix(p[1:], "/"), "/")
	for _, s := range segs {
		if s == "." || s == ".." || (s == "" && len(p) > 1) {
			return false
		}
	}
	return true
}

func isAlnum(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
}
