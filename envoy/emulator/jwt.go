package emulator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"regexp"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/sluicehq/sluice/internal/header"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// The jwt_authn filter (source/extensions/filters/http/jwt_authn), enough of
// it for an identity that Sluice reads from dynamic metadata
// (extproc.identity.source: jwt_metadata): providers with an inline JWKS,
// RS256/RS384/RS512 and ES256/ES384 signatures, issuer, audiences, exp and
// nbf with clock skew, tokens from headers, payload_in_metadata, forward,
// and rules by path prefix that require one provider, optionally allowing a
// missing token. Anything else in its config is refused.

// jwtProviderFields are the JwtProvider fields emulated.
var jwtProviderFields = map[protoreflect.Name]bool{
	"issuer": true, "audiences": true, "local_jwks": true, "forward": true, "from_headers": true,
	"payload_in_metadata": true, "clock_skew_seconds": true,
}

// jwtNamespace is the dynamic metadata namespace jwt_authn writes
// (Filter::setExtractedData).
const jwtNamespace = "envoy.filters.http.jwt_authn"

// defaultClockSkew is JwtProvider.clock_skew_seconds's default.
const defaultClockSkew = 60 * time.Second

type jwtConfig struct {
	providers map[string]*jwtProvider
	rules     []jwtRule
	router    *router // matches the rules' RouteMatch
}

type jwtProvider struct {
	name      string
	issuer    string
	audiences []string
	keys      []jwk
	forward   bool
	headers   []*jwtv3.JwtHeader
	metadata  string // payload_in_metadata
	skew      time.Duration
}

// jwtRule is one RequirementRule: provider "" means no verification.
type jwtRule struct {
	match        *routev3.RouteMatch
	provider     string
	allowMissing bool
}

type jwk struct {
	kid, alg string
	key      crypto.PublicKey
}

func newJWTConfig(c *jwtv3.JwtAuthentication) (*jwtConfig, error) {
	if err := checkFields(c, map[protoreflect.Name]bool{"providers": true, "rules": true, "stat_prefix": true}, "jwt_authn"); err != nil {
		return nil, err
	}
	out := &jwtConfig{providers: map[string]*jwtProvider{}, router: &router{cfg: &routev3.RouteConfiguration{}, regexps: map[string]*regexp.Regexp{}}}
	for name, p := range c.GetProviders() {
		if err := checkFields(p, jwtProviderFields, "jwt_authn provider "+name); err != nil {
			return nil, err
		}
		jwks := p.GetLocalJwks()
		if jwks == nil || jwks.GetInlineString() == "" {
			return nil, fmt.Errorf("emulator: jwt_authn provider %s: only local_jwks.inline_string is emulated", name)
		}
		keys, err := parseJWKS(jwks.GetInlineString())
		if err != nil {
			return nil, fmt.Errorf("emulator: jwt_authn provider %s: %w", name, err)
		}
		prov := &jwtProvider{name: name, issuer: p.GetIssuer(), audiences: p.GetAudiences(), keys: keys, forward: p.GetForward(),
			headers: p.GetFromHeaders(), metadata: p.GetPayloadInMetadata(), skew: defaultClockSkew}
		if p.GetClockSkewSeconds() != 0 {
			prov.skew = time.Duration(p.GetClockSkewSeconds()) * time.Second
		}
		if len(prov.headers) == 0 {
			// The default location: "Authorization: Bearer <token>".
			prov.headers = []*jwtv3.JwtHeader{{Name: "Authorization", ValuePrefix: "Bearer "}}
		}
		out.providers[name] = prov
	}
	for i, r := range c.GetRules() {
		if err := out.router.check(&routev3.Route{Match: r.GetMatch(), Action: &routev3.Route_DirectResponse{}}); err != nil {
			return nil, fmt.Errorf("emulator: jwt_authn rules[%d]: %w", i, err)
		}
		rule := jwtRule{match: r.GetMatch()}
		req := r.GetRequires()
		if r.GetRequirementName() != "" {
			return nil, fmt.Errorf("emulator: jwt_authn rules[%d]: requirement_name is not emulated", i)
		}
		switch x := req.GetRequiresType().(type) {
		case nil:
		case *jwtv3.JwtRequirement_ProviderName:
			rule.provider = x.ProviderName
		case *jwtv3.JwtRequirement_RequiresAny:
			// {provider_name, allow_missing} only: a missing token passes, a
			// present one must verify with the provider.
			rs := x.RequiresAny.GetRequirements()
			if len(rs) != 2 || rs[0].GetProviderName() == "" || rs[1].GetAllowMissing() == nil {
				return nil, fmt.Errorf("emulator: jwt_authn rules[%d]: requires_any is emulated as [provider_name, allow_missing] only", i)
			}
			rule.provider, rule.allowMissing = rs[0].GetProviderName(), true
		default:
			return nil, fmt.Errorf("emulator: jwt_authn rules[%d]: requirement %T is not emulated", i, x)
		}
		if rule.provider != "" && out.providers[rule.provider] == nil {
			return nil, fmt.Errorf("emulator: jwt_authn rules[%d]: unknown provider %q", i, rule.provider)
		}
		out.rules = append(out.rules, rule)
	}
	return out, nil
}

