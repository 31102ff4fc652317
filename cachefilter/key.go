package cachefilter

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"net/url"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/header"
)

// Cache keys.
//
// A primary key names the GET response for one target URI of one tenant:
//
//	<tenant tag>:<hex SHA-256 of the length-prefixed key fields>
//
// where the tenant tag is TenantTag(tenant) (16 hex digits) and the fields
// are a version, the tenant, "GET" (a HEAD uses the GET entry), the
// lower-case scheme, the lower-case authority without its default port, the
// path and the canonical query. Length prefixes make the encoding
// unambiguous, so no choice of tenant, authority, path or query can produce
// another request's key; hashing bounds the key's length whatever the URI.
// The tenant is always a field: no tenant can ever read another's entries.
// The scheme is one too, because http and https answers may differ (an
// http→https redirect must not be served to https clients).
//
// A variant key adds the request's values of the fields the stored
// response's Vary names:
//
//	<primary key>:<hex SHA-256 of primary, names and normalised values>
//
// and equals the primary key when Vary is empty. Both keys start with the
// tenant tag (KeyTenant), for per-tenant operations in the store.
//
// Nothing else of the request selects a stored response: request fields not
// named by Vary (and, on routes with query_params, the other query
// parameters) never influence which entry is served. An origin whose
// response depends on another request field must list it in Vary (RFC 9110
// §12.5.5), and a route must only drop query parameters the origin ignores;
// otherwise one caller's response could be served to another caller of the
// same tenant.

const keyVersion = "sluice-cache-key/1"

// TenantTag returns the 16-hex-digit tag every key of tenant starts with: a
// prefix of SHA-256 over the tenant, so it has a fixed length and never
// contains ':' or Redis Cluster hash-tag braces. Tags of different tenants
// can collide (2^-64 per pair); keys cannot, as the full hash covers the
// tenant.
func TenantTag(tenant string) string {
	var tag [tenantTagLen]byte
	appendTenantTag(tag[:0], tenant)
	return string(tag[:])
}

// tenantTagLen is the length of a tenant tag: 8 bytes of SHA-256 in hex.
const tenantTagLen = 16

// appendTenantTag appends TenantTag(tenant) to b. It allocates nothing for tenants of up to
// 100 bytes or so.
func appendTenantTag(b []byte, tenant string) []byte {
	var stack [128]byte
	in := append(append(stack[:0], "sluice-tenant\x00"...), tenant...)
	sum := sha256.Sum256(in)
	return hex.AppendEncode(b, sum[:tenantTagLen/2])
}

// KeyTenant returns the tenant tag of a primary or variant key (the part
// before the first ':'), or "" when key is not one.
func KeyTenant(key string) string {
	if i := strings.IndexByte(key, ':'); i == 16 {
		return key[:i]
	}
	return ""
}

// PrimaryKey returns the key of the GET response for req's target URI,
// whatever req.Method: a HEAD looks up the GET entry, and an unsafe request
// invalidates it. The path's percent-encoding is normalised (RFC 3986
// §6.2.2: hex digits upper-case, unreserved characters decoded), the query
// too, then its parameters are sorted by name (the order of repeated names
// kept) and, when route.QueryParams is not nil, only those names kept
// (none when it is empty). A fragment is ignored.
func PrimaryKey(req httpcache.Request, route RoutePolicy) string {
	path, query := req.Path, ""
	if i := strings.IndexByte(path, '#'); i >= 0 {
		path = path[:i]
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path, query = path[:i], path[i+1:]
	}
	if path == "" {
		path = "/"
	}
	scheme := strings.ToLower(req.Scheme)

	// The fields go through one stack buffer (a heap one only for long URIs) into one SHA-256
	// call: a lookup on the hit path allocates only the key itself.
	var stack [512]byte
	b := stack[:0]
	b = appendKeyField(b, keyVersion)
	b = appendKeyField(b, req.Tenant)
	b = appendKeyField(b, "GET")
	b = appendKeyField(b, scheme)
	b = appendKeyField(b, canonicalAuthority(scheme, req.Authority))
	b = appendKeyField(b, normalizePercent(path))
	params := canonicalQuery(query, route.QueryParams)
	b = appendKeyCount(b, len(params))
	for _, p := range params {
		b = appendKeyField(b, p.name)
		b = appendKeyField(b, p.value) // value keeps its "=", so "a" and "a=" differ
	}
	sum := sha256.Sum256(b)
	var key [tenantTagLen + 1 + 2*sha256.Size]byte
	k := appendTenantTag(key[:0], req.Tenant)
	k = append(k, ':')
	k = hex.AppendEncode(k, sum[:])
	return string(k)
}

