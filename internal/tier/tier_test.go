package tier_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/sluicehq/sluice/internal/tier"
)

func TestStatic(t *testing.T) {
	s := tier.Static{"acme": "pro"}
	tests := []struct {
		name     string
		store    tier.Store
		tenant   string
		wantTier string
		wantOK   bool
	}{
		{name: "known", store: s, tenant: "acme", wantTier: "pro", wantOK: true},
		{name: "unknown", store: s, tenant: "globex", wantTier: "", wantOK: false},
		{name: "nil map", store: tier.Static(nil), tenant: "acme", wantTier: "", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.store.Tier(context.Background(), tt.tenant)
			if got != tt.wantTier || ok != tt.wantOK {
				t.Fatalf("Tier(%q) = %q, %v; want %q, %v", tt.tenant, got, ok, tt.wantTier, tt.wantOK)
			}
		})
	}
}

func ExampleStatic() {
	var s tier.Store = tier.Static{"acme": "enterprise"}
	t, ok := s.Tier(context.Background(), "acme")
	fmt.Println(t, ok)
	_, ok = s.Tier(context.Background(), "initech")
	fmt.Println(ok)
	// Output:
	// enterprise true
	// false
}
