package crosscheck

import (
	"os"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	examples "github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

// oldRules are the rules before issue #14: users keyed (tier, user_id).
const oldRules = `domain: sluice
descriptors:
  - key: tier
    descriptors:
      - key: tenant_id
        rate_limit: {unit: second, requests_per_unit: 10}
      - key: user_id
        rate_limit: {unit: second, requests_per_unit: 5}
`

func inputs(t *testing.T) Inputs {
	t.Helper()
	ls, err := envoy.ParseListeners(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	// Copies: cases edit them.
	for i, l := range ls {
		c := *l
		c.HCM = proto.Clone(l.HCM).(*hcmv3.HttpConnectionManager)
		if l.ExtProc != nil {
			c.ExtProc = proto.Clone(l.ExtProc).(*extprocv3.ExternalProcessor)
		}
		if l.RateLimit != nil {
			c.RateLimit = proto.Clone(l.RateLimit).(*ratelimitv3.RateLimit)
		}
		c.Routes = c.HCM.GetRouteConfig()
		ls[i] = &c
	}
	rules, err := ratelimitsvc.ParseRules([]ratelimitsvc.File{{Name: "tiers.yaml", Data: examples.RateLimitTiers}})
	if err != nil {
		t.Fatal(err)
	}
	return Inputs{
		Config: config.Config{}.WithDefaults(), ConfigFile: "sluice.yaml",
		Rules: rules, RulesFile: "tiers.yaml",
		Envoy: ls, EnvoyFile: "envoy.yaml",
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		edit func(t *testing.T, in *Inputs)
		want []string // substrings, one problem each, in order
	}{
		{name: "the shipped configs agree", edit: func(*testing.T, *Inputs) {}},
		{name: "cache objects Envoy cannot buffer", edit: func(_ *testing.T, in *Inputs) {
			in.Config.Cache.MaxObjectBytes = 2 << 20
		}, want: []string{
			"sluice.yaml: cache.max_object_bytes 2097152 is above envoy.yaml listener ingress's per_connection_buffer_limit_bytes 1048576",
			"sluice.yaml: cache.max_object_bytes 2097152 is above envoy.yaml listener internal's",
		}},
		{name: "bodies Sluice refuses", edit: func(_ *testing.T, in *Inputs) {
			in.Config.ExtProc.MaxBodyBytes = 1000
		}, want: []string{"extproc.max_body_bytes 1000 is below", "extproc.max_body_bytes 1000 is below"}},
		{name: "a batch wait Envoy ignores", edit: func(_ *testing.T, in *Inputs) {
			in.Config.Batch.MaxMessageTimeout = 11 * time.Second
		}, want: []string{"batch.max_message_timeout 11s is above envoy.yaml listener ingress's ext_proc max_message_timeout 10s", "batch.max_message_timeout 11s"}},
		{name: "no max_message_timeout in Envoy", edit: func(_ *testing.T, in *Inputs) {
			for _, l := range in.Envoy {
				if l.ExtProc != nil {
					l.ExtProc.MaxMessageTimeout = durationpb.New(0)
				}
			}
		}, want: []string{"batch.max_message_timeout 2s is above", "the cache's longest wait (cache.collapse_wait or an invalidation, plus 300ms to answer) 9.8s is above", "batch.max_message_timeout", "the cache's longest wait"}},
		{name: "a mode Sluice would override", edit: func(_ *testing.T, in *Inputs) {
			in.Config.ExtProc.ProcessingMode.ResponseBodyMode = "BUFFERED"
		}, want: []string{"extproc.processing_mode.response_body_mode BUFFERED differs", "response_body_mode BUFFERED differs"}},
		{name: "batch items through the client-facing listener", edit: func(_ *testing.T, in *Inputs) {
			in.Config.Batch.ListenerURL = "http://127.0.0.1:8080"
		}, want: []string{"batch.listener_url http://127.0.0.1:8080 is envoy.yaml listener ingress, which does not take the client address from x-sluice-client-address"}},
		{name: "batch items to no listener", edit: func(_ *testing.T, in *Inputs) {
			in.Config.Batch.ListenerURL = "http://127.0.0.1:9999"
		}, want: []string{"matches no listener port"}},
		{name: "an exact batch route", edit: func(_ *testing.T, in *Inputs) {
			rt := in.Envoy[0].Routes.GetVirtualHosts()[0].GetRoutes()[0]
			rt.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/api/v1/batch"}}
		}, want: []string{
			`envoy.yaml: listener ingress: POST /API/V1/BATCH (Sluice's batch stage answers it: batch.batch_path /api/v1/batch) reaches route "default" without an ext_proc override`,
			`POST /api/v1/batch/ (Sluice's batch stage answers it`,
		}},
		{name: "user limits keyed without the tenant", edit: func(t *testing.T, in *Inputs) {
			rules, err := ratelimitsvc.ParseRules([]ratelimitsvc.File{{Name: "old.yaml", Data: []byte(oldRules)}})
			if err != nil {
				t.Fatal(err)
			}
			in.Rules, in.RulesFile = rules, "old.yaml"
		}, want: []string{
			`envoy.yaml: listener ingress: the descriptor (tier, tenant_id, user_id) (ratelimit filter rate_limits[1]) reaches no rule with limits`,
			`envoy.yaml: listener ingress: the descriptor (tier, remote_address)`,
			`envoy.yaml: listener ingress: the descriptor (remote_address)`,
			`envoy.yaml: listener ingress: the descriptor (identity="missing", remote_address)`,
			"old.yaml:7: descriptor (tier, user_id) has limits, but envoy.yaml never sends a descriptor that reaches it",
		}},
		{name: "another domain", edit: func(_ *testing.T, in *Inputs) {
			in.Envoy[0].RateLimit.Domain = "other"
		}, want: []string{`the ratelimit filter asks for domain "other"`, `listener ingress: the descriptor (tier, tenant_id)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := inputs(t)
			tt.edit(t, &in)
			got := Check(in)
			if len(got) < len(tt.want) || (len(tt.want) == 0 && len(got) > 0) {
				t.Fatalf("problems:\n%s\nwant %d:\n%s", join(got), len(tt.want), strings.Join(tt.want, "\n"))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i].String(), w) {
					t.Errorf("problem %d = %q; want it to contain %q\nall:\n%s", i, got[i], w, join(got))
				}
			}
		})
	}
}

// TestComposeConfigs checks the compose stack's Sluice config against the
// same envoy.yaml.
func TestComposeConfigs(t *testing.T) {
	cfg, err := config.Load("../../deploy/sluice/sluice.yaml", config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	in := inputs(t)
	in.Config = cfg
	if got := Check(in); len(got) > 0 {
		t.Fatalf("deploy/sluice/sluice.yaml against envoy.yaml:\n%s", join(got))
	}
	if _, err := os.Stat("../../deploy/sluice/sluice.yaml"); err != nil {
		t.Fatal(err)
	}
}

func join(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String() + "\n")
	}
	return b.String()
}