// VariantKey returns the key of the variant of primary that a request with
// reqHeader selects, given the stored response's Vary field names (RFC 9111
// §4.1). Names are compared case-insensitively, in sorted order. For each,
// the request's lines are combined with ", " and normalised: members of the
// list trimmed of whitespace and empty ones dropped, then Accept-Encoding
// and Accept-Language lower-cased (their tokens are case-insensitive) and
// Accept-Encoding's members sorted (their order carries no meaning). An
// absent field and a field with an empty value give different keys.
func VariantKey(primary string, vary []string, reqHeader header.List) string {
	if len(vary) == 0 {
		return primary
	}
	names := make([]string, 0, len(vary))
	for _, n := range vary {
		n = strings.ToLower(strings.Trim(n, " \t"))
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return primary
	}
	slices.Sort(names)

	h := sha256.New()
	writeKeyField(h, keyVersion)
	writeKeyField(h, primary)
	writeKeyCount(h, len(names))
	for _, n := range names {
		writeKeyField(h, n)
		var values []string
		if n[0] != ':' { // pseudo-headers are no request fields (Request.Header keeps them)
			values = reqHeader.Values(n)
		}
		if values == nil {
			writeKeyCount(h, 0) // absent
			continue
		}
		writeKeyCount(h, 1)
		writeKeyField(h, normalizeVaryValue(n, values))
	}
	return primary + ":" + hex.EncodeToString(h.Sum(nil))
}

// normalizeVaryValue combines and normalises one request field's lines for a
// variant key.
func normalizeVaryValue(name string, values []string) string {
	var members []string
	for _, v := range values {
		members = append(members, header.SplitList(v)...)
	}
	switch name {
	case "accept-encoding":
		for i, m := range members {
			members[i] = strings.ToLower(removeOWS(m))
		}
		slices.Sort(members)
	case "accept-language":
		for i, m := range members {
			members[i] = strings.ToLower(removeOWS(m))
		}
	}
	return strings.Join(members, ", ")
}

// removeOWS drops spaces and tabs, for members whose grammar allows
// whitespace only around ';' and '=' (coding and language-range with
// weights: "gzip ; q=0.5" is "gzip;q=0.5").
func removeOWS(s string) string {
	if !strings.ContainsAny(s, " \t") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, s)
}

type queryParam struct{ name, value string }

// canonicalQuery splits a query into normalised parameters, sorted by name
// with the order of equal names kept, filtered by keep unless it is nil.
// Empty parameters ("&&") are dropped. A value keeps its leading "=" so
// that "a" and "a=" stay distinct.
func canonicalQuery(query string, keep []string) []queryParam {
	if query == "" {
		return nil
	}
	var params []queryParam
	for part := range strings.SplitSeq(query, "&") {
		if part == "" {
			continue
		}
		name, value := part, ""
		if i := strings.IndexByte(part, '='); i >= 0 {
			name, value = part[:i], part[i:]
		}
		name = normalizePercent(name)
		if keep != nil && !slices.Contains(keep, name) && !slices.Contains(keep, decodeQueryName(name)) {
			continue
		}
		params = append(params, queryParam{name, normalizePercent(value)})
	}
	slices.SortStableFunc(params, func(a, b queryParam) int { return strings.Compare(a.name, b.name) })
	return params
}

