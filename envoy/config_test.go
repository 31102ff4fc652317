package envoy

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestConfigs loads every YAML file under envoy/: the real configs must pass
// strict decoding, PGV validation (inside every Any too) and the cluster
// reference check; each testdata/bad-*.yaml must fail, which proves the checks
// can fail.
func TestConfigs(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(files, "envoy.yaml") {
		t.Fatalf("envoy.yaml not found among %v", files)
	}
	bad := 0
	for _, path := range files {
		t.Run(path, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = LoadBootstrap(data)
			if strings.HasPrefix(filepath.Base(path), "bad-") {
				bad++
				if err == nil {
					t.Fatalf("LoadBootstrap(%s) succeeded; want an error", path)
				}
				t.Logf("rejected as expected: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("LoadBootstrap(%s): %v", path, err)
			}
		})
	}
	if bad < 3 {
		t.Errorf("only %d bad-*.yaml fixtures; want at least 3", bad)
	}
}

// TestBadFixturesFailForTheirReason pins each fixture to the check it
// exercises, so a fixture cannot start failing for an unrelated reason.
func TestBadFixturesFailForTheirReason(t *testing.T) {
	tests := []struct {
		name string
		file string
		want string
	}{
		{name: "unknown field", file: "testdata/bad-unknown-field.yaml", want: "use_remote_adress"},
		{name: "missing cluster", file: "testdata/bad-missing-cluster.yaml", want: `cluster "sluice"`},
		{name: "invalid any", file: "testdata/bad-invalid-any.yaml", want: "Domain"},
		{name: "unknown type", file: "testdata/bad-unknown-type.yaml", want: "Routerr"},
		{name: "per-filter key", file: "testdata/bad-per-filter-key.yaml", want: "envoy.filters.http.extproc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			_, err = LoadBootstrap(data)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadBootstrap(%s) = %v; want an error mentioning %q", tt.file, err, tt.want)
			}
		})
	}
}

func TestParseSettingsDefaultConfig(t *testing.T) {
	s, err := ParseSettings(DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	wantFilters := []string{
		"envoy.filters.http.compressor.gzip",
		"envoy.filters.http.compressor.brotli",
		"envoy.filters.http.compressor.zstd",
		"envoy.filters.http.ext_proc",
		"envoy.filters.http.ratelimit",
		"envoy.filters.http.router",
	}
	if !slices.Equal(s.Filters, wantFilters) {
		t.Errorf("Filters = %v; want %v", s.Filters, wantFilters)
	}
	var encodings []string
	for _, c := range s.Compressors {
		encodings = append(encodings, c.Encoding)
	}
	if !slices.Equal(encodings, []string{"gzip", "br", "zstd"}) {
		t.Errorf("compressor encodings = %v", encodings)
	}
	if s.BufferLimit != 1<<20 {
		t.Errorf("BufferLimit = %d; want 1 MiB", s.BufferLimit)
	}
	if s.Clusters["sluice"] != "sluice:8081" || s.Clusters["app"] != "app:8000" {
		t.Errorf("Clusters = %v", s.Clusters)
	}
	if s.ExtProc == nil || !s.ExtProc.GetFailureModeAllow() || !s.ExtProc.GetAllowModeOverride() {
		t.Errorf("ExtProc = %v", s.ExtProc)
	}
	if got := s.ExtProc.GetProcessingMode().GetRequestBodyMode(); got != extprocv3.ProcessingMode_NONE {
		t.Errorf("request_body_mode = %v", got)
	}
	if s.RateLimit == nil || s.RateLimit.GetDomain() != "sluice" || len(s.RateLimit.GetRateLimits()) != 5 {
		t.Errorf("RateLimit = %v", s.RateLimit)
	}
	routes := s.Routes.GetVirtualHosts()[0].GetRoutes()
	if routes[0].GetMatch().GetSafeRegex().GetRegex() != "(?i)/api/v1/batch/?" {
		t.Fatalf("first route = %v", routes[0].GetMatch())
	}
	any := routes[0].GetTypedPerFilterConfig()[s.ExtProcName]
	m, err := unpack(any)
	if err != nil {
		t.Fatal(err)
	}
	per, ok := m.(*extprocv3.ExtProcPerRoute)
	if !ok || per.GetOverrides().GetProcessingMode().GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED {
		t.Errorf("batch route ext_proc override = %v", m)
	}
}

func TestValidateFragment(t *testing.T) {
	b, err := LoadBootstrap(DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	c := proto.Clone(b.GetStaticResources().GetClusters()[0]).(*clusterv3.Cluster)
	if err := Validate(c); err != nil {
		t.Fatalf("envoy.yaml's first cluster: %v", err)
	}
	c.ConnectTimeout = durationpb.New(-time.Second)
	if err := Validate(c); err == nil {
		t.Error("a negative connect_timeout passed")
	}
	// A rule broken inside an Any: ValidateAll alone stops at the Any.
	l := proto.Clone(b.GetStaticResources().GetListeners()[0]).(*listenerv3.Listener)
	hcm := &hcmv3.HttpConnectionManager{}
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	hcm.StatPrefix = ""
	a, err := anypb.New(hcm)
	if err != nil {
		t.Fatal(err)
	}
	l.GetFilterChains()[0].GetFilters()[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	if err := l.ValidateAll(); err != nil {
		t.Fatalf("ValidateAll should not see inside the Any: %v", err)
	}
	if err := Validate(l); err == nil || !strings.Contains(err.Error(), "StatPrefix") {
		t.Errorf("Validate = %v; want the empty stat_prefix inside typed_config reported", err)
	}
}
