// Package tier resolves the rate-limit tier of a tenant (free, pro, …).
//
// A Store answers one question, Tier(ctx, tenant), for the extproc identity
// stage, which calls it once per request. Static is a fixed map, used for
// development and for the config file's identity.tiers; a PostgreSQL store
// (LISTEN/NOTIFY refreshed) implements the same interface.
package tier

import "context"

// Store looks up a tenant's tier. Implementations must be safe for concurrent
// use and fast: Tier is on the request path of every request (Envoy's ext_proc
// message_timeout is 200 ms by default), so a store backed by a database
// should answer from memory and refresh in the background. ok is false when
// the tenant is unknown; the caller then applies its default tier. Tier must
// return promptly once ctx is done.
type Store interface {
	Tier(ctx context.Context, tenant string) (tier string, ok bool)
}

// Static is a fixed tenant → tier map. The zero value (nil) knows no tenant.
// It is safe for concurrent use as long as nobody writes to the map.
type Static map[string]string

var _ Store = Static(nil)

// Tier returns the tier configured for tenant.
func (s Static) Tier(_ context.Context, tenant string) (string, bool) {
	t, ok := s[tenant]
	return t, ok
}
