package emulator

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	customheaderv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/original_ip_detection/custom_header/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/extproc"
)

// doFrom is do from a chosen loopback address (127.0.0.x), so that the
// emulator sees distinct clients.
func (h *harness) doFrom(ip, method, path string, hdr map[string]string) (*http.Response, []byte) {
	h.t.Helper()
	tr := &http.Transport{
		DisableCompression: true,
		DialContext:        (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}).DialContext,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(method, h.srv.URL+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := tr.RoundTrip(req.WithContext(ctx))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// remoteAddressOnly replaces the ratelimit filter's policies with one
// remote_address descriptor, so a test reads the address Envoy settled on.
func remoteAddressOnly(s *envoy.Settings) {
	s.RateLimit = proto.Clone(s.RateLimit).(*ratelimitv3.RateLimit)
	s.RateLimit.RateLimits = []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{
		{ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}}},
	}}}
}

// withHCM edits a copy of the connection manager and the route config.
func withHCM(edit func(*hcmv3.HttpConnectionManager)) func(*envoy.Settings) {
	return func(s *envoy.Settings) {
		s.HCM = proto.Clone(s.HCM).(*hcmv3.HttpConnectionManager)
		edit(s.HCM)
		s.Routes = s.HCM.GetRouteConfig()
		remoteAddressOnly(s)
	}
}

func customHeader(t *testing.T, c *customheaderv3.CustomHeaderConfig) *corev3.TypedExtensionConfig {
	t.Helper()
	a, err := anypb.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.TypedExtensionConfig{Name: "envoy.http.original_ip_detection.custom_header", TypedConfig: a}
}

