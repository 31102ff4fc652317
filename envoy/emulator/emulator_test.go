package emulator

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluicehq/sluice/envoy"
)

func reqHeaderValue(req *extprocsvc.ProcessingRequest, key string) (string, bool) {
	hh := req.GetRequestHeaders()
	if hh == nil {
		hh = req.GetResponseHeaders()
	}
	for _, h := range hh.GetHeaders().GetHeaders() {
		if h.GetKey() == key {
			return string(h.GetRawValue()), true
		}
	}
	return "", false
}

func TestPhaseOrderAndRequestShape(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	resp, body := h.do("GET", "/items?x=1", map[string]string{"Host": "api.example"}, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, appBody) {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if got := h.extProc.kinds(); !slices.Equal(got, []string{"request_headers", "response_headers"}) {
		t.Fatalf("ext_proc saw %v", got)
	}
	reqs := h.extProc.requests()
	first := reqs[0]
	if first.GetProtocolConfig() == nil || reqs[1].GetProtocolConfig() != nil {
		t.Errorf("protocol_config must ride on the first message only")
	}
	if !first.GetRequestHeaders().GetEndOfStream() {
		t.Errorf("GET without body: end_of_stream = false")
	}
	for key, want := range map[string]string{":method": "GET", ":path": "/items?x=1", ":authority": "api.example", ":scheme": "http", "x-forwarded-proto": "http"} {
		if got, _ := reqHeaderValue(first, key); got != want {
			t.Errorf("request_headers %s = %q; want %q", key, got, want)
		}
	}
	for _, hv := range first.GetRequestHeaders().GetHeaders().GetHeaders() {
		if hv.GetValue() != "" {
			t.Errorf("header %s sent in value, not raw_value", hv.GetKey())
		}
	}
	if got, _ := reqHeaderValue(reqs[1], ":status"); got != "200" {
		t.Errorf("response_headers :status = %q", got)
	}
	if resp.Header.Get("Server") != "envoy" || resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
		t.Errorf("response headers %v", resp.Header)
	}
}

func TestHeaderMutations(t *testing.T) {
	tests := []struct {
		name       string
		mutation   *extprocsvc.HeaderMutation
		wantStatus int
		check      func(t *testing.T, up http.Header, host string)
	}{
		{
			name: "allowed set and remove",
			mutation: &extprocsvc.HeaderMutation{
				SetHeaders:    []*corev3.HeaderValueOption{setRaw("x-sluice-tenant", "t1")},
				RemoveHeaders: []string{"x-client-junk"},
			},
			wantStatus: 200,
			check: func(t *testing.T, up http.Header, _ string) {
				if up.Get("X-Sluice-Tenant") != "t1" || up.Get("X-Client-Junk") != "" {
					t.Errorf("upstream headers %v", up)
				}
			},
		},
		{
			name: "restricted headers ignored",
			mutation: &extprocsvc.HeaderMutation{
				SetHeaders: []*corev3.HeaderValueOption{
					setRaw(":authority", "evil.example"), setRaw("host", "evil.example"), setRaw(":path", "/admin"),
					setRaw("x-envoy-original-path", "/x"), setRaw(":method", "DELETE"),
				},
				RemoveHeaders: []string{":authority", "host"},
			},
			wantStatus: 200,
			check: func(t *testing.T, up http.Header, host string) {
				if host != "api.example" || up.Get("X-Envoy-Original-Path") != "" {
					t.Errorf("restricted mutation applied: host %q headers %v", host, up)
				}
			},
		},
		{
			name: "value and raw_value both set is an error",
			mutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-sluice-tier", Value: "free", RawValue: []byte("free")}},
			}},
			wantStatus: 500,
		},
		{
			name: "value only gives an empty header (envoy#31555)",
			mutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-sluice-tier", Value: "free"}},
			}},
			wantStatus: 200,
			check: func(t *testing.T, up http.Header, _ string) {
				if v, ok := up["X-Sluice-Tier"]; !ok || v[0] != "" {
					t.Errorf("x-sluice-tier = %q (present %v); want empty", v, ok)
				}
			},
		},
		{
			name: "append keeps the client's value",
			mutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-client-junk", RawValue: []byte("b")}, AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD, Append: wrapperspb.Bool(true)},
			}},
			wantStatus: 200,
			check: func(t *testing.T, up http.Header, _ string) {
				if got := up.Values("X-Client-Junk"); !slices.Equal(got, []string{"a", "b"}) {
					t.Errorf("x-client-junk = %v", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{extProc: func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
				if req.GetRequestHeaders() != nil {
					return []*extprocsvc.ProcessingResponse{continueReply(req, &extprocsvc.CommonResponse{HeaderMutation: tt.mutation})}, nil
				}
				return passThrough(nil, req)
			}})
			resp, _ := h.do("GET", "/", map[string]string{"Host": "api.example", "X-Client-Junk": "a"}, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.check != nil {
				_, up, _ := h.upstream.last()
				h.upstream.mu.Lock()
				host := h.upstream.host
				h.upstream.mu.Unlock()
				tt.check(t, up, host)
			}
		})
	}
}

