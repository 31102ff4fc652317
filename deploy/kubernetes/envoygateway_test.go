package kubernetes

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	customheaderv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/original_ip_detection/custom_header/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/ohler55/ojg/jp"
	"github.com/ohler55/ojg/oj"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/envoy"
)

// egExtProcName is the name Envoy Gateway gives the ext_proc filter of an
// EnvoyExtensionPolicy (checked against its own test data by TestEnvoyGatewayNames).
func egExtProcName(ns, name string, i int) string {
	return fmt.Sprintf("envoy.filters.http.ext_proc/envoyextensionpolicy/%s/%s/extproc/%d", ns, name, i)
}

// TestEnvoyGatewayNames checks, against Envoy Gateway's own translator test
// data in the pinned module, the names the EnvoyPatchPolicy relies on: the
// ext_proc filter of a policy and a listener's <namespace>/<gateway>/<listener>.
func TestEnvoyGatewayNames(t *testing.T) {
	dir := moduleDir(t, "github.com/envoyproxy/gateway")
	for _, tt := range []struct{ file, want string }{
		{"internal/gatewayapi/testdata/envoyextensionpolicy-with-extproc-with-multiple-backendrefs.out.yaml", "name: envoyextensionpolicy/default/policy-for-http-route/extproc/0"},
		{"internal/xds/translator/testdata/out/xds-ir/ext-proc.listeners.yaml", "name: " + egExtProcName("default", "policy-for-route-1", 0)},
		// Listener http of Gateway default/gateway-1.
		{"internal/gatewayapi/testdata/envoyextensionpolicy-with-extproc-with-multiple-backendrefs.out.yaml", "name: default/gateway-1/http"},
	} {
		data, err := os.ReadFile(filepath.Join(dir, tt.file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), tt.want) {
			t.Errorf("%s has no %q: Envoy Gateway's naming changed; update the EnvoyPatchPolicy", tt.file, tt.want)
		}
	}
}