func TestClientAddress(t *testing.T) {
	const client = "127.0.0.7"
	internalListener := func(reject *typev3.HttpStatus) func(*hcmv3.HttpConnectionManager) {
		return func(h *hcmv3.HttpConnectionManager) {
			h.UseRemoteAddress = wrapperspb.Bool(false)
			h.OriginalIpDetectionExtensions = []*corev3.TypedExtensionConfig{customHeader(t, &customheaderv3.CustomHeaderConfig{
				HeaderName: extproc.HeaderClientAddress, RejectWithStatus: reject,
			})}
			h.GetRouteConfig().InternalOnlyHeaders = append(h.GetRouteConfig().InternalOnlyHeaders, extproc.HeaderClientAddress)
		}
	}
	tests := []struct {
		name         string
		hcm          func(*hcmv3.HttpConnectionManager)
		hdr          map[string]string
		wantStatus   int
		wantRemote   string // remote_address descriptor; "" when the RLS is not called
		wantXFF      string // as the upstream receives it
		wantExternal string // x-envoy-external-address at the upstream
	}{
		{
			name: "edge: the TCP peer, appended to XFF as the listener's address (loopback peer)",
			hcm:  func(*hcmv3.HttpConnectionManager) {}, hdr: map[string]string{"X-Forwarded-For": "203.0.113.9"},
			wantStatus: 200, wantRemote: client, wantXFF: "203.0.113.9,127.0.0.1", wantExternal: client,
		},
		{
			name:       "edge with one trusted hop: the last XFF entry the client sent",
			hcm:        func(h *hcmv3.HttpConnectionManager) { h.XffNumTrustedHops = 1 },
			hdr:        map[string]string{"X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
			wantStatus: 200, wantRemote: "203.0.113.9", wantXFF: "198.51.100.1, 203.0.113.9,127.0.0.1", wantExternal: "203.0.113.9",
		},
		{
			name:       "edge with one trusted hop and an unparsable entry: the peer",
			hcm:        func(h *hcmv3.HttpConnectionManager) { h.XffNumTrustedHops = 1 },
			hdr:        map[string]string{"X-Forwarded-For": "not-an-ip"},
			wantStatus: 200, wantRemote: client, wantXFF: "not-an-ip,127.0.0.1", wantExternal: client,
		},
		{
			name:       "not edge, no extension: XFF's last entry, XFF left alone",
			hcm:        func(h *hcmv3.HttpConnectionManager) { h.UseRemoteAddress = wrapperspb.Bool(false) },
			hdr:        map[string]string{"X-Forwarded-For": "198.51.100.1,203.0.113.9"},
			wantStatus: 200, wantRemote: "203.0.113.9", wantXFF: "198.51.100.1,203.0.113.9",
		},
		{
			name:       "custom header: its address, stripped before filters and upstream",
			hcm:        internalListener(nil),
			hdr:        map[string]string{extproc.HeaderClientAddress: "198.51.100.4", "X-Forwarded-For": "203.0.113.9"},
			wantStatus: 200, wantRemote: "198.51.100.4", wantXFF: "203.0.113.9",
		},
		{
			name:       "custom header IPv6",
			hcm:        internalListener(nil),
			hdr:        map[string]string{extproc.HeaderClientAddress: "2001:db8::7"},
			wantStatus: 200, wantRemote: "2001:db8::7",
		},
		{
			name:       "custom header missing: the peer",
			hcm:        internalListener(nil),
			wantStatus: 200, wantRemote: client,
		},
		{
			name:       "custom header with a port is no address: the peer",
			hcm:        internalListener(nil),
			hdr:        map[string]string{extproc.HeaderClientAddress: "198.51.100.4:80"},
			wantStatus: 200, wantRemote: client,
		},
		{
			name:       "custom header missing with reject_with_status: refused",
			hcm:        internalListener(&typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}),
			wantStatus: http.StatusForbidden,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{settings: withHCM(tt.hcm)})
			resp, _ := h.doFrom(client, "GET", "/x", tt.hdr)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			reqs := h.rls.requests()
			if tt.wantRemote == "" {
				if len(reqs) != 0 {
					t.Fatalf("RLS called: %v", reqs)
				}
				return
			}
			if len(reqs) != 1 || len(reqs[0].GetDescriptors()) != 1 {
				t.Fatalf("RLS requests %v", reqs)
			}
			if got := reqs[0].GetDescriptors()[0].GetEntries()[0].GetValue(); got != tt.wantRemote {
				t.Errorf("remote_address %q; want %q", got, tt.wantRemote)
			}
			_, up, _ := h.upstream.last()
			if got := up.Get("X-Forwarded-For"); got != tt.wantXFF {
				t.Errorf("upstream x-forwarded-for %q; want %q", got, tt.wantXFF)
			}
			if got := up.Get("X-Envoy-External-Address"); got != tt.wantExternal {
				t.Errorf("upstream x-envoy-external-address %q; want %q", got, tt.wantExternal)
			}
			if v := up.Get(extproc.HeaderClientAddress); v != "" {
				t.Errorf("%s reached the upstream: %q", extproc.HeaderClientAddress, v)
			}
			for _, r := range h.extProc.requests() {
				if v, ok := reqHeaderValue(r, extproc.HeaderClientAddress); ok {
					t.Errorf("%s reached ext_proc: %q", extproc.HeaderClientAddress, v)
				}
			}
		})
	}
}

