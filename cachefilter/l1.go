package cachefilter

import (
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/sluicehq/sluice/cachefilter/httpcache"
)

// itemOverhead is the L1 bookkeeping of one item, in bytes, weighed on top of what Entry.Size
// counts and the key strings: otter's node, the item struct and the hash table slot. Measured by
// TestL1ByteBound against the Go heap.
const itemOverhead = 256

// l1 is the in-process layer: an otter cache (W-TinyLFU, bounded in bytes) of records and
// entries, and the invalidation epochs that keep a fill racing a purge from surviving it. It is
// safe for concurrent use. A nil c means the L1 is disabled: every method is then a no-op.
//
// Two kinds of items share the cache. The record of a primary key, under recordKey(primary),
// holds its Vary names and an id; when there are no names it also holds the one entry (the
// common case: one item, one hash lookup per hit). With Vary names, each variant's entry is an
// item of its own under entryKey(variant), served only under a record with the same id:
// dropping a record (an invalidation) makes every entry filled under it unreachable, and a
// record created later gets a new id. Unreachable entries are never hit again, so W-TinyLFU
// evicts them first, or they expire.
//
// Fills race invalidations: a lookup may read an entry from Redis just before a purge deletes it,
// and store it in the L1 just after the purge's invalidation was applied here. So every fill
// marks the Store's race log (and the L1's clear counter) before it reads (or builds) what it
// stores, and after storing asks whether an invalidation covering it was logged since (its
// discard function), else it removes what it stored. An invalidation is logged first and then
// removes matching items: whichever runs second sees the other.
type l1 struct {
	c       *otter.Cache[l1Key, *item] // nil: L1 disabled
	cleared atomic.Uint64              // moved by clear: every fill in flight is discarded
}

// l1Key is an item's key: a record (kindRecord, primary key) or an entry (kindEntry, variant
// key). A struct, so that lookups build no string.
type l1Key struct {
	kind byte
	key  string
}

const (
	kindRecord byte = 'v'
	kindEntry  byte = 'e'
)

func recordKey(primary string) l1Key { return l1Key{kindRecord, primary} }
func entryKey(variant string) l1Key  { return l1Key{kindEntry, variant} }

// item is one L1 value, immutable once stored: a record (key recordKey(primary); its entry, if any, is
// the entry of variant) or a variant's entry (key entryKey(variant)).
type item struct {
	tenant  string
	primary string
	path    string
	expires time.Time     // on the store's clock; the item is not served from then on
	ttl     time.Duration // otter's expiry, on the wall clock, which frees the memory
	weight  uint32

	names   []string // a record's Vary names
	id      uint64   // a record's id, or the id of the record an entry was stored under
	variant string   // the variant key of entry, in a record
	entry   *httpcache.Entry
}