func TestModeOverride(t *testing.T) {
	bufferResponse := &extprocv3.ProcessingMode{ResponseBodyMode: extprocv3.ProcessingMode_BUFFERED}
	tests := []struct {
		name      string
		allow     bool
		wantKinds []string
	}{
		{name: "allowed", allow: true, wantKinds: []string{"request_headers", "response_headers", "response_body"}},
		{name: "not allowed", allow: false, wantKinds: []string{"request_headers", "response_headers"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{
				settings: func(s *envoy.Settings) {
					s.ExtProc = proto.Clone(s.ExtProc).(*extprocv3.ExternalProcessor)
					s.ExtProc.AllowModeOverride = tt.allow
				},
				extProc: func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
					r := continueReply(req, nil)
					switch {
					case req.GetResponseHeaders() != nil:
						r.ModeOverride = bufferResponse
					case req.GetResponseBody() != nil:
						// The held headers still carry the upstream's
						// content-length, so a new body needs a new length.
						r = continueReply(req, &extprocsvc.CommonResponse{
							HeaderMutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setRaw("content-length", "8")}},
							BodyMutation:   &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte("replaced")}},
						})
					}
					return []*extprocsvc.ProcessingResponse{r}, nil
				},
			})
			_, body := h.do("GET", "/", nil, nil)
			if got := h.extProc.kinds(); !slices.Equal(got, tt.wantKinds) {
				t.Fatalf("ext_proc saw %v; want %v", got, tt.wantKinds)
			}
			if tt.allow {
				rb := h.extProc.requests()[2].GetResponseBody()
				if !bytes.Equal(rb.GetBody(), appBody) || !rb.GetEndOfStream() {
					t.Errorf("response_body = %q eos %v", rb.GetBody(), rb.GetEndOfStream())
				}
				if string(body) != "replaced" {
					t.Errorf("client body %q", body)
				}
			}
		})
	}
}

// A buffered body replaced without fixing content-length is refused with
// status_on_error (ProcessorState::handleBodyResponse).
func TestBufferedBodyContentLengthMismatch(t *testing.T) {
	h := newHarness(t, harnessOpts{extProc: func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
		r := continueReply(req, nil)
		switch {
		case req.GetResponseHeaders() != nil:
			r.ModeOverride = &extprocv3.ProcessingMode{ResponseBodyMode: extprocv3.ProcessingMode_BUFFERED}
		case req.GetResponseBody() != nil:
			r = continueReply(req, &extprocsvc.CommonResponse{BodyMutation: &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte("replaced")}}})
		}
		return []*extprocsvc.ProcessingResponse{r}, nil
	}})
	resp, _ := h.do("GET", "/", nil, nil)
	if resp.StatusCode != 500 {
		t.Fatalf("status %d; want 500", resp.StatusCode)
	}
}

func TestImmediateResponseEndsStreamAndIsCompressed(t *testing.T) {
	// Over envoy.yaml's min_content_length (1024), without an ETag (disable_on_etag_header).
	cached := bytes.Repeat([]byte(`{"cached":true}`), 80)
	h := newHarness(t, harnessOpts{extProc: func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
		if req.GetRequestHeaders() == nil {
			return passThrough(nil, req)
		}
		return []*extprocsvc.ProcessingResponse{
			{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_OK},
				Headers: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setRaw("content-type", "application/json")}},
				Body:    cached,
			}}},
			// Ignored: the stream is over.
			continueReply(req, nil),
		}, nil
	}})
	resp, body := h.do("GET", "/items", map[string]string{"Accept-Encoding": "gzip"}, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Vary") != "Accept-Encoding" {
		t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	if got := gunzip(t, body); !bytes.Equal(got, cached) {
		t.Errorf("body %q", got)
	}
	if hits, _, _ := h.upstream.last(); hits != 0 {
		t.Errorf("upstream called %d times", hits)
	}
	if got := h.extProc.kinds(); !slices.Equal(got, []string{"request_headers"}) {
		t.Errorf("ext_proc saw %v", got)
	}
	if n := len(h.rls.requests()); n != 0 {
		t.Errorf("ratelimit called %d times after an immediate response", n)
	}
}