// TestHCMConfigRefused: what Envoy refuses to load, and what the emulator
// does not implement, fail New.
func TestHCMConfigRefused(t *testing.T) {
	ext := customHeader(t, &customheaderv3.CustomHeaderConfig{HeaderName: "x-ip"})
	tests := []struct {
		name string
		edit func(*hcmv3.HttpConnectionManager)
		want string
	}{
		{"extension with use_remote_address", func(h *hcmv3.HttpConnectionManager) {
			h.OriginalIpDetectionExtensions = []*corev3.TypedExtensionConfig{ext}
		}, "use_remote_address may not be mixed"},
		{"extension with trusted hops", func(h *hcmv3.HttpConnectionManager) {
			h.UseRemoteAddress = wrapperspb.Bool(false)
			h.XffNumTrustedHops = 1
			h.OriginalIpDetectionExtensions = []*corev3.TypedExtensionConfig{ext}
		}, "xff_num_trusted_hops may not be mixed"},
		{"unimplemented field", func(h *hcmv3.HttpConnectionManager) { h.Via = "1.1 edge" }, "via"},
		{"unimplemented protocol option", func(h *hcmv3.HttpConnectionManager) {
			h.CommonHttpProtocolOptions.MaxStreamDuration = durationpb.New(time.Second)
		}, "max_stream_duration"},
		{"escaped slashes rewritten", func(h *hcmv3.HttpConnectionManager) {
			h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD
		}, "path_with_escaped_slashes_action"},
		{"internal addresses", func(h *hcmv3.HttpConnectionManager) {
			h.InternalAddressConfig = &hcmv3.HttpConnectionManager_InternalAddressConfig{UnixSockets: true}
		}, "internal_address_config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := envoy.ParseSettings(envoy.DefaultConfig)
			if err != nil {
				t.Fatal(err)
			}
			s.HCM = proto.Clone(s.HCM).(*hcmv3.HttpConnectionManager)
			tt.edit(s.HCM)
			_, err = New(Options{Settings: s})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v; want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// rawRequest writes a request by hand (a Go client would clean the path)
// and returns the status line's code and the body.
func rawRequest(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPathNormalization runs envoy.yaml's normalize_path and merge_slashes:
// routing, ext_proc and the upstream see the canonical path; a path Envoy
// cannot normalise, or one with a fragment, is answered 400 before any
// filter, and ext_proc still sees that reply's headers.
func TestPathNormalization(t *testing.T) {
	tests := []struct {
		name, path string
		wantStatus int
		wantPath   string // at ext_proc and the upstream
	}{
		{"dot segments and escapes", "/a/./b/../c/%7Euser/%2e%2E/d?q=/../x", 200, "/a/c/d?q=/../x"},
		{"repeated slashes", "//api//v1///x/", 200, "/api/v1/x/"},
		{"backslash", "/a\\b", 200, "/a/b"},
		{"escaped NUL", "/a/%00/b", 400, ""},
		{"fragment", "/a#frag", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{})
			addr := strings.TrimPrefix(h.srv.URL, "http://")
			code, _ := rawRequest(t, addr, "GET "+tt.path+" HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n")
			if code != tt.wantStatus {
				t.Fatalf("status %d; want %d", code, tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				if got := h.extProc.kinds(); !slices.Equal(got, []string{"response_headers"}) {
					t.Errorf("ext_proc saw %v; want the local reply's response_headers only", got)
				}
				if hits, _, _ := h.upstream.last(); hits != 0 {
					t.Errorf("the upstream was reached")
				}
				return
			}
			if got, _ := reqHeaderValue(h.extProc.requests()[0], ":path"); got != tt.wantPath {
				t.Errorf("ext_proc :path %q; want %q", got, tt.wantPath)
			}
			h.upstream.mu.Lock()
			uri := h.upstream.uri
			h.upstream.mu.Unlock()
			if uri != tt.wantPath {
				t.Errorf("upstream request-target %q; want %q", uri, tt.wantPath)
			}
		})
	}
}

// TestCodecRepliesRunExtProcResponsePath: a request the codec refuses (a
// header name with an underscore, envoy.yaml's REJECT_REQUEST) is answered
// through the encoder filters, so ext_proc opens a stream for the reply's
// headers alone.
func TestCodecRepliesRunExtProcResponsePath(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	resp, body := h.do("GET", "/", map[string]string{"X_Sluice_Tenant": "t1", "Accept-Encoding": "gzip"}, nil)
	if resp.StatusCode != http.StatusBadRequest || string(body) != "Bad Request" || resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("status %d, body %q, content-encoding %q; want 400 \"Bad Request\", not compressed", resp.StatusCode, body, resp.Header.Get("Content-Encoding"))
	}
	if got := h.extProc.kinds(); !slices.Equal(got, []string{"response_headers"}) {
		t.Fatalf("ext_proc saw %v; want [response_headers]", got)
	}
	if got, _ := reqHeaderValue(h.extProc.requests()[0], ":status"); got != "400" {
		t.Errorf("ext_proc :status %q", got)
	}
}

// trickle sends the request headers and part of the body, then waits, and
// returns the status line's code and the body of the answer.
func trickle(t *testing.T, addr, path string) (int, string, time.Duration) {
	t.Helper()
	start := time.Now()
	code, body := rawRequest(t, addr, "POST "+path+" HTTP/1.1\r\nHost: api.example\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"")
	return code, body, time.Since(start)
}

// TestRequestBodyTimeouts: request_timeout and stream_idle_timeout bound a
// client that sends 2 of 100 body bytes, on a route whose body streams to
// the upstream (which reads it before answering) and on the batch route,
// whose body ext_proc buffers.
func TestRequestBodyTimeouts(t *testing.T) {
	tests := []struct {
		name      string
		request   time.Duration
		idle      time.Duration
		path      string
		wantBody  string
		atMostFor time.Duration
	}{
		{"request_timeout, streamed body", 300 * time.Millisecond, time.Minute, "/upload", "request timeout", 5 * time.Second},
		{"request_timeout, buffered body", 300 * time.Millisecond, time.Minute, "/api/v1/batch", "request timeout", 5 * time.Second},
		{"stream_idle_timeout, streamed body", 0, 300 * time.Millisecond, "/upload", "stream timeout", 5 * time.Second},
		{"stream_idle_timeout, buffered body", 0, 300 * time.Millisecond, "/api/v1/batch", "stream timeout", 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{
				settings: func(s *envoy.Settings) {
					s.HCM = proto.Clone(s.HCM).(*hcmv3.HttpConnectionManager)
					s.HCM.RequestTimeout = durationpb.New(tt.request)
					s.HCM.StreamIdleTimeout = durationpb.New(tt.idle)
				},
				app: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) },
			})
			code, body, took := trickle(t, strings.TrimPrefix(h.srv.URL, "http://"), tt.path)
			if code != http.StatusRequestTimeout || body != tt.wantBody {
				t.Fatalf("status %d body %q; want 408 %q", code, body, tt.wantBody)
			}
			if took > tt.atMostFor {
				t.Errorf("answered after %v", took)
			}
		})
	}
}

