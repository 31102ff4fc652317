package cachefilter_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/cachefilter/httpcache"
)

// A Store without Redis is one replica's L1. The policy computes the keys; the store only needs
// the primary key, and the variant key of a request for the Vary names it recorded.
func ExampleStore() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s, err := cachefilter.NewStore(cachefilter.StoreConfig{}, cachefilter.StoreOptions{KeyPrefix: "sluice:", Now: func() time.Time { return now }})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	ctx := context.Background()

	primary := "0123456789abcdef:c0ffee" // "<tenant tag>:<hash>"
	variantOf := func(vary []string) string {
		if len(vary) == 0 {
			return primary
		}
		return primary + ":gzip" // the policy hashes the request's values of the vary fields
	}
	e := &httpcache.Entry{
		Status: 200, Body: []byte(`{"ok":true}`), ResponseTime: now, Lifetime: time.Minute,
		Vary: []string{"accept-encoding"}, Tags: []string{"contacts"},
	}
	_ = s.Put(ctx, primary, variantOf(e.Vary), "/api/v1/contacts", e)

	got, layer, _ := s.Lookup(ctx, primary, variantOf)
	fmt.Println(layer, string(got.Body))

	_ = s.PurgeTag(ctx, "0123456789abcdef", "contacts")
	got, layer, _ = s.Lookup(ctx, primary, variantOf)
	fmt.Println(layer, got == nil)
	// Output:
	// l1 {"ok":true}
	// miss true
}

// Concurrent misses of one key go upstream once: the leader fetches and completes, the others
// wait for its entry.
func ExampleStore_Collapse() {
	s, _ := cachefilter.NewStore(cachefilter.StoreConfig{}, cachefilter.StoreOptions{KeyPrefix: "sluice:"})
	defer s.Close()
	key := "0123456789abcdef:c0ffee"

	leader, _ := s.Collapse(key)
	follower, wait := s.Collapse(key)
	go s.Complete(key, &httpcache.Entry{Status: 200, Body: []byte("fetched once")}) // the leader, after its fetch
	e, ok := wait(context.Background())
	fmt.Println(leader, follower, ok, string(e.Body))
	// Output: true false true fetched once
}
