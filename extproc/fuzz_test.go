package extproc_test

import (
	"context"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/extproc"
	xt "github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/tier"
)

// memStream is an in-memory ext_proc stream: Process reads in and appends
// its replies to out. It serves the fuzz targets that need no network.
type memStream struct {
	grpc.ServerStream // nil: Process uses only Context, Recv and Send
	in                []*extprocv3.ProcessingRequest
	out               []*extprocv3.ProcessingResponse
}

func (m *memStream) Context() context.Context { return context.Background() }

func (m *memStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if len(m.in) == 0 {
		return nil, io.EOF
	}
	r := m.in[0]
	m.in = m.in[1:]
	return r, nil
}

func (m *memStream) Send(r *extprocv3.ProcessingResponse) error {
	m.out = append(m.out, r)
	return nil
}

// validIdentity is the identity stage's rule for tenant, user and tier
// values (IdentityConfig.MaxValueLength, default 128).
var validIdentity = regexp.MustCompile(`^[A-Za-z0-9._:@+-]{1,128}$`)

// FuzzIdentity feeds the identity stage hostile tenant and user values, from
// headers (repeated, padded to any length, any bytes) and from jwt_authn
// metadata (an arbitrary Struct, the claims overlaid), and checks what it
// tells the filters after ext_proc: exactly one x-sluice-tenant, -tier and
// -cost; the tenant and user are the trusted source's value when valid and
// present once, else anonymous / removed; the tier comes from the store;
// client copies of the owned headers never survive; every value is one
// Envoy accepts.
//
// Seeds: testdata/fuzz/FuzzIdentity.
func FuzzIdentity(f *testing.F) {
	f.Add(false, "acme", "u-1", 1, 0, []byte(nil))
	tiers := tier.Static{"acme": "pro", "victim": "enterprise", "weird": "bad tier", "anon": extproc.Anonymous}
	newServer := func(cfg extproc.Config) *extproc.Server {
		// No header limits: the target is identity's parsing of any header
		// map (TestHostileMessages covers maps over Envoy's limits).
		cfg.MaxRequestHeaders, cfg.MaxRequestHeadersKB = 1<<30, 1<<30
		srv, err := extproc.New(cfg, tiers, prometheus.NewRegistry(), nil)
		if err != nil {
			f.Fatal(err)
		}
		return srv
	}
	byHeader := newServer(extproc.Config{})
	byJWT := newServer(extproc.Config{Identity: extproc.IdentityConfig{
		Source:      extproc.SourceJWTMetadata,
		JWTMetadata: extproc.JWTMetadataConfig{TenantClaim: "jwt_payload.tenant_id", UserClaim: "jwt_payload.sub"},
	}})

	f.Fuzz(func(t *testing.T, jwt bool, tenant, user string, copies, pad int, payload []byte) {
		copies = min(max(copies, 0), 3)
		pad = min(max(pad, 0), 1<<20)
		tenant += strings.Repeat("a", pad)

		kv := []string{
			// Client copies of every owned header.
			"x-sluice-tenant", "victim", "x-sluice-tier", "enterprise", "x-sluice-user", "root",
			"x-sluice-cost", "0", "x-sluice-batch", "1", "x-sluice-warm", "1",
		}
		for range copies {
			kv = append(kv, "x-tenant-id", tenant)
		}
		if user != "" {
			kv = append(kv, "x-user-id", user)
		}
		req := xt.RequestHeaders("GET", "/api/v1/x", true, kv...)

		srv := byHeader
		var wantTenant, wantUser string
		if jwt {
			srv = byJWT
			ns := &structpb.Struct{}
			if proto.Unmarshal(payload, ns) != nil {
				return
			}
			// Overlay the fuzzed strings as claims, unless the payload
			// already has a jwt_payload to explore.
			if _, ok := ns.GetFields()["jwt_payload"]; !ok && (tenant != "" || user != "") {
				claims := map[string]*structpb.Value{}
				if tenant != "" {
					claims["tenant_id"] = structpb.NewStringValue(strings.ToValidUTF8(tenant, ""))
				}
				if user != "" {
					claims["sub"] = structpb.NewStringValue(strings.ToValidUTF8(user, ""))
				}
				if ns.Fields == nil {
					ns.Fields = map[string]*structpb.Value{}
				}
				ns.Fields["jwt_payload"] = structpb.NewStructValue(&structpb.Struct{Fields: claims})
			}
			req.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{extproc.DefaultJWTNamespace: ns}}
			wantTenant, wantUser = claimOf(ns, "tenant_id"), claimOf(ns, "sub")
		} else {
			if copies == 1 {
				wantTenant = tenant
			}
			if user != "" {
				wantUser = user
			}
		}
		// Naming the anonymous tenant, in any case, is no identity.
		anonymous := !validIdentity.MatchString(wantTenant) || strings.EqualFold(wantTenant, extproc.Anonymous)
		if anonymous {
			wantTenant = extproc.Anonymous
		}
		if !validIdentity.MatchString(wantUser) {
			wantUser = ""
		}
		wantTier := extproc.Anonymous
		if !anonymous {
			wantTier = extproc.DefaultTier
			if t, ok := tiers[wantTenant]; ok && validIdentity.MatchString(t) && t != extproc.Anonymous {
				wantTier = t
			}
		}

		ms := &memStream{in: []*extprocv3.ProcessingRequest{req}}
		if err := srv.Process(ms); err != nil {
			t.Fatalf("Process: %v", err)
		}
		if len(ms.out) != 1 || ms.out[0].GetRequestHeaders() == nil {
			t.Fatalf("replies %v, want one request_headers reply", ms.out)
		}
		m := xt.Mutation(ms.out[0])
		if err := xt.CheckRawValueOnly(m); err != nil {
			t.Fatal(err)
		}
		for _, o := range m.GetSetHeaders() {
			if v := o.GetHeader().GetRawValue(); strings.ContainsAny(string(v), "\x00\r\n") {
				t.Fatalf("header %s set to %q", o.GetHeader().GetKey(), v)
			}
		}
		set := xt.SetHeaders(m)
		one := func(name, want string) {
			t.Helper()
			if got := set[name]; len(got) != 1 || got[0] != want {
				t.Fatalf("%s set to %q, want [%q]", name, got, want)
			}
		}
		one(extproc.HeaderTenant, wantTenant)
		one(extproc.HeaderTier, wantTier)
		one(extproc.HeaderCost, "1")
		removed := map[string]bool{}
		for _, r := range m.GetRemoveHeaders() {
			removed[r] = true
		}
		if wantUser != "" {
			one(extproc.HeaderUser, wantUser)
		} else if len(set[extproc.HeaderUser]) != 0 || !removed[extproc.HeaderUser] {
			t.Fatalf("x-sluice-user set to %q (removed %v), want it removed", set[extproc.HeaderUser], removed[extproc.HeaderUser])
		}
		for _, h := range []string{extproc.HeaderBatch, extproc.HeaderWarm} {
			if !removed[h] || len(set[h]) != 0 {
				t.Fatalf("client copy of %s not removed: %v", h, m)
			}
		}
		if !ms.out[0].GetRequestHeaders().GetResponse().GetClearRouteCache() {
			t.Fatal("no clear_route_cache with the identity headers")
		}
	})
}