// applyJSONPatch applies one EnvoyPatchPolicy operation to doc as Envoy
// Gateway does (internal/utils/jsonpatch): a jsonPath selects every matching
// location, path is appended to each, and the RFC 6902 operation runs there.
func applyJSONPatch(doc []byte, op egv1a1.JSONPatchOperation) ([]byte, error) {
	var paths []string
	if op.JSONPath != nil && *op.JSONPath != "" {
		x, err := jp.ParseString(*op.JSONPath)
		if err != nil {
			return nil, err
		}
		parsed, err := oj.Parse(doc)
		if err != nil {
			return nil, err
		}
		for _, loc := range x.Locate(parsed, 0) {
			var ptr strings.Builder
			for _, f := range loc {
				switch v := f.(type) {
				case jp.Root:
				case jp.Child:
					ptr.WriteString("/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(string(v)))
				case jp.Nth:
					ptr.WriteString("/" + strconv.Itoa(int(v)))
				default:
					return nil, fmt.Errorf("jsonPath location %v: %T", loc, f)
				}
			}
			p := ptr.String()
			if op.Path != nil && *op.Path != "" {
				p = strings.TrimSuffix(p, "/") + "/" + strings.TrimPrefix(*op.Path, "/")
			}
			paths = append(paths, p)
		}
		if len(paths) == 0 {
			return nil, fmt.Errorf("jsonPath %s matches nothing", *op.JSONPath)
		}
	} else if op.Path != nil {
		paths = []string{*op.Path}
	}
	for _, p := range paths {
		o := map[string]any{"op": string(op.Op), "path": p}
		if op.Value != nil {
			o["value"] = json.RawMessage(op.Value.Raw)
		}
		raw, err := json.Marshal([]any{o})
		if err != nil {
			return nil, err
		}
		patch, err := jsonpatch.DecodePatch(raw)
		if err != nil {
			return nil, err
		}
		if doc, err = patch.Apply(doc); err != nil {
			return nil, fmt.Errorf("%s at %s: %w", op.Op, p, err)
		}
	}
	return doc, nil
}

// egExtProc is the ext_proc filter Envoy Gateway generates for one extProc of
// an EnvoyExtensionPolicy (its xds translator: disabled on the listener and
// enabled on the routes the policy targets; headers sent for a side the
// processing mode names, SKIP otherwise; trailers skipped).
func egExtProc(t *testing.T, ns, name string, i int, e egv1a1.ExtProc) *hcmv3.HttpFilter {
	t.Helper()
	side := func(o *egv1a1.ProcessingModeOptions) (extprocv3.ProcessingMode_HeaderSendMode, extprocv3.ProcessingMode_BodySendMode) {
		if o == nil {
			return extprocv3.ProcessingMode_SKIP, extprocv3.ProcessingMode_NONE
		}
		body := extprocv3.ProcessingMode_NONE
		if o.Body != nil {
			body = map[egv1a1.ExtProcBodyProcessingMode]extprocv3.ProcessingMode_BodySendMode{
				egv1a1.BufferedExtProcBodyProcessingMode:          extprocv3.ProcessingMode_BUFFERED,
				egv1a1.StreamedExtProcBodyProcessingMode:          extprocv3.ProcessingMode_STREAMED,
				egv1a1.BufferedPartialExtBodyHeaderProcessingMode: extprocv3.ProcessingMode_BUFFERED_PARTIAL,
				egv1a1.FullDuplexStreamedExtBodyProcessingMode:    extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED,
			}[*o.Body]
		}
		return extprocv3.ProcessingMode_SEND, body
	}
	pm := e.ProcessingMode
	if pm == nil {
		pm = &egv1a1.ExtProcProcessingMode{}
	}
	reqH, reqB := side(pm.Request)
	respH, respB := side(pm.Response)
	c := &extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
			ClusterName: fmt.Sprintf("envoyextensionpolicy/%s/%s/%d/%s", ns, name, i, e.BackendRefs[0].Name),
		}}},
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode: reqH, RequestBodyMode: reqB,
			ResponseHeaderMode: respH, ResponseBodyMode: respB,
			RequestTrailerMode: extprocv3.ProcessingMode_SKIP, ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		AllowModeOverride: pm.AllowModeOverride,
		FailureModeAllow:  e.FailOpen != nil && *e.FailOpen,
	}
	if e.MessageTimeout != nil {
		d, err := time.ParseDuration(string(*e.MessageTimeout))
		if err != nil {
			t.Fatal(err)
		}
		c.MessageTimeout = durationpb.New(d)
	}
	a, err := anypb.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return &hcmv3.HttpFilter{Name: egExtProcName(ns, name, i), Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}
}

// egGateways are the Gateways of the envoy-gateway overlay, each with the
// listener of envoy.yaml it stands for.
var egGateways = []struct{ gateway, listener, envoyListener string }{
	{"eg", "http", envoy.IngressListener},
	{"eg-internal", "internal", envoy.InternalListener},
}

// egOwnedHCM are the connection manager fields Envoy Gateway generates
// itself; every other field envoy.yaml's listener sets must come out of the
// ClientTrafficPolicy and the EnvoyPatchPolicy the same.
var egOwnedHCM = map[string]string{
	"stat_prefix":  "Envoy Gateway's",
	"codec_type":   "Envoy Gateway's (AUTO)",
	"route_config": "Envoy Gateway's RDS",
	"rds":          "Envoy Gateway's RDS",
	"http_filters": "the policies' (compared filter by filter)",
}