// newL1 returns an L1 bounded to maxBytes, or a disabled one if maxBytes is negative. onEvict
// is called (under otter's locks: it must be quick) for every item evicted for size.
func newL1(maxBytes int64, onEvict func()) (*l1, error) {
	l := &l1{}
	if maxBytes < 0 {
		return l, nil
	}
	c, err := otter.New(&otter.Options[l1Key, *item]{
		MaximumWeight: uint64(maxBytes),
		Weigher:       func(_ l1Key, it *item) uint32 { return it.weight },
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[l1Key, *item]) time.Duration {
			return e.Value.ttl
		}),
		OnAtomicDeletion: func(e otter.DeletionEvent[l1Key, *item]) {
			if e.Cause == otter.CauseOverflow {
				onEvict()
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cachefilter: l1: %w", err)
	}
	l.c = c
	return l, nil
}

// clears returns how often the L1 was cleared: a fill that started before a clear is discarded.
func (l *l1) clears() uint64 { return l.cleared.Load() }

// vary returns the record of primary, if present and not expired at now.
func (l *l1) vary(primary string, now time.Time) *item {
	if l.c == nil {
		return nil
	}
	it, ok := l.c.GetIfPresent(recordKey(primary))
	if !ok || !now.Before(it.expires) {
		return nil
	}
	return it
}

// entry returns the entry of variant under the record rec, if present and not expired at now.
func (l *l1) entry(rec *item, variant string, now time.Time) *httpcache.Entry {
	if rec.entry != nil && rec.variant == variant {
		return rec.entry
	}
	if l.c == nil || len(rec.names) == 0 {
		return nil
	}
	it, ok := l.c.GetIfPresent(entryKey(variant))
	if !ok || it.entry == nil || it.id != rec.id || !now.Before(it.expires) {
		return nil
	}
	return it.entry
}

// itemWeight is the weight of a record holding e (names empty), or of a variant's entry item.
func itemWeight(primary, variant, path string, e *httpcache.Entry) uint32 {
	return weigh(itemOverhead + len(primary) + len(variant) + len(path) + entrySize(e))
}

// fill stores e, the entry of variant, and the record of primary (tenant, path, names, id), both
// until expires. discard reports, after the items are stored, whether an invalidation covering
// them was applied since the data was read (or the L1 cleared); then fill removes what it stored.
func (l *l1) fill(discard func() bool, tenant, primary, path string, names []string, id uint64, variant string, e *httpcache.Entry, now, expires time.Time) {
	if l.c == nil {
		return
	}
	ttl := expires.Sub(now)
	if ttl <= 0 {
		return
	}
	if len(names) == 0 {
		l.c.Set(recordKey(primary), &item{
			tenant: tenant, primary: primary, path: path, expires: expires, ttl: ttl,
			weight: itemWeight(primary, variant, path, e), id: id, variant: variant, entry: e,
		})
		if discard() {
			l.c.Invalidate(recordKey(primary))
		}
		return
	}
	if rec := l.vary(primary, now); rec == nil || rec.id != id || !slices.Equal(rec.names, names) || rec.expires.Before(expires) {
		l.c.Set(recordKey(primary), &item{
			tenant: tenant, primary: primary, path: path, expires: expires, ttl: ttl,
			weight: weigh(itemOverhead + 2*len(primary) + len(path) + namesSize(names)), names: names, id: id,
		})
	}
	l.c.Set(entryKey(variant), &item{
		tenant: tenant, primary: primary, path: path, expires: expires, ttl: ttl,
		weight: itemWeight("", variant, path, e), id: id, entry: e,
	})
	if discard() {
		l.c.Invalidate(recordKey(primary))
		l.c.Invalidate(entryKey(variant))
	}
}

// dropKeys applies an invalidation of primary keys: their records go, and with them every entry
// stored under them (inline, or unreachable by id).
func (l *l1) dropKeys(primaries []string) {
	if l.c == nil {
		return
	}
	for _, p := range primaries {
		l.c.Invalidate(recordKey(p))
	}
}

// dropMatching applies an invalidation within tenant: every item for which match is true goes,
// with the vary records of their primary keys. It walks the whole L1.
func (l *l1) dropMatching(tenant string, match func(*item) bool) int {
	if l.c == nil {
		return 0
	}
	var keys []l1Key
	primaries := map[string]bool{}
	for k, it := range l.c.All() {
		if it.tenant == tenant && match(it) {
			keys = append(keys, k)
			primaries[it.primary] = true
		}
	}
	for _, k := range keys {
		l.c.Invalidate(k)
	}
	for p := range primaries {
		l.c.Invalidate(recordKey(p))
	}
	return len(keys)
}

// clear drops everything and discards every fill in flight.
func (l *l1) clear() {
	if l.c == nil {
		return
	}
	l.cleared.Add(1)
	l.c.InvalidateAll()
}

func (l *l1) bytes() uint64 {
	if l.c == nil {
		return 0
	}
	return l.c.WeightedSize()
}

func (l *l1) len() int {
	if l.c == nil {
		return 0
	}
	return l.c.EstimatedSize()
}

func (l *l1) close() {
	if l.c != nil {
		l.c.StopAllGoroutines()
	}
}

func namesSize(names []string) int {
	n := 0
	for _, s := range names {
		n += 16 + len(s)
	}
	return n
}

func weigh(n int) uint32 { return uint32(min(n, math.MaxUint32)) }

// entrySize is an entry's approximate memory footprint in bytes, used to
// bound the L1 in bytes rather than entries (and to refuse oversize
// entries, StoreConfig.MaxEntryBytes).
func entrySize(e *httpcache.Entry) int {
	n := 160 + len(e.Body) + len(e.ETag) + len(e.LastModified)
	for _, h := range e.Header {
		n += 32 + len(h.Name) + len(h.Value)
	}
	for _, v := range e.Vary {
		n += 16 + len(v)
	}
	for _, t := range e.Tags {
		n += 16 + len(t)
	}
	return n
}