// TestServerLimits: NewServer takes request_headers_timeout and the idle
// timeout from the connection manager.
func TestServerLimits(t *testing.T) {
	s, err := envoy.ParseSettings(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	s.HCM = proto.Clone(s.HCM).(*hcmv3.HttpConnectionManager)
	s.HCM.RequestHeadersTimeout = durationpb.New(3 * time.Second)
	s.HCM.CommonHttpProtocolOptions.IdleTimeout = durationpb.New(7 * time.Second)
	g, err := New(Options{Settings: s})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	srv := g.NewServer()
	if srv.ReadHeaderTimeout != 3*time.Second || srv.IdleTimeout != 7*time.Second {
		t.Errorf("ReadHeaderTimeout %v, IdleTimeout %v", srv.ReadHeaderTimeout, srv.IdleTimeout)
	}
}

// TestAppendActionIgnored: Envoy's ext_proc reads the deprecated append
// field only (MutationUtils::applyHeaderMutations: append defaults to false,
// append_action is never read; envoy#36982), so ADD_IF_ABSENT overwrites and
// OVERWRITE_IF_EXISTS adds.
func TestAppendActionIgnored(t *testing.T) {
	opt := func(key, value string, action corev3.HeaderValueOption_HeaderAppendAction, appendField *wrapperspb.BoolValue) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, RawValue: []byte(value)}, AppendAction: action, Append: appendField}
	}
	tests := []struct {
		name string
		set  *corev3.HeaderValueOption
		want []string
	}{
		{"ADD_IF_ABSENT on a present header overwrites", opt("x-client-junk", "b", corev3.HeaderValueOption_ADD_IF_ABSENT, nil), []string{"b"}},
		{"OVERWRITE_IF_EXISTS on a missing header adds", opt("x-new", "n", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS, nil), []string{"n"}},
		{"OVERWRITE_IF_EXISTS_OR_ADD with append true appends", opt("x-client-junk", "b", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD, wrapperspb.Bool(true)), []string{"a", "b"}},
		{"an out-of-range action is not an error", opt("x-client-junk", "b", corev3.HeaderValueOption_HeaderAppendAction(42), nil), []string{"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{extProc: func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
				if req.GetRequestHeaders() != nil {
					return []*extprocsvc.ProcessingResponse{continueReply(req, &extprocsvc.CommonResponse{HeaderMutation: &extprocsvc.HeaderMutation{
						SetHeaders: []*corev3.HeaderValueOption{tt.set},
					}})}, nil
				}
				return passThrough(nil, req)
			}})
			resp, _ := h.do("GET", "/", map[string]string{"X-Client-Junk": "a"}, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			_, up, _ := h.upstream.last()
			if got := up.Values(http.CanonicalHeaderKey(tt.set.GetHeader().GetKey())); !slices.Equal(got, tt.want) {
				t.Errorf("%s = %v; want %v", tt.set.GetHeader().GetKey(), got, tt.want)
			}
		})
	}
}