func TestImmediateResponseStatus(t *testing.T) {
	tests := []struct {
		name     string
		code     typev3.StatusCode
		wantCode int
		wantBody string
	}{
		{name: "below 200 becomes 200", code: typev3.StatusCode_Continue, wantCode: 200, wantBody: "hello"},
		{name: "304 carries no body", code: typev3.StatusCode_NotModified, wantCode: 304},
		{name: "403 kept", code: typev3.StatusCode_Forbidden, wantCode: 403, wantBody: "hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{extProc: func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
				return []*extprocsvc.ProcessingResponse{{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
					Status: &typev3.HttpStatus{Code: tt.code}, Body: []byte("hello"),
				}}}}, nil
			}})
			resp, body := h.do("GET", "/", nil, nil)
			if resp.StatusCode != tt.wantCode || string(body) != tt.wantBody {
				t.Fatalf("got %d %q; want %d %q", resp.StatusCode, body, tt.wantCode, tt.wantBody)
			}
			if tt.wantCode == 304 && (resp.Header.Get("Content-Type") != "" || resp.Header.Get("Content-Length") != "") {
				t.Errorf("304 headers %v", resp.Header)
			}
		})
	}
}

func TestExtProcFailures(t *testing.T) {
	slow := func(ctx context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
		select {
		case <-time.After(400 * time.Millisecond):
		case <-ctx.Done():
		}
		return passThrough(ctx, req)
	}
	tests := []struct {
		name      string
		failOpen  bool
		maxMsg    time.Duration
		reply     func(ctx context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error)
		noClient  bool
		want      int
		wantUpHit bool
	}{
		{name: "timeout fail open", failOpen: true, reply: slow, want: 200, wantUpHit: true},
		{name: "timeout fail closed", failOpen: false, reply: slow, want: 504},
		{name: "grpc error fail open", failOpen: true, reply: grpcErr, want: 200, wantUpHit: true},
		{name: "grpc error fail closed", failOpen: false, reply: grpcErr, want: 500},
		{name: "spurious fail open", failOpen: true, reply: spuriousReply, want: 200, wantUpHit: true},
		{name: "spurious fail closed", failOpen: false, reply: spuriousReply, want: 500},
		{name: "server closes the stream", failOpen: false, reply: closeStream, want: 200, wantUpHit: true},
		{name: "no ext_proc peer fail open", failOpen: true, noClient: true, want: 200, wantUpHit: true},
		{name: "override_message_timeout honoured", failOpen: false, maxMsg: 2 * time.Second, reply: overrideTimeout, want: 200, wantUpHit: true},
		{name: "override_message_timeout above max ignored", failOpen: false, maxMsg: 100 * time.Millisecond, reply: overrideTimeout, want: 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{
				noExtProc: tt.noClient,
				extProc:   tt.reply,
				settings: func(s *envoy.Settings) {
					s.ExtProc.FailureModeAllow = tt.failOpen
					s.ExtProc.MessageTimeout = durationpb.New(200 * time.Millisecond)
					if tt.maxMsg != 0 {
						s.ExtProc.MaxMessageTimeout = durationpb.New(tt.maxMsg)
					}
				},
			})
			resp, _ := h.do("GET", "/", nil, nil)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d; want %d", resp.StatusCode, tt.want)
			}
			if hits, _, _ := h.upstream.last(); (hits > 0) != tt.wantUpHit {
				t.Errorf("upstream hits %d", hits)
			}
		})
	}
}

func grpcErr(context.Context, *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
	return nil, status.Error(codes.Internal, "boom")
}

func closeStream(context.Context, *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
	return nil, io.EOF
}

// spuriousReply answers request_headers with a response_headers reply.
func spuriousReply(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
	if req.GetRequestHeaders() != nil {
		return []*extprocsvc.ProcessingResponse{{Response: &extprocsvc.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocsvc.HeadersResponse{}}}}, nil
	}
	return passThrough(nil, req)
}

