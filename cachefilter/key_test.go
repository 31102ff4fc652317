package cachefilter

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/header"
)

var keyPattern = regexp.MustCompile(`^[0-9a-f]{16}:[0-9a-f]{64}$`)

func keyReq(tenant, scheme, authority, path string) httpcache.Request {
	return httpcache.Request{Method: "GET", Scheme: scheme, Authority: authority, Path: path, Tenant: tenant}
}

func TestPrimaryKeySame(t *testing.T) {
	all := RoutePolicy{}
	base := keyReq("acme", "https", "api.example.com", "/a/b?x=1&y=2")
	tests := []struct {
		name  string
		req   httpcache.Request
		route RoutePolicy
	}{
		{name: "§4 HEAD uses the GET entry", req: func() httpcache.Request { r := base; r.Method = "HEAD"; return r }()},
		{name: "§4.4 an unsafe method names the GET entry", req: func() httpcache.Request { r := base; r.Method = "POST"; return r }()},
		{name: "RFC 3986 §6.2.2.1 authority is case-insensitive", req: keyReq("acme", "HTTPS", "API.Example.COM", "/a/b?x=1&y=2")},
		{name: "RFC 3986 §6.2.3 default port", req: keyReq("acme", "https", "api.example.com:443", "/a/b?x=1&y=2")},
		{name: "RFC 3986 §6.2.2.2 unreserved characters decoded", req: keyReq("acme", "https", "api.example.com", "/%61/%62?%78=%31&y=2")},
		{name: "query parameters sorted", req: keyReq("acme", "https", "api.example.com", "/a/b?y=2&x=1")},
		{name: "empty query parameters dropped", req: keyReq("acme", "https", "api.example.com", "/a/b?&x=1&&y=2&")},
		{name: "fragment ignored", req: keyReq("acme", "https", "api.example.com", "/a/b?x=1&y=2#frag")},
		{name: "query_params keeps only the listed names", req: keyReq("acme", "https", "api.example.com", "/a/b?utm=z&x=1&y=2&z=3"), route: RoutePolicy{QueryParams: []string{"x", "y"}}},
		{name: "query_params compares decoded names", req: keyReq("acme", "https", "api.example.com", "/a/b?%78=1&y=2&w=0"), route: RoutePolicy{QueryParams: []string{"x", "y"}}},
	}
	want := PrimaryKey(base, all)
	if !keyPattern.MatchString(want) || KeyTenant(want) != TenantTag("acme") {
		t.Fatalf("key %q does not have the documented form", want)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PrimaryKey(tt.req, tt.route); got != want {
				t.Errorf("PrimaryKey(%+v) = %s, want %s", tt.req, got, want)
			}
		})
	}
	t.Run("empty path is /", func(t *testing.T) {
		if PrimaryKey(keyReq("t", "http", "h", ""), all) != PrimaryKey(keyReq("t", "http", "h", "/"), all) {
			t.Error("differ")
		}
	})
	t.Run("empty query is no query", func(t *testing.T) {
		if PrimaryKey(keyReq("t", "http", "h", "/p?"), all) != PrimaryKey(keyReq("t", "http", "h", "/p"), all) {
			t.Error("differ")
		}
	})
	t.Run("query_params: [] keys on the path alone", func(t *testing.T) {
		none := RoutePolicy{QueryParams: []string{}}
		if PrimaryKey(keyReq("t", "http", "h", "/p?a=1"), none) != PrimaryKey(keyReq("t", "http", "h", "/p"), none) {
			t.Error("differ")
		}
	})
}

