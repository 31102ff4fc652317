package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluicehq/sluice/envoy"
)

var snippetMarker = regexp.MustCompile(`^<!-- envoy-snippet: ([a-z_]+) -->$`)

// readmeSnippets returns the YAML blocks of deploy/README.md marked with
// <!-- envoy-snippet: NAME --> on the line before their fence.
func readmeSnippets(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(readRepoFile(t, "deploy", "README.md")))
	name := ""
	var block *strings.Builder
	for sc.Scan() {
		l := sc.Text()
		switch {
		case block != nil && l == "```":
			out[name] = block.String()
			block, name = nil, ""
		case block != nil:
			block.WriteString(l + "\n")
		case name != "" && l == "```yaml":
			block = &strings.Builder{}
		case name != "":
			t.Fatalf("README: marker for %q not followed by a ```yaml block", name)
		default:
			if m := snippetMarker.FindStringSubmatch(l); m != nil {
				if _, dup := out[m[1]]; dup {
					t.Fatalf("README: two snippets named %q", m[1])
				}
				name = m[1]
			}
		}
	}
	if block != nil {
		t.Fatalf("README: snippet %q is not closed", name)
	}
	return out
}

// besideBootstrap puts the README's snippets into a minimal bootstrap of
// "your" Envoy: one listener whose connection manager has the snippet
// filters before a router, the snippet route_config fields plus a route to
// your_app, and the snippet cluster next to your_app's.
func besideBootstrap(t *testing.T, snippets map[string]string) []byte {
	t.Helper()
	decode := func(name string, v any) {
		s, ok := snippets[name]
		if !ok {
			t.Fatalf("README has no envoy-snippet %q", name)
		}
		if err := yaml.Unmarshal([]byte(s), v); err != nil {
			t.Fatalf("README snippet %q: %v", name, err)
		}
	}
	var cluster map[string]any
	var filters []any
	var routeConfig map[string]any
	decode("cluster", &cluster)
	decode("http_filters", &filters)
	decode("route_config", &routeConfig)

	routeConfig["name"] = "local"
	routeConfig["virtual_hosts"] = []any{map[string]any{
		"name": "app", "domains": []any{"*"},
		"routes": []any{map[string]any{"match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster": "your_app"}}},
	}}
	filters = append(filters, map[string]any{
		"name":         "envoy.filters.http.router",
		"typed_config": map[string]any{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
	})
	hcm := map[string]any{
		"@type":              "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"stat_prefix":        "ingress",
		"use_remote_address": true,
		"route_config":       routeConfig,
		"http_filters":       filters,
	}
	app := map[string]any{
		"name": "your_app", "type": "STRICT_DNS", "connect_timeout": "1s",
		"load_assignment": map[string]any{"cluster_name": "your_app", "endpoints": []any{map[string]any{
			"lb_endpoints": []any{map[string]any{"endpoint": map[string]any{"address": map[string]any{
				"socket_address": map[string]any{"address": "your-app.internal", "port_value": 8000}}}}}}}},
	}
	b := map[string]any{"static_resources": map[string]any{
		"listeners": []any{map[string]any{
			"name":    "ingress",
			"address": map[string]any{"socket_address": map[string]any{"address": "0.0.0.0", "port_value": 10000}},
			"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
				"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm,
			}}}},
		}},
		"clusters": []any{cluster, app},
	}}
	out, err := yaml.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalAnyMaps(t *testing.T, a, b map[string]*anypb.Any) bool {
	t.Helper()
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok {
			return false
		}
		ma, err := va.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		mb, err := vb.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(ma, mb) {
			return false
		}
	}
	return true
}