// overrideTimeout asks for 1 s more, then answers after 400 ms.
func overrideTimeout(ctx context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
	if req.GetRequestHeaders() == nil {
		return passThrough(ctx, req)
	}
	return []*extprocsvc.ProcessingResponse{
		{OverrideMessageTimeout: durationpb.New(time.Second)},
		pauseMsg,
		continueReply(req, nil),
	}, nil
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestClearRouteCache(t *testing.T) {
	// A route ahead of the catch-all sends "x-route: alt" to cluster alt.
	withAlt := func(s *envoy.Settings) {
		s.Routes = proto.Clone(s.Routes).(*routev3.RouteConfiguration)
		vh := s.Routes.GetVirtualHosts()[0]
		alt := &routev3.Route{
			Name:   "alt",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{{Name: "x-route", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "alt"}}}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "alt"}}},
		}
		vh.Routes = append([]*routev3.Route{vh.Routes[0], alt}, vh.Routes[1:]...)
		s.Clusters["alt"] = "alt:1"
		s.ClusterConfigs["alt"] = s.ClusterConfigs["app"]
	}
	tests := []struct {
		name    string
		cr      *extprocsvc.CommonResponse
		wantAlt bool
	}{
		{name: "mutation and clear_route_cache re-route", cr: &extprocsvc.CommonResponse{ClearRouteCache: true, HeaderMutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setRaw("x-route", "alt")}}}, wantAlt: true},
		{name: "mutation without clear_route_cache keeps the route", cr: &extprocsvc.CommonResponse{HeaderMutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setRaw("x-route", "alt")}}}},
		{name: "clear_route_cache without mutation is ignored", cr: &extprocsvc.CommonResponse{ClearRouteCache: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The alt cluster is a second, filterless gateway's upstream.
			altSrv := newHarness(t, harnessOpts{noExtProc: true, noRLS: true})
			h := newHarness(t, harnessOpts{
				settings:  withAlt,
				upstreams: map[string]string{"alt": altSrv.srv.URL},
				extProc: func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
					if req.GetRequestHeaders() != nil {
						return []*extprocsvc.ProcessingResponse{continueReply(req, tt.cr)}, nil
					}
					return passThrough(nil, req)
				},
			})
			h.do("GET", "/x", nil, nil)
			appHits, _, _ := h.upstream.last()
			altUp, _, _ := altSrv.upstream.last()
			if (altUp == 1) != tt.wantAlt || (appHits == 1) == tt.wantAlt {
				t.Fatalf("alt hits %d, app hits %d; want alt=%v", altUp, appHits, tt.wantAlt)
			}
		})
	}
}

func TestBatchRouteBuffersRequestBody(t *testing.T) {
	h := newHarness(t, harnessOpts{extProc: func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
		if req.GetRequestBody() != nil {
			return []*extprocsvc.ProcessingResponse{continueReply(req, &extprocsvc.CommonResponse{
				HeaderMutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setRaw("content-length", "2")}},
				BodyMutation:   &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte("[]")}},
			})}, nil
		}
		return passThrough(nil, req)
	}})
	t.Run("whole body in one message", func(t *testing.T) {
		body := `[{"method":"GET","path":"/a"}]`
		resp, _ := h.do("POST", "/api/v1/batch", map[string]string{"Content-Type": "application/json"}, strings.NewReader(body))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		reqs := h.extProc.requests()
		if got := h.extProc.kinds(); !slices.Equal(got[:2], []string{"request_headers", "request_body"}) {
			t.Fatalf("ext_proc saw %v", got)
		}
		rb := reqs[1].GetRequestBody()
		if string(rb.GetBody()) != body || !rb.GetEndOfStream() {
			t.Errorf("request_body %q eos %v", rb.GetBody(), rb.GetEndOfStream())
		}
		if _, _, up := h.upstream.last(); string(up) != "[]" {
			t.Errorf("upstream body %q", up)
		}
	})
	t.Run("oversize body is 413", func(t *testing.T) {
		before := len(h.extProc.requests())
		resp, _ := h.do("POST", "/api/v1/batch", nil, bytes.NewReader(make([]byte, 1<<20+1)))
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d; want 413", resp.StatusCode)
		}
		for _, r := range h.extProc.requests()[before:] {
			if r.GetRequestBody() != nil {
				t.Errorf("an oversize body reached ext_proc")
			}
		}
	})
}

// sluiceHeaders is what Sluice's ext_proc sets for an identified caller.
func sluiceHeaders(tier, tenant, cost string) func(context.Context, *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
	return func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
		if req.GetRequestHeaders() == nil {
			return passThrough(nil, req)
		}
		set := []*corev3.HeaderValueOption{setRaw("x-sluice-tier", tier), setRaw("x-sluice-tenant", tenant)}
		if cost != "" {
			set = append(set, setRaw("x-sluice-cost", cost))
		}
		return []*extprocsvc.ProcessingResponse{continueReply(req, &extprocsvc.CommonResponse{HeaderMutation: &extprocsvc.HeaderMutation{
			SetHeaders: set, RemoveHeaders: []string{"x-sluice-user"},
		}})}, nil
	}
}