// egHCM is the connection manager Envoy Gateway v1.9 generates for an HTTP
// listener under a ClientTrafficPolicy (nil: none), in the fields envoy.yaml
// sets: internal/xds/translator/listener.go (addHCMToXDSListener,
// originalIPDetectionExtensions, buildHeadersWithUnderscoresAction), with
// the listener defaults of internal/gatewayapi/listener.go (merge_slashes on,
// escaped slashes unescaped and redirected) and the policy's translation in
// internal/gatewayapi/clienttrafficpolicy.go. A policy field it does not
// model fails the test, rather than being compared as if absent.
func egHCM(t *testing.T, ctp *egv1a1.ClientTrafficPolicy) *hcmv3.HttpConnectionManager {
	t.Helper()
	m := &hcmv3.HttpConnectionManager{
		UseRemoteAddress:             wrapperspb.Bool(true),
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
		CommonHttpProtocolOptions:    &corev3.HttpProtocolOptions{HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_REJECT_REQUEST},
	}
	if ctp == nil {
		return m
	}
	spec := ctp.Spec
	modelled := egv1a1.ClientTrafficPolicySpec{PolicyTargetReferences: spec.PolicyTargetReferences, ClientIPDetection: spec.ClientIPDetection, Path: spec.Path, Headers: spec.Headers, Timeout: spec.Timeout}
	if !reflect.DeepEqual(spec, modelled) {
		t.Fatalf("ClientTrafficPolicy %s sets fields egHCM does not model (it models clientIPDetection.customHeader, path, headers.withUnderscoresAction and requestID, timeout.http)", ctp.Name)
	}
	if d := spec.ClientIPDetection; d != nil {
		if d.CustomHeader == nil || d.XForwardedFor != nil || d.DirectSourceIP != nil {
			t.Fatalf("ClientTrafficPolicy %s: egHCM models clientIPDetection.customHeader alone", ctp.Name)
		}
		c := &customheaderv3.CustomHeaderConfig{HeaderName: d.CustomHeader.Name, AllowExtensionToSetAddressAsTrusted: true}
		if d.CustomHeader.FailClosed != nil && *d.CustomHeader.FailClosed {
			c.RejectWithStatus = &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}
		}
		a, err := anypb.New(c)
		if err != nil {
			t.Fatal(err)
		}
		m.OriginalIpDetectionExtensions = []*corev3.TypedExtensionConfig{{Name: "envoy.extensions.http.original_ip_detection.custom_header", TypedConfig: a}}
		m.UseRemoteAddress = wrapperspb.Bool(false)
	}
	if p := spec.Path; p != nil {
		if p.DisableMergeSlashes != nil {
			m.MergeSlashes = !*p.DisableMergeSlashes
		}
		if p.EscapedSlashesAction != nil {
			m.PathWithEscapedSlashesAction = map[egv1a1.PathEscapedSlashAction]hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction{
				egv1a1.KeepUnchangedAction: hcmv3.HttpConnectionManager_KEEP_UNCHANGED,
				egv1a1.RejectRequestAction: hcmv3.HttpConnectionManager_REJECT_REQUEST,
				egv1a1.UnescapeAndRedirect: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
				egv1a1.UnescapeAndForward:  hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD,
			}[*p.EscapedSlashesAction]
		}
	}
	if h := spec.Headers; h != nil {
		if a := h.WithUnderscoresAction; a != nil {
			m.CommonHttpProtocolOptions.HeadersWithUnderscoresAction = map[egv1a1.WithUnderscoresAction]corev3.HttpProtocolOptions_HeadersWithUnderscoresAction{
				egv1a1.WithUnderscoresActionAllow:         corev3.HttpProtocolOptions_ALLOW,
				egv1a1.WithUnderscoresActionRejectRequest: corev3.HttpProtocolOptions_REJECT_REQUEST,
				egv1a1.WithUnderscoresActionDropHeader:    corev3.HttpProtocolOptions_DROP_HEADER,
			}[*a]
		}
		if id := h.RequestID; id != nil {
			gen := *id == egv1a1.RequestIDActionGenerate || *id == egv1a1.RequestIDActionPreserveOrGenerate
			preserve := *id == egv1a1.RequestIDActionPreserve || *id == egv1a1.RequestIDActionPreserveOrGenerate
			m.GenerateRequestId, m.PreserveExternalRequestId = wrapperspb.Bool(gen), preserve
		}
		if h.EnableEnvoyHeaders != nil || h.DisableRateLimitHeaders != nil || h.XForwardedClientCert != nil || h.PreserveXRequestID != nil ||
			h.EarlyRequestHeaders != nil || h.LateResponseHeaders != nil || h.Host != nil {
			t.Fatalf("ClientTrafficPolicy %s: egHCM models headers.withUnderscoresAction and requestID alone", ctp.Name)
		}
	}
	if to := spec.Timeout; to != nil {
		if to.TCP != nil || to.HTTP == nil {
			t.Fatalf("ClientTrafficPolicy %s: egHCM models timeout.http alone", ctp.Name)
		}
		d := func(v *gwapiv1.Duration) *durationpb.Duration {
			if v == nil {
				return nil
			}
			x, err := time.ParseDuration(string(*v))
			if err != nil {
				t.Fatal(err)
			}
			return durationpb.New(x)
		}
		m.RequestTimeout, m.RequestHeadersTimeout, m.StreamIdleTimeout = d(to.HTTP.RequestReceivedTimeout), d(to.HTTP.RequestHeadersReceivedTimeout), d(to.HTTP.StreamIdleTimeout)
		m.CommonHttpProtocolOptions.IdleTimeout = d(to.HTTP.IdleTimeout)
	}
	return m
}

