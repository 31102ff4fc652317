package cachefilter

import "github.com/sluicehq/sluice/cachefilter/httpcache"

// Hooks for the external tests of the Store (package cachefilter_test). Methods on *Store, so
// that they cannot collide with the names of other tests of this package.

// Trusted reports whether the Store serves its L1 without asking Redis.
func (s *Store) Trusted() bool { return s.l1Trusted() }

// InL1 reports whether the L1 would serve an entry for primary's variant key variant now,
// without touching Redis or counting a request.
func (s *Store) InL1(primary, variant string) bool {
	now := s.now()
	rec := s.l1.vary(primary, now)
	return rec != nil && s.l1.entry(rec, variant, now) != nil
}

// L1Weight settles the L1's pending maintenance and returns its weighed bytes, its items and the
// sum of their weights.
func (s *Store) L1Weight() (weighed uint64, items int, sum uint64) {
	s.l1.c.CleanUp()
	for _, it := range s.l1.c.All() {
		items++
		sum += uint64(it.weight)
	}
	return s.l1.bytes(), items, sum
}

// ItemWeight is the L1 weight of an entry without Vary stored under primary and path.
func ItemWeight(primary, path string, e *httpcache.Entry) uint32 {
	return itemWeight(primary, primary, path, e)
}

// Flights returns the collapsed misses in progress.
func (s *Store) Flights() int { return s.collapse.size() }

// ReplicaName returns this Store's registry name prefix.
func (s *Store) ReplicaName() string { return s.replica }

// EntrySize is entrySize for the external tests.
func EntrySize(e *httpcache.Entry) int { return entrySize(e) }

// Announced reports whether a lookup of primary would ask Redis: the presence filter is not
// authoritative, or it has heard of the key (presence.go).
func (s *Store) Announced(primary string) bool { return !s.absentFromL2(primary, s.now()) }

// PassMarks returns the number of hit-for-pass marks held (pass.go).
func (s *Store) PassMarks() int { return s.passes.len() }