// TestRateLimitDescriptorsFromMutatedHeaders builds envoy.yaml's
// descriptors from what ext_proc set: the identity ones need x-sluice-cost,
// the address ones need nothing from ext_proc, and the "identity missing"
// one appears only when ext_proc set no tier.
func TestRateLimitDescriptorsFromMutatedHeaders(t *testing.T) {
	tests := []struct {
		name    string
		extProc func(context.Context, *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error)
		want    []string
	}{
		{name: "numeric cost", extProc: sluiceHeaders("pro", "t1", "3"), want: []string{
			"tier=pro,tenant_id=t1 +3", "tier=pro,remote_address=127.0.0.1 +3", "remote_address=127.0.0.1 +<nil>",
		}},
		{name: "missing cost drops the descriptors that read it", extProc: sluiceHeaders("pro", "t1", ""), want: []string{
			"remote_address=127.0.0.1 +<nil>",
		}},
		{name: "non-numeric cost likewise", extProc: sluiceHeaders("pro", "t1", "lots"), want: []string{
			"remote_address=127.0.0.1 +<nil>",
		}},
		{name: "ext_proc failing open: the address limits only", extProc: grpcErr, want: []string{
			"remote_address=127.0.0.1 +<nil>", "identity=missing,remote_address=127.0.0.1 +<nil>",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{extProc: tt.extProc})
			// The client's own x-sluice-* are stripped by Envoy
			// (internal_only_headers), so without ext_proc there is no tier
			// and no user.
			resp, _ := h.do("GET", "/", map[string]string{"X-Sluice-User": "spoofed", "X-Sluice-Tier": "enterprise"}, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			reqs := h.rls.requests()
			if len(reqs) != 1 || reqs[0].GetDomain() != "sluice" {
				t.Fatalf("RLS requests %v", reqs)
			}
			var got []string
			for _, d := range reqs[0].GetDescriptors() {
				var parts []string
				for _, e := range d.GetEntries() {
					parts = append(parts, e.GetKey()+"="+e.GetValue())
				}
				got = append(got, strings.Join(parts, ",")+" +"+strings.TrimSpace(strings.TrimPrefix(d.GetHitsAddend().String(), "value:")))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("descriptors %v; want %v", got, tt.want)
			}
		})
	}
}

func TestRateLimitAnswers(t *testing.T) {
	over := &rlsv3.RateLimitResponse{
		OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT,
		ResponseHeadersToAdd: []*corev3.HeaderValue{
			{Key: "RateLimit-Policy", Value: `"burst";q=10;w=1`},
			{Key: "RateLimit", Value: `"burst";r=0;t=1`},
			{Key: "Retry-After", Value: "1"},
		},
		// Over envoy.yaml's min_content_length (1024), so that it is compressed.
		RawBody: []byte(`{"error":"rate limited","retry_after_seconds":1,"pad":"` + strings.Repeat("x", 1024) + `"}`),
	}
	okWithHeaders := &rlsv3.RateLimitResponse{
		OverallCode:          rlsv3.RateLimitResponse_OK,
		ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "RateLimit", Value: `"burst";r=9;t=1`}},
		RequestHeadersToAdd:  []*corev3.HeaderValue{{Key: "x-sluice-remaining", Value: "9"}},
	}
	released := make(chan struct{})
	defer close(released)
	tests := []struct {
		name       string
		rls        func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)
		noRLS      bool
		timeout    time.Duration
		want       int
		wantHeader map[string]string
		wantUp     bool
	}{
		{name: "over limit", rls: func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) { return over, nil },
			want: 429, wantHeader: map[string]string{"X-Envoy-Ratelimited": "true", "Ratelimit": `"burst";r=0;t=1`, "Retry-After": "1", "Content-Encoding": "gzip"}},
		{name: "ok adds headers", rls: func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
			return okWithHeaders, nil
		},
			want: 200, wantHeader: map[string]string{"Ratelimit": `"burst";r=9;t=1`}, wantUp: true},
		{name: "service error fails open", rls: func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
			return nil, status.Error(codes.Unavailable, "redis down")
		}, want: 200, wantUp: true},
		// The slow service answers OVER_LIMIT only once the test has its
		// response, so a 200 can only come from the filter's timeout
		// (answering on ctx.Done raced the client's own deadline timer).
		{name: "service timeout fails open", timeout: 20 * time.Millisecond, rls: func(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
			select {
			case <-released:
			case <-time.After(10 * time.Second):
			}
			return over, nil
		}, want: 200, wantUp: true},
		{name: "no service fails open", noRLS: true, want: 200, wantUp: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{extProc: sluiceHeaders("free", "t1", "1"), rls: tt.rls, noRLS: tt.noRLS, settings: func(s *envoy.Settings) {
				if tt.timeout > 0 {
					s.RateLimit.Timeout = durationpb.New(tt.timeout)
				}
			}})
			resp, body := h.do("GET", "/", map[string]string{"Accept-Encoding": "gzip"}, nil)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d; want %d", resp.StatusCode, tt.want)
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q; want %q", k, got, v)
				}
			}
			hits, up, _ := h.upstream.last()
			if (hits > 0) != tt.wantUp {
				t.Fatalf("upstream hits %d", hits)
			}
			if tt.want == 429 {
				if got := gunzip(t, body); !bytes.Equal(got, over.RawBody) {
					t.Errorf("429 body %q", got)
				}
				// The local reply went through ext_proc's response phase.
				reqs := h.extProc.requests()
				last := reqs[len(reqs)-1]
				if st, _ := reqHeaderValue(last, ":status"); st != "429" {
					t.Errorf("ext_proc response_headers :status %q; kinds %v", st, h.extProc.kinds())
				}
			}
			if tt.name == "ok adds headers" && up.Get("X-Sluice-Remaining") != "9" {
				t.Errorf("request_headers_to_add missing upstream: %v", up)
			}
		})
	}
}

