package extproc_test

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/extproc"
)

func TestConfigDefaults(t *testing.T) {
	c := extproc.Config{}.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	id := c.Identity
	if id.Source != "header" || id.TenantHeader != "x-tenant-id" || id.UserHeader != "x-user-id" ||
		id.DefaultTier != "free" || id.JWTMetadata.Namespace != "envoy.filters.http.jwt_authn" || id.MaxValueLength != 128 {
		t.Errorf("identity defaults %+v", id)
	}
	if c.MaxBodyBytes != 1<<20 || c.Metrics.SlowThreshold != time.Second || c.Metrics.MaxTiers != 32 || c.Metrics.SlowLogPerSecond != 10 {
		t.Errorf("defaults %+v", c)
	}
	pm := c.ProcessingMode
	if pm.RequestHeaderMode != "SEND" || pm.ResponseHeaderMode != "SEND" || pm.RequestBodyMode != "NONE" ||
		pm.ResponseBodyMode != "NONE" || pm.RequestTrailerMode != "SKIP" || pm.ResponseTrailerMode != "SKIP" {
		t.Errorf("processing mode defaults %+v", pm)
	}
	if got := c.MaxRecvMsgBytes(); got != 2<<20 {
		t.Errorf("MaxRecvMsgBytes = %d", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string // "" for valid
	}{
		{name: "empty", yaml: ``},
		{name: "full", yaml: `
identity:
  source: jwt_metadata
  jwt_metadata: {namespace: envoy.filters.http.jwt_authn, tenant_claim: jwt_payload.org, user_claim: jwt_payload.sub}
  default_tier: basic
  tiers: {acme: pro}
metrics:
  routes:
    - {name: users, prefix: /v1/users}
    - {name: health, path: /healthz}
  slow_threshold: 500ms
max_body_bytes: 2097152
processing_mode: {response_trailer_mode: SEND, request_body_mode: BUFFERED}
`},
		{name: "unknown source", yaml: "identity: {source: cookie}", wantErr: "identity.source"},
		{name: "jwt without tenant claim", yaml: "identity: {source: jwt_metadata}", wantErr: "tenant_claim is required"},
		{name: "claim path with empty segment", yaml: "identity: {source: jwt_metadata, jwt_metadata: {tenant_claim: a..b}}", wantErr: "empty segment"},
		{name: "tenant header upper-case", yaml: "identity: {tenant_header: X-Tenant}", wantErr: "tenant_header"},
		{name: "tenant header owned", yaml: "identity: {tenant_header: x-sluice-tenant}", wantErr: "x-sluice-*"},
		{name: "bad default tier", yaml: "identity: {default_tier: 'pro tier'}", wantErr: "default_tier"},
		{name: "default tier anonymous", yaml: "identity: {default_tier: anonymous}", wantErr: "default_tier"},
		{name: "bad static tier", yaml: "identity: {tiers: {acme: 'p r o'}}", wantErr: "identity.tiers"},
		{name: "route without matcher", yaml: "metrics: {routes: [{name: a}]}", wantErr: "exactly one of prefix and path"},
		{name: "route with both", yaml: "metrics: {routes: [{name: a, prefix: /a, path: /a}]}", wantErr: "exactly one"},
		{name: "route relative", yaml: "metrics: {routes: [{name: a, prefix: a}]}", wantErr: "start with /"},
		{name: "route named other", yaml: "metrics: {routes: [{name: other, prefix: /}]}", wantErr: "name"},
		{name: "route name label", yaml: "metrics: {routes: [{name: Users, prefix: /}]}", wantErr: "name"},
		{name: "duplicate route", yaml: "metrics: {routes: [{name: a, prefix: /a}, {name: a, path: /b}]}", wantErr: "duplicate"},
		{name: "negative body", yaml: "max_body_bytes: -1", wantErr: "max_body_bytes"},
		{name: "bad header mode", yaml: "processing_mode: {response_header_mode: MAYBE}", wantErr: "response_header_mode"},
		{name: "bad body mode", yaml: "processing_mode: {response_body_mode: SOMETIMES}", wantErr: "response_body_mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c extproc.Config
			dec := yaml.NewDecoder(strings.NewReader(tt.yaml))
			dec.KnownFields(true)
			if err := dec.Decode(&c); err != nil && tt.yaml != "" {
				t.Fatalf("yaml: %v", err)
			}
			err := c.WithDefaults().Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.wantErr != "" {
				if _, nerr := extproc.New(c, nil, nil, nil); nerr == nil {
					t.Fatal("New accepted an invalid config")
				}
			}
		})
	}
}

func TestNewRejectsBadStages(t *testing.T) {
	tests := []struct {
		name   string
		stages []extproc.Stage
	}{
		{name: "duplicate of a built-in", stages: []extproc.Stage{&probe{name: "identity"}}},
		{name: "bad name", stages: []extproc.Stage{&probe{name: "Cache Stage"}}},
		{name: "nil", stages: []extproc.Stage{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := extproc.New(extproc.Config{}, nil, nil, nil, extproc.WithStages(tt.stages...)); err == nil {
				t.Fatal("New accepted the stages")
			}
		})
	}
	s, err := extproc.New(extproc.Config{}, nil, nil, nil, extproc.WithStages(&probe{name: "cache"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Stages(), ","); got != "identity,cache,metrics" {
		t.Fatalf("Stages() = %s", got)
	}
}