// sameAsEnvoyYAML rewrites, in a copy of an Envoy Gateway connection
// manager, what differs from envoy.yaml in spelling only: KEEP_UNCHANGED is
// what IMPLEMENTATION_SPECIFIC_DEFAULT does (the HCM proto's
// PathWithEscapedSlashesAction), an extension's name is a label, and the
// custom header extension's allow_extension_to_set_address_as_trusted only
// decides whether a request can be internal, which no address is while
// internal_address_config is unset, as in both (conn_manager_utility.cc,
// mutateRequestHeaders).
func sameAsEnvoyYAML(t *testing.T, m, ref *hcmv3.HttpConnectionManager) *hcmv3.HttpConnectionManager {
	t.Helper()
	m = proto.Clone(m).(*hcmv3.HttpConnectionManager)
	if m.GetPathWithEscapedSlashesAction() == hcmv3.HttpConnectionManager_KEEP_UNCHANGED {
		m.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT
	}
	if m.GetInternalAddressConfig() != nil || ref.GetInternalAddressConfig() != nil {
		return m // then trusted matters: compare as is
	}
	for i, e := range m.GetOriginalIpDetectionExtensions() {
		c := &customheaderv3.CustomHeaderConfig{}
		if e.GetTypedConfig().UnmarshalTo(c) != nil {
			continue
		}
		c.AllowExtensionToSetAddressAsTrusted = false
		a, err := anypb.New(c)
		if err != nil {
			t.Fatal(err)
		}
		e.TypedConfig = a
		if i < len(ref.GetOriginalIpDetectionExtensions()) {
			e.Name = ref.GetOriginalIpDetectionExtensions()[i].GetName()
		}
	}
	return m
}

// egAttached reports whether an EnvoyExtensionPolicy reaches a Gateway: it
// targets the Gateway or an HTTPRoute attached to it.
func egAttached(t *testing.T, objs []*object, p *egv1a1.EnvoyExtensionPolicy, gateway string) bool {
	t.Helper()
	for _, r := range p.Spec.TargetRefs {
		switch r.Kind {
		case "Gateway":
			if string(r.Name) == gateway {
				return true
			}
		case "HTTPRoute":
			route := decodeAs[*gwapiv1.HTTPRoute](t, one(t, objs, "HTTPRoute", string(r.Name)))
			for _, pr := range route.Spec.ParentRefs {
				if string(pr.Name) == gateway {
					return true
				}
			}
		}
	}
	return false
}

