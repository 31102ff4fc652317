// Package envoytest derives test variants of envoy.yaml: the shipped
// config with Envoy's jwt_authn filter in front of ext_proc (identity from a
// verified token, forwarded to Sluice as dynamic metadata), and an issuer
// that signs the tokens.
package envoytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/envoy"
)

// Issuer signs ES256 tokens with a key made for one test.
type Issuer struct {
	// Name is the tokens' "iss"; Audience their "aud".
	Name, Audience string
	key            *ecdsa.PrivateKey
}

// NewIssuer returns an issuer with a fresh P-256 key.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Issuer{Name: "https://idp.example", Audience: "sluice-api", key: k}
}

// JWKS is the issuer's public key as a JSON Web Key Set.
func (i *Issuer) JWKS() string {
	b64 := base64.RawURLEncoding.EncodeToString
	x, y := make([]byte, 32), make([]byte, 32)
	i.key.X.FillBytes(x)
	i.key.Y.FillBytes(y)
	return fmt.Sprintf(`{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","x":"%s","y":"%s"}]}`, b64(x), b64(y))
}

// Sign returns a compact JWS of claims (iss and aud are added unless set).
func (i *Issuer) Sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": i.Name, "aud": i.Audience}
	for k, v := range claims {
		c[k] = v
	}
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": "k1", "typ": "JWT"})
	body, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	signed := b64(hdr) + "." + b64(body)
	sum := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, i.key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + b64(sig)
}

// WithJWT returns envoy.yaml with a jwt_authn filter before ext_proc on
// every listener that shares its filters: provider "idp" of iss, verified
// with iss's key, a token optional (a missing one passes, an invalid one is
// refused), its payload in dynamic metadata under "jwt_payload", the token
// forwarded (batch items send it again); and ext_proc forwarding that
// metadata namespace to Sluice.
func WithJWT(t testing.TB, iss *Issuer) []byte {
	t.Helper()
	cfg := string(envoy.DefaultConfig)
	const extProc = "          - name: envoy.filters.http.ext_proc\n"
	jwt := fmt.Sprintf(`          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                idp:
                  issuer: %s
                  audiences: [%s]
                  forward: true
                  payload_in_metadata: jwt_payload
                  local_jwks:
                    inline_string: '%s'
              rules:
              - match: { prefix: / }
                requires:
                  requires_any:
                    requirements:
                    - provider_name: idp
                    - allow_missing: {}
`, iss.Name, iss.Audience, iss.JWKS())
	const anchor = "              allow_mode_override: true\n"
	meta := anchor + `              metadata_options:
                forwarding_namespaces:
                  untyped: [envoy.filters.http.jwt_authn]
`
	if strings.Count(cfg, extProc) != 1 || strings.Count(cfg, anchor) != 1 {
		t.Fatal("envoytest: envoy.yaml changed shape; update WithJWT")
	}
	cfg = strings.Replace(cfg, extProc, jwt+extProc, 1)
	cfg = strings.Replace(cfg, anchor, meta, 1)
	if _, err := envoy.ParseListeners([]byte(cfg)); err != nil {
		t.Fatalf("envoytest: the jwt variant of envoy.yaml: %v", err)
	}
	return []byte(cfg)
}
