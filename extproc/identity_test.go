package extproc_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/sluicehq/sluice/extproc"
	xt "github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/tier"
)

// spoofed are client copies of every header Sluice owns.
var spoofed = []string{
	"x-sluice-tenant", "evil", "x-sluice-tier", "enterprise", "x-sluice-user", "root",
	"x-sluice-cost", "0", "x-sluice-batch", "1", "x-sluice-warm", "1",
	"x-sluice-client-address", "192.0.2.1",
}

func TestIdentity(t *testing.T) {
	tiers := tier.Static{"acme": "pro", "weird": "bad tier!", "anon": "anonymous"}
	jwt := extproc.Config{Identity: extproc.IdentityConfig{
		Source:      extproc.SourceJWTMetadata,
		JWTMetadata: extproc.JWTMetadataConfig{TenantClaim: "jwt_payload.tenant_id", UserClaim: "jwt_payload.sub"},
	}}
	const ns = "envoy.filters.http.jwt_authn"
	tests := []struct {
		name       string
		cfg        extproc.Config
		req        *extprocv3.ProcessingRequest
		wantTenant string
		wantTier   string
		wantUser   string
		// wantRemoveMore are removed besides the owned headers Sluice does
		// not set.
		wantRemoveMore []string
	}{
		{
			name:       "known tenant and user from headers",
			req:        xt.RequestHeaders("GET", "/", true, "x-tenant-id", "acme", "x-user-id", "u-42"),
			wantTenant: "acme", wantTier: "pro", wantUser: "u-42",
		},
		{
			name:       "tenant unknown to the store gets the default tier",
			req:        xt.RequestHeaders("GET", "/", true, "x-tenant-id", "globex"),
			wantTenant: "globex", wantTier: "free",
		},
		{
			name:       "configured default tier",
			cfg:        extproc.Config{Identity: extproc.IdentityConfig{DefaultTier: "basic"}},
			req:        xt.RequestHeaders("GET", "/", true, "x-tenant-id", "globex"),
			wantTenant: "globex", wantTier: "basic",
		},
		{
			name:       "no identity: anonymous",
			req:        xt.RequestHeaders("GET", "/", true),
			wantTenant: "anonymous", wantTier: "anonymous",
		},
		{
			name:       "spoofed x-sluice-* without identity",
			req:        xt.RequestHeaders("GET", "/", true, spoofed...),
			wantTenant: "anonymous", wantTier: "anonymous",
		},
		{
			name:       "spoofed x-sluice-* with identity",
			req:        xt.RequestHeaders("GET", "/", true, append([]string{"x-tenant-id", "acme"}, spoofed...)...),
			wantTenant: "acme", wantTier: "pro",
		},
		{
			name: "any other x-sluice-* is removed too",
			req: xt.RequestHeaders("GET", "/", true, "x-tenant-id", "acme", "x-sluice-debug", "1",
				"x-sluice-tenant-override", "globex", "x-sluice-", "bare", "x-sluicer", "not ours"),
			wantTenant: "acme", wantTier: "pro",
			wantRemoveMore: []string{"x-sluice-debug", "x-sluice-tenant-override", "x-sluice-"},
		},
		{
			name:       "bad characters: anonymous, never reflected",
			req:        xt.RequestHeaders("GET", "/", true, "x-tenant-id", "acme\"><script>", "x-user-id", "a b"),
			wantTenant: "anonymous", wantTier: "anonymous",
		},
		{
			name:       "too long",
			req:        xt.RequestHeaders("GET", "/", true, "x-tenant-id", strings.Repeat("a", 129)),
			wantTenant: "anonymous", wantTier: "anonymous",
		},
		{
			name:       "tenant header twice is ambiguous",
			req:        xt.RequestHeaders("GET", "/", true, "x-tenant-id", "acme", "x-tenant-id", "globex"),
			wantTenant: "anonymous", wantTier: "anonymous",
		},
		{
			// The shared tenant of callers without identity cannot be joined
			// by naming it: the claim is ignored (per-IP limits apply), in any
			// spelling, from either source.
			name:       "claiming the anonymous tenant",
			req:        xt.RequestHeaders("GET", "/", true, "x-tenant-id", "anonymous", "x-user-id", "u1"),
			wantTenant: "anonymous", wantTier: "anonymous", wantUser: "u1",
		},
		{
			name:       "claiming the anonymous tenant in another case",
			req:        xt.RequestHeaders("GET", "/", true, "x-tenant-id", "AnonYmous"),
			wantTenant: "anonymous", wantTier: "anonymous",
		},
		{
			name: "jwt claim of the anonymous tenant",
			cfg:  jwt,
			req: xt.WithMetadata(xt.RequestHeaders("GET", "/", true), ns, map[string]any{
				"jwt_payload": map[string]any{"tenant_id": "ANONYMOUS"},
			}),
			wantTenant: "anonymous", wantTier: "anonymous",
		},
		{
			name:       "invalid tier from the store: default tier",
			req:        xt.RequestHeaders("GET", "/", true, "x-tenant-id", "weird"),
			wantTenant: "weird", wantTier: "free",
		},
		{
			name:       "store says anonymous for a known tenant: default tier",
			req:        xt.RequestHeaders("GET", "/", true, "x-tenant-id", "anon"),
			wantTenant: "anon", wantTier: "free",
		},
		{
			name:       "custom headers, user disabled",
			cfg:        extproc.Config{Identity: extproc.IdentityConfig{TenantHeader: "x-auth-org", UserHeader: "-"}},
			req:        xt.RequestHeaders("GET", "/", true, "x-auth-org", "acme", "x-user-id", "u-1", "x-tenant-id", "globex"),
			wantTenant: "acme", wantTier: "pro",
		},
		{
			name: "jwt metadata",
			cfg:  jwt,
			req: xt.WithMetadata(xt.RequestHeaders("GET", "/", true), ns, map[string]any{
				"jwt_payload": map[string]any{"tenant_id": "acme", "sub": "alice@example.com"},
			}),
			wantTenant: "acme", wantTier: "pro", wantUser: "alice@example.com",
		},
		{
			name: "jwt metadata, numeric ids",
			cfg:  jwt,
			req: xt.WithMetadata(xt.RequestHeaders("GET", "/", true), ns, map[string]any{
				"jwt_payload": map[string]any{"tenant_id": 1234567.0, "sub": 1.5},
			}),
			wantTenant: "1234567", wantTier: "free",
		},
		{
			name: "jwt metadata ignores the header source",
			cfg:  jwt,
			req: xt.WithMetadata(xt.RequestHeaders("GET", "/", true, "x-tenant-id", "acme"), ns, map[string]any{
				"jwt_payload": map[string]any{"other": "x"},
			}),
			wantTenant: "anonymous", wantTier: "anonymous",
		},
		{
			name:       "jwt metadata not forwarded",
			cfg:        jwt,
			req:        xt.RequestHeaders("GET", "/", true),
			wantTenant: "anonymous", wantTier: "anonymous",
		},
		{
			name: "jwt claim is not a string",
			cfg:  jwt,
			req: xt.WithMetadata(xt.RequestHeaders("GET", "/", true), ns, map[string]any{
				"jwt_payload": map[string]any{"tenant_id": map[string]any{"id": "acme"}},
			}),
			wantTenant: "anonymous", wantTier: "anonymous",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &probe{name: "probe"}
			h := newHarness(t, tt.cfg, harnessOpts{tiers: tiers, stages: []extproc.Stage{p}})
			s := h.open(t)
			r, err := s.Do(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if replyType(r) != "request_headers" || r.GetModeOverride() != nil {
				t.Fatalf("reply %v", r)
			}
			common := xt.Common(r)
			if !common.GetClearRouteCache() {
				t.Error("clear_route_cache not set with the identity headers")
			}
			m := common.GetHeaderMutation()
			if err := xt.CheckRawValueOnly(m); err != nil {
				t.Error(err)
			}
			want := map[string][]string{
				"x-sluice-tenant": {tt.wantTenant},
				"x-sluice-tier":   {tt.wantTier},
				"x-sluice-cost":   {"1"},
			}
			wantRemove := append([]string{"x-sluice-batch", "x-sluice-warm", "x-sluice-client-address"}, tt.wantRemoveMore...)
			if tt.wantUser != "" {
				want["x-sluice-user"] = []string{tt.wantUser}
			} else {
				wantRemove = append(wantRemove, "x-sluice-user")
			}
			if got := xt.SetHeaders(m); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("set %v, want %v", got, want)
			}
			gotRemove := slices.Clone(m.GetRemoveHeaders())
			slices.Sort(gotRemove)
			slices.Sort(wantRemove)
			if !slices.Equal(gotRemove, wantRemove) {
				t.Errorf("remove %v, want %v", gotRemove, wantRemove)
			}
			// Every owned header is either set by Sluice or removed.
			for _, o := range extproc.OwnedHeaders {
				if _, set := want[o]; !set && !slices.Contains(gotRemove, o) {
					t.Errorf("owned header %s neither set nor removed", o)
				}
			}
			for _, o := range m.GetSetHeaders() {
				if o.GetAppend() != nil || o.GetAppendAction().String() != "OVERWRITE_IF_EXISTS_OR_ADD" {
					t.Errorf("%s: append %v action %v, want a replace", o.GetHeader().GetKey(), o.GetAppend(), o.GetAppendAction())
				}
			}
			if err := s.Finish(); err != nil {
				t.Fatal(err)
			}
			h.waitStreams(t, "ok", 1)
			x := p.Last()
			if x.Tenant != tt.wantTenant || x.Tier != tt.wantTier || x.User != tt.wantUser {
				t.Errorf("exchange %q/%q/%q", x.Tenant, x.Tier, x.User)
			}
			// Later stages can still read what the client sent.
			if v := x.RequestHeaders.Get("x-sluice-batch"); slices.Contains(spoofedNames(tt.req), "x-sluice-batch") && v != "1" {
				t.Errorf("original x-sluice-batch not readable: %q", v)
			}
			if strings.Contains(h.logs.String(), "script") {
				t.Error("bad identity value reached the log")
			}
		})
	}
}

func spoofedNames(req *extprocv3.ProcessingRequest) []string {
	var names []string
	for _, h := range req.GetRequestHeaders().GetHeaders().GetHeaders() {
		names = append(names, h.GetKey())
	}
	return names
}