func TestHCMRequestHeaders(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	resp, _ := h.do("GET", "/", map[string]string{
		"Connection":            "x-hop, keep-alive",
		"X-Hop":                 "secret",
		"Keep-Alive":            "timeout=5",
		"Te":                    "gzip",
		"Proxy-Connection":      "keep-alive",
		"X-Envoy-Retry-On":      "5xx",
		"X-Envoy-Internal":      "true",
		"X-Forwarded-For":       "203.0.113.7",
		"X-Request-Id":          "client-chosen",
		"X-Envoy-Force-Trace":   "1",
		"X-Forwarded-Proto":     "https",
		"X-Something-Innocuous": "kept",
	}, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_, up, _ := h.upstream.last()
	for _, gone := range []string{"X-Hop", "Keep-Alive", "Te", "Proxy-Connection", "X-Envoy-Retry-On", "X-Envoy-Internal", "X-Envoy-Force-Trace"} {
		if v := up.Get(gone); v != "" {
			t.Errorf("%s reached the upstream: %q", gone, v)
		}
	}
	if got := up.Get("X-Forwarded-For"); got != "203.0.113.7,127.0.0.1" {
		t.Errorf("x-forwarded-for %q", got)
	}
	if got := up.Get("X-Request-Id"); got == "" || got == "client-chosen" {
		t.Errorf("x-request-id %q: an edge request gets a fresh id", got)
	}
	if up.Get("X-Forwarded-Proto") != "http" || up.Get("X-Envoy-External-Address") != "127.0.0.1" || up.Get("X-Something-Innocuous") != "kept" {
		t.Errorf("upstream headers %v", up)
	}
	if up.Get("X-Envoy-Expected-Rq-Timeout-Ms") != "15000" {
		t.Errorf("x-envoy-expected-rq-timeout-ms %q", up.Get("X-Envoy-Expected-Rq-Timeout-Ms"))
	}

	t.Run("underscore header rejected", func(t *testing.T) {
		resp, _ := h.do("GET", "/", map[string]string{"X_Sluice_Tenant": "t1"}, nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status %d; want 400", resp.StatusCode)
		}
	})
}

// TestInterimResponses: with proxy_100_continue (envoy.yaml sets it) the upstream's first 102
// or 103 reaches the client before the final response, with its own fields only; later ones
// are dropped (Envoy keeps one); without it, none does.
func TestInterimResponses(t *testing.T) {
	for _, proxy := range []bool{true, false} {
		t.Run(fmt.Sprintf("proxy_100_continue=%v", proxy), func(t *testing.T) {
			h := newHarness(t, harnessOpts{
				settings: func(s *envoy.Settings) {
					s.HCM = proto.Clone(s.HCM).(*hcmv3.HttpConnectionManager)
					s.HCM.Proxy_100Continue = proxy
				},
				app: func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Link", "</a.css>; rel=preload")
					w.WriteHeader(103)
					w.Header().Set("Link", "</b.css>; rel=preload")
					w.WriteHeader(103)
					w.Header().Del("Link")
					w.Header().Set("Content-Type", "text/plain")
					io.WriteString(w, "final")
				},
			})
			var codes []int
			var links []string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
				codes = append(codes, code)
				links = append(links, hdr.Get("Link"))
				return nil
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", h.srv.URL+"/", nil)
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "final" || resp.Header.Get("Link") != "" {
				t.Errorf("final response %d %q %v", resp.StatusCode, b, resp.Header)
			}
			want := []int{103}
			if !proxy {
				want = nil
			}
			if fmt.Sprint(codes) != fmt.Sprint(want) || proxy && links[0] != "</a.css>; rel=preload" {
				t.Errorf("interim responses %v %q, want %v with the first Link", codes, links, want)
			}
		})
	}
}

