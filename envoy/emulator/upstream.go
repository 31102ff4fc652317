package emulator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// downstreamBody is the rest of the client's request body as the upstream
// transport reads it (on its own goroutine), remembering a read error.
type downstreamBody struct {
	r io.Reader

	mu  sync.Mutex // guards err
	err error
}

func (d *downstreamBody) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		d.mu.Lock()
		d.err = err
		d.mu.Unlock()
	}
	return n, err
}

// failure returns the error reading the client's body failed with; nil
// for nil.
func (d *downstreamBody) failure() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// interimSlot keeps the first informational response of an upstream
// exchange; the transport's goroutine fills it. Safe for concurrent use.
type interimSlot struct {
	mu  sync.Mutex // guards got
	got *interimResponse
}

// interimResponse is a 1xx to pass on before the final response.
type interimResponse struct {
	code int
	hdr  *header.List
}

func (i *interimSlot) keep(code int, h textproto.MIMEHeader) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.got != nil {
		return
	}
	hm := &header.List{}
	fromHTTP(http.Header(h), hm)
	i.got = &interimResponse{code: code, hdr: hm}
}

func (i *interimSlot) take() *interimResponse {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.got
}

// forward is the router filter (source/common/router/router.cc): pick the
// cluster, send the request with the route timeout, turn upstream failures
// into local replies, hand back the upstream response. Redirects are passed
// through, never followed; there are no retries (none configured).
//
// Known simplification: Go's client adds "Cache-Control: no-cache" to a
// response carrying "Pragma: no-cache" and no Cache-Control (net/http
// fixPragmaCacheControl), and that cannot be told apart from an origin that
// sent both; Envoy passes the fields through unchanged.
func (s *stream) forward() (*response, *localReply) {
	if s.route == nil {
		return nil, &localReply{code: http.StatusNotFound, details: "route_not_found"}
	}
	if dr := s.route.GetDirectResponse(); dr != nil {
		body := dr.GetBody().GetInlineString()
		if body == "" {
			body = string(dr.GetBody().GetInlineBytes())
		}
		return nil, &localReply{code: int(dr.GetStatus()), body: body, details: "direct_response"}
	}
	ra := s.route.GetRoute()
	cluster := clusterName(s.route)
	base, ok := s.g.opts.Upstreams[cluster]
	if !ok {
		addr, known := s.g.settings.Clusters[cluster]
		if !known {
			// cluster_not_found_response_code defaults to 503.
			return nil, &localReply{code: http.StatusServiceUnavailable, details: "cluster_not_found"}
		}
		base = "http://" + addr
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, &localReply{code: http.StatusServiceUnavailable, details: "cluster_not_found"}
	}

	reqCopy := s.req.Clone()
	h := &reqCopy
	path := h.Get(":path")
	if pr := ra.GetPrefixRewrite(); pr != "" {
		if p := s.route.GetMatch().GetPrefix(); p != "" && strings.HasPrefix(path, p) {
			path = pr + path[len(p):]
		}
	}
	if hr := ra.GetHostRewriteLiteral(); hr != "" {
		h.Set(":authority", hr)
	}
	// request_headers_to_add: weighted cluster, route, virtual host, then
	// route configuration (RouteEntryImplBase::finalizeRequestHeaders).
	applyHeaderOptions(h, s.route.GetRequestHeadersToAdd(), s.route.GetRequestHeadersToRemove())
	applyHeaderOptions(h, s.vh.GetRequestHeadersToAdd(), s.vh.GetRequestHeadersToRemove())
	rc := s.g.settings.Routes
	applyHeaderOptions(h, rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove())
	timeout := routeTimeout(s.route)
	if timeout > 0 && !s.g.settings.Router.GetSuppressEnvoyHeaders() {
		// FilterUtility::setTimeoutHeaders.
		h.Set("x-envoy-expected-rq-timeout-ms", strconv.FormatInt(timeout.Milliseconds(), 10))
	}

	ctx, cancel := context.WithCancel(s.ctx)
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(s.ctx, timeout)
	}
	target := *u
	target.Path, target.RawPath, target.RawQuery = "", "", ""
	full, err := url.Parse(strings.TrimSuffix(target.String(), "/") + path)
	if err != nil {
		cancel()
		return nil, &localReply{code: http.StatusBadRequest, details: "invalid_path"}
	}
	var (
		body io.Reader
		down *downstreamBody
	)
	contentLength := int64(0)
	if !s.noBody || len(s.bodyBuf) > 0 {
		readers := []io.Reader{bytes.NewReader(s.bodyBuf)}
		if s.bodyRest != nil && !s.bodyReplaced {
			down = &downstreamBody{r: s.bodyRest}
			readers = append(readers, down)
		}
		body = io.MultiReader(readers...)
		contentLength = -1 // chunked unless the headers carry a length
		if cl, ok := h.Lookup("content-length"); ok {
			if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
				contentLength = n
			}
		}
	}
	req, err := http.NewRequestWithContext(ctx, h.Get(":method"), full.String(), body)
	if err != nil {
		cancel()
		return nil, &localReply{code: http.StatusBadRequest, details: "invalid_request"}
	}
	req.Host = h.Get(":authority")
	toHTTP(*h, req.Header)
	req.Header.Del("Content-Length")
	req.ContentLength = contentLength
	if body == nil {
		req.Body = nil
	}
	if s.reqTrailers != nil {
		req.Trailer = http.Header{}
		toHTTP(*s.reqTrailers, req.Trailer)
	}

	// proxy_100_continue: the router passes the upstream's first 100, 102 or
	// 103 on (Router::Filter::onUpstream1xxHeaders → encode1xxHeaders, which
	// ActiveStreamDecoderFilter drops unless proxy_100_continue; only the
	// first is kept, envoyproxy/envoy#19044; HeaderUtility::isSpecial1xx).
	// Simplification: it is written to the client once the final response
	// headers arrive, just before them, not as soon as it comes.
	var interim interimSlot
	if s.g.settings.HCM.GetProxy_100Continue() {
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				if code == 100 || code == 102 || code == 103 {
					interim.keep(code, h)
				}
				return nil
			},
		}))
	}
	start := time.Now()
	res, err := s.g.transport.RoundTrip(req)
	if err != nil {
		cancel()
		if derr := down.failure(); derr != nil {
			if lr := timeoutReply(derr); lr != nil {
				// request_timeout or stream_idle_timeout while the body
				// streamed upstream, before the response started.
				return nil, lr
			}
			// The client's body broke off or was malformed (a bad chunk):
			// Envoy's HTTP/1 codec fails the downstream request with a 400,
			// the upstream is not to blame.
			return nil, &localReply{code: http.StatusBadRequest, details: "http1.codec_error"}
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The route timeout before the response started: 504.
			return nil, &localReply{code: http.StatusGatewayTimeout, body: "upstream request timeout", details: "upstream_response_timeout"}
		}
		reason := "connection termination"
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			reason = "connection failure"
		}
		return nil, &localReply{
			code:    http.StatusServiceUnavailable,
			body:    "upstream connect error or disconnect/reset before headers. reset reason: " + reason,
			details: "upstream_reset_before_response_started{" + strings.ReplaceAll(reason, " ", "_") + "}",
		}
	}
	out := &header.List{}
	out.Add(":status", strconv.Itoa(res.StatusCode))
	// The upstream's hop-by-hop fields stay in the map the encoder filters
	// (ext_proc included) see: Envoy's HTTP/1 codec keeps them, and only the
	// HCM removes Connection, Upgrade, Transfer-Encoding, Keep-Alive and
	// Proxy-Connection after the filters ran
	// (ConnectionManagerUtility::mutateResponseHeaders; see write). Fields
	// the upstream's Connection nominates are not removed by Envoy at all.
	fromHTTP(res.Header, out)
	if res.ContentLength < 0 && len(res.TransferEncoding) > 0 {
		// Envoy's HTTP/1 codec keeps the framing header, which the
		// compressor's minimum-length check reads.
		out.Add("transfer-encoding", "chunked")
	}
	if !s.g.settings.Router.GetSuppressEnvoyHeaders() {
		out.Set("x-envoy-upstream-service-time", strconv.FormatInt(time.Since(start).Milliseconds(), 10))
	}
	s.finalizeResponseHeaders(out)
	noBody := s.isHead || res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified || res.ContentLength == 0
	resp := &response{
		hdr:     out,
		noBody:  noBody,
		interim: interim.take(),
		close: func() {
			_ = res.Body.Close()
			cancel()
		},
		upstreamTrailers: func() http.Header { return res.Trailer },
	}
	if !noBody {
		resp.stream = res.Body
	}
	return resp, nil
}