// TestImmediateResponseWhileBodyArrives: Envoy acts on an ImmediateResponse
// whenever it arrives (Filter::onReceiveMessage), also while it is still
// buffering a request body the processor asked for; the client gets the
// reply at once, not when its body (or request_timeout) ends.
func TestImmediateResponseWhileBodyArrives(t *testing.T) {
	h := newHarness(t, harnessOpts{extProc: func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
		if req.GetRequestHeaders() != nil {
			return []*extprocsvc.ProcessingResponse{continueReply(req, nil), pauseMsg, {Response: &extprocsvc.ProcessingResponse_ImmediateResponse{
				ImmediateResponse: &extprocsvc.ImmediateResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_RequestTimeout}, Body: []byte("too slow")},
			}}}, nil
		}
		return passThrough(nil, req)
	}})
	code, body, took := trickle(t, strings.TrimPrefix(h.srv.URL, "http://"), "/api/v1/batch")
	if code != http.StatusRequestTimeout || body != "too slow" {
		t.Fatalf("status %d body %q; want the processor's 408", code, body)
	}
	if took > 5*time.Second {
		t.Errorf("answered after %v", took)
	}
	if hits, _, _ := h.upstream.last(); hits != 0 {
		t.Error("the upstream was reached")
	}
}

// TestFilterFieldsRefused: a filter field the emulator does not implement
// fails New instead of being ignored.
func TestFilterFieldsRefused(t *testing.T) {
	for name, edit := range map[string]func(*envoy.Settings){
		"ext_proc deferred_close_timeout": func(s *envoy.Settings) {
			s.ExtProc = proto.Clone(s.ExtProc).(*extprocv3.ExternalProcessor)
			s.ExtProc.DeferredCloseTimeout = durationpb.New(time.Second)
		},
		"ratelimit metadata_namespace": func(s *envoy.Settings) {
			s.RateLimit = proto.Clone(s.RateLimit).(*ratelimitv3.RateLimit)
			s.RateLimit.MetadataNamespace = "x"
		},
		"router respect_expected_rq_timeout": func(s *envoy.Settings) {
			s.Router = proto.Clone(s.Router).(*routerv3.Router)
			s.Router.RespectExpectedRqTimeout = true
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := envoy.ParseSettings(envoy.DefaultConfig)
			if err != nil {
				t.Fatal(err)
			}
			edit(s)
			if _, err := New(Options{Settings: s}); err == nil || !strings.Contains(err.Error(), "not emulated") {
				t.Fatalf("New = %v; want a refusal", err)
			}
		})
	}
}

// TestCodecHeaderCount: Envoy's HTTP/1 codec refuses a request with more
// header lines than common_http_protocol_options.max_headers_count (100 by
// default; the Host line counts) with 431 before any filter runs
// (ConnectionImpl::completeCurrentHeader, http1.too_many_headers). Before,
// the emulator let them through and a mutation that pushed the map past the
// limit turned a client's mistake into a 500.
func TestCodecHeaderCount(t *testing.T) {
	tests := []struct {
		name  string
		lines int // header lines, Host included
		want  int
	}{
		{"at the limit", 100, http.StatusOK},
		{"one over", 101, http.StatusRequestHeaderFieldsTooLarge},
		{"thousands", 5000, http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{})
			var b strings.Builder
			b.WriteString("GET /api/v1/x HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n")
			for i := range tt.lines - 2 {
				fmt.Fprintf(&b, "x-h%d: v\r\n", i)
			}
			b.WriteString("\r\n")
			code, body := rawRequest(t, strings.TrimPrefix(h.srv.URL, "http://"), b.String())
			if code != tt.want {
				t.Fatalf("status %d (%q); want %d", code, body, tt.want)
			}
			if tt.want == http.StatusOK {
				return
			}
			if body != "Request Header Fields Too Large" {
				t.Errorf("body %q", body)
			}
			if got := h.extProc.kinds(); !slices.Equal(got, []string{"response_headers"}) {
				t.Errorf("ext_proc saw %v; want the local reply's response_headers only", got)
			}
			if hits, _, _ := h.upstream.last(); hits != 0 {
				t.Errorf("the upstream was reached")
			}
		})
	}
}