func TestCompression(t *testing.T) {
	// envoy.yaml compresses bodies of 1024 bytes and more, without an ETag.
	long := bytes.Repeat([]byte("compress me please "), 60)
	tests := []struct {
		name         string
		accept       string
		contentType  string
		extra        map[string]string
		body         []byte
		wantEncoding string
		wantVary     bool
		wantEtag     string
	}{
		{name: "gzip", accept: "gzip", contentType: "application/json", body: long, wantEncoding: "gzip", wantVary: true},
		{name: "brotli", accept: "br", contentType: "text/plain; charset=utf-8", body: long, wantEncoding: "br", wantVary: true},
		{name: "zstd", accept: "zstd", contentType: "text/html", body: long, wantEncoding: "zstd", wantVary: true},
		{name: "highest q wins", accept: "gzip;q=0.5, br;q=0.9, zstd;q=0.1", contentType: "application/json", body: long, wantEncoding: "br", wantVary: true},
		{name: "tie goes to the earlier token", accept: "zstd, gzip", contentType: "application/json", body: long, wantEncoding: "zstd", wantVary: true},
		{name: "wildcard picks the first filter", accept: "*", contentType: "application/json", body: long, wantEncoding: "gzip", wantVary: true},
		{name: "q=0 refuses", accept: "gzip;q=0", contentType: "application/json", body: long, wantVary: true},
		{name: "no accept-encoding", accept: "", contentType: "application/json", body: long, wantVary: true},
		{name: "too short", accept: "gzip", contentType: "application/json", body: []byte("short"), wantVary: false},
		{name: "other content type", accept: "gzip", contentType: "image/png", body: long},
		{name: "no-transform", accept: "gzip", contentType: "application/json", extra: map[string]string{"Cache-Control": "public, no-transform"}, body: long},
		{name: "under min_content_length", accept: "gzip", contentType: "application/json", body: long[:1023], wantVary: false},
		{name: "strong etag: not compressed, kept", accept: "gzip", contentType: "application/json", extra: map[string]string{"Etag": `"abc"`}, body: long, wantEtag: `"abc"`},
		{name: "weak etag: not compressed, kept", accept: "gzip", contentType: "application/json", extra: map[string]string{"Etag": `W/"abc"`}, body: long, wantEtag: `W/"abc"`},
		{name: "already encoded", accept: "gzip", contentType: "application/json", extra: map[string]string{"Content-Encoding": "br"}, body: long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{app: func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Accept-Encoding") != "" {
					t.Errorf("Accept-Encoding reached the upstream")
				}
				w.Header().Set("Content-Type", tt.contentType)
				for k, v := range tt.extra {
					w.Header().Set(k, v)
				}
				_, _ = w.Write(tt.body)
			}})
			hdr := map[string]string{}
			if tt.accept != "" {
				hdr["Accept-Encoding"] = tt.accept
			}
			resp, body := h.do("GET", "/", hdr, nil)
			got := resp.Header.Get("Content-Encoding")
			if tt.extra["Content-Encoding"] != "" {
				if got != tt.extra["Content-Encoding"] || !bytes.Equal(body, tt.body) {
					t.Fatalf("re-encoded an encoded body: %q", got)
				}
				return
			}
			if got != tt.wantEncoding {
				t.Fatalf("Content-Encoding %q; want %q", got, tt.wantEncoding)
			}
			if (resp.Header.Get("Vary") == "Accept-Encoding") != tt.wantVary {
				t.Errorf("Vary %q", resp.Header.Get("Vary"))
			}
			if resp.Header.Get("Etag") != tt.wantEtag {
				t.Errorf("ETag %q; want %q", resp.Header.Get("Etag"), tt.wantEtag)
			}
			if !bytes.Equal(decode(t, got, body), tt.body) {
				t.Errorf("body does not round-trip")
			}
		})
	}
}

func decode(t *testing.T, enc string, b []byte) []byte {
	t.Helper()
	var r io.Reader
	switch enc {
	case "":
		return b
	case "gzip":
		return gunzip(t, b)
	case "br":
		r = brotli.NewReader(bytes.NewReader(b))
	case "zstd":
		d, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r = d
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestUpstreamFailures(t *testing.T) {
	t.Run("connect failure is 503", func(t *testing.T) {
		h := newHarness(t, harnessOpts{upstreams: map[string]string{"app": "http://127.0.0.1:1"}})
		resp, body := h.do("GET", "/", nil, nil)
		if resp.StatusCode != 503 || !strings.Contains(string(body), "connection failure") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("route timeout is 504", func(t *testing.T) {
		h := newHarness(t, harnessOpts{
			settings: func(s *envoy.Settings) {
				s.Routes = proto.Clone(s.Routes).(*routev3.RouteConfiguration)
				for _, rt := range s.Routes.GetVirtualHosts()[0].GetRoutes() {
					rt.GetRoute().Timeout = durationpb.New(100 * time.Millisecond)
				}
			},
			app: func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-time.After(time.Second):
				case <-r.Context().Done():
				}
			},
		})
		resp, body := h.do("GET", "/", nil, nil)
		if resp.StatusCode != 504 || string(body) != "upstream request timeout" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
}

// An ImmediateResponse to response_headers replaces a response that has
// already entered the encoder filters, so it is sent directly: no
// compression (DownstreamFilterManager::sendDirectLocalReply).
func TestImmediateResponseInResponsePhaseSkipsEncoders(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 100)
	h := newHarness(t, harnessOpts{extProc: func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
		if req.GetResponseHeaders() == nil {
			return passThrough(nil, req)
		}
		return []*extprocsvc.ProcessingResponse{{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}, Body: body,
		}}}}, nil
	}})
	resp, got := h.do("GET", "/", map[string]string{"Accept-Encoding": "gzip"}, nil)
	if resp.StatusCode != 503 || resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(got, body) {
		t.Fatalf("got %d %v %q", resp.StatusCode, resp.Header, got)
	}
}

