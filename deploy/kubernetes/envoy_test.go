package kubernetes

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	istionetworking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"

	"github.com/sluicehq/sluice/envoy"
)

// reference is envoy/envoy.yaml, the Envoy config Sluice's end-to-end tests
// run: every fragment that sets up the same filters elsewhere must say what
// it says.
type reference struct {
	extProc     *hcmv3.HttpFilter
	rateLimit   *hcmv3.HttpFilter
	hcm         *hcmv3.HttpConnectionManager
	routeConfig *routev3.RouteConfiguration
	batchRoute  *routev3.Route
	cluster     *clusterv3.Cluster // `sluice`
}

func loadReference(t *testing.T) *reference {
	t.Helper()
	b, err := envoy.LoadBootstrap(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	r := &reference{hcm: &hcmv3.HttpConnectionManager{}}
	l := b.GetStaticResources().GetListeners()[0]
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(r.hcm); err != nil {
		t.Fatal(err)
	}
	for _, f := range r.hcm.GetHttpFilters() {
		switch f.GetName() {
		case "envoy.filters.http.ext_proc":
			r.extProc = f
		case "envoy.filters.http.ratelimit":
			r.rateLimit = f
		}
	}
	r.routeConfig = r.hcm.GetRouteConfig()
	for _, rt := range r.routeConfig.GetVirtualHosts()[0].GetRoutes() {
		if rt.GetName() == "batch" {
			r.batchRoute = rt
		}
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == "sluice" {
			r.cluster = c
		}
	}
	if r.extProc == nil || r.rateLimit == nil || r.routeConfig == nil || r.batchRoute == nil || r.cluster == nil {
		t.Fatal("envoy/envoy.yaml lacks the ext_proc or ratelimit filter, the batch route or the sluice cluster")
	}
	return r
}

// toProto decodes a JSON-able value (a patch value) into m the way Istio and
// Envoy Gateway do: protojson, unknown fields and unresolvable Any types being
// errors.
func toProto(v any, m proto.Message) error {
	js, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return protojson.Unmarshal(js, m)
}

// grpcTarget returns the cluster (and authority) a filter's gRPC service
// calls and a copy of the filter with them set to envoy.yaml's ("sluice", no
// authority), so what is left can be compared with envoy.yaml's filter.
func grpcTarget(t *testing.T, f *hcmv3.HttpFilter) (cluster, authority string, normalized *hcmv3.HttpFilter) {
	t.Helper()
	inner, err := f.GetTypedConfig().UnmarshalNew()
	if err != nil {
		t.Fatalf("%s: %v", f.GetName(), err)
	}
	var g *corev3.GrpcService_EnvoyGrpc
	switch c := inner.(type) {
	case *extprocv3.ExternalProcessor:
		g = c.GetGrpcService().GetEnvoyGrpc()
	case *ratelimitv3.RateLimit:
		g = c.GetRateLimitService().GetGrpcService().GetEnvoyGrpc()
	default:
		t.Fatalf("%s: unexpected config %T", f.GetName(), inner)
	}
	if g == nil {
		t.Fatalf("%s: no envoy_grpc service", f.GetName())
	}
	cluster, authority = g.GetClusterName(), g.GetAuthority()
	g.ClusterName, g.Authority = "sluice", ""
	a, err := anypb.New(inner)
	if err != nil {
		t.Fatal(err)
	}
	return cluster, authority, &hcmv3.HttpFilter{Name: f.GetName(), ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}
}

// sameConfig reports whether two filters say the same, comparing the
// messages packed in their Anys (not the Anys' bytes).
func sameConfig(a, b *hcmv3.HttpFilter) bool {
	ma, err1 := a.GetTypedConfig().UnmarshalNew()
	mb, err2 := b.GetTypedConfig().UnmarshalNew()
	return err1 == nil && err2 == nil && a.GetName() == b.GetName() && a.GetDisabled() == b.GetDisabled() && proto.Equal(ma, mb)
}

func text(m proto.Message) string {
	b, _ := protojson.MarshalOptions{Multiline: false}.Marshal(m)
	return string(b)
}

// istioCluster is the cluster Istio builds for a Service port:
// outbound|<port>||<service>.<namespace>.svc.cluster.local.
var istioCluster = regexp.MustCompile(`^outbound\|(\d+)\|\|([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local$`)

// checkIstioTarget checks that a filter's cluster is Istio's cluster of a
// Service in objs on a gRPC port, and that the authority names that Service.
func checkIstioTarget(t *testing.T, objs []*object, cluster, authority, wantService string) {
	t.Helper()
	m := istioCluster.FindStringSubmatch(cluster)
	if m == nil {
		t.Errorf("cluster %q is not Istio's outbound|<port>||<svc>.<ns>.svc.cluster.local", cluster)
		return
	}
	port, _ := strconv.Atoi(m[1])
	if m[2] != wantService {
		t.Errorf("cluster %q calls Service %s; want %s", cluster, m[2], wantService)
	}
	if want := m[2] + "." + m[3] + ".svc.cluster.local"; authority != want {
		t.Errorf("authority %q; want %q (Istio routes by it)", authority, want)
	}
	for _, o := range ofKind(objs, "Service") {
		if o.Name != m[2] || o.Namespace != m[3] {
			continue
		}
		svc := decodeAs[*corev1.Service](t, o)
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			t.Errorf("Service %s/%s is headless: Istio builds an ORIGINAL_DST (passthrough) cluster for it, which a gRPC client stream cannot use", m[3], m[2])
		}
		for _, p := range svc.Spec.Ports {
			if int(p.Port) == port {
				if p.AppProtocol == nil || *p.AppProtocol != "grpc" {
					t.Errorf("Service %s/%s port %d has appProtocol %v; want grpc (Istio then speaks HTTP/2)", m[3], m[2], port, p.AppProtocol)
				}
				return
			}
		}
		t.Errorf("Service %s/%s has no port %d", m[3], m[2], port)
		return
	}
	t.Errorf("cluster %q: no Service %s in namespace %s is rendered", cluster, m[2], m[3])
}