// TestReadmeEnvoySnippets validates deploy/README.md's "beside your Envoy"
// snippets with Envoy's protos (strict decoding, PGV, cluster references,
// inside every Any) and checks they configure exactly what envoy/envoy.yaml
// does, which the end-to-end tests exercise.
func TestReadmeEnvoySnippets(t *testing.T) {
	snippets := readmeSnippets(t)
	for _, want := range []string{"cluster", "http_filters", "route_config"} {
		if _, ok := snippets[want]; !ok {
			t.Fatalf("README has no envoy-snippet %q (has %v)", want, sortedSnippetNames(snippets))
		}
	}
	data := besideBootstrap(t, snippets)
	if _, err := envoy.LoadBootstrap(data); err != nil {
		t.Fatalf("the README's snippets do not make a valid Envoy config: %v\n%s", err, data)
	}
	got, err := envoy.ParseSettings(data)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := envoy.ParseSettings(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}

	wantOrder := []string{ref.ExtProcName, ref.RateLimitName, "envoy.filters.http.router"}
	if !slices.Equal(got.Filters, wantOrder) {
		t.Errorf("snippet filters in order %v; want %v", got.Filters, wantOrder)
	}
	if !proto.Equal(got.ExtProc, ref.ExtProc) {
		t.Errorf("README's ext_proc filter differs from envoy.yaml's:\n got %v\nwant %v", got.ExtProc, ref.ExtProc)
	}
	if !proto.Equal(got.RateLimit, ref.RateLimit) {
		t.Errorf("README's ratelimit filter differs from envoy.yaml's:\n got %v\nwant %v", got.RateLimit, ref.RateLimit)
	}
	if g, w := got.Routes.GetInternalOnlyHeaders(), ref.Routes.GetInternalOnlyHeaders(); !slices.Equal(g, w) {
		t.Errorf("README's internal_only_headers %v; envoy.yaml has %v", g, w)
	}

	gc, rc := got.ClusterConfigs["sluice"], ref.ClusterConfigs["sluice"]
	if gc == nil || rc == nil {
		t.Fatalf("cluster sluice missing: README %v, envoy.yaml %v", gc != nil, rc != nil)
	}
	if !equalAnyMaps(t, gc.GetTypedExtensionProtocolOptions(), rc.GetTypedExtensionProtocolOptions()) {
		t.Error("README's sluice cluster protocol options differ from envoy.yaml's (gRPC needs HTTP/2)")
	}
	if !proto.Equal(gc.GetCircuitBreakers(), rc.GetCircuitBreakers()) {
		t.Errorf("README's circuit_breakers %v; envoy.yaml has %v", gc.GetCircuitBreakers(), rc.GetCircuitBreakers())
	}
	if len(gc.GetHealthChecks()) != len(rc.GetHealthChecks()) {
		t.Errorf("README's sluice cluster has %d health checks; envoy.yaml %d", len(gc.GetHealthChecks()), len(rc.GetHealthChecks()))
	}
	for i := range min(len(gc.GetHealthChecks()), len(rc.GetHealthChecks())) {
		if !proto.Equal(gc.GetHealthChecks()[i], rc.GetHealthChecks()[i]) {
			t.Errorf("README's health check %d differs from envoy.yaml's", i)
		}
	}
	if gc.GetConnectTimeout().AsDuration() != rc.GetConnectTimeout().AsDuration() {
		t.Errorf("README's connect_timeout %v; envoy.yaml %v", gc.GetConnectTimeout().AsDuration(), rc.GetConnectTimeout().AsDuration())
	}
	if got.Clusters["sluice"] != "127.0.0.1:8081" {
		t.Errorf("README's sidecar cluster points at %s; want 127.0.0.1:8081 (Sluice's default gRPC port)", got.Clusters["sluice"])
	}

	// The internal listener's connection manager: the snippet's fields on
	// a copy of the first listener's must give envoy.yaml's internal one.
	var internalHCM map[string]any
	if err := yaml.Unmarshal([]byte(snippets["internal_hcm"]), &internalHCM); err != nil {
		t.Fatalf("README snippet internal_hcm: %v", err)
	}
	ls, err := envoy.ParseListeners(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	want := envoy.Find(ls, envoy.InternalListener).HCM
	if got, ref := want.GetUseRemoteAddress().GetValue(), internalHCM["use_remote_address"]; ref != got {
		t.Errorf("README's internal listener use_remote_address %v; envoy.yaml has %v", ref, got)
	}
	exts := want.GetOriginalIpDetectionExtensions()
	snippetExts, _ := internalHCM["original_ip_detection_extensions"].([]any)
	if len(exts) != 1 || len(snippetExts) != 1 {
		t.Fatalf("original_ip_detection_extensions: README %d, envoy.yaml %d", len(snippetExts), len(exts))
	}
	if name := snippetExts[0].(map[string]any)["name"]; name != exts[0].GetName() {
		t.Errorf("README's detection extension %v; envoy.yaml's %s", name, exts[0].GetName())
	}
	if !strings.Contains(snippets["internal_hcm"], "header_name: x-sluice-client-address") {
		t.Error("README's internal listener does not read x-sluice-client-address")
	}
	routeCfg, _ := internalHCM["route_config"].(map[string]any)
	for field, ref := range map[string][]string{
		"internal_only_headers":     want.GetRouteConfig().GetInternalOnlyHeaders(),
		"request_headers_to_remove": want.GetRouteConfig().GetRequestHeadersToRemove(),
	} {
		var got []string
		list, _ := routeCfg[field].([]any)
		for _, v := range list {
			got = append(got, fmt.Sprint(v))
		}
		if !slices.Equal(got, ref) {
			t.Errorf("README's internal listener %s %v; envoy.yaml has %v", field, got, ref)
		}
	}
}

// TestReadmeSnippetsCanFail shows the snippet check rejects a broken snippet.
func TestReadmeSnippetsCanFail(t *testing.T) {
	snippets := readmeSnippets(t)
	tests := []struct {
		name, snippet, old, new string
	}{
		{name: "misspelt field", snippet: "http_filters", old: "failure_mode_allow", new: "failure_mode_alow"},
		{name: "wrong cluster", snippet: "http_filters", old: "cluster_name: sluice", new: "cluster_name: sluise"},
		{name: "bad enum", snippet: "http_filters", old: "request_body_mode: NONE", new: "request_body_mode: NEVER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broken := map[string]string{}
			for k, v := range snippets {
				broken[k] = v
			}
			if !strings.Contains(broken[tt.snippet], tt.old) {
				t.Fatalf("snippet %s lacks %q", tt.snippet, tt.old)
			}
			broken[tt.snippet] = strings.Replace(broken[tt.snippet], tt.old, tt.new, 1)
			if _, err := envoy.LoadBootstrap(besideBootstrap(t, broken)); err == nil {
				t.Fatalf("LoadBootstrap accepted the snippet with %q", tt.new)
			}
		})
	}
}

func sortedSnippetNames(m map[string]string) []string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}
