package cachefilter_test

import (
	"fmt"
	"time"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/header"
)

// The policy half of a cache lookup and store, as the ext_proc stage uses
// it: classify the request, key it, store the upstream response, and decide
// how to answer the next request from the entry.
func Example_policy() {
	cfg := cachefilter.Config{}.WithDefaults()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	req := httpcache.Request{
		Method: "GET", Scheme: "https", Authority: "api.example.com",
		Path: "/api/v1/contacts?page=2", Tenant: "acme",
	}
	route := cfg.Route(req.Path)

	// Miss: forward, then store what comes back.
	fmt.Println(httpcache.Evaluate(req, nil, now).Action)
	e, ok, _ := httpcache.Storable(req, 200, header.List{
		{Name: "cache-control", Value: "max-age=60, stale-while-revalidate=30"},
		{Name: "etag", Value: `"v1"`},
	}, now, route.Policy)
	e.Body = []byte(`[]`)
	key := cachefilter.VariantKey(cachefilter.PrimaryKey(req, route), e.Vary, req.Header)
	fmt.Println(ok, e.Lifetime, cachefilter.KeyTenant(key) == cachefilter.TenantTag("acme"))

	// Ten seconds later: a fresh hit (stored fields, then the added ones).
	later := now.Add(10 * time.Second)
	d := httpcache.Evaluate(req, &e, later)
	cs, _ := d.CacheStatus()
	for _, h := range httpcache.ServeHeaders(&e, later, d.Status, cs, httpcache.XCacheValue(d.XCache(), "L1"))[3:] {
		fmt.Printf("%s: %s\n", h.Name, h.Value)
	}

	// After the lifetime, within stale-while-revalidate: serve stale and
	// refresh; after that window: validate with the entry's ETag.
	fmt.Println(httpcache.Evaluate(req, &e, now.Add(70*time.Second)).Action)
	fmt.Println(httpcache.Evaluate(req, &e, now.Add(2*time.Minute)).Action, httpcache.ConditionalHeaders(&e))

	// Output:
	// miss
	// true 1m0s true
	// age: 10
	// cache-status: sluice; hit; ttl=50
	// x-cache: HIT-L1
	// stale
	// validate [{if-none-match "v1"}]
}

// After an unsafe request succeeds, the stage drops the target's entries and
// purges the configured tags.
func ExampleConfig_Invalidations() {
	cfg := cachefilter.Config{TagRules: []cachefilter.TagRule{
		{Prefix: "/api/v1/contacts", Tags: []string{"contacts:{tenant}"}},
	}}.WithDefaults()
	req := httpcache.Request{Method: "POST", Scheme: "https", Authority: "api.example.com", Path: "/api/v1/contacts", Tenant: "acme"}
	resp := header.List{{Name: "location", Value: "/api/v1/contacts/42"}}

	keys := cfg.Invalidations(req, 201, resp)
	fmt.Println(len(keys), keys[1] == cachefilter.PrimaryKey(httpcache.Request{
		Method: "GET", Scheme: "https", Authority: "api.example.com", Path: "/api/v1/contacts/42", Tenant: "acme",
	}, cfg.Route("/api/v1/contacts/42")))
	fmt.Println(cfg.PurgeTags(req, 201))
	// Output:
	// 2 true
	// [contacts:acme]
}