func TestPrimaryKeyDifferent(t *testing.T) {
	pairs := []struct {
		name string
		a, b httpcache.Request
	}{
		{name: "tenants never share entries", a: keyReq("acme", "https", "h", "/p"), b: keyReq("globex", "https", "h", "/p")},
		{name: "empty tenant is a tenant", a: keyReq("", "https", "h", "/p"), b: keyReq("anonymous", "https", "h", "/p")},
		{name: "length prefixes: tenant/authority boundary", a: keyReq("ab", "https", "c", "/p"), b: keyReq("a", "https", "bc", "/p")},
		{name: "length prefixes: authority/path boundary", a: keyReq("t", "https", "h/x", "/p"), b: keyReq("t", "https", "h", "/x/p")},
		{name: "scheme (an http redirect is not an https answer)", a: keyReq("t", "http", "h", "/p"), b: keyReq("t", "https", "h", "/p")},
		{name: "non-default port", a: keyReq("t", "https", "h:8443", "/p"), b: keyReq("t", "https", "h", "/p")},
		{name: "port 80 is not default for https", a: keyReq("t", "https", "h:80", "/p"), b: keyReq("t", "https", "h", "/p")},
		{name: "path case (cache-tests: different URLs)", a: keyReq("t", "https", "h", "/P"), b: keyReq("t", "https", "h", "/p")},
		{name: "reserved characters stay encoded", a: keyReq("t", "https", "h", "/a%2Fb"), b: keyReq("t", "https", "h", "/a/b")},
		{name: "encoded ? is path, not query", a: keyReq("t", "https", "h", "/a%3Fb"), b: keyReq("t", "https", "h", "/a?b")},
		{name: "different query values (cache-tests query-args-different)", a: keyReq("t", "https", "h", "/p?a=1"), b: keyReq("t", "https", "h", "/p?a=2")},
		{name: "query vs none", a: keyReq("t", "https", "h", "/p?a"), b: keyReq("t", "https", "h", "/p")},
		{name: "a and a= differ", a: keyReq("t", "https", "h", "/p?a"), b: keyReq("t", "https", "h", "/p?a=")},
		{name: "order of repeated names is kept", a: keyReq("t", "https", "h", "/p?a=1&a=2"), b: keyReq("t", "https", "h", "/p?a=2&a=1")},
		{name: "parameter boundaries", a: keyReq("t", "https", "h", "/p?a=1%26b=2"), b: keyReq("t", "https", "h", "/p?a=1&b=2")},
		{name: "+ is not %20", a: keyReq("t", "https", "h", "/p?q=a+b"), b: keyReq("t", "https", "h", "/p?q=a%20b")},
	}
	for _, tt := range pairs {
		t.Run(tt.name, func(t *testing.T) {
			ka, kb := PrimaryKey(tt.a, RoutePolicy{}), PrimaryKey(tt.b, RoutePolicy{})
			if ka == kb {
				t.Errorf("%+v and %+v share key %s", tt.a, tt.b, ka)
			}
		})
	}
}

func TestKeyTenant(t *testing.T) {
	k := PrimaryKey(keyReq("acme", "https", "h", "/p"), RoutePolicy{})
	v := VariantKey(k, []string{"accept"}, nil)
	for _, key := range []string{k, v} {
		if KeyTenant(key) != TenantTag("acme") {
			t.Errorf("KeyTenant(%q) = %q", key, KeyTenant(key))
		}
	}
	for _, bad := range []string{"", "abc", "x:y", strings.Repeat("a", 17) + ":b"} {
		if KeyTenant(bad) != "" {
			t.Errorf("KeyTenant(%q) = %q, want empty", bad, KeyTenant(bad))
		}
	}
	if TenantTag("a") == TenantTag("b") || len(TenantTag("")) != 16 {
		t.Errorf("TenantTag")
	}
}

// TestPrimaryKeyStable pins keys computed by an earlier implementation: entries already in
// Redis stay reachable after an upgrade, and a faster encoding must hash the same bytes.
func TestPrimaryKeyStable(t *testing.T) {
	long := keyReq(strings.Repeat("\x00", 300), "https", "a", "/"+strings.Repeat("\x00", 600))
	for _, c := range []struct {
		name string
		req  httpcache.Request
		tag  string
		key  string
	}{
		{"query", keyReq("acme", "https", "api.example.com", "/api/v1/items/42?b=2&a=1"),
			"ccc0c99fbcf9ffce", "ccc0c99fbcf9ffce:edd19e01ef0b366b8132dee3770a983adb78179ddcb6444b3c59bc3a247b1415"},
		{"head, default port, escapes", httpcache.Request{Method: "HEAD", Scheme: "HTTP", Authority: "Example.com:80", Path: "/%7euser/a%2fb", Tenant: "initech"},
			"3fac677891ae6526", "3fac677891ae6526:f265990a1229ab3d6e3db50f3f978028ff336a9d6b43243002d12e0fc31cc335"},
		{"longer than the stack buffers", long,
			"f17a50ea235c812d", "f17a50ea235c812d:69870ed9f4997128cdfb38088a87ed28c105241bf4247a9e3c64f5bf56d722d6"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := TenantTag(c.req.Tenant); got != c.tag {
				t.Errorf("TenantTag = %q, want %q", got, c.tag)
			}
			if got := PrimaryKey(c.req, RoutePolicy{}); got != c.key {
				t.Errorf("PrimaryKey = %q, want %q", got, c.key)
			}
		})
	}
}