// TestEnvoyGatewayPolicies builds, for each Gateway, the listener and route
// configuration Envoy Gateway generates from the overlay's policies, applies
// the EnvoyPatchPolicy to them as Envoy Gateway does, and compares the result
// with envoy.yaml's listener the Gateway stands for: the connection manager
// field by field, the ext_proc and ratelimit filters, the rate limit cluster,
// the headers the route configuration strips and removes.
func TestEnvoyGatewayPolicies(t *testing.T) {
	objs := render(t, "envoy-gateway")
	ref := loadReference(t)
	listeners := envoyListeners(t)
	for _, g := range egGateways {
		t.Run(g.gateway, func(t *testing.T) {
			l := envoy.Find(listeners, g.envoyListener)
			if l == nil {
				t.Fatalf("envoy.yaml has no listener %s", g.envoyListener)
			}
			checkEGGateway(t, objs, ref, l, g.gateway, g.listener)
		})
	}

	// The policies' backends: Sluice's gRPC port, allowed across namespaces by a ReferenceGrant.
	for _, o := range ofKind(objs, "EnvoyExtensionPolicy") {
		for _, e := range decodeAs[*egv1a1.EnvoyExtensionPolicy](t, o).Spec.ExtProc {
			for _, b := range e.BackendRefs {
				ns := o.Namespace
				if b.Namespace != nil {
					ns = string(*b.Namespace)
				}
				checkServiceAddress(t, objs, fmt.Sprintf("%s.%s.svc.cluster.local", b.Name, ns), int(*b.Port), false)
				if ns != o.Namespace && !referenceGranted(t, objs, o.Namespace, ns, string(b.Name)) {
					t.Errorf("%s calls Service %s/%s, and no ReferenceGrant there allows EnvoyExtensionPolicies of %s", o, ns, b.Name, o.Namespace)
				}
			}
		}
	}
}

