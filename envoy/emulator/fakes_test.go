package emulator

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/envoy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// extProcFake is a scripted ext_proc server: reply gets each request and
// returns the messages to send back (none: send nothing), or an error to end
// the stream with. It records every request. Safe for concurrent use.
type extProcFake struct {
	extprocsvc.UnimplementedExternalProcessorServer
	reply func(ctx context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error)

	mu      sync.Mutex // guards reqs and streams
	reqs    []*extprocsvc.ProcessingRequest
	streams int
}

func (f *extProcFake) Process(st extprocsvc.ExternalProcessor_ProcessServer) error {
	f.mu.Lock()
	f.streams++
	f.mu.Unlock()
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, req)
		f.mu.Unlock()
		out, err := f.reply(st.Context(), req)
		if err == io.EOF {
			return nil // end the stream with OK
		}
		if err != nil {
			return err
		}
		for _, r := range out {
			if r == pauseMsg {
				select {
				case <-time.After(pause):
				case <-st.Context().Done():
					return nil
				}
				continue
			}
			if err := st.Send(r); err != nil {
				return nil
			}
		}
	}
}

func (f *extProcFake) requests() []*extprocsvc.ProcessingRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*extprocsvc.ProcessingRequest(nil), f.reqs...)
}

// kinds lists the request types received, e.g. "request_headers".
func (f *extProcFake) kinds() []string {
	var out []string
	for _, r := range f.requests() {
		out = append(out, kindName(r))
	}
	return out
}

func kindName(r *extprocsvc.ProcessingRequest) string {
	switch r.GetRequest().(type) {
	case *extprocsvc.ProcessingRequest_RequestHeaders:
		return "request_headers"
	case *extprocsvc.ProcessingRequest_ResponseHeaders:
		return "response_headers"
	case *extprocsvc.ProcessingRequest_RequestBody:
		return "request_body"
	case *extprocsvc.ProcessingRequest_ResponseBody:
		return "response_body"
	case *extprocsvc.ProcessingRequest_RequestTrailers:
		return "request_trailers"
	case *extprocsvc.ProcessingRequest_ResponseTrailers:
		return "response_trailers"
	}
	return "unknown"
}

// pauseMsg in a reply list makes the fake wait pause (bounded by the
// stream) before sending the rest.
var pauseMsg = &extprocsvc.ProcessingResponse{}

const pause = 400 * time.Millisecond

// passThrough answers every message with an empty reply of its type.
func passThrough(_ context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error) {
	return []*extprocsvc.ProcessingResponse{continueReply(req, nil)}, nil
}

// continueReply is the matching CONTINUE reply, with an optional common
// response.
func continueReply(req *extprocsvc.ProcessingRequest, cr *extprocsvc.CommonResponse) *extprocsvc.ProcessingResponse {
	switch req.GetRequest().(type) {
	case *extprocsvc.ProcessingRequest_RequestHeaders:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocsvc.HeadersResponse{Response: cr}}}
	case *extprocsvc.ProcessingRequest_ResponseHeaders:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocsvc.HeadersResponse{Response: cr}}}
	case *extprocsvc.ProcessingRequest_RequestBody:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestBody{RequestBody: &extprocsvc.BodyResponse{Response: cr}}}
	case *extprocsvc.ProcessingRequest_ResponseBody:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseBody{ResponseBody: &extprocsvc.BodyResponse{Response: cr}}}
	case *extprocsvc.ProcessingRequest_RequestTrailers:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocsvc.TrailersResponse{}}}
	default:
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocsvc.TrailersResponse{}}}
	}
}

// setRaw is a set_headers entry written the way Sluice must: raw_value only.
func setRaw(key, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, RawValue: []byte(value)}}
}

// rlsFake is a scripted rate limit service. Safe for concurrent use.
type rlsFake struct {
	rlsv3.UnimplementedRateLimitServiceServer
	reply func(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)

	mu   sync.Mutex // guards reqs
	reqs []*rlsv3.RateLimitRequest
}

func (f *rlsFake) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, proto.Clone(req).(*rlsv3.RateLimitRequest))
	f.mu.Unlock()
	if f.reply == nil {
		return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
	}
	return f.reply(ctx, req)
}