func TestVariantKey(t *testing.T) {
	primary := PrimaryKey(keyReq("acme", "https", "h", "/p"), RoutePolicy{})
	vk := func(vary []string, kv ...string) string { return VariantKey(primary, vary, polHeader(kv...)) }
	foo := []string{"foo"}

	t.Run("no Vary is the primary key", func(t *testing.T) {
		if vk(nil, "foo", "1") != primary || vk([]string{" "}, "foo", "1") != primary {
			t.Error("want primary")
		}
	})
	t.Run("variant keys extend the primary key", func(t *testing.T) {
		k := vk(foo, "foo", "1")
		if !strings.HasPrefix(k, primary+":") || len(k) != len(primary)+65 {
			t.Errorf("variant key %q", k)
		}
	})
	same := []struct {
		name string
		a, b string
	}{
		{name: "§4.1 Vary names are case-insensitive and unordered", a: VariantKey(primary, []string{"Foo", "bar"}, polHeader("foo", "1", "bar", "2")), b: VariantKey(primary, []string{"bar", "foo", "FOO"}, polHeader("bar", "2", "foo", "1"))},
		{name: "§4.1 unlisted request fields do not matter (cache-tests vary-cache-key)", a: vk(foo, "foo", "1", "other", "x"), b: vk(foo, "foo", "1")},
		{name: "§4.1 lines combined (cache-tests vary-normalise-combine)", a: vk(foo, "foo", "1, 2"), b: vk(foo, "foo", "1", "foo", "2")},
		{name: "§4.1 whitespace removed (vary-normalise-space)", a: vk(foo, "foo", "1,2"), b: vk(foo, "foo", " 1, 2 ")},
		{name: "§4.1 empty members dropped", a: vk(foo, "foo", "1,,2,"), b: vk(foo, "foo", "1, 2")},
		{name: "§4.1 Accept-Language case (vary-normalise-lang-case)", a: vk([]string{"accept-language"}, "accept-language", "en, de"), b: vk([]string{"accept-language"}, "accept-language", "eN, De")},
		{name: "§4.1 Accept-Language whitespace (vary-normalise-lang-space)", a: vk([]string{"accept-language"}, "accept-language", "en, de;q=0.5"), b: vk([]string{"accept-language"}, "accept-language", " en ,   de ; q=0.5")},
		{name: "§4.1 Accept-Encoding order and case", a: vk([]string{"accept-encoding"}, "accept-encoding", "gzip, br;q=0.5"), b: vk([]string{"accept-encoding"}, "accept-encoding", "BR; q=0.5,gzip")},
		{name: "§4.1 the field's request header order is irrelevant", a: vk([]string{"a", "b"}, "a", "1", "b", "2"), b: vk([]string{"a", "b"}, "b", "2", "a", "1")},
	}
	for _, tt := range same {
		t.Run(tt.name, func(t *testing.T) {
			if tt.a != tt.b {
				t.Errorf("keys differ")
			}
		})
	}
	different := []struct {
		name string
		a, b string
	}{
		{name: "§4.1 values differ (cache-tests vary-no-match)", a: vk(foo, "foo", "1"), b: vk(foo, "foo", "2")},
		{name: "§4.1 absent differs from present (vary-omit-stored)", a: vk(foo), b: vk(foo, "foo", "1")},
		{name: "§4.1 absent differs from empty", a: vk(foo), b: vk(foo, "foo", "")},
		{name: "§4.1 member order of unknown fields is kept", a: vk(foo, "foo", "1, 2"), b: vk(foo, "foo", "2, 1")},
		{name: "§4.1 Accept-Language order is kept", a: vk([]string{"accept-language"}, "accept-language", "en, de"), b: vk([]string{"accept-language"}, "accept-language", "de, en")},
		{name: "§4.1 unknown field values are case-sensitive", a: vk(foo, "foo", "a"), b: vk(foo, "foo", "A")},
		{name: "§4.1 two-way Vary, second differs (vary-2-no-match)", a: vk([]string{"foo", "bar"}, "foo", "1", "bar", "abc"), b: vk([]string{"foo", "bar"}, "foo", "1", "bar", "abcd")},
		{name: "length prefixes: name/value boundary", a: VariantKey(primary, []string{"ab"}, polHeader("ab", "c")), b: VariantKey(primary, []string{"a"}, polHeader("a", "bc"))},
		{name: "different primaries", a: vk(foo, "foo", "1"), b: VariantKey(PrimaryKey(keyReq("globex", "https", "h", "/p"), RoutePolicy{}), foo, polHeader("foo", "1"))},
		{name: "quoted commas are not separators", a: vk(foo, "foo", `"a,b"`), b: vk(foo, "foo", `"a", b"`)},
	}
	for _, tt := range different {
		t.Run(tt.name, func(t *testing.T) {
			if tt.a == tt.b {
				t.Errorf("keys equal")
			}
		})
	}
}

