package envoy_test

import (
	"fmt"

	"github.com/sluicehq/sluice/envoy"
)

func ExampleParseSettings() {
	s, err := envoy.ParseSettings(envoy.DefaultConfig)
	if err != nil {
		panic(err)
	}
	for _, f := range s.Filters {
		fmt.Println(f)
	}
	fmt.Println(s.Clusters["sluice"], s.BufferLimit)
	// Output:
	// envoy.filters.http.compressor.gzip
	// envoy.filters.http.compressor.brotli
	// envoy.filters.http.compressor.zstd
	// envoy.filters.http.ext_proc
	// envoy.filters.http.ratelimit
	// envoy.filters.http.router
	// sluice:8081 1048576
}

func ExampleParseListeners() {
	ls, err := envoy.ParseListeners(envoy.DefaultConfig)
	if err != nil {
		panic(err)
	}
	for _, l := range ls {
		fmt.Println(l.Listener, l.Address, l.HCM.GetUseRemoteAddress().GetValue())
	}
	// Output:
	// ingress 0.0.0.0:8080 true
	// internal 0.0.0.0:8082 false
	// stats 0.0.0.0:9902 true
}
