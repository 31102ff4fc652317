package cachefilter

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestPendingBounded: the pending set never holds more than maxPending invalidations. Past it, a
// tenant's invalidations fold into one purge of that tenant, which still covers every entry they
// covered; with no invalidation of the tenant to fold, the new one is refused.
func TestPendingBounded(t *testing.T) {
	var p pendingSet
	now := time.Now()
	noop := func(context.Context) error { return nil }
	tenantPurge := func(tenant string) (*invalidation, func(context.Context) error) {
		return &invalidation{kind: kindTenant, tenant: tenant}, noop
	}
	key := func(tenant string, i int) string { return fmt.Sprintf("%s:%064x", tenant, i) }
	const a, b = "aaaaaaaaaaaaaaa1", "bbbbbbbbbbbbbbb2"
	for i := range maxPending {
		if !p.add(&invalidation{kind: kindKeys, args: []string{key(a, i)}}, noop, now.Add(time.Hour), tenantPurge) {
			t.Fatalf("add %d refused below the bound", i)
		}
	}
	if p.covers(b, key(b, 0), "/x", nil) {
		t.Fatal("covers an entry of another tenant")
	}
	if !p.add(&invalidation{kind: kindKeys, args: []string{key(a, maxPending)}}, noop, now.Add(time.Hour), tenantPurge) {
		t.Fatal("add past the bound refused although the tenant's invalidations can fold")
	}
	if n := len(p.snapshot(now)); n != 1 {
		t.Fatalf("%d pending after folding, want 1 (the tenant purge)", n)
	}
	for _, i := range []int{0, 17, maxPending} {
		if !p.covers(a, key(a, i), "/any", nil) {
			t.Errorf("folded purge does not cover key %d", i)
		}
	}
	if p.covers(b, key(b, 0), "/x", nil) {
		t.Error("folded purge covers another tenant")
	}
	if got := len(p.snapshot(now.Add(2 * time.Hour))); got != 0 {
		t.Errorf("%d pending after their expiry, want 0", got)
	}
}
