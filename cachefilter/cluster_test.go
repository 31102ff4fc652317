package cachefilter_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/internal/redistest"
)

// TestCluster runs two replicas over a three-master Redis Cluster: every per-tenant script
// touches keys of one slot (the tenant's hash tag), invalidations cross nodes (pub/sub is
// broadcast across the cluster), and tenants in different slots stay apart.
func TestCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	clk := newClock()
	a := newStore(t, testConfig(), c.Client(t), "sluice:", clk, nil)
	b := newStore(t, testConfig(), c.Client(t), "sluice:", clk, nil)
	run(t, a)
	run(t, b)
	ctx := context.Background()
	tenants := []string{tenantA, tenantB, "cccccccccccccc03", "dddddddddddddd04"}
	for _, tenant := range tenants {
		for i := range 5 {
			path := fmt.Sprintf("/p/%d", i)
			e := newEntry(clk.Now(), tenant+path, time.Hour)
			e.Tags = []string{"t"}
			e.Vary = []string{"accept"}
			k := primaryKey(tenant, path)
			put(t, a, k, path, map[string]string{"accept": "json"}, e)
			learned(t, b, k)
			if got, layer := lookup(t, b, k, map[string]string{"accept": "json"}); layer != cachefilter.L2 || body(got) != tenant+path {
				t.Fatalf("%s%s on B: %q from %v", tenant, path, body(got), layer)
			}
			lookup(t, b, k, map[string]string{"accept": "json"}) // now in B's L1
		}
	}
	if err := a.PurgeTag(ctx, tenantA, "t"); err != nil {
		t.Fatal(err)
	}
	if err := a.PurgePrefix(ctx, tenantB, "/p/1"); err != nil {
		t.Fatal(err)
	}
	if err := a.PurgeTenant(ctx, "cccccccccccccc03"); err != nil {
		t.Fatal(err)
	}
	if err := a.Invalidate(ctx, primaryKey("dddddddddddddd04", "/p/2")); err != nil {
		t.Fatal(err)
	}
	for _, tenant := range tenants {
		for i := range 5 {
			path := fmt.Sprintf("/p/%d", i)
			k := primaryKey(tenant, path)
			gone := tenant == tenantA || tenant == "cccccccccccccc03" ||
				(tenant == tenantB && i == 1) || (tenant == "dddddddddddddd04" && i == 2)
			got, layer := lookup(t, b, k, map[string]string{"accept": "json"})
			if gone && got != nil {
				t.Errorf("%s%s: %q from %v after its purge", tenant, path, body(got), layer)
			}
			if !gone && (layer != cachefilter.L1 || body(got) != tenant+path) {
				t.Errorf("%s%s: %q from %v, want kept in B's L1", tenant, path, body(got), layer)
			}
		}
	}
}