func TestStreamedAndDisabledPerRoute(t *testing.T) {
	perRoute := func(per *extprocv3.ExtProcPerRoute) func(*envoy.Settings) {
		return func(s *envoy.Settings) {
			s.Routes = proto.Clone(s.Routes).(*routev3.RouteConfiguration)
			rt := s.Routes.GetVirtualHosts()[0].GetRoutes()[1] // the catch-all
			a, err := anypb.New(per)
			if err != nil {
				t.Fatal(err)
			}
			rt.TypedPerFilterConfig = map[string]*anypb.Any{s.ExtProcName: a}
		}
	}
	t.Run("disabled", func(t *testing.T) {
		h := newHarness(t, harnessOpts{settings: perRoute(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Disabled{Disabled: true}})})
		resp, _ := h.do("GET", "/", nil, nil)
		if resp.StatusCode != 200 || len(h.extProc.requests()) != 0 {
			t.Fatalf("status %d, ext_proc saw %v", resp.StatusCode, h.extProc.kinds())
		}
	})
	t.Run("streamed request body", func(t *testing.T) {
		mode := &extprocv3.ProcessingMode{RequestHeaderMode: extprocv3.ProcessingMode_SEND, ResponseHeaderMode: extprocv3.ProcessingMode_SKIP, RequestBodyMode: extprocv3.ProcessingMode_STREAMED}
		h := newHarness(t, harnessOpts{
			settings: perRoute(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: &extprocv3.ExtProcOverrides{ProcessingMode: mode}}}),
			extProc: func(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
				if rb := req.GetRequestBody(); rb != nil {
					up := bytes.ToUpper(rb.GetBody())
					return []*extprocsvc.ProcessingResponse{continueReply(req, &extprocsvc.CommonResponse{BodyMutation: &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: up}}})}, nil
				}
				return passThrough(nil, req)
			},
		})
		in := strings.Repeat("abc", 20000) // 60000 bytes: 4 chunks of at most 16 KiB
		resp, _ := h.do("POST", "/upload", map[string]string{"Content-Type": "text/plain"}, strings.NewReader(in))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		kinds := h.extProc.kinds()
		if !slices.Equal(kinds, []string{"request_headers", "request_body", "request_body", "request_body", "request_body"}) {
			t.Errorf("ext_proc saw %v", kinds)
		}
		reqs := h.extProc.requests()
		if !reqs[len(reqs)-1].GetRequestBody().GetEndOfStream() {
			t.Errorf("last chunk without end_of_stream")
		}
		_, hdr, got := h.upstream.last()
		if string(got) != strings.ToUpper(in) || hdr.Get("Content-Length") != "" {
			t.Errorf("upstream got %d bytes, content-length %q", len(got), hdr.Get("Content-Length"))
		}
	})
}

// TestGrpcInitialMetadataPerRoute checks ExtProcPerRoute's grpc_initial_metadata: merged by key
// from the virtual host to the route (the route's value wins), sent as request headers of the
// gRPC stream.
func TestGrpcInitialMetadataPerRoute(t *testing.T) {
	per := func(kv ...string) *anypb.Any {
		o := &extprocv3.ExtProcOverrides{}
		for i := 0; i < len(kv); i += 2 {
			o.GrpcInitialMetadata = append(o.GrpcInitialMetadata, &corev3.HeaderValue{Key: kv[i], Value: kv[i+1]})
		}
		a, err := anypb.New(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: o}})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	var mu sync.Mutex
	var seen metadata.MD
	h := newHarness(t, harnessOpts{
		settings: func(s *envoy.Settings) {
			s.Routes = proto.Clone(s.Routes).(*routev3.RouteConfiguration)
			vh := s.Routes.GetVirtualHosts()[0]
			vh.TypedPerFilterConfig = map[string]*anypb.Any{s.ExtProcName: per("x-sluice-cache", "on", "x-vhost", "1")}
			vh.GetRoutes()[1].TypedPerFilterConfig = map[string]*anypb.Any{s.ExtProcName: per("x-sluice-cache", "off")}
		},
		extProc: func(ctx context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			mu.Lock()
			seen = md
			mu.Unlock()
			return passThrough(nil, req)
		},
	})
	if resp, _ := h.do("GET", "/", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := seen.Get("x-sluice-cache"); !slices.Equal(got, []string{"off"}) {
		t.Errorf("x-sluice-cache %v, want [off] (the route's)", got)
	}
	if got := seen.Get("x-vhost"); !slices.Equal(got, []string{"1"}) {
		t.Errorf("x-vhost %v, want [1] (the virtual host's)", got)
	}
}
