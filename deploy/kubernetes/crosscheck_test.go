package kubernetes

import (
	"testing"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/internal/crosscheck"
)

// TestCrossCheck runs `sluice check-config --envoy` (internal/crosscheck) on
// each overlay that runs envoy.yaml: the Sluice config and rules its pods
// mount against envoy.yaml, as deployed. Among what it finds: a
// batch.listener_url on a listener that does not take the client address
// (items limited as Sluice's own address), waits or body sizes Envoy does not
// allow, rules no descriptor reaches.
func TestCrossCheck(t *testing.T) {
	listeners, err := envoy.ParseListeners(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range overlays(t) {
		objs := render(t, name)
		runsEnvoy := false
		for _, p := range pods(t, objs) {
			runsEnvoy = runsEnvoy || container(p, "envoy") != nil
		}
		if !runsEnvoy {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			dep := one(t, objs, "Deployment", "sluice")
			s := sluiceServe(t, objs, dep)
			for _, p := range crosscheck.Check(crosscheck.Inputs{
				Config: s.cfg, ConfigFile: "sluice-config: " + s.config,
				Rules: sluiceRules(t, objs, dep), RulesFile: "sluice-ratelimit",
				Envoy: listeners, EnvoyFile: "envoy.yaml",
			}) {
				t.Error(p)
			}
		})
	}
	if n < 2 {
		t.Errorf("%d overlays run envoy.yaml; want shared and sidecar", n)
	}
}
