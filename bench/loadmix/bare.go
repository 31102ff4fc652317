package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/envoy/emulator"
)

// bareGateway serves the same envoy.yaml as the dev stack's gateway without Sluice's filters
// (no ext_proc, no ratelimit) and without internal_only_headers, so the mix's own x-sluice-*
// headers reach the app as on the direct path. Measured against it, the gateway phase shows
// Sluice's own cost, apart from the emulated Envoy's (which real Envoy, in C++, does not have).
func bareGateway(upstream string, log *slog.Logger) (url string, stop func() error, err error) {
	s, err := envoy.ParseSettings(envoy.DefaultConfig)
	if err != nil {
		return "", nil, fmt.Errorf("bare gateway: %w", err)
	}
	drop := []string{s.ExtProcName, s.RateLimitName}
	s.Filters = slices.DeleteFunc(slices.Clone(s.Filters), func(n string) bool { return slices.Contains(drop, n) })
	s.ExtProc, s.RateLimit = nil, nil
	s.Routes = proto.Clone(s.Routes).(*routev3.RouteConfiguration)
	s.Routes.InternalOnlyHeaders = nil
	for _, vh := range s.Routes.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			for _, name := range drop {
				delete(r.TypedPerFilterConfig, name)
			}
		}
	}
	gw, err := emulator.New(emulator.Options{Settings: s, Upstreams: map[string]string{"app": upstream}, Logger: log})
	if err != nil {
		return "", nil, fmt.Errorf("bare gateway: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("bare gateway: %w", err)
	}
	srv := &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 60 << 10}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() error {
		err := srv.Close()
		if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	}, nil
}
