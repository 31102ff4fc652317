package cachefilter

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

// TestPassSet covers the two kinds of marks (plain ones under a hashed key, ones with Vary by
// primary key): a key moves between them when its response changes, and drop and dropTenant
// reach both.
func TestPassSet(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a1, a2 := TenantTag("acme")+":"+"1", TenantTag("acme")+":"+"2"
	b1 := TenantTag("globex") + ":" + "1"
	user := header.List{{Name: "x-sluice-user", Value: "u1"}}
	other := header.List{{Name: "x-sluice-user", Value: "u2"}}
	vary := []string{"x-sluice-user"}
	tests := []struct {
		name  string
		setup func(p *passSet)
		want  map[string]bool // primary → passing for user
		other map[string]bool // primary → passing for other (only checked when set)
	}{
		{"plain", func(p *passSet) { p.add(a1, "/1", nil, "", now.Add(time.Second)) },
			map[string]bool{a1: true, a2: false, b1: false}, map[string]bool{a1: true}},
		{"expired", func(p *passSet) { p.add(a1, "/1", nil, "", now) }, map[string]bool{a1: false}, nil},
		{"varied: the marked variant only", func(p *passSet) {
			p.add(a1, "/1", vary, VariantKey(a1, vary, user), now.Add(time.Second))
		}, map[string]bool{a1: true}, map[string]bool{a1: false}},
		{"plain, then varied", func(p *passSet) {
			p.add(a1, "/1", nil, "", now.Add(time.Second))
			p.add(a1, "/1", vary, VariantKey(a1, vary, user), now.Add(time.Second))
		}, map[string]bool{a1: true}, map[string]bool{a1: false}},
		{"varied, then plain", func(p *passSet) {
			p.add(a1, "/1", vary, VariantKey(a1, vary, user), now.Add(time.Second))
			p.add(a1, "/1", nil, "", now.Add(time.Second))
		}, map[string]bool{a1: true}, map[string]bool{a1: true}},
		{"drop", func(p *passSet) {
			p.add(a1, "/1", nil, "", now.Add(time.Second))
			p.add(a2, "/2", vary, VariantKey(a2, vary, user), now.Add(time.Second))
			p.add(b1, "/1", nil, "", now.Add(time.Second))
			p.drop(a1, a2)
		}, map[string]bool{a1: false, a2: false, b1: true}, nil},
		{"dropTenant", func(p *passSet) {
			p.add(a1, "/1", nil, "", now.Add(time.Second))
			p.add(a2, "/2", vary, VariantKey(a2, vary, user), now.Add(time.Second))
			p.add(b1, "/1", nil, "", now.Add(time.Second))
			p.dropTenant(TenantTag("acme"), "")
		}, map[string]bool{a1: false, a2: false, b1: true}, nil},
		{"dropTenant with a prefix: varied marks by path, plain ones all", func(p *passSet) {
			p.add(a1, "/1", vary, VariantKey(a1, vary, user), now.Add(time.Second))
			p.add(a2, "/2", vary, VariantKey(a2, vary, user), now.Add(time.Second))
			p.add(b1, "/1", nil, "", now.Add(time.Second))
			p.dropTenant(TenantTag("acme"), "/2")
		}, map[string]bool{a1: true, a2: false, b1: true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPassSet(10*time.Second, 100)
			tt.setup(p)
			for k, want := range tt.want {
				if got := p.passing(k, user, now); got != want {
					t.Errorf("passing(%s, u1) = %v, want %v", k, got, want)
				}
			}
			for k, want := range tt.other {
				if got := p.passing(k, other, now); got != want {
					t.Errorf("passing(%s, u2) = %v, want %v", k, got, want)
				}
			}
		})
	}
}

// TestPassSetBounded: past max, adding a mark evicts one.
func TestPassSetBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p := newPassSet(10*time.Second, 4)
	for i := range 10 {
		p.add(TenantTag("acme")+":"+string(rune('a'+i)), "/", nil, "", now.Add(time.Second))
		p.add(TenantTag("acme")+":v"+string(rune('a'+i)), "/", []string{"accept"}, "v", now.Add(time.Second))
	}
	if n := p.len(); n > 4 {
		t.Errorf("%d marks held, max 4", n)
	}
}