// envoyFilterCheck decodes, validates and compares the patches of an
// EnvoyFilter that sets up Sluice's filters. compare: the fragments must say
// what envoy.yaml says (the Sluice overlays); otherwise they are only decoded
// and validated (Istio's rate limit set-up).
type patchResult struct {
	filters     []string // HTTP filters inserted before the router, in order
	rateLimit   *ratelimitv3.RateLimit
	vhostLimits []*routev3.RateLimit
	hcmMerged   bool // a NETWORK_FILTER patch sets connection manager fields
}

// istioOwnedHCM are the connection manager fields Istio generates itself and
// an EnvoyFilter leaves alone; every other field envoy.yaml's ingress sets
// must be in the gateway's NETWORK_FILTER patch.
var istioOwnedHCM = map[string]string{
	"stat_prefix":        "Istio's",
	"codec_type":         "Istio's",
	"route_config":       "Istio's RDS",
	"rds":                "Istio's RDS",
	"http_filters":       "the HTTP_FILTER patches insert Sluice's",
	"use_remote_address": "true on Istio's gateways (TestIstioEnvoyFilters checks envoy.yaml agrees)",
}

// fieldDiff lists, field by field, where got differs from want, leaving out
// the fields owned names: each line the field and both values.
func fieldDiff(got, want proto.Message, owned map[string]string) []string {
	var out []string
	fields := got.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if _, ok := owned[string(fd.Name())]; ok {
			continue
		}
		only := func(m proto.Message) proto.Message {
			c := m.ProtoReflect().New()
			if m.ProtoReflect().Has(fd) {
				c.Set(fd, m.ProtoReflect().Get(fd))
			}
			return c.Interface()
		}
		g, w := only(got), only(want)
		if !proto.Equal(g, w) {
			out = append(out, fmt.Sprintf("%s: %s; envoy.yaml has %s", fd.Name(), orUnset(g), orUnset(w)))
		}
	}
	return out
}

func orUnset(m proto.Message) string {
	if s := text(m); s != "{}" {
		return s
	}
	return "unset"
}

// zeroValues lists the paths of false, 0 and "0s" values in a decoded
// patch value.
func zeroValues(v any, path string) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			out = append(out, zeroValues(e, path+"."+k)...)
		}
	case []any:
		for i, e := range x {
			out = append(out, zeroValues(e, fmt.Sprintf("%s[%d]", path, i))...)
		}
	case bool:
		if !x {
			out = append(out, path)
		}
	case float64:
		if x == 0 {
			out = append(out, path)
		}
	case string:
		if x == "0s" {
			out = append(out, path)
		}
	}
	sort.Strings(out)
	return out
}