func checkEGGateway(t *testing.T, objs []*object, ref *reference, want *envoy.Settings, gwName, listenerName string) {
	t.Helper()
	gw := one(t, objs, "Gateway", gwName)
	gateway := decodeAs[*gwapiv1.Gateway](t, gw)
	if len(gateway.Spec.Listeners) != 1 || string(gateway.Spec.Listeners[0].Name) != listenerName || gateway.Spec.Listeners[0].Protocol != gwapiv1.HTTPProtocolType {
		t.Fatalf("Gateway %s: want one HTTP listener %s", gwName, listenerName)
	}
	xdsName := fmt.Sprintf("%s/%s/%s", gw.Namespace, gw.Name, listenerName)

	// The ClientTrafficPolicy of the Gateway.
	var ctp *egv1a1.ClientTrafficPolicy
	for _, o := range ofKind(objs, "ClientTrafficPolicy") {
		p := decodeAs[*egv1a1.ClientTrafficPolicy](t, o)
		for _, r := range p.Spec.TargetRefs {
			if r.Kind == "Gateway" && string(r.Name) == gwName && o.Namespace == gw.Namespace {
				if ctp != nil {
					t.Fatalf("Gateway %s: two ClientTrafficPolicies", gwName)
				}
				ctp = p
			}
		}
	}
	hcm := egHCM(t, ctp)
	hcm.StatPrefix = fmt.Sprintf("http-%d", gateway.Spec.Listeners[0].Port)
	hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
		RouteConfigName: xdsName,
		ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3},
	}}
	for _, o := range ofKind(objs, "EnvoyExtensionPolicy") {
		p := decodeAs[*egv1a1.EnvoyExtensionPolicy](t, o)
		if !egAttached(t, objs, p, gwName) {
			continue
		}
		for i, e := range p.Spec.ExtProc {
			hcm.HttpFilters = append(hcm.HttpFilters, egExtProc(t, o.Namespace, o.Name, i, e))
		}
	}
	router, _ := anypb.New(&routerv3.Router{})
	hcm.HttpFilters = append(hcm.HttpFilters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}})
	hcmAny, _ := anypb.New(hcm)
	listener := &listenerv3.Listener{
		Name:    xdsName,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(gateway.Spec.Listeners[0].Port)}}}},
		DefaultFilterChain: &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
		}}},
	}
	routeConfig := &routev3.RouteConfiguration{Name: xdsName, VirtualHosts: []*routev3.VirtualHost{{Name: xdsName + "/*", Domains: []string{"*"}}}}
	marshal := protojson.MarshalOptions{UseProtoNames: true} // as Envoy Gateway before patching
	docs := map[string][]byte{}
	docs["listener"], _ = marshal.Marshal(listener)
	docs["route"], _ = marshal.Marshal(routeConfig)

	// The EnvoyPatchPolicy of the Gateway, applied.
	var clusters []*clusterv3.Cluster
	n := 0
	for _, o := range ofKind(objs, "EnvoyPatchPolicy") {
		epp := decodeAs[*egv1a1.EnvoyPatchPolicy](t, o)
		if epp.Spec.TargetRef.Kind != "Gateway" || string(epp.Spec.TargetRef.Name) != gwName || o.Namespace != gw.Namespace {
			continue
		}
		n++
		for i, p := range epp.Spec.JSONPatches {
			where := fmt.Sprintf("%s jsonPatches[%d] (%s %s)", o, i, p.Type, p.Name)
			switch p.Type {
			case "type.googleapis.com/envoy.config.cluster.v3.Cluster":
				if p.Operation.Op != "add" || (p.Operation.Path != nil && *p.Operation.Path != "") || p.Operation.Value == nil {
					t.Errorf("%s: want add with an empty path (a new resource)", where)
					continue
				}
				c := &clusterv3.Cluster{}
				if err := protojson.Unmarshal(p.Operation.Value.Raw, c); err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				if err := envoy.Validate(c); err != nil {
					t.Errorf("%s: %v", where, err)
				}
				clusters = append(clusters, c)
			case "type.googleapis.com/envoy.config.listener.v3.Listener", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration":
				key := map[bool]string{true: "listener", false: "route"}[strings.HasSuffix(string(p.Type), "Listener")]
				if string(p.Name) != xdsName {
					t.Errorf("%s: patches %s; the Gateway's listener is %s", where, p.Name, xdsName)
				}
				out, err := applyJSONPatch(docs[key], p.Operation)
				if err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				docs[key] = out
			default:
				t.Errorf("%s: no check for this type", where)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d EnvoyPatchPolicies target Gateway %s; want 1", n, gwName)
	}

	// The patched listener: valid, its connection manager and filters envoy.yaml's.
	if err := protojson.Unmarshal(docs["listener"], listener); err != nil {
		t.Fatalf("patched listener: %v", err)
	}
	if err := envoy.Validate(listener); err != nil {
		t.Fatalf("patched listener: %v", err)
	}
	if err := listener.GetDefaultFilterChain().GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	for _, d := range fieldDiff(sameAsEnvoyYAML(t, hcm, want.HCM), want.HCM, egOwnedHCM) {
		t.Errorf("connection manager of %s (ClientTrafficPolicy, EnvoyPatchPolicy) vs envoy.yaml's listener %s: %s", xdsName, want.Listener, d)
	}
	var names []string
	for _, f := range hcm.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	wantNames := []string{egExtProcName("default", "sluice", 0), egExtProcName("default", "sluice-batch", 0), "envoy.filters.http.ratelimit", "envoy.filters.http.router"}
	if strings.Join(names, " ") != strings.Join(wantNames, " ") {
		t.Fatalf("patched http_filters %v; want %v", names, wantNames)
	}
	batchOverride := &extprocv3.ExtProcPerRoute{}
	_ = ref.batchRoute.GetTypedPerFilterConfig()[ref.extProc.GetName()].UnmarshalTo(batchOverride)
	for i, f := range hcm.GetHttpFilters()[:2] {
		got := &extprocv3.ExternalProcessor{}
		_ = f.GetTypedConfig().UnmarshalTo(got)
		got.GrpcService = want.ExtProc.GetGrpcService()
		w := proto.Clone(want.ExtProc).(*extprocv3.ExternalProcessor)
		if i == 1 { // the batch route's policy: envoy.yaml's per-route override applied
			w.ProcessingMode = batchOverride.GetOverrides().GetProcessingMode()
			w.FailureModeAllow = batchOverride.GetOverrides().GetFailureModeAllow().GetValue()
		}
		if !proto.Equal(got, w) {
			t.Errorf("%s after the patches, gRPC target aside:\n got %s\nwant %s (envoy/envoy.yaml)", f.GetName(), text(got), text(w))
		}
	}
	cluster, _, norm := grpcTarget(t, hcm.GetHttpFilters()[2])
	if rl := (&hcmv3.HttpFilter{Name: want.RateLimitName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, want.RateLimit)}}); !sameConfig(norm, rl) {
		t.Errorf("the ratelimit filter differs from envoy/envoy.yaml's (gRPC target aside):\n got %s\nwant %s", text(norm), text(rl))
	}

	// Its cluster: added by the policy, envoy.yaml's `sluice` but for name and address,
	// at a headless Service in front of Sluice's gRPC port.
	var rlCluster *clusterv3.Cluster
	for _, c := range clusters {
		if c.GetName() == cluster {
			rlCluster = c
		}
	}
	if rlCluster == nil {
		t.Fatalf("the ratelimit filter calls cluster %q, which the policy does not add", cluster)
	}
	addr := rlCluster.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	normCluster := proto.Clone(rlCluster).(*clusterv3.Cluster)
	normCluster.Name, normCluster.LoadAssignment = ref.cluster.GetName(), ref.cluster.GetLoadAssignment()
	if !proto.Equal(normCluster, ref.cluster) {
		t.Errorf("cluster %s differs from envoy.yaml's sluice (name and address aside):\n got %s\nwant %s", cluster, text(normCluster), text(ref.cluster))
	}
	checkServiceAddress(t, objs, addr.GetAddress(), int(addr.GetPortValue()), true)

	// The route configuration: the headers envoy.yaml's listener strips and removes.
	if err := protojson.Unmarshal(docs["route"], routeConfig); err != nil {
		t.Fatalf("patched route configuration: %v", err)
	}
	if err := envoy.Validate(routeConfig); err != nil {
		t.Fatalf("patched route configuration: %v", err)
	}
	for _, f := range []struct {
		name      string
		got, want []string
	}{
		{"internal_only_headers", routeConfig.GetInternalOnlyHeaders(), want.Routes.GetInternalOnlyHeaders()},
		{"request_headers_to_remove", routeConfig.GetRequestHeadersToRemove(), want.Routes.GetRequestHeadersToRemove()},
	} {
		if strings.Join(f.got, ",") != strings.Join(f.want, ",") {
			t.Errorf("%s %s %v; envoy.yaml's listener %s has %v", xdsName, f.name, f.got, want.Listener, f.want)
		}
	}

	// The batch route matches as envoy.yaml's: the same regex, so every spelling Sluice's
	// batch stage answers reaches the fail-closed, buffered policy.
	route := decodeAs[*gwapiv1.HTTPRoute](t, one(t, objs, "HTTPRoute", "batch"))
	wantRegex := ref.batchRoute.GetMatch().GetSafeRegex().GetRegex()
	if m := route.Spec.Rules[0].Matches; len(m) != 1 || m[0].Path == nil || m[0].Path.Type == nil || *m[0].Path.Type != gwapiv1.PathMatchRegularExpression || *m[0].Path.Value != wantRegex {
		t.Errorf("HTTPRoute batch matches %+v; envoy.yaml's batch route matches the regex %q", m, wantRegex)
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestEnvoyGatewayModelCanFail proves the connection manager comparison
// catches what a ClientTrafficPolicy gets wrong: a missing timeout, the
// client address from the TCP peer on the internal listener, and escaped
// slashes left at Envoy Gateway's default.
func TestEnvoyGatewayModelCanFail(t *testing.T) {
	ls := envoyListeners(t)
	internal := envoy.Find(ls, envoy.InternalListener)
	objs := render(t, "envoy-gateway")
	ctp := decodeAs[*egv1a1.ClientTrafficPolicy](t, one(t, objs, "ClientTrafficPolicy", "sluice-internal"))
	for _, tt := range []struct {
		name  string
		edit  func(*egv1a1.ClientTrafficPolicy)
		field string
	}{
		{"no request timeout", func(p *egv1a1.ClientTrafficPolicy) { p.Spec.Timeout.HTTP.RequestReceivedTimeout = nil }, "request_timeout"},
		{"client address from the peer", func(p *egv1a1.ClientTrafficPolicy) { p.Spec.ClientIPDetection = nil }, "use_remote_address"},
		{"another header", func(p *egv1a1.ClientTrafficPolicy) { p.Spec.ClientIPDetection.CustomHeader.Name = "x-client" }, "original_ip_detection_extensions"},
		{"escaped slashes redirected", func(p *egv1a1.ClientTrafficPolicy) { p.Spec.Path = nil }, "path_with_escaped_slashes_action"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := ctp.DeepCopy()
			tt.edit(p)
			diff := fieldDiff(sameAsEnvoyYAML(t, egHCM(t, p), internal.HCM), internal.HCM, egOwnedHCM)
			if !strings.Contains(strings.Join(diff, "\n"), tt.field+":") {
				t.Errorf("diff %q does not name %s", diff, tt.field)
			}
		})
	}
	if diff := fieldDiff(sameAsEnvoyYAML(t, egHCM(t, ctp), internal.HCM), internal.HCM, egOwnedHCM); len(diff) != 0 {
		t.Errorf("the overlay's policy differs: %v", diff)
	}
}

