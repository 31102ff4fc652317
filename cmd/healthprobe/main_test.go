package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.Write([]byte(`{"status":"ok"}`))
		case "/notready":
			http.Error(w, `{"redis":"connection refused"}`, http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/readyz"
	ln.Close() // nothing listens there any more: connection refused

	tests := []struct {
		name    string
		args    []string
		want    int
		wantErr string // substring of stderr
	}{
		{name: "ready", args: []string{srv.URL + "/readyz"}, want: 0},
		{name: "not ready", args: []string{srv.URL + "/notready"}, want: 1, wantErr: "503"},
		{name: "redirect not followed", args: []string{srv.URL + "/moved"}, want: 1, wantErr: "redirect"},
		{name: "timeout", args: []string{"-timeout", "100ms", srv.URL + "/slow"}, want: 1, wantErr: "deadline"},
		{name: "connection refused", args: []string{closed}, want: 1, wantErr: "refused"},
		{name: "no URL", args: nil, want: 2, wantErr: "usage"},
		{name: "two URLs", args: []string{srv.URL, srv.URL}, want: 2, wantErr: "usage"},
		{name: "not a URL", args: []string{"127.0.0.1:9091/readyz"}, want: 2, wantErr: "not an http"},
		{name: "unknown flag", args: []string{"-x", srv.URL}, want: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr strings.Builder
			if got := run(context.Background(), tt.args, &stderr); got != tt.want {
				t.Fatalf("run(%q) = %d; want %d; stderr: %s", tt.args, got, tt.want, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.wantErr)
			}
		})
	}
}
