package cachefilter

import (
	"hash/maphash"
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
// key; marks of responses without Vary keep no path, so a prefix purge clears all of its
// tenant's (a lookup each, the price of keeping them free of pointers: plainMark).

// maxPassVariants bounds the variants one primary's mark remembers.
const maxPassVariants = 8

// passMark is the mark of a response that named Vary fields, by primary key: the variants it
// covers, and the path a prefix purge matches.
type passMark struct {
	until    int64 // Unix ns
	told     int64 // until of the mark last announced to the other replicas, Unix ns; 0: never
	path     string
	vary     []string // the response's Vary names: the variants are keyed by them
	variants []string // variant keys marked
}

// plainMark is the mark of a response without Vary, the common case: a replica serving
// uncacheable traffic holds up to PassMaxKeys of them, so they hold no pointer (neither does
// their key, passKey) and the garbage collector never traces them. Times in Unix ns.
type plainMark struct{ until, told int64 }

// passKey names a plain mark: 128 bits of hash of the primary key, 64 of its tenant tag. Two
// keys sharing one can only make a request skip a lookup, or lose a mark: what a mark can cost
// anyway, never a wrong answer.
type passKey struct{ tenant, k1, k2 uint64 }

// passSet holds the marks of one replica. Safe for concurrent use; a nil *passSet holds none.
type passSet struct {
	ttl          time.Duration
	max          int
	seed1, seed2 maphash.Seed

	mu     sync.Mutex // guards plain and varied; a primary key is in at most one of them
	plain  map[passKey]plainMark
	varied map[string]passMark
}

func newPassSet(ttl time.Duration, max int) *passSet {
	if ttl <= 0 || max <= 0 {
		return nil
	}
	return &passSet{ttl: ttl, max: max, seed1: maphash.MakeSeed(), seed2: maphash.MakeSeed(),
		plain: map[passKey]plainMark{}, varied: map[string]passMark{}}
}

func (p *passSet) key(primary string) passKey {
	tenant, _, _ := strings.Cut(primary, ":")
	return p.tenantKey(tenant, primary)
}

func (p *passSet) tenantKey(tenant, primary string) passKey {
	return passKey{maphash.String(p.seed1, tenant), maphash.String(p.seed1, primary), maphash.String(p.seed2, primary)}
}

// passing reports whether the request with primary key primary and header reqHeader is marked.
func (p *passSet) passing(primary string, reqHeader header.List, now time.Time) bool {
	if p == nil {
		return false
	}
	k, t := p.key(primary), now.UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	if m, ok := p.plain[k]; ok {
		if t >= m.until {
			delete(p.plain, k)
			return false
		}
		return true
	}
	m, ok := p.varied[primary]
	if !ok {
		return false
	}
	if t >= m.until {
		delete(p.varied, primary)
		return false
	}
	// Under the lock, variant keys included: add changes variants in place.
	return slices.Contains(m.variants, VariantKey(primary, m.vary, reqHeader))
}

// add marks primary (the variant key computed: the form marks travel in between replicas)
// until until. It reports whether to tell the other replicas: only for a key marked again (a
// URL requested once, as most uncacheable URLs with ids in them are, is not worth a message to
// every replica), and then again once half of PassTTL has passed since the last time.
func (p *passSet) add(primary, path string, vary []string, variant string, until time.Time) (tell bool) {
	if p == nil {
		return false
	}
	k, u := p.key(primary), until.UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(vary) == 0 {
		delete(p.varied, primary)
		m, ok := p.plain[k]
		if ok && time.Duration(u-m.told) > p.ttl/2 {
			tell = true
			m.told = u
		}
		if !ok && len(p.plain)+len(p.varied) >= p.max {
			p.evictLocked(until.Add(-p.ttl).UnixNano())
		}
		m.until = u
		p.plain[k] = m
		return tell
	}
	delete(p.plain, k)
	m, ok := p.varied[primary]
	if ok && slices.Equal(m.vary, vary) && time.Duration(u-m.told) > p.ttl/2 {
		tell = true
		m.told = u
	}
	if !ok || !slices.Equal(m.vary, vary) {
		if !ok && len(p.plain)+len(p.varied) >= p.max {
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
	p.varied[primary] = m
	return tell
}

// evictLocked makes room for one mark: the expired ones among a few go, else an arbitrary one
// (map order). now is in Unix ns.
func (p *passSet) evictLocked(now int64) {
	n := 0
	for k, m := range p.plain {
		if now >= m.until {
			delete(p.plain, k)
		}
		if n++; n == 8 {
			break
		}
	}
	for k, m := range p.varied {
		if now >= m.until {
			delete(p.varied, k)
		}
		if n++; n == 16 {
			break
		}
	}
	if len(p.plain)+len(p.varied) < p.max {
		return
	}
	for k := range p.plain {
		delete(p.plain, k)
		return
	}
	for k := range p.varied {
		delete(p.varied, k)
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
		delete(p.plain, p.key(k))
		delete(p.varied, k)
	}
	p.mu.Unlock()
}

// dropTenant forgets the marks of tenant whose path starts with prefix ("" for all). Plain
// marks keep no path: a prefix drops all of the tenant's, which costs each of its marked keys
// one lookup.
func (p *passSet) dropTenant(tenant, prefix string) {
	if p == nil {
		return
	}
	t := p.tenantKey(tenant, "").tenant
	p.mu.Lock()
	for k := range p.plain {
		if k.tenant == t {
			delete(p.plain, k)
		}
	}
	for k, m := range p.varied {
		if strings.HasPrefix(k, tenant+":") && strings.HasPrefix(m.path, prefix) {
			delete(p.varied, k)
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
	return len(p.plain) + len(p.varied)
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
// purge clears the whole tenant's, and a prefix purge all its marks without Vary) and, for
// exact keys, their presence slots (presence.go).
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
