package cachefilter_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cachefilter"
)

// TestL1ByteBound fills an L1 of 1 MiB with about 16 MiB of entries of mixed sizes and checks
// that the weighed bytes stay within the bound (otter may exceed it only until its maintenance
// runs, which L1Weight forces), that the weights add up, and that the Go heap the L1 really
// holds stays close to the weighed bytes (the stated overhead: itemOverhead per item).
func TestL1ByteBound(t *testing.T) {
	const limit = 1 << 20
	tests := []struct {
		name     string
		minBody  int
		maxBody  int
		vary     bool
		maxRatio float64 // heap held / weighed bytes
	}{
		{name: "small entries", minBody: 10, maxBody: 500, maxRatio: 1.5},
		{name: "mixed entries", minBody: 100, maxBody: 16 << 10, maxRatio: 1.5},
		{name: "vary variants", minBody: 100, maxBody: 4 << 10, vary: true, maxRatio: 1.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)

			clk := newClock()
			s := newStore(t, cachefilter.StoreConfig{L1MaxBytes: limit}, nil, "", clk, nil)
			r := rand.New(rand.NewPCG(1, 2))
			total := 0
			for i := 0; total < 16*limit; i++ {
				n := tt.minBody + r.IntN(tt.maxBody-tt.minBody)
				path := fmt.Sprintf("/items/%d", i)
				k := primaryKey(tenantA, path)
				e := newEntry(clk.Now(), strings.Repeat("x", n), time.Hour)
				h := map[string]string(nil)
				if tt.vary {
					k = primaryKey(tenantA, fmt.Sprintf("/items/%d", i/4))
					e.Vary = []string{"accept-language"}
					h = map[string]string{"accept-language": fmt.Sprint(i % 4)}
				}
				put(t, s, k, path, h, e)
				total += cachefilter.EntrySize(e)
				if i%1000 == 0 {
					if w, _, _ := s.L1Weight(); w > limit {
						t.Fatalf("after %d bytes put: %d bytes weighed, above the %d bound", total, w, limit)
					}
				}
			}
			weighed, items, sum := s.L1Weight()
			if weighed > limit || sum > limit {
				t.Errorf("weighed %d bytes (items add up to %d), above the %d bound", weighed, sum, limit)
			}
			if weighed < limit/2 {
				t.Errorf("weighed only %d bytes of the %d bound: the L1 evicts too eagerly", weighed, limit)
			}
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			ratio := float64(held) / float64(weighed)
			t.Logf("put %d bytes; L1 holds %d items weighing %d bytes (bound %d); heap grew %d bytes (%.2fx the weight)",
				total, items, weighed, limit, held, ratio)
			if ratio > tt.maxRatio {
				t.Errorf("heap grew %.2fx the weighed bytes, above the stated %.1fx", ratio, tt.maxRatio)
			}
			runtime.KeepAlive(s)
		})
	}
}

// TestL1TooLarge checks that an entry larger than the whole L1 is not kept, and one larger than
// MaxEntryBytes not stored at all.
func TestL1TooLarge(t *testing.T) {
	clk := newClock()
	s := newStore(t, cachefilter.StoreConfig{L1MaxBytes: 64 << 10, MaxEntryBytes: 1 << 20}, nil, "", clk, nil)
	for _, n := range []int{100 << 10, 2 << 20} {
		k := primaryKey(tenantA, fmt.Sprint(n))
		put(t, s, k, "/", nil, newEntry(clk.Now(), strings.Repeat("x", n), time.Hour))
		if w, _, _ := s.L1Weight(); w > 64<<10 {
			t.Errorf("entry of %d bytes: L1 weighs %d", n, w)
		}
		if e, layer, err := s.Lookup(context.Background(), k, variants(k, nil)); e != nil || err != nil {
			t.Errorf("entry of %d bytes: Lookup = %v, %v, %v; want a miss", n, layer, err, e != nil)
		}
	}
}