func (f *rlsFake) requests() []*rlsv3.RateLimitRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*rlsv3.RateLimitRequest(nil), f.reqs...)
}

// upstreamFake records what reached the application.
type upstreamFake struct {
	mu     sync.Mutex // guards hits, header, host, uri, body
	hits   int
	header http.Header
	host   string
	uri    string
	body   []byte
}

func (u *upstreamFake) record(r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.hits++
	u.header = r.Header.Clone()
	u.host = r.Host
	u.uri = r.RequestURI
	u.body = b
}

func (u *upstreamFake) last() (int, http.Header, []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits, u.header, u.body
}

// harness wires a Gateway to fakes over in-memory gRPC connections and an
// httptest upstream, and serves it on an httptest server.
type harness struct {
	t        *testing.T
	extProc  *extProcFake
	rls      *rlsFake
	upstream *upstreamFake
	gw       *Gateway
	srv      *httptest.Server
	client   *http.Client
}

type harnessOpts struct {
	// config replaces envoy.yaml (its first listener runs).
	config []byte
	// settings edits a copy of the parsed envoy.yaml.
	settings func(*envoy.Settings)
	// app serves upstream requests (after they are recorded); nil: 200 with
	// a JSON body of 100 bytes.
	app       http.HandlerFunc
	noExtProc bool
	noRLS     bool
	extProc   func(ctx context.Context, req *extprocsvc.ProcessingRequest) ([]*extprocsvc.ProcessingResponse, error)
	rls       func(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)
	upstreams map[string]string
}

// appBody is the default upstream body: JSON, over the 30-byte compression
// threshold.
var appBody = []byte(`{"items":[` + "\"aaaaaaaaaa\",\"bbbbbbbbbb\",\"cccccccccc\",\"dddddddddd\",\"eeeeeeeeee\",\"ffffffffff\"" + `],"n":6}`)

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	cfg := envoy.DefaultConfig
	if o.config != nil {
		cfg = o.config
	}
	s, err := envoy.ParseSettings(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Generous timeouts, so that a loaded machine does not turn a test of
	// something else into a fail-open test; timeout tests set their own.
	s.ExtProc = proto.Clone(s.ExtProc).(*extprocv3.ExternalProcessor)
	s.ExtProc.MessageTimeout = durationpb.New(5 * time.Second)
	s.RateLimit = proto.Clone(s.RateLimit).(*ratelimitv3.RateLimit)
	s.RateLimit.Timeout = durationpb.New(5 * time.Second)
	if o.settings != nil {
		o.settings(s)
	}
	h := &harness{t: t, upstream: &upstreamFake{}}
	app := o.app
	if app == nil {
		app = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(appBody)
		}
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.upstream.record(r)
		app(w, r)
	}))
	t.Cleanup(up.Close)
	upstreams := map[string]string{"app": up.URL}
	for k, v := range o.upstreams {
		upstreams[k] = v
	}
	opts := Options{Settings: s, Upstreams: upstreams}
	if !o.noExtProc {
		reply := o.extProc
		if reply == nil {
			reply = passThrough
		}
		h.extProc = &extProcFake{reply: reply}
		conn := serveGRPC(t, func(srv *grpc.Server) { extprocsvc.RegisterExternalProcessorServer(srv, h.extProc) })
		opts.ExtProc = extprocsvc.NewExternalProcessorClient(conn)
	}
	if !o.noRLS {
		h.rls = &rlsFake{reply: o.rls}
		conn := serveGRPC(t, func(srv *grpc.Server) { rlsv3.RegisterRateLimitServiceServer(srv, h.rls) })
		opts.RateLimit = rlsv3.NewRateLimitServiceClient(conn)
	}
	gw, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.gw = gw
	h.srv = httptest.NewServer(gw)
	tr := &http.Transport{DisableCompression: true}
	h.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		h.srv.Close()
		_ = gw.Close()
	})
	return h
}

// serveGRPC serves register's services on an in-memory listener and returns
// a client connection; both stop at cleanup.
func serveGRPC(t testing.TB, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(4 << 20)
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(8 << 20))
	register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		<-done
	})
	return conn
}

// do sends a request through the gateway and returns the response with its
// body read.
func (h *harness) do(method, path string, hdr map[string]string, body io.Reader) (*http.Response, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := h.client.Do(req.WithContext(ctx))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp, b
}
