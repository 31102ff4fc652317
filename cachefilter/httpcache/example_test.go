package httpcache_test

import (
	"fmt"
	"time"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/header"
)

// A response stored, then used as time passes: fresh, stale within
// stale-while-revalidate, then validated with its ETag.
func ExampleEvaluate() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	req := httpcache.Request{Method: "GET", Scheme: "https", Authority: "api.example.com", Path: "/items", Tenant: "acme"}
	e, ok, _ := httpcache.Storable(req, 200, header.List{
		{Name: "cache-control", Value: "max-age=60, stale-while-revalidate=30"},
		{Name: "etag", Value: `"v1"`},
	}, now, httpcache.Policy{Enabled: true})
	fmt.Println(ok, e.Lifetime)
	for _, after := range []time.Duration{10 * time.Second, 70 * time.Second, 2 * time.Minute} {
		d := httpcache.Evaluate(req, &e, now.Add(after))
		fmt.Println(after, d.Action, d.Reason)
	}
	fmt.Println(httpcache.ConditionalHeaders(&e))
	// Output:
	// true 1m0s
	// 10s hit fresh
	// 1m10s stale stale_while_revalidate
	// 2m0s validate stale
	// [{if-none-match "v1"}]
}

func ExampleParseCacheControl() {
	cc := httpcache.ParseCacheControl(`max-age=60, private="set-cookie"`, `ext="a, no-store", Stale-If-Error=300`)
	fmt.Println(cc.MaxAge.Seconds, cc.PrivateFields, cc.NoStore, cc.StaleIfError.Duration())
	fmt.Println(cc)
	// Output:
	// 60 [set-cookie] false 5m0s
	// private="set-cookie", max-age=60, stale-if-error=300
}
