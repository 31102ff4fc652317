package batch

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/extproc/extproctest"
)

func newStageConn(t *testing.T, u *upstream) grpc.ClientConnInterface {
	t.Helper()
	r := newTestRunner(t, u, Config{})
	srv, err := extproc.New(extproc.Config{}, nil, nil, nil, extproc.WithStages(NewStage(r, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(srv.Stages(), ","); got != "identity,batch,metrics" {
		t.Fatalf("stages %s", got)
	}
	return extproctest.Serve(t, srv.Register)
}

// untilImmediate reads replies (skipping override_message_timeout) until an
// immediate response.
func untilImmediate(t *testing.T, s *extproctest.Stream) (*extprocv3.ImmediateResponse, bool) {
	t.Helper()
	extended := false
	for {
		resp, err := s.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if resp.GetOverrideMessageTimeout() != nil {
			extended = true
			continue
		}
		ir := resp.GetImmediateResponse()
		if ir == nil {
			t.Fatalf("reply %v, want an immediate response", resp)
		}
		return ir, extended
	}
}

func TestStage(t *testing.T) {
	const body = `{"requests":[{"id":"1","method":"GET","url":"/api/ok"},{"id":"2","method":"GET","url":"/api/fail","dependsOn":[]}]}`
	tests := []struct {
		name     string
		mode     procmodev3.ProcessingMode_BodySendMode // body mode in protocol_config
		method   string
		path     string
		headers  []string
		chunks   []string
		status   int
		atHeader bool // answered at request headers
		eos      bool // end_of_stream on the request headers (no body, e.g. HTTP/2 without DATA)
		override bool // headers reply carries mode_override BUFFERED
		noClient bool // no x-envoy-external-address
	}{
		{name: "buffered by the route", mode: procmodev3.ProcessingMode_BUFFERED, method: "POST", path: "/api/v1/batch", chunks: []string{body}, status: 200},
		{name: "mode override", mode: procmodev3.ProcessingMode_NONE, method: "POST", path: "/api/v1/batch?x=1", chunks: []string{body}, status: 200, override: true},
		{name: "streamed chunks", mode: procmodev3.ProcessingMode_STREAMED, method: "POST", path: "/api/v1/batch", chunks: []string{body[:10], body[10:]}, status: 200, override: true},
		{name: "malformed", mode: procmodev3.ProcessingMode_BUFFERED, method: "POST", path: "/api/v1/batch", chunks: []string{`{"requests":`}, status: 400},
		{name: "nested parent", mode: procmodev3.ProcessingMode_BUFFERED, method: "POST", path: "/api/v1/batch", headers: []string{"x-sluice-batch", "1"}, status: 400, atHeader: true},
		{name: "get", mode: procmodev3.ProcessingMode_BUFFERED, method: "GET", path: "/api/v1/batch", status: 405, atHeader: true},
		{name: "empty body", mode: procmodev3.ProcessingMode_BUFFERED, method: "POST", path: "/api/v1/batch", headers: []string{"content-length", "0"}, status: 400, atHeader: true},
		{name: "no body at all", mode: procmodev3.ProcessingMode_BUFFERED, method: "POST", path: "/api/v1/batch", eos: true, status: 400, atHeader: true},
		{name: "upper case", mode: procmodev3.ProcessingMode_BUFFERED, method: "POST", path: "/API/V1/BATCH", chunks: []string{body}, status: 200},
		{name: "trailing slash", mode: procmodev3.ProcessingMode_BUFFERED, method: "POST", path: "/Api/v1/Batch/?x", chunks: []string{body}, status: 200},
		{name: "no client address: its items could not be limited as their client", mode: procmodev3.ProcessingMode_BUFFERED, method: "POST", path: "/api/v1/batch", noClient: true, status: 500, atHeader: true},
	}
	u := newUpstream(t)
	conn := newStageConn(t, u)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := extproctest.Open(t, conn)
			s.Protocol.RequestBodyMode = tc.mode
			hdrs := append([]string{"authorization", "Bearer tok"}, tc.headers...)
			if !tc.noClient {
				hdrs = append(hdrs, "x-envoy-external-address", "192.0.2.10")
			}
			if err := s.Send(extproctest.RequestHeaders(tc.method, tc.path, tc.eos, hdrs...)); err != nil {
				t.Fatal(err)
			}
			var ir *extprocv3.ImmediateResponse
			if tc.atHeader {
				ir, _ = untilImmediate(t, s)
			} else {
				resp, err := s.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if resp.GetRequestHeaders() == nil {
					t.Fatalf("headers reply %v", resp)
				}
				mo := resp.GetModeOverride()
				if got := mo != nil && mo.GetRequestBodyMode() == procmodev3.ProcessingMode_BUFFERED; got != tc.override {
					t.Fatalf("mode_override %v, want BUFFERED %v", mo, tc.override)
				}
				for i, c := range tc.chunks {
					last := i == len(tc.chunks)-1
					if err := s.Send(extproctest.RequestBody([]byte(c), last)); err != nil {
						t.Fatal(err)
					}
					if !last {
						if resp, err := s.Recv(); err != nil || resp.GetRequestBody() == nil {
							t.Fatalf("chunk reply %v %v", resp, err)
						}
					}
				}
				var extended bool
				ir, extended = untilImmediate(t, s)
				if !extended {
					t.Error("no override_message_timeout before the batch ran")
				}
			}
			if got := int(ir.GetStatus().GetCode()); got != tc.status {
				t.Fatalf("status %d, want %d: %s", got, tc.status, ir.GetBody())
			}
			if tc.status == http.StatusOK {
				var resp Response
				if err := json.Unmarshal(ir.GetBody(), &resp); err != nil {
					t.Fatal(err)
				}
				if got := statuses(resp); got != "1=200 2=500" {
					t.Fatalf("statuses %s", got)
				}
			}
			_ = s.Finish()
		})
	}
}