// egContainerPort is the container port Envoy Gateway gives a Gateway
// listener's port: shifted by 10000 below 1024 (internal/gatewayapi,
// servicePortToContainerPort, wellKnownPortShift).
func egContainerPort(port gwapiv1.PortNumber) int32 {
	if port < 1024 {
		return int32(port) + 10000
	}
	return int32(port)
}

// egPods stands in for the Envoy pods Envoy Gateway runs for each Gateway of
// objs (in its own namespace, not rendered here): the EnvoyProxy's pod labels
// and the ports Envoy Gateway declares, its metrics (19001) and readiness
// (19003) ports and the listeners' (internal/infrastructure/kubernetes/proxy,
// expectedProxyContainers).
func egPods(t *testing.T, objs []*object) []pod {
	t.Helper()
	var out []pod
	for _, o := range ofKind(objs, "Gateway") {
		gw := decodeAs[*gwapiv1.Gateway](t, o)
		if gw.Spec.Infrastructure == nil || gw.Spec.Infrastructure.ParametersRef == nil {
			continue
		}
		po := one(t, objs, "EnvoyProxy", gw.Spec.Infrastructure.ParametersRef.Name)
		proxy := decodeAs[*egv1a1.EnvoyProxy](t, po)
		ports := []corev1.ContainerPort{{Name: "metrics", ContainerPort: 19001}, {Name: "readiness", ContainerPort: 19003}}
		for _, l := range gw.Spec.Listeners {
			ports = append(ports, corev1.ContainerPort{ContainerPort: egContainerPort(l.Port)})
		}
		out = append(out, pod{owner: po, namespace: egNamespace, labels: proxy.Spec.Provider.Kubernetes.EnvoyDeployment.Pod.Labels,
			spec: &corev1.PodSpec{Containers: []corev1.Container{{Name: "envoy", Ports: ports}}}})
	}
	return out
}
