package envoy_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/extproc"
)

// TestListenerDesign pins what envoy.yaml's listeners are for
// (docs/security.md): the admin interface on loopback only; ingress strips
// every header Sluice uses; internal takes the client address from the one
// Sluice sets and lets Sluice's markers through to ext_proc only; both run
// the same routes and filters; stats exposes one path.
func TestListenerDesign(t *testing.T) {
	b, err := envoy.LoadBootstrap(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	if a := b.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" {
		t.Errorf("admin listens on %q; want 127.0.0.1 (it serves /quitquitquit and /runtime_modify)", a)
	}
	ls, err := envoy.ParseListeners(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.Listener)
	}
	if !slices.Equal(names, []string{envoy.IngressListener, envoy.InternalListener, envoy.StatsListener}) {
		t.Fatalf("listeners %v", names)
	}
	ingress, internal, stats := ls[0], ls[1], ls[2]

	for _, h := range extproc.OwnedHeaders {
		if !slices.Contains(ingress.Routes.GetInternalOnlyHeaders(), h) {
			t.Errorf("ingress: %s is not in internal_only_headers: a client could send it", h)
		}
	}
	if !ingress.HCM.GetUseRemoteAddress().GetValue() || ingress.HCM.GetXffNumTrustedHops() != 0 || len(ingress.HCM.GetOriginalIpDetectionExtensions()) != 0 {
		t.Error("ingress must take the client address from the TCP peer alone")
	}

	for _, h := range []string{extproc.HeaderTenant, extproc.HeaderTier, extproc.HeaderUser, extproc.HeaderCost, extproc.HeaderClientAddress} {
		if !slices.Contains(internal.Routes.GetInternalOnlyHeaders(), h) {
			t.Errorf("internal: %s is not in internal_only_headers", h)
		}
	}
	for _, h := range []string{extproc.HeaderBatch, extproc.HeaderWarm} {
		if slices.Contains(internal.Routes.GetInternalOnlyHeaders(), h) {
			t.Errorf("internal: %s is stripped before ext_proc, which needs it", h)
		}
		if !slices.Contains(internal.Routes.GetRequestHeadersToRemove(), h) {
			t.Errorf("internal: %s may reach the app (request_headers_to_remove)", h)
		}
	}
	exts := internal.HCM.GetOriginalIpDetectionExtensions()
	if internal.HCM.GetUseRemoteAddress().GetValue() || len(exts) != 1 || exts[0].GetName() != "envoy.http.original_ip_detection.custom_header" {
		t.Errorf("internal: client address from %v (use_remote_address %v); want the custom_header extension", exts, internal.HCM.GetUseRemoteAddress())
	}
	if !proto.Equal(ingress.Routes.GetVirtualHosts()[0], internal.Routes.GetVirtualHosts()[0]) {
		t.Error("internal's routes differ from ingress's: a batch item would not be handled as a direct call")
	}
	if !slices.Equal(ingress.Filters, internal.Filters) || !proto.Equal(ingress.ExtProc, internal.ExtProc) || !proto.Equal(ingress.RateLimit, internal.RateLimit) {
		t.Error("internal's filters differ from ingress's")
	}

	if len(stats.Filters) != 1 || stats.ExtProc != nil || stats.RateLimit != nil {
		t.Errorf("stats filters %v", stats.Filters)
	}
	routes := stats.Routes.GetVirtualHosts()[0].GetRoutes()
	if len(routes) != 1 || routes[0].GetMatch().GetPath() != "/stats/prometheus" || routes[0].GetRoute().GetCluster() != "envoy_admin" {
		t.Errorf("stats routes %v", routes)
	}
	if stats.Clusters["envoy_admin"] != "127.0.0.1:9901" {
		t.Errorf("envoy_admin cluster at %q; want the admin address", stats.Clusters["envoy_admin"])
	}
}