// Statuses of jwt_verify_lib (status.cc getStatusString) the emulator
// produces; each is the body of the 401 (403 for audiences) Envoy sends.
var (
	errJwtMissed        = errors.New("Jwt is missing")
	errJwtBadFormat     = errors.New("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
	errJwtHeaderParse   = errors.New("Jwt header is an invalid Base64url encoded")
	errJwtPayloadParse  = errors.New("Jwt payload is an invalid Base64url encoded")
	errJwtSignatureB64  = errors.New("Jwt signature is an invalid Base64url encoded")
	errJwtExpired       = errors.New("Jwt is expired")
	errJwtNotYetValid   = errors.New("Jwt not yet valid")
	errJwtUnknownIssuer = errors.New("Jwt issuer is not configured")
	errJwtAudience      = errors.New("Audiences in Jwt are not allowed")
	errJwtVerification  = errors.New("Jwt verification fails")
	errJwksKidAlg       = errors.New("Jwks doesn't have key to match kid or alg from Jwt")
	errJwtAlg           = errors.New("Jwt header [alg] field value is invalid")
)

// jwtStream is the filter's decodeHeaders (Filter::decodeHeaders,
// onComplete): the first rule whose match applies decides; a failure is a
// local reply (401, 403 for audiences) with WWW-Authenticate.
func (j *jwtConfig) decode(s *stream) *localReply {
	var rule *jwtRule
	for i := range j.rules {
		if j.router.routeMatches(j.rules[i].match, s.req) {
			rule = &j.rules[i]
			break
		}
	}
	if rule == nil || rule.provider == "" {
		return nil
	}
	p := j.providers[rule.provider]
	token, from, ok := p.extract(s.req)
	if !ok {
		if rule.allowMissing {
			return nil
		}
		return jwtFailure(s, errJwtMissed)
	}
	payload, err := p.verify(token, time.Now())
	if err != nil {
		return jwtFailure(s, err)
	}
	if p.metadata != "" {
		st, err := structpb.NewStruct(payload)
		if err == nil {
			ns := s.metadata(jwtNamespace)
			ns.Fields[p.metadata] = structpb.NewStructValue(st)
		}
	}
	if !p.forward {
		s.req.Del(from)
	}
	return nil
}

// jwtFailure is Filter::onComplete for a failed verification: the status
// string as body, "Bearer realm=<original uri>" (plus error="invalid_token"
// unless the token was missing).
func jwtFailure(s *stream, err error) *localReply {
	code := http.StatusUnauthorized
	if errors.Is(err, errJwtAudience) {
		code = http.StatusForbidden
	}
	realm := fmt.Sprintf(`Bearer realm="%s://%s%s"`, s.req.Get(":scheme"), s.req.Get(":authority"), pathOnly(s.req.Get(":path")))
	if !errors.Is(err, errJwtMissed) {
		realm += `, error="invalid_token"`
	}
	return &localReply{
		code: code, body: err.Error(),
		details: "jwt_authn_access_denied{" + strings.ReplaceAll(err.Error(), " ", "_") + "}",
		modify:  func(h *header.List) { h.Set("www-authenticate", realm) },
	}
}

func pathOnly(p string) string {
	p, _, _ = strings.Cut(p, "?")
	return p
}

// extract finds the token in the provider's headers: the first location
// that has one, and the header it came from.
func (p *jwtProvider) extract(h *header.List) (token, from string, ok bool) {
	for _, loc := range p.headers {
		name := strings.ToLower(loc.GetName())
		v, present := h.Lookup(name)
		if !present {
			continue
		}
		if loc.GetValuePrefix() != "" {
			i := strings.Index(v, loc.GetValuePrefix())
			if i < 0 {
				continue
			}
			v = v[i+len(loc.GetValuePrefix()):]
		}
		if v = strings.TrimSpace(v); v != "" {
			return v, name, true
		}
	}
	return "", "", false
}

// verify checks a compact JWS the way jwt_verify_lib does for one provider
// and returns its payload.
func (p *jwtProvider) verify(token string, now time.Time) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errJwtBadFormat
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(hb, &hdr) != nil {
		return nil, errJwtHeaderParse
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errJwtPayloadParse
	}
	var payload map[string]any
	dec := json.NewDecoder(strings.NewReader(string(pb)))
	dec.UseNumber()
	if dec.Decode(&payload) != nil {
		return nil, errJwtPayloadParse
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, errJwtSignatureB64
	}
	iss, _ := payload["iss"].(string)
	if p.issuer != "" && iss != p.issuer {
		return nil, errJwtUnknownIssuer
	}
	if exp, ok := numericClaim(payload, "exp"); ok && now.After(time.Unix(exp, 0).Add(p.skew)) {
		return nil, errJwtExpired
	}
	if nbf, ok := numericClaim(payload, "nbf"); ok && now.Add(p.skew).Before(time.Unix(nbf, 0)) {
		return nil, errJwtNotYetValid
	}
	if len(p.audiences) > 0 && !audienceAllowed(payload["aud"], p.audiences) {
		return nil, errJwtAudience
	}
	hash, ok := jwtHash(hdr.Alg)
	if !ok {
		return nil, errJwtAlg
	}
	signed := []byte(parts[0] + "." + parts[1])
	found := false
	for _, k := range p.keys {
		if (hdr.Kid != "" && k.kid != "" && k.kid != hdr.Kid) || (k.alg != "" && k.alg != hdr.Alg) || !keyFits(k.key, hdr.Alg) {
			continue
		}
		found = true
		if verifySignature(k.key, hash, signed, sig) {
			return toPlain(payload), nil
		}
	}
	if !found {
		return nil, errJwksKidAlg
	}
	return nil, errJwtVerification
}