// claimOf is the identity stage's reading of jwt_payload.<name> in a
// jwt_authn namespace: a string, or an integral number below 2^53; "" when
// absent or of another kind.
func claimOf(ns *structpb.Struct, name string) string {
	v := ns.GetFields()["jwt_payload"].GetStructValue().GetFields()[name]
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue
	case *structpb.Value_NumberValue:
		if n := k.NumberValue; n == math.Trunc(n) && math.Abs(n) < 1<<53 {
			return strconv.FormatInt(int64(n), 10)
		}
	}
	return ""
}

// maxFrames bounds the messages of one fuzzed stream.
const maxFrames = 16

// splitFrames reads data as varint-length-prefixed messages; a prefix
// running past the end takes the rest.
func splitFrames(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 && len(out) < maxFrames {
		n, l := protowire.ConsumeVarint(data)
		if l < 0 || n > uint64(len(data)-l) {
			out = append(out, data)
			break
		}
		out = append(out, data[l:l+int(n)])
		data = data[l+int(n):]
	}
	return out
}

// joinFrames encodes messages for splitFrames.
func joinFrames(ms ...*extprocv3.ProcessingRequest) []byte {
	var b []byte
	for _, m := range ms {
		mb, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		b = protowire.AppendBytes(b, mb)
	}
	return b
}

// FuzzServer drives the production pipeline (internal/app: identity →
// batch → cache → metrics, the cache on Redis) with arbitrary
// ProcessingRequest messages: the input is a sequence of
// varint-length-prefixed encodings, each decoded with proto.Unmarshal (ones
// that do not decode are skipped: grpc-go refuses them before Sluice, see
// TestHostileMessages) and sent on one stream as Envoy would. The server
// must never panic or hang, must answer each message owed a reply with the
// matching type or an immediate response, and must end any stream it
// refuses with a clear status (InvalidArgument, FailedPrecondition,
// ResourceExhausted), never Internal (stages fail open) or Unknown.
//
// Seeds: testdata/fuzz/FuzzServer, plus the exchanges below.
func FuzzServer(f *testing.F) {
	for _, seed := range [][]*extprocv3.ProcessingRequest{
		{
			xt.RequestHeaders("GET", "/api/v1/items?a=1", true, "x-tenant-id", "acme"),
			xt.ResponseHeaders(200, false, "cache-control", "max-age=60", "etag", `"v1"`),
			xt.ResponseBody([]byte("cached"), true),
		},
		{
			xt.RequestHeaders("POST", "/api/v1/batch", false, "x-tenant-id", "acme", "content-type", "application/json"),
			xt.RequestBody([]byte(`{"requests":[{"id":"1","method":"GET","url":"/api/v1/x"}]}`), true),
		},
		{xt.ResponseHeaders(401, true), xt.ResponseBody([]byte("x"), true)},
		{{}},
	} {
		f.Add(joinFrames(seed...))
	}
	p := newPipeline(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var frames []frame
		for _, b := range splitFrames(data) {
			m := &extprocv3.ProcessingRequest{}
			if proto.Unmarshal(b, m) != nil {
				continue
			}
			frames = append(frames, frame{msg: m})
		}
		if len(frames) == 0 {
			return
		}
		out := drive(t, p.conn, frames)
		if err := out.check(); err != nil {
			t.Fatalf("%v\noutcome %+v", err, out)
		}
	})
}