func TestInvalidations(t *testing.T) {
	c := Config{Routes: []RouteConfig{{Name: "list", Prefix: "/list", QueryParams: []string{"page"}}}}
	req := func(method, path string) httpcache.Request {
		return httpcache.Request{Method: method, Scheme: "https", Authority: "api.example.com", Path: path, Tenant: "acme"}
	}
	key := func(path string) string { return PrimaryKey(req("GET", path), c.Route(path)) }
	tests := []struct {
		name   string
		req    httpcache.Request
		status int
		hdr    header.List
		want   []string
	}{
		{name: "§4.4 POST success invalidates the target URI (cache-tests invalidate-POST)", req: req("POST", "/r?x=1"), status: 201, want: []string{key("/r?x=1")}},
		{name: "§4.4 PUT", req: req("PUT", "/r"), status: 200, want: []string{key("/r")}},
		{name: "§4.4 DELETE", req: req("DELETE", "/r"), status: 204, want: []string{key("/r")}},
		{name: "§4.4 unknown methods are unsafe (invalidate-M-SEARCH)", req: req("M-SEARCH", "/r"), status: 200, want: []string{key("/r")}},
		{name: "§4.4 3xx is a non-error status", req: req("POST", "/r"), status: 303, want: []string{key("/r")}},
		{name: "§4.4 error status invalidates nothing (invalidate-POST-failed)", req: req("POST", "/r"), status: 500},
		{name: "§4.4 4xx invalidates nothing", req: req("POST", "/r"), status: 409},
		{name: "§4.4 safe methods invalidate nothing", req: req("GET", "/r"), status: 200},
		{name: "§4.4 OPTIONS is safe", req: req("OPTIONS", "/r"), status: 200},
		{name: "§4.4 Location and Content-Location, relative (invalidate-POST-location, -cl)", req: req("POST", "/dir/r"), status: 201,
			hdr:  polHeader("location", "location_target", "content-location", "/content_location_target?b=2&a=1"),
			want: []string{key("/dir/r"), key("/dir/location_target"), key("/content_location_target?a=1&b=2")}},
		{name: "§4.4 absolute same-origin Location", req: req("POST", "/r"), status: 201, hdr: polHeader("location", "https://API.example.com:443/new"), want: []string{key("/r"), key("/new")}},
		{name: "§4.4 other origins are never invalidated", req: req("POST", "/r"), status: 201,
			hdr: polHeader("location", "https://evil.example/r2", "content-location", "//other.example/x"), want: []string{key("/r")}},
		{name: "§4.4 other scheme is another origin", req: req("POST", "/r"), status: 201, hdr: polHeader("location", "http://api.example.com/x"), want: []string{key("/r")}},
		{name: "duplicates removed", req: req("POST", "/r"), status: 200, hdr: polHeader("content-location", "/r"), want: []string{key("/r")}},
		{name: "each URI keyed with its own route policy", req: req("POST", "/list?page=2&sort=x"), status: 200, hdr: polHeader("location", "/list?page=3&sort=y"),
			want: []string{key("/list?page=2"), key("/list?page=3")}},
		{name: "unparsable Location ignored", req: req("POST", "/r"), status: 201, hdr: polHeader("location", "%zz"), want: []string{key("/r")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.Invalidations(tt.req, tt.status, tt.hdr)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Invalidations = %v, want %v", got, tt.want)
			}
			for _, k := range got {
				if KeyTenant(k) != TenantTag("acme") {
					t.Errorf("key %s is not the tenant's", k)
				}
			}
		})
	}
}

