package crosscheck_test

import (
	"fmt"

	examples "github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/crosscheck"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

func ExampleCheck() {
	listeners, err := envoy.ParseListeners(envoy.DefaultConfig)
	if err != nil {
		panic(err)
	}
	rules, err := ratelimitsvc.ParseRules([]ratelimitsvc.File{{Name: "tiers.yaml", Data: examples.RateLimitTiers}})
	if err != nil {
		panic(err)
	}
	cfg := config.Config{}.WithDefaults()
	cfg.Batch.ListenerURL = "http://127.0.0.1:8080" // the client-facing listener: a mistake
	for _, p := range crosscheck.Check(crosscheck.Inputs{
		Config: cfg, ConfigFile: "sluice.yaml",
		Rules: rules, RulesFile: "tiers.yaml",
		Envoy: listeners, EnvoyFile: "envoy.yaml",
	}) {
		fmt.Println(p)
	}
	// Output:
	// sluice.yaml: batch.listener_url http://127.0.0.1:8080 is envoy.yaml listener ingress, which does not take the client address from x-sluice-client-address: every batch item would be limited as Sluice's own address (use the internal listener)
}
