package cachefilter

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxPending bounds the invalidations kept for retry. Past it, a tenant's pending invalidations
// fold into one purge of the whole tenant; when even that finds no room the invalidation is
// dropped, counted (result "dropped") and logged.
const maxPending = 4096

// pendingRetry is how often Run retries pending invalidations.
const pendingRetry = 250 * time.Millisecond

// pendingInv is an invalidation whose Redis part failed: Run retries it until Redis takes it,
// and meanwhile this replica reads the L2 entries it covers as misses. It is dropped after
// MaxTTL, when every entry stored before it has expired from Redis anyway.
type pendingInv struct {
	inv     *invalidation
	inRedis func(context.Context) error
	keys    map[string]struct{} // kindKeys: the primary keys
	expires time.Time
}

// pendingSet holds the pending invalidations of a Store. It is safe for concurrent use; the zero
// value is empty and ready.
type pendingSet struct {
	n    atomic.Int32 // len(list), read without mu on every L2 hit
	mu   sync.Mutex   // guards list
	list []*pendingInv
}

// add keeps inv for retry. It reports false when there is no room even after folding the
// tenant's pending invalidations into one tenant purge (tenantPurge builds it).
func (p *pendingSet) add(inv *invalidation, inRedis func(context.Context) error, expires time.Time,
	tenantPurge func(tenant string) (*invalidation, func(context.Context) error)) bool {
	pi := &pendingInv{inv: inv, inRedis: inRedis, expires: expires}
	if inv.kind == kindKeys {
		pi.keys = make(map[string]struct{}, len(inv.args))
		for _, k := range inv.args {
			pi.keys[k] = struct{}{}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	defer func() { p.n.Store(int32(len(p.list))) }()
	if len(p.list) < maxPending {
		p.list = append(p.list, pi)
		return true
	}
	// Full: fold this tenant's invalidations (a key invalidation may name several tenants; the
	// first decides) into one purge of the tenant, which covers them all.
	tenant := inv.tenant
	if inv.kind == kindKeys {
		if len(inv.args) == 0 {
			return true
		}
		t, _, err := splitKey(inv.args[0])
		if err != nil {
			return false
		}
		tenant = t
	}
	kept := p.list[:0]
	folded := false
	for _, q := range p.list {
		if q.tenantOnly(tenant) {
			folded = true
			continue
		}
		kept = append(kept, q)
	}
	clear(p.list[len(kept):])
	p.list = kept
	if !folded && len(p.list) >= maxPending {
		return false
	}
	tinv, tRedis := tenantPurge(tenant)
	p.list = append(p.list, &pendingInv{inv: tinv, inRedis: tRedis, expires: expires})
	return true
}

// tenantOnly reports whether q concerns tenant alone.
func (q *pendingInv) tenantOnly(tenant string) bool {
	if q.inv.kind != kindKeys {
		return q.inv.tenant == tenant
	}
	for k := range q.keys {
		if t, _, err := splitKey(k); err != nil || t != tenant {
			return false
		}
	}
	return true
}

// covers reports whether a pending invalidation covers the entry of primary (tenant's, stored
// for path, with tags).
func (p *pendingSet) covers(tenant, primary, path string, tags []string) bool {
	if p.n.Load() == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, q := range p.list {
		switch q.inv.kind {
		case kindKeys:
			if _, ok := q.keys[primary]; ok {
				return true
			}
		case kindTag:
			if q.inv.tenant == tenant && slices.Contains(tags, q.inv.args[0]) {
				return true
			}
		case kindPrefix:
			if q.inv.tenant == tenant && strings.HasPrefix(path, q.inv.args[0]) {
				return true
			}
		case kindTenant:
			if q.inv.tenant == tenant {
				return true
			}
		}
	}
	return false
}

// snapshot returns the pending invalidations, dropping those past their expiry.
func (p *pendingSet) snapshot(now time.Time) []*pendingInv {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = slices.DeleteFunc(p.list, func(q *pendingInv) bool { return !now.Before(q.expires) })
	p.n.Store(int32(len(p.list)))
	return slices.Clone(p.list)
}

// done removes q.
func (p *pendingSet) done(q *pendingInv) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = slices.DeleteFunc(p.list, func(x *pendingInv) bool { return x == q })
	p.n.Store(int32(len(p.list)))
}

// keepPending is purge's fallback when Redis did not take an invalidation.
func (s *Store) keepPending(inv *invalidation, inRedis func(context.Context) error) {
	ok := s.pending.add(inv, inRedis, s.now().Add(s.cfg.MaxTTL), func(tenant string) (*invalidation, func(context.Context) error) {
		return &invalidation{kind: kindTenant, tenant: tenant}, func(ctx context.Context) error {
			_, err := s.l2.purgeTenant(ctx, tenant)
			return err
		}
	})
	if !ok {
		s.metrics.invalidations.WithLabelValues(inv.label(), resultDropped).Inc()
		s.log.Error("cache invalidation dropped: too many pending invalidations; entries it covers may be served until they expire",
			"kind", inv.label(), "pending", maxPending)
	}
}

// retryPending is Run's worker that retries pending invalidations until Redis takes them: the
// deletion, then the broadcast (a replica whose lease ran out while Redis was unreachable has
// cleared its L1 already; the broadcast reaches those that kept theirs).
func (s *Store) retryPending(ctx context.Context) {
	t := time.NewTicker(pendingRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, q := range s.pending.snapshot(s.now()) {
			err := s.call(ctx, opPurge, s.cfg.PurgeTimeout, q.inRedis)
			if err == nil {
				bctx, cancel := context.WithTimeout(ctx, s.cfg.PurgeTimeout)
				err = s.broadcast(bctx, q.inv)
				cancel()
				if errors.Is(err, ErrUnconfirmed) {
					err = nil // published: the replicas not acknowledging are those purge cannot wait for either
				}
			}
			if err != nil {
				break // Redis still refuses: wait for the next tick
			}
			s.pending.done(q)
			s.metrics.invalidations.WithLabelValues(q.inv.label(), resultRetried).Inc()
		}
	}
}
