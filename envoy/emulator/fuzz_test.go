package emulator

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/internal/header"
)

// FuzzChooseEncoding feeds the compressor's Accept-Encoding negotiation
// (a client header) arbitrary values against envoy.yaml's compressor chain
// and any response Content-Type: the choice is "identity" or an encoding of
// the chain that accepts the content type, and never one the client
// excluded with q=0.
//
// Seeds: testdata/fuzz/FuzzChooseEncoding, plus the values below.
func FuzzChooseEncoding(f *testing.F) {
	for _, s := range []string{
		"gzip", "br;q=1.0, gzip;q=0.8", "*", "*;q=0, identity", "gzip;q=0", "gzip;q=NaN, br;q=1e400",
		"gzip;q=-1", ",,,;;;===", "br;q=0.5;q=1", "GZIP", "identity;q=0, *;q=0",
	} {
		f.Add(s, "application/json; charset=utf-8")
	}
	s, err := envoy.ParseSettings(envoy.DefaultConfig)
	if err != nil {
		f.Fatal(err)
	}
	var chain []*compressor
	for _, c := range s.Compressors {
		cc, err := newCompressor(c)
		if err != nil {
			f.Fatal(err)
		}
		chain = append(chain, cc)
	}
	f.Fuzz(func(t *testing.T, acceptEncoding, contentType string) {
		h := &header.List{}
		h.Add("content-type", contentType)
		got := chooseEncoding(acceptEncoding, chain, h)
		if got == "identity" {
			return
		}
		var c *compressor
		for _, cc := range chain {
			if cc.encoding == got {
				c = cc
				break
			}
		}
		if c == nil {
			t.Fatalf("chose %q, not an encoding of the chain", got)
		}
		if ct, _ := contentTypeValue(h); ct != "" && !c.types[ct] {
			t.Fatalf("chose %q for content type %q it does not compress", got, ct)
		}
		// As Envoy reads a token (CompressorFilter::chooseEncoding): the
		// q-value is all after the first "=" of all after the first ";",
		// so "gzip;q=0;x=1" is skipped as unparseable, not an exclusion.
		for _, tok := range strings.Split(acceptEncoding, ",") {
			enc, params, ok := strings.Cut(tok, ";")
			if !ok || strings.TrimSpace(enc) != got {
				continue
			}
			k, v, _ := strings.Cut(params, "=")
			if q, err := strconv.ParseFloat(strings.TrimSpace(v), 32); err == nil && q == 0 && strings.EqualFold(strings.TrimSpace(k), "q") {
				t.Fatalf("chose %q, which %q excludes", got, acceptEncoding)
			}
		}
	})
}