// decodeQueryName fully percent-decodes a parameter name for comparison
// with configured names ("page%5Bsize%5D" is "page[size]").
func decodeQueryName(name string) string {
	if d, err := url.QueryUnescape(name); err == nil {
		return d
	}
	return name
}

// canonicalAuthority lower-cases the authority and removes the scheme's
// default port (RFC 3986 §6.2.3). A malformed authority is only
// lower-cased.
func canonicalAuthority(scheme, authority string) string {
	a := strings.ToLower(authority)
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return a
	}
	host, port := a[:i], a[i+1:]
	if strings.Contains(host, ":") && !(strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]")) {
		return a // not host:port
	}
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		return host
	}
	return a
}

// normalizePercent upper-cases the hex digits of percent-encodings and
// decodes those of unreserved characters (RFC 3986 §6.2.2.1-2); malformed
// escapes are kept as they are.
func normalizePercent(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			d := unhex(s[i+1])<<4 | unhex(s[i+2])
			if isUnreserved(d) {
				b.WriteByte(d)
			} else {
				b.WriteByte('%')
				b.WriteByte(upperHex(s[i+1]))
				b.WriteByte(upperHex(s[i+2]))
			}
			i += 2
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upperHex(c byte) byte {
	if c >= 'a' && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

// isUnreserved reports RFC 3986 unreserved: ALPHA DIGIT - . _ ~
func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func writeKeyField(h hash.Hash, s string) {
	writeKeyCount(h, len(s))
	h.Write([]byte(s))
}

func writeKeyCount(h hash.Hash, n int) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	h.Write(b[:])
}

// appendKeyField appends s, prefixed with its length, to b: the encoding writeKeyField hashes.
func appendKeyField(b []byte, s string) []byte {
	return append(appendKeyCount(b, len(s)), s...)
}

func appendKeyCount(b []byte, n int) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(n))
}

// Invalidations returns the primary keys to invalidate after the response
// (status, respHeader) to req (RFC 9111 §4.4): for an unsafe method (any
// but GET, HEAD, OPTIONS and TRACE, unknown ones included) answered with a
// 2xx or 3xx status, the target URI, plus the URIs in Location and
// Content-Location when they resolve to the same scheme and authority
// (never another origin: that would let one origin purge another's
// entries). Keys are those of req.Tenant, each computed with the route
// policy of its own path; the store removes each primary key's variants
// with it. The result has no duplicates and is nil when nothing is
// invalidated.
func (c Config) Invalidations(req httpcache.Request, status int, respHeader header.List) []string {
	if !unsafeMethod(req.Method) || status < 200 || status > 399 {
		return nil
	}
	keys := []string{PrimaryKey(req, c.Route(req.Path))}
	base := &url.URL{Scheme: strings.ToLower(req.Scheme), Host: req.Authority}
	if p, err := url.ParseRequestURI(req.Path); err == nil {
		base.Path, base.RawPath, base.RawQuery = p.Path, p.RawPath, p.RawQuery
	}
	origin := canonicalAuthority(base.Scheme, req.Authority)
	for _, name := range []string{"location", "content-location"} {
		v, ok := respHeader.Lookup(name)
		if !ok || v == "" || len(v) > 8<<10 {
			continue
		}
		ref, err := url.Parse(strings.Trim(v, " \t"))
		if err != nil {
			continue
		}
		u := base.ResolveReference(ref)
		if strings.ToLower(u.Scheme) != base.Scheme || canonicalAuthority(base.Scheme, u.Host) != origin {
			continue
		}
		path := u.EscapedPath()
		if u.RawQuery != "" {
			path += "?" + u.RawQuery
		}
		target := httpcache.Request{Method: "GET", Scheme: req.Scheme, Authority: req.Authority, Path: path, Tenant: req.Tenant}
		if k := PrimaryKey(target, c.Route(path)); !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// unsafeMethod reports methods not defined as safe (RFC 9110 §9.2.1).
func unsafeMethod(m string) bool {
	switch m {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return false
	}
	return m != ""
}
