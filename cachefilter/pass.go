package cachefilter

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/header"
)

// Hit-for-pass (Varnish's hit-for-miss): when a response turns out not storable (no-store,
// private, no freshness, Set-Cookie, too large, …), the Store remembers its key for
// StoreConfig.PassTTL. Requests for that key then skip the lookup (L1 and Redis) and the
// collapse, and go upstream at once, each on its own: collapsing them would only queue requests
// behind one whose answer cannot be shared. Their responses are still evaluated, so a key whose
// response becomes storable is stored at the first such response, which clears the mark: the
// bound on "cacheable again but not cached" is one request per replica, or PassTTL at most.
//
// A mark is keyed as an entry is: by primary key (which carries the tenant) and, when the
// response named Vary fields, by the variant those fields select, so that one user's private
// answer (Vary: x-sluice-user) does not make another user's requests pass, and nothing of one
// tenant touches another's. A mark never serves anything: at worst a request goes upstream that
// could have been a hit, which is what a miss costs anyway.
//
// Marks are shared with the other replicas through the presence channel (presence.go), best
// effort: one lost costs a lookup. Invalidations clear them (Store.apply), as does a Put of the
// key.

// maxPassVariants bounds the variants one primary's mark remembers.
const maxPassVariants = 8

// passMark is one primary key's mark. Held by value in the set's map, with times as Unix
// nanoseconds: a replica serving uncacheable traffic keeps up to PassMaxKeys of them, and
// each pointer in them is work for every garbage collection.
type passMark struct {
	until    int64 // Unix ns
	told     int64 // until of the mark last announced to the other replicas, Unix ns; 0: never
	path     string
	vary     []string // the response's Vary names: the variants are keyed by them
	variants []string // variant keys marked; empty when vary is
}

// passSet holds the marks of one replica. Safe for concurrent use; a nil *passSet holds none.
type passSet struct {
	ttl time.Duration
	max int

	mu    sync.Mutex // guards marks
	marks map[string]passMark
}

func newPassSet(ttl time.Duration, max int) *passSet {
	if ttl <= 0 || max <= 0 {
		return nil
	}
	return &passSet{ttl: ttl, max: max, marks: map[string]passMark{}}
}

// passing reports whether the request with primary key primary and header reqHeader is marked.
func (p *passSet) passing(primary string, reqHeader header.List, now time.Time) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	m, ok := p.marks[primary]
	if !ok {
		p.mu.Unlock()
		return false
	}
	if now.UnixNano() >= m.until {
		delete(p.marks, primary)
		p.mu.Unlock()
		return false
	}
	// Under the lock, variant keys included: add changes variants in place.
	defer p.mu.Unlock()
	return len(m.vary) == 0 || slices.Contains(m.variants, VariantKey(primary, m.vary, reqHeader))
}

// add marks primary (the variant key computed: the form marks travel in between replicas)
// until until. It reports whether to tell the other replicas: only for a key marked again (a
// URL requested once, as most uncacheable URLs with ids in them are, is not worth a message to
// every replica), and then again once half of PassTTL has passed since the last time.
func (p *passSet) add(primary, path string, vary []string, variant string, until time.Time) (tell bool) {
	if p == nil {
		return false
	}
	u := until.UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.marks[primary]
	if ok && slices.Equal(m.vary, vary) && time.Duration(u-m.told) > p.ttl/2 {
		tell = true
		m.told = u
	}
	if !ok || !slices.Equal(m.vary, vary) {
		if !ok && len(p.marks) >= p.max {
			p.evictLocked(until.Add(-p.ttl).UnixNano())
		}
		// The path is cloned: it is a substring of the request's header block, which the
		// mark would otherwise keep alive for PassTTL.
		m = passMark{path: strings.Clone(path), vary: slices.Clone(vary)}
	}
	m.until = u
	if variant != "" && !slices.Contains(m.variants, variant) {
		if len(m.variants) == maxPassVariants {
			m.variants = slices.Delete(m.variants, 0, 1)
		}
		m.variants = append(m.variants, variant)
	}
	p.marks[primary] = m
	return tell
}