func TestStageIgnoresOtherPaths(t *testing.T) {
	u := newUpstream(t)
	conn := newStageConn(t, u)
	s := extproctest.Open(t, conn)
	resp, err := s.Do(extproctest.RequestHeaders("POST", "/api/v1/batches", false, "x-sluice-batch", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetImmediateResponse() != nil || resp.GetModeOverride() != nil {
		t.Fatalf("reply %v", resp)
	}
	_ = s.Finish()
}

// TestIsBatchPath: the set of paths the stage answers, which envoy.yaml's
// batch route must match exactly (envoy/emulator and check-config --envoy
// test the route against it).
func TestIsBatchPath(t *testing.T) {
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st := NewStage(r, nil)
	for path, want := range map[string]bool{
		"/api/v1/batch": true, "/api/v1/batch/": true, "/API/V1/BATCH": true, "/api/v1/Batch/?x=1": true,
		"/api/v1/batch//": false, "/api/v1/batchx": false, "/api/v1/batc": false, "/api/v1": false,
		"/api/v1/batch/x": false, "/api/v1/bat\u0441h": false, "/api/v1/bat%63h": false,
	} {
		if got := st.IsBatchPath(path); got != want {
			t.Errorf("IsBatchPath(%q) = %v; want %v", path, got, want)
		}
	}
}

func TestStageExtendsBeforeRunning(t *testing.T) {
	// The default deadline is 1.8s; a batch that sleeps shorter must finish.
	u := newUpstream(t)
	conn := newStageConn(t, u)
	s := extproctest.Open(t, conn)
	s.Protocol.RequestBodyMode = procmodev3.ProcessingMode_BUFFERED
	if _, err := s.Do(extproctest.RequestHeaders("POST", "/api/v1/batch", false, "x-envoy-external-address", "192.0.2.10")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Send(extproctest.RequestBody([]byte(`{"requests":[{"id":"1","method":"GET","url":"/api/sleep?ms=300"}]}`), true)); err != nil {
		t.Fatal(err)
	}
	ir, extended := untilImmediate(t, s)
	if !extended || ir.GetStatus().GetCode() != 200 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("extended %v status %v", extended, ir.GetStatus())
	}
	var resp Response
	if err := json.Unmarshal(ir.GetBody(), &resp); err != nil || resp.Responses[0].Status != 200 {
		t.Fatalf("%s %v", ir.GetBody(), err)
	}
	_ = s.Finish()
}
