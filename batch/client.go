package batch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// The HTTP client sub-requests use. It can reach nothing but the listener:
//   - DialContext ignores the address the transport asks for (so neither a
//     request URL nor a Host header can choose a destination), dials the
//     configured listener's IP and port, and the dialer's Control hook
//     refuses any socket whose address is not that one, checked again on
//     the connected socket's RemoteAddr;
//   - no proxy (ProxyFromEnvironment would let HTTP_PROXY redirect it);
//   - no redirects (CheckRedirect returns http.ErrUseLastResponse: a 3xx
//     is returned to the batch client as the item's response);
//   - timeouts on dial, response headers, idle connections and the whole
//     exchange (http.Client.Timeout), response headers capped;
//   - no transparent gzip (DisableCompression), so bodies are what the
//     cache stored and caps apply to the bytes the client will get.

// errDialRefused is returned by the dialer for any address but the listener.
var errDialRefused = errors.New("batch: dial refused: not the configured listener")

// resolver looks up the listener's host name; *net.Resolver satisfies it.
type resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// pinnedDialer dials only the configured listener. Safe for concurrent use.
type pinnedDialer struct {
	l        listener
	resolve  resolver
	timeout  time.Duration
	attempts func(addr string) // test hook: every address a socket is made for
}

// DialContext dials the listener whatever addr says.
func (d *pinnedDialer) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil, fmt.Errorf("batch: dial %s: %w", network, errDialRefused)
	}
	ips := []netip.Addr{d.l.ip}
	if !d.l.ip.IsValid() {
		var err error
		if ips, err = d.resolve.LookupNetIP(ctx, "ip", d.l.name); err != nil {
			return nil, fmt.Errorf("batch: resolve listener %s: %w", d.l.name, err)
		}
	}
	var errs []error
	for _, ip := range ips {
		target := netip.AddrPortFrom(ip.Unmap(), d.l.port)
		conn, err := d.dial(ctx, target)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (d *pinnedDialer) dial(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
	want := target.String()
	nd := net.Dialer{
		Timeout:   d.timeout,
		KeepAlive: 30 * time.Second,
		// Control sees the address the socket actually connects to.
		Control: func(_, address string, _ syscall.RawConn) error {
			if d.attempts != nil {
				d.attempts(address)
			}
			got, err := netip.ParseAddrPort(address)
			if err != nil || netip.AddrPortFrom(got.Addr().Unmap(), got.Port()) != target {
				return errDialRefused
			}
			return nil
		},
	}
	conn, err := nd.DialContext(ctx, "tcp", want)
	if err != nil {
		return nil, fmt.Errorf("batch: dial listener %s: %w", want, err)
	}
	ra, ok := conn.RemoteAddr().(*net.TCPAddr)
	if !ok || netip.AddrPortFrom(ra.AddrPort().Addr().Unmap(), ra.AddrPort().Port()) != target {
		_ = conn.Close()
		return nil, errDialRefused
	}
	return conn, nil
}

// newClient builds the locked-down client for c. The caller closes idle
// connections (Runner.Close).
func newClient(c Config, l listener, r resolver) (*http.Client, *pinnedDialer) {
	if r == nil {
		r = net.DefaultResolver
	}
	d := &pinnedDialer{l: l, resolve: r, timeout: c.ItemTimeout}
	t := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		DialTLSContext:         func(context.Context, string, string) (net.Conn, error) { return nil, errDialRefused },
		ForceAttemptHTTP2:      false,
		DisableCompression:     true,
		MaxIdleConns:           4 * c.Concurrency,
		MaxIdleConnsPerHost:    4 * c.Concurrency,
		IdleConnTimeout:        30 * time.Second,
		ResponseHeaderTimeout:  c.ItemTimeout,
		ExpectContinueTimeout:  0,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       c.ItemTimeout,
	}, d
}

// hopByHop are the connection-specific headers of RFC 9110 §7.6.1 and the
// ones proxies treat so (proxy-connection, keep-alive).
var hopByHop = []string{"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}

// reservedHeader reports whether a lower-case header name is one no batch
// item or forward list may set: pseudo-headers, host, hop-by-hop,
// content-length (computed), x-sluice-* (Sluice's own, DESIGN.md) and
// x-envoy-* (Envoy control headers).
func reservedHeader(name string) bool {
	return strings.HasPrefix(name, ":") || name == "host" || name == "content-length" ||
		strings.HasPrefix(name, "x-sluice-") || strings.HasPrefix(name, "x-envoy-") || containsString(hopByHop, name)
}

// itemForbidden are further headers items may not set: ones that would
// spoof the client address Envoy and the rate limiter see, change the
// encoding the batch reply embeds, or alter framing.
func itemForbidden(name string) bool {
	switch name {
	case "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "forwarded",
		"x-real-ip", "accept-encoding", "expect", "x-http-method-override", "x-http-method", "x-method-override":
		return true
	}
	return false
}

// responseHeaderDropped reports whether a sub-response header is left out
// of the batch reply: hop-by-hop and framing headers, set-cookie (a JSON
// body would expose HttpOnly cookies to scripts) and Envoy/Sluice internals.
func responseHeaderDropped(name string) bool {
	return containsString(hopByHop, name) || name == "content-length" || name == "set-cookie" ||
		strings.HasPrefix(name, "x-envoy-") || strings.HasPrefix(name, "x-sluice-")
}

// validHeaderName reports whether name is a non-empty RFC 9110 token.
func validHeaderName(name string) bool {
	if name == "" || len(name) > 256 {
		return false
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if isAlnum(b) {
			continue
		}
		switch b {
		case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
			continue
		}
		return false
	}
	return true
}

// validHeaderValue allows visible ASCII, space and tab: no CR, LF, NUL or
// other controls, and no obs-text, which parsers disagree on.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; (b < 0x20 && b != '\t') || b >= 0x7f {
			return false
		}
	}
	return true
}
