package emulator

import (
	"slices"
	"strings"
	"testing"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/envoy/envoytest"
)

// TestJWTAuthn runs envoytest.WithJWT's jwt_authn filter: a verified
// token's payload reaches ext_proc as dynamic metadata
// (metadata_options.forwarding_namespaces), a missing one passes without,
// and a bad one is refused as Envoy refuses it (Filter::onComplete) before
// ext_proc decodes, which then sees the reply's headers alone.
func TestJWTAuthn(t *testing.T) {
	iss := envoytest.NewIssuer(t)
	now := time.Now().Unix()
	good := iss.Sign(t, map[string]any{"sub": "alice", "tenant": "initech", "exp": now + 300})
	// One signature byte changed (still base64url).
	i := strings.LastIndex(good, ".") + 5
	flip := byte('A')
	if good[i] == 'A' {
		flip = 'B'
	}
	tampered := good[:i] + string(flip) + good[i+1:]
	tests := []struct {
		name       string
		auth       string
		wantStatus int
		wantBody   string
		wantSub    string // in the metadata ext_proc receives
	}{
		{name: "verified", auth: "Bearer " + good, wantStatus: 200, wantSub: "alice"},
		{name: "missing is allowed", wantStatus: 200},
		{name: "bad signature", auth: "Bearer " + tampered, wantStatus: 401, wantBody: "Jwt verification fails"},
		{name: "expired", auth: "Bearer " + iss.Sign(t, map[string]any{"sub": "alice", "exp": now - 3600}), wantStatus: 401, wantBody: "Jwt is expired"},
		{name: "within the clock skew", auth: "Bearer " + iss.Sign(t, map[string]any{"sub": "bob", "exp": now - 30}), wantStatus: 200, wantSub: "bob"},
		{name: "not yet valid", auth: "Bearer " + iss.Sign(t, map[string]any{"sub": "alice", "nbf": now + 3600}), wantStatus: 401, wantBody: "Jwt not yet valid"},
		{name: "another audience", auth: "Bearer " + iss.Sign(t, map[string]any{"aud": "other"}), wantStatus: 403, wantBody: "Audiences in Jwt are not allowed"},
		{name: "another issuer", auth: "Bearer " + iss.Sign(t, map[string]any{"iss": "https://evil.example"}), wantStatus: 401, wantBody: "Jwt issuer is not configured"},
		{name: "not a JWT", auth: "Bearer abc.def", wantStatus: 401, wantBody: "Jwt is not in the form"},
		{name: "another key", auth: "Bearer " + envoytest.NewIssuer(t).Sign(t, map[string]any{"sub": "mallory"}), wantStatus: 401, wantBody: "Jwt verification fails"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{config: envoytest.WithJWT(t, iss)})
			hdr := map[string]string{"Host": "api.example"}
			if tt.auth != "" {
				hdr["Authorization"] = tt.auth
			}
			resp, body := h.do("GET", "/api/x?q=1", hdr, nil)
			if resp.StatusCode != tt.wantStatus || !strings.HasPrefix(string(body), tt.wantBody) {
				t.Fatalf("%d %q; want %d %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			reqs := h.extProc.requests()
			if tt.wantStatus != 200 {
				wa := resp.Header.Get("Www-Authenticate")
				if !strings.HasPrefix(wa, `Bearer realm="http://api.example/api/x"`) || !strings.Contains(wa, `error="invalid_token"`) {
					t.Errorf("www-authenticate %q", wa)
				}
				if got := h.extProc.kinds(); !slices.Equal(got, []string{"response_headers"}) {
					t.Errorf("ext_proc saw %v; want the refusal's headers only", got)
				}
				return
			}
			md := reqs[0].GetMetadataContext().GetFilterMetadata()["envoy.filters.http.jwt_authn"]
			sub := md.GetFields()["jwt_payload"].GetStructValue().GetFields()["sub"].GetStringValue()
			if sub != tt.wantSub {
				t.Errorf("metadata sub %q; want %q (metadata %v)", sub, tt.wantSub, md)
			}
			_, up, _ := h.upstream.last()
			if up.Get("Authorization") != tt.auth {
				t.Errorf("forward: true, yet the upstream got Authorization %q", up.Get("Authorization"))
			}
		})
	}
}

func TestJWTAuthnConfigRefused(t *testing.T) {
	iss := envoytest.NewIssuer(t)
	for name, edit := range map[string]func(*jwtv3.JwtAuthentication){
		"remote jwks": func(c *jwtv3.JwtAuthentication) {
			c.Providers["idp"].JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{}}
		},
		"tokens from query parameters": func(c *jwtv3.JwtAuthentication) { c.Providers["idp"].FromParams = []string{"token"} },
		"requirement map":              func(c *jwtv3.JwtAuthentication) { c.RequirementMap = map[string]*jwtv3.JwtRequirement{"r": {}} },
	} {
		t.Run(name, func(t *testing.T) {
			s, err := envoy.ParseSettings(envoytest.WithJWT(t, iss))
			if err != nil {
				t.Fatal(err)
			}
			s.JWTAuthn = proto.Clone(s.JWTAuthn).(*jwtv3.JwtAuthentication)
			edit(s.JWTAuthn)
			if _, err := New(Options{Settings: s}); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}

// FuzzJWTVerify feeds the emulated jwt_authn verifier (a client's bearer
// token) arbitrary tokens: it never panics, and it accepts none that the
// test issuer did not sign.
//
// Seeds: testdata/fuzz/FuzzJWTVerify, plus the values below.
func FuzzJWTVerify(f *testing.F) {
	iss := envoytest.NewIssuer(f)
	good := iss.Sign(f, map[string]any{"sub": "alice"})
	for _, s := range []string{good, "a.b.c", "..", "eyJhbGciOiJub25lIn0.e30.", good + "x", strings.Replace(good, ".", "..", 1)} {
		f.Add(s)
	}
	keys, err := parseJWKS(iss.JWKS())
	if err != nil {
		f.Fatal(err)
	}
	p := &jwtProvider{issuer: iss.Name, audiences: []string{iss.Audience}, keys: keys, skew: defaultClockSkew}
	f.Fuzz(func(t *testing.T, token string) {
		payload, err := p.verify(token, time.Now())
		if (err == nil) != (payload != nil) {
			t.Fatalf("verify(%q) = %v, %v", token, payload, err)
		}
		if err == nil && token != good {
			// Only a re-encoding of the signed token could pass: same
			// header and payload bytes, same signature.
			if strings.Join(strings.Split(token, ".")[:2], ".") != strings.Join(strings.Split(good, ".")[:2], ".") {
				t.Fatalf("verify accepted %q", token)
			}
		}
	})
}