func numericClaim(m map[string]any, name string) (int64, bool) {
	n, ok := m[name].(json.Number)
	if !ok {
		return 0, false
	}
	v, err := n.Int64()
	return v, err == nil
}

// audienceAllowed: "aud" (a string or a list) shares a value with the
// provider's audiences.
func audienceAllowed(aud any, allowed []string) bool {
	var got []string
	switch a := aud.(type) {
	case string:
		got = []string{a}
	case []any:
		for _, v := range a {
			if s, ok := v.(string); ok {
				got = append(got, s)
			}
		}
	}
	for _, g := range got {
		for _, w := range allowed {
			if g == w {
				return true
			}
		}
	}
	return false
}

func jwtHash(alg string) (crypto.Hash, bool) {
	switch alg {
	case "RS256", "ES256":
		return crypto.SHA256, true
	case "RS384", "ES384":
		return crypto.SHA384, true
	case "RS512":
		return crypto.SHA512, true
	}
	return 0, false
}

func keyFits(k crypto.PublicKey, alg string) bool {
	switch key := k.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS")
	case *ecdsa.PublicKey:
		return (alg == "ES256" && key.Curve == elliptic.P256()) || (alg == "ES384" && key.Curve == elliptic.P384())
	}
	return false
}

func verifySignature(k crypto.PublicKey, hash crypto.Hash, signed, sig []byte) bool {
	var digest []byte
	switch hash {
	case crypto.SHA256:
		d := sha256.Sum256(signed)
		digest = d[:]
	case crypto.SHA384:
		d := sha512.Sum384(signed)
		digest = d[:]
	case crypto.SHA512:
		d := sha512.Sum512(signed)
		digest = d[:]
	}
	switch key := k.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(key, hash, digest, sig) == nil
	case *ecdsa.PublicKey:
		n := (key.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return false
		}
		r, s := new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])
		return ecdsa.Verify(key, digest, r, s)
	}
	return false
}

// toPlain turns json.Number values into float64, as a protobuf Struct holds
// numbers.
func toPlain(v map[string]any) map[string]any {
	var conv func(any) any
	conv = func(x any) any {
		switch t := x.(type) {
		case json.Number:
			f, _ := t.Float64()
			return f
		case map[string]any:
			for k, e := range t {
				t[k] = conv(e)
			}
			return t
		case []any:
			for i, e := range t {
				t[i] = conv(e)
			}
			return t
		}
		return x
	}
	return conv(v).(map[string]any)
}

// parseJWKS reads RSA and EC keys of a JSON Web Key Set (RFC 7517).
func parseJWKS(s string) ([]jwk, error) {
	var set struct {
		Keys []struct {
			Kty, Kid, Alg, N, E, Crv, X, Y string
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(s), &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	var out []jwk
	b64 := base64.RawURLEncoding.DecodeString
	for i, k := range set.Keys {
		switch k.Kty {
		case "RSA":
			n, err1 := b64(k.N)
			e, err2 := b64(k.E)
			if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
				return nil, fmt.Errorf("jwks key %d: bad RSA n or e", i)
			}
			out = append(out, jwk{kid: k.Kid, alg: k.Alg, key: &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}})
		case "EC":
			var curve elliptic.Curve
			switch k.Crv {
			case "P-256":
				curve = elliptic.P256()
			case "P-384":
				curve = elliptic.P384()
			default:
				return nil, fmt.Errorf("jwks key %d: curve %q is not emulated", i, k.Crv)
			}
			x, err1 := b64(k.X)
			y, err2 := b64(k.Y)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("jwks key %d: bad EC x or y", i)
			}
			pub := &ecdsa.PublicKey{Curve: curve, X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
			if !curve.IsOnCurve(pub.X, pub.Y) {
				return nil, fmt.Errorf("jwks key %d: point not on the curve", i)
			}
			out = append(out, jwk{kid: k.Kid, alg: k.Alg, key: pub})
		default:
			return nil, fmt.Errorf("jwks key %d: kty %q is not emulated", i, k.Kty)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("jwks: no key")
	}
	return out, nil
}
