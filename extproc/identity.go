package extproc

import (
	"context"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/internal/tier"
)

// identity is the first stage: it decides who is calling and tells the
// filters after ext_proc (ratelimit, router) through headers only Sluice may
// set.
//
// On request headers it
//   - reads the tenant and user from the one trusted source (a header set by
//     an auth filter, or jwt_authn's dynamic metadata), treating a missing,
//     repeated, over-long or oddly-charactered value as absent, and so a
//     tenant named "anonymous" in any case: nobody joins the anonymous
//     callers' tenant by naming it;
//   - resolves the tier: "anonymous" without a tenant, else tier.Store, else
//     the default tier;
//   - removes every x-sluice-* header of the request (the namespace is
//     Sluice's: OwnedHeaders it does not set, and any other name with the
//     prefix) and sets x-sluice-tenant, x-sluice-tier, x-sluice-user (when
//     known) and x-sluice-cost: 1, with clear_route_cache so routes and
//     rate-limit actions see them. Stages still read the markers Sluice's
//     own requests carry (x-sluice-batch) in Exchange.RequestHeaders.
//
// A bad value is never reflected: it is neither logged nor forwarded.
type identity struct {
	cfg         IdentityConfig
	tiers       tier.Store
	tenantClaim []string // split JWTMetadata.TenantClaim
	userClaim   []string
	userHeader  string // "" when disabled
}

var (
	_ RequestHeadersHook = (*identity)(nil)
	_ Stage              = (*identity)(nil)
)

func newIdentity(cfg IdentityConfig, tiers tier.Store) *identity {
	id := &identity{cfg: cfg, tiers: tiers, userHeader: cfg.UserHeader}
	if id.userHeader == "-" {
		id.userHeader = ""
	}
	if cfg.JWTMetadata.TenantClaim != "" {
		id.tenantClaim = strings.Split(cfg.JWTMetadata.TenantClaim, ".")
	}
	if cfg.JWTMetadata.UserClaim != "" {
		id.userClaim = strings.Split(cfg.JWTMetadata.UserClaim, ".")
	}
	return id
}

func (*identity) Name() string { return "identity" }

// removeHeaders are the owned headers identity never sets.
var removeHeaders = []string{HeaderBatch, HeaderWarm, HeaderClientAddress}

func (id *identity) RequestHeaders(ctx context.Context, x *Exchange) error {
	tenant, user := id.resolve(x)
	t := Anonymous
	if tenant == "" {
		tenant = Anonymous
	} else if st, ok := id.tiers.Tier(ctx, tenant); ok && validValue(st, id.cfg.MaxValueLength) && st != Anonymous {
		t = st
	} else {
		t = id.cfg.DefaultTier
	}
	x.Tenant, x.Tier, x.User = tenant, t, user

	x.SetRequestHeader(HeaderTenant, tenant)
	x.SetRequestHeader(HeaderTier, t)
	if user != "" {
		x.SetRequestHeader(HeaderUser, user)
	} else {
		x.RemoveRequestHeader(HeaderUser)
	}
	// hits_addend.format "%REQ(x-sluice-cost)%" drops the descriptor when
	// the header is missing or not a number: always send one.
	x.SetRequestHeader(HeaderCost, "1")
	for _, h := range removeHeaders {
		x.RemoveRequestHeader(h)
	}
	for _, f := range x.RequestHeaders {
		if strings.HasPrefix(f.Name, OwnedPrefix) && !isOwnedHeader(f.Name) {
			x.RemoveRequestHeader(f.Name)
		}
	}
	x.ClearRouteCache()
	return nil
}

// resolve returns the validated tenant and user, "" for each one absent.
func (id *identity) resolve(x *Exchange) (tenant, user string) {
	maxLen := id.cfg.MaxValueLength
	switch id.cfg.Source {
	case SourceJWTMetadata:
		ns := x.Metadata.GetFilterMetadata()[id.cfg.JWTMetadata.Namespace]
		tenant = claim(ns, id.tenantClaim)
		if id.userClaim != nil {
			user = claim(ns, id.userClaim)
		}
	default:
		// Exactly one occurrence: two tenant headers mean someone added one.
		var ok bool
		if tenant, ok = single(x.RequestHeaders, id.cfg.TenantHeader); !ok {
			tenant = ""
		}
		if id.userHeader != "" {
			if user, ok = single(x.RequestHeaders, id.userHeader); !ok {
				user = ""
			}
		}
	}
	if !validValue(tenant, maxLen) || strings.EqualFold(tenant, Anonymous) {
		// Anonymous is the shared tenant of callers without identity (per-IP
		// limits, one cache): naming it is no identity, in any spelling.
		tenant = ""
	}
	if !validValue(user, maxLen) {
		user = ""
	}
	return tenant, user
}

// claim follows path through nested structs (jwt_authn writes the payload
// as a Struct under payload_in_metadata). Strings and integral numbers
// (numeric ids) are accepted; anything else is "".
func claim(s *structpb.Struct, path []string) string {
	if s == nil || len(path) == 0 {
		return ""
	}
	var v *structpb.Value
	for i, seg := range path {
		v = s.GetFields()[seg]
		if i < len(path)-1 {
			s = v.GetStructValue()
			if s == nil {
				return ""
			}
		}
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue
	case *structpb.Value_NumberValue:
		n := k.NumberValue
		if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
			return strconv.FormatInt(int64(n), 10)
		}
	}
	return ""
}