func checkEnvoyFilter(t *testing.T, objs []*object, o *object, ref *reference, compare bool, wantService string) patchResult {
	t.Helper()
	ef := decodeAs[*envoyFilter](t, o)
	var res patchResult
	for i, cp := range ef.spec.GetConfigPatches() {
		where := fmt.Sprintf("%s configPatches[%d] (%s %s)", o, i, cp.GetApplyTo(), cp.GetPatch().GetOperation())
		value := cp.GetPatch().GetValue().AsMap()
		switch cp.GetApplyTo() {
		case istionetworking.EnvoyFilter_HTTP_FILTER:
			if op := cp.GetPatch().GetOperation(); op != istionetworking.EnvoyFilter_Patch_INSERT_BEFORE ||
				cp.GetMatch().GetListener().GetFilterChain().GetFilter().GetSubFilter().GetName() != "envoy.filters.http.router" {
				t.Errorf("%s: want INSERT_BEFORE envoy.filters.http.router", where)
			}
			f := &hcmv3.HttpFilter{}
			if err := toProto(value, f); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if err := envoy.Validate(f); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			res.filters = append(res.filters, f.GetName())
			cluster, authority, norm := grpcTarget(t, f)
			checkIstioTarget(t, objs, cluster, authority, wantService)
			if rl := new(ratelimitv3.RateLimit); f.GetTypedConfig().MessageIs(rl) {
				_ = f.GetTypedConfig().UnmarshalTo(rl)
				res.rateLimit = rl
			}
			if !compare {
				continue
			}
			want := map[string]*hcmv3.HttpFilter{ref.extProc.GetName(): ref.extProc, ref.rateLimit.GetName(): ref.rateLimit}[f.GetName()]
			if want == nil {
				t.Errorf("%s: filter %s is not one of envoy.yaml's Sluice filters", where, f.GetName())
			} else if !sameConfig(norm, want) {
				t.Errorf("%s: differs from envoy/envoy.yaml's %s (gRPC target aside):\n got %s\nwant %s", where, f.GetName(), text(norm), text(want))
			}
		case istionetworking.EnvoyFilter_ROUTE_CONFIGURATION:
			frag := &routev3.RouteConfiguration{}
			if err := toProto(value, frag); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			// Merged into a route configuration as Istio generates it: envoy.yaml's, without
			// what the patch adds.
			merged := proto.Clone(ref.routeConfig).(*routev3.RouteConfiguration)
			merged.InternalOnlyHeaders = nil
			proto.Merge(merged, frag)
			if err := envoy.Validate(merged); err != nil {
				t.Errorf("%s: merged: %v", where, err)
			}
			if compare && strings.Join(merged.GetInternalOnlyHeaders(), ",") != strings.Join(ref.routeConfig.GetInternalOnlyHeaders(), ",") {
				t.Errorf("%s: internal_only_headers %v; envoy.yaml has %v", where, merged.GetInternalOnlyHeaders(), ref.routeConfig.GetInternalOnlyHeaders())
			}
		case istionetworking.EnvoyFilter_NETWORK_FILTER:
			f := &listenerv3.Filter{}
			if err := toProto(value, f); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			frag := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(frag); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			// Merged into a connection manager as Istio generates one (a stand-in: its route
			// configuration and filters), it must validate.
			merged := &hcmv3.HttpConnectionManager{StatPrefix: "istio", RouteSpecifier: ref.hcm.GetRouteSpecifier(), HttpFilters: ref.hcm.GetHttpFilters()}
			proto.Merge(merged, frag)
			if err := envoy.Validate(merged); err != nil {
				t.Errorf("%s: merged: %v", where, err)
			}
			res.hcmMerged = true
			if !compare {
				continue
			}
			// A MERGE copies only what protobuf's merge copies: a false, 0 or 0s changes
			// nothing, so such a value in the patch is a setting that silently does not apply.
			for _, z := range zeroValues(value, "") {
				t.Errorf("%s: %s is a zero value, which a MERGE does not apply", where, z)
			}
			for _, d := range fieldDiff(frag, ref.hcm, istioOwnedHCM) {
				t.Errorf("%s: %s", where, d)
			}
		case istionetworking.EnvoyFilter_HTTP_ROUTE:
			frag := &routev3.Route{}
			if err := toProto(value, frag); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if got := cp.GetMatch().GetRouteConfiguration().GetVhost().GetRoute().GetName(); got != ref.batchRoute.GetName() {
				t.Errorf("%s: matches route %q; envoy.yaml's per-route override is on %q", where, got, ref.batchRoute.GetName())
			}
			merged := proto.Clone(ref.batchRoute).(*routev3.Route)
			merged.TypedPerFilterConfig = nil
			proto.Merge(merged, frag)
			if err := envoy.Validate(merged); err != nil {
				t.Errorf("%s: merged: %v", where, err)
			}
			for name, want := range ref.batchRoute.GetTypedPerFilterConfig() {
				got := merged.GetTypedPerFilterConfig()[name]
				mg, err1 := got.UnmarshalNew()
				mw, err2 := want.UnmarshalNew()
				if err1 != nil || err2 != nil || !proto.Equal(mg, mw) {
					t.Errorf("%s: typed_per_filter_config[%s] %s; envoy.yaml's batch route has %s", where, name, text(got), text(want))
				}
			}
		case istionetworking.EnvoyFilter_VIRTUAL_HOST:
			frag := &routev3.VirtualHost{}
			if err := toProto(value, frag); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			merged := &routev3.VirtualHost{Name: "istio", Domains: []string{"*"}}
			proto.Merge(merged, frag)
			if err := envoy.Validate(merged); err != nil {
				t.Errorf("%s: merged: %v", where, err)
			}
			res.vhostLimits = append(res.vhostLimits, merged.GetRateLimits()...)
		default:
			t.Errorf("%s: no check for this applyTo", where)
		}
	}
	return res
}