// FuzzGatewayRequest sends raw HTTP/1.1 requests (any method, target,
// header lines and body) through Go's HTTP server into the emulated Envoy,
// with a pass-through ext_proc server, a rate limit service answering OK and
// an upstream answering 200. The gateway must answer every request Go's
// parser accepts with a well-formed response (200 from the upstream, or a
// 4xx local reply such as Envoy's 400 for underscores in names or 431 for
// oversized headers; never a 5xx), and the upstream must never see a
// client's copy of Sluice's identity headers (internal_only_headers) or of
// Envoy control headers.
//
// Seeds: testdata/fuzz/FuzzGatewayRequest, plus the requests below.
func FuzzGatewayRequest(f *testing.F) {
	for _, s := range [][3]string{
		{"GET", "/api/v1/contacts", "x-tenant-id: acme\n"},
		{"POST", "/api/v1/batch", "content-type: application/json\ncontent-length: 2\n"},
		{"GET", "/a/../b//c?x=%2e%2e", "connection: x-sluice-tenant, keep-alive\nx-sluice-tenant: evil\n"},
		{"GET", "/", "x_sluice_tenant: evil\n"},
		{"GET", "/", "te: trailers, gzip\naccept-encoding: br;q=0, gzip\nx-envoy-retry-on: 5xx\nx-forwarded-for: 127.0.0.1\n"},
		{"OPTIONS", "*", ""},
		{"GET", "http://evil.example/x", "host: api.example.com\n"},
	} {
		f.Add(s[0], s[1], s[2], []byte("{}"))
	}
	gw, upstream, internalOnly := fuzzGateway(f)
	// Headers no client copy of may reach the application: envoy.yaml's
	// internal_only_headers (Sluice's identity headers; the pass-through
	// ext_proc server here sets none) and the Envoy control headers an edge
	// request loses.
	forbidden := map[string]bool{"x-envoy-retry-on": true, "x-envoy-upstream-rq-timeout-ms": true, "x-envoy-internal": true, "x-envoy-original-url": true}
	for _, h := range internalOnly {
		forbidden[h] = true
	}
	var served atomic.Int64 // requests Go's server handed to the gateway
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		gw.ServeHTTP(w, r)
	}))
	f.Cleanup(srv.Close)

	f.Fuzz(func(t *testing.T, method, target, headers string, body []byte) {
		if len(body) > 64<<10 || len(headers) > 64<<10 || strings.ContainsAny(method+target, " \r\n") || method == "" || target == "" {
			return
		}
		var raw strings.Builder
		raw.WriteString(method + " " + target + " HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n")
		for _, line := range strings.Split(headers, "\n") {
			if line = strings.TrimRight(line, "\r"); line != "" {
				raw.WriteString(line + "\r\n")
			}
		}
		if !strings.Contains(strings.ToLower(headers), "content-length") && !strings.Contains(strings.ToLower(headers), "transfer-encoding") {
			raw.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
		}
		raw.WriteString("\r\n")
		raw.Write(body)

		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		before, handled := upstream.count(), served.Load()
		if _, err := io.WriteString(conn, raw.String()); err != nil {
			return // the server closed early (a refused request)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("no response within 10s to %q", raw.String())
			}
			return // Go's server closed the connection without a response
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// Go's server answers what it cannot parse itself (400, 431, 501
		// for an unsupported Transfer-Encoding, 505) without the gateway.
		if resp.StatusCode >= 500 && served.Load() != handled {
			t.Fatalf("status %d for %q", resp.StatusCode, raw.String())
		}
		if upstream.count() == before {
			return
		}
		h := upstream.lastHeader()
		for name := range h {
			if l := strings.ToLower(name); forbidden[l] {
				t.Fatalf("upstream saw %s: %q for %q", name, h[name], raw.String())
			}
		}
	})
}

// fuzzUpstream counts requests and keeps the last one's headers.
type fuzzUpstream struct{ upstreamFake }

func (u *fuzzUpstream) count() int {
	n, _, _ := u.last()
	return n
}

func (u *fuzzUpstream) lastHeader() http.Header {
	_, h, _ := u.last()
	return h
}

// passServer answers every ext_proc message with CONTINUE.
type passServer struct {
	extprocsvc.UnimplementedExternalProcessorServer
}

func (passServer) Process(st extprocsvc.ExternalProcessor_ProcessServer) error {
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		if err := st.Send(continueReply(req, nil)); err != nil {
			return nil
		}
	}
}

// okRLS answers OK to every rate limit call.
type okRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
}

func (okRLS) ShouldRateLimit(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

// fuzzGateway is a Gateway on envoy.yaml with a pass-through ext_proc
// server and an always-OK rate limit service (in-memory gRPC), and an
// upstream answering 200; also envoy.yaml's internal_only_headers.
func fuzzGateway(tb testing.TB) (*Gateway, *fuzzUpstream, []string) {
	tb.Helper()
	s, err := envoy.ParseSettings(envoy.DefaultConfig)
	if err != nil {
		tb.Fatal(err)
	}
	up := &fuzzUpstream{}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up.record(r)
		w.Header().Set("content-type", "application/json")
		w.Write(appBody)
	}))
	tb.Cleanup(app.Close)
	// Fakes that keep nothing: a fuzz run makes a great many requests.
	ep := passServer{}
	rl := okRLS{}
	gw, err := New(Options{
		Settings:  s,
		ExtProc:   extprocsvc.NewExternalProcessorClient(serveGRPC(tb, func(g *grpc.Server) { extprocsvc.RegisterExternalProcessorServer(g, ep) })),
		RateLimit: rlsv3.NewRateLimitServiceClient(serveGRPC(tb, func(g *grpc.Server) { rlsv3.RegisterRateLimitServiceServer(g, rl) })),
		Upstreams: map[string]string{"app": app.URL},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { gw.Close() })
	return gw, up, s.Routes.GetInternalOnlyHeaders()
}