// FuzzPrimaryKey checks the key's form, tenant isolation and that the
// normalisation is idempotent: the canonical form of a target keys the same.
func FuzzPrimaryKey(f *testing.F) {
	f.Add("acme", "https", "API.example.com:443", "/a/%7e/b?y=2&x=1&&x=0#f", "x")
	f.Add("", "", "", "", "")
	f.Add("t", "http", "h:80", "%", "%2")
	f.Add("a:b", "HTTP", "h", "/%zz?%41=%42&a", "A")
	f.Fuzz(func(t *testing.T, tenant, scheme, authority, path, keep string) {
		route := RoutePolicy{}
		if keep != "" {
			route.QueryParams = strings.Split(keep, ",")
		}
		req := httpcache.Request{Method: "GET", Scheme: scheme, Authority: authority, Path: path, Tenant: tenant}
		k := PrimaryKey(req, route)
		if !keyPattern.MatchString(k) || KeyTenant(k) != TenantTag(tenant) {
			t.Fatalf("bad key %q", k)
		}
		other := req
		other.Tenant = tenant + "x"
		if PrimaryKey(other, route) == k {
			t.Fatalf("tenants %q and %q share a key", tenant, other.Tenant)
		}
		// Rebuild the canonical target and key it again.
		p, q := path, ""
		if i := strings.IndexByte(p, '#'); i >= 0 {
			p = p[:i]
		}
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p, q = p[:i], p[i+1:]
		}
		var parts []string
		for _, qp := range canonicalQuery(q, route.QueryParams) {
			parts = append(parts, qp.name+qp.value)
		}
		canon := normalizePercent(p)
		if canon == "" {
			canon = "/"
		}
		if strings.ContainsAny(canon, "?#") {
			return // a decoded path cannot be re-sent raw
		}
		if len(parts) > 0 {
			canon += "?" + strings.Join(parts, "&")
		}
		again := httpcache.Request{Method: "HEAD", Scheme: strings.ToLower(scheme), Authority: canonicalAuthority(strings.ToLower(scheme), authority), Path: canon, Tenant: tenant}
		if got := PrimaryKey(again, route); got != k {
			t.Fatalf("canonical target %q keys %s, original %q keys %s", canon, got, path, k)
		}
	})
}

// FuzzVariantKey checks the Vary normalisation: splitting a value into
// lines at a top-level comma, or adding whitespace around members, does not
// change the key; an absent field differs from any present value.
func FuzzVariantKey(f *testing.F) {
	f.Add("Foo", "1,2", "3")
	f.Add("accept-encoding", "gzip, BR", "")
	f.Add("accept-language", `"a,b"`, "c")
	f.Add("x", "", "")
	primary := PrimaryKey(keyReq("t", "https", "h", "/"), RoutePolicy{})
	f.Fuzz(func(t *testing.T, name, a, b string) {
		name = strings.ToLower(name)
		if !header.IsToken(name) {
			return
		}
		vary := []string{name}
		joined := VariantKey(primary, vary, header.List{{Name: name, Value: a + ", " + b}})
		split := VariantKey(primary, vary, header.List{{Name: name, Value: " " + a + " "}, {Name: name, Value: "\t" + b}})
		if strings.Count(a, `"`)%2 == 0 && !strings.HasSuffix(a, `\`) && joined != split {
			t.Fatalf("lines %q %q key differently from their join", a, b)
		}
		if absent := VariantKey(primary, vary, nil); absent == joined || absent == VariantKey(primary, vary, header.List{{Name: name, Value: a}}) {
			t.Fatalf("absent equals present")
		}
		if !strings.HasPrefix(joined, primary+":") {
			t.Fatalf("variant key %q", joined)
		}
	})
}