func TestIstioEnvoyFilters(t *testing.T) {
	ref := loadReference(t)
	if !ref.hcm.GetUseRemoteAddress().GetValue() {
		t.Error("envoy.yaml's ingress no longer sets use_remote_address: true, which Istio's gateways do (istioOwnedHCM)")
	}
	for _, src := range []struct {
		name string
		objs []*object
	}{
		{"overlays/istio", render(t, "istio")},
		{standalone[0], append(loadStandalone(t, standalone[0]), render(t, "istio")...)},
	} {
		t.Run(src.name, func(t *testing.T) {
			var n int
			for _, o := range ofKind(src.objs, "EnvoyFilter") {
				if o.Source != src.name {
					continue
				}
				n++
				res := checkEnvoyFilter(t, src.objs, o, ref, true, "sluice")
				// Each inserted before the router, in order: ext_proc, then ratelimit.
				if strings.Join(res.filters, ",") != "envoy.filters.http.ext_proc,envoy.filters.http.ratelimit" {
					t.Errorf("%s inserts %v before the router; want ext_proc then ratelimit", o, res.filters)
				}
				if gateway := decodeAs[*envoyFilter](t, o).spec.GetConfigPatches()[0].GetMatch().GetContext() == istionetworking.EnvoyFilter_GATEWAY; gateway && !res.hcmMerged {
					t.Errorf("%s sets none of envoy.yaml's connection manager settings (a NETWORK_FILTER MERGE)", o)
				}
			}
			if n == 0 {
				t.Fatal("no EnvoyFilter")
			}
		})
	}
}

// TestIstioRateLimitDropIn: Sluice loads the set-up's rules ConfigMap, and
// the descriptors the gateway's actions build match its rules.
func TestIstioRateLimitDropIn(t *testing.T) {
	objs := render(t, "istio-ratelimit")
	ref := loadReference(t)
	var rl *ratelimitv3.RateLimit
	var actions []*routev3.RateLimit
	for _, o := range ofKind(objs, "EnvoyFilter") {
		res := checkEnvoyFilter(t, objs, o, ref, false, "ratelimit")
		if res.rateLimit != nil {
			rl = res.rateLimit
		}
		actions = append(actions, res.vhostLimits...)
	}
	if rl == nil || len(actions) == 0 {
		t.Fatal("the EnvoyFilters set no ratelimit filter or no rate_limits actions")
	}
	rules := sluiceRules(t, objs, one(t, objs, "Deployment", "sluice"))
	if _, ok := rules.Domain(rl.GetDomain()); !ok {
		t.Fatalf("the ratelimit filter asks for domain %q; the rules have %v", rl.GetDomain(), rules.Domains())
	}
	for _, path := range []string{"/api/v1/contacts", "/somewhere/else"} {
		entries := descriptor(t, actions[0], map[string]string{":path": path})
		if _, ok := rules.Match(rl.GetDomain(), entries); !ok {
			t.Errorf("descriptor %v of a request to %s matches no rule", entries, path)
		}
	}
}