// evictLocked makes room for one mark: the expired ones among a few go, else an arbitrary one
// (map order). now is in Unix ns.
func (p *passSet) evictLocked(now int64) {
	n := 0
	for k, m := range p.marks {
		if now >= m.until {
			delete(p.marks, k)
		}
		if n++; n == 8 {
			break
		}
	}
	if len(p.marks) < p.max {
		return
	}
	for k := range p.marks {
		delete(p.marks, k)
		return
	}
}

// drop forgets the marks of primaries.
func (p *passSet) drop(primaries ...string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	for _, k := range primaries {
		delete(p.marks, k)
	}
	p.mu.Unlock()
}

// dropTenant forgets the marks of tenant whose path starts with prefix ("" for all).
func (p *passSet) dropTenant(tenant, prefix string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	for k, m := range p.marks {
		if strings.HasPrefix(k, tenant+":") && strings.HasPrefix(m.path, prefix) {
			delete(p.marks, k)
		}
	}
	p.mu.Unlock()
}

// len returns the number of marks.
func (p *passSet) len() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.marks)
}

// Passing reports whether requests for primary (with reqHeader, for a mark keyed by variant) are
// marked hit-for-pass: their responses were lately not storable, so the stage skips the lookup
// and the collapse. See pass.go.
func (s *Store) Passing(primary string, reqHeader header.List, now time.Time) bool {
	return s.passes.passing(primary, reqHeader, now)
}

// MarkPass marks primary hit-for-pass for StoreConfig.PassTTL after a response that is not
// storable; vary are that response's Vary names (the mark covers the variant reqHeader selects),
// path the request's. The mark is shared with the other replicas, best effort.
func (s *Store) MarkPass(primary, path string, vary []string, reqHeader header.List, now time.Time) {
	if s.passes == nil {
		return
	}
	if _, _, err := splitKey(primary); err != nil {
		return
	}
	variant := ""
	if len(vary) > 0 {
		variant = VariantKey(primary, vary, reqHeader)
	}
	until := now.Add(s.cfg.PassTTL)
	if s.passes.add(primary, path, vary, variant, until) {
		s.announce(announcement{kind: announcePass, primary: primary, path: path, vary: vary, variant: variant, until: until})
	}
}

// dropHints ends what an invalidation makes wrong of the hints that skip work: the hit-for-pass
// marks it covers (a write may have made the resource storable; marks carry no tags, so a tag
// purge clears the whole tenant's) and, for exact keys, their presence slots (presence.go).
func (s *Store) dropHints(inv *invalidation) {
	switch inv.kind {
	case kindKeys:
		s.passes.drop(inv.args...)
		s.presence.forget(inv.args) // deleted from Redis before inv was applied (presence.go)
	case kindPrefix:
		s.passes.dropTenant(inv.tenant, inv.args[0])
	default:
		s.passes.dropTenant(inv.tenant, "")
	}
}

// passDecision is the decision for a request marked hit-for-pass: the miss Evaluate gives
// without an entry (a 504 for only-if-cached).
func (s *Stage) passDecision(req httpcache.Request, now time.Time) httpcache.Decision {
	d := httpcache.Evaluate(req, nil, now)
	if d.Action == httpcache.ActionMiss {
		d.Reason = "hit_for_pass"
	}
	return d
}

// markPass marks st's key hit-for-pass after a response to it that is not storable. Errors
// (5xx) are not marked: they pass by themselves, and the next response may well be storable.
// Nor are 206 and 304, which answer this request's Range or conditionals, not the resource.
func (s *Stage) markPass(st *state, status int, hdr header.List, now time.Time) {
	if status >= 500 || status == 206 || status == 304 || st.primary == "" {
		return
	}
	vary, _, ok := httpcache.ParseVary(hdr)
	if !ok {
		vary = nil
	}
	s.store.MarkPass(st.primary, st.req.Path, vary, st.req.Header, now)
}
