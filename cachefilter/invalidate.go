package cachefilter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/redisconn"
)

// Kinds of invalidation, the first byte of a message after the version.
const (
	kindKeys   byte = 1 // args: primary keys (of any tenants)
	kindTag    byte = 2 // args: one tag
	kindPrefix byte = 3 // args: one path prefix
	kindTenant byte = 4 // no args
)

// messageVersion is the first byte of every invalidation message.
const messageVersion = 1

// invalidation is one purge, as published to every replica.
type invalidation struct {
	kind   byte
	id     string // unique per purge: acknowledgements name it
	origin string // the purging replica, which waits for acknowledgements on its ack channel
	tenant string // for tag, prefix and tenant purges
	args   []string
}

func (inv *invalidation) label() string {
	switch inv.kind {
	case kindKeys:
		return kindKeyLabel
	case kindTag:
		return kindTagLabel
	case kindPrefix:
		return kindPrefixLabel
	}
	return kindTenantLabel
}

func (inv *invalidation) encode() string {
	b := []byte{messageVersion, inv.kind}
	b = appendString(b, inv.id)
	b = appendString(b, inv.origin)
	b = appendString(b, inv.tenant)
	b = appendStrings(b, inv.args)
	return string(b)
}

// maxMessageArgs bounds the keys of one invalidation message.
const maxMessageArgs = 1 << 16

func decodeInvalidation(s string) (*invalidation, error) {
	r := reader{b: []byte(s)}
	if v := r.byte(); v != messageVersion && r.err == nil {
		return nil, fmt.Errorf("%w: message version %d, want %d", ErrCorrupt, v, messageVersion)
	}
	inv := &invalidation{kind: r.byte()}
	inv.id = r.string()
	inv.origin = r.string()
	inv.tenant = r.string()
	inv.args = r.strings(maxMessageArgs)
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the message", ErrCorrupt, len(r.b))
	}
	switch {
	case inv.kind < kindKeys || inv.kind > kindTenant:
		return nil, fmt.Errorf("%w: message kind %d", ErrCorrupt, inv.kind)
	case inv.kind == kindTag || inv.kind == kindPrefix:
		if len(inv.args) != 1 {
			return nil, fmt.Errorf("%w: %d arguments for kind %d", ErrCorrupt, len(inv.args), inv.kind)
		}
	}
	if inv.kind != kindKeys {
		if err := checkTenant(inv.tenant); err != nil {
			return nil, err
		}
	}
	return inv, nil
}

// Invalidate removes the entries of primaryKeys (all their variants), of any tenants, from both
// layers of every replica: the invalidation of RFC 9111 §4.4 after an unsafe request, or a purge
// by exact key. See Store for what is guaranteed when it returns nil.
func (s *Store) Invalidate(ctx context.Context, primaryKeys ...string) error {
	if len(primaryKeys) == 0 {
		return nil
	}
	if len(primaryKeys) > maxMessageArgs {
		return fmt.Errorf("%w: %d keys in one invalidation, at most %d", ErrInvalid, len(primaryKeys), maxMessageArgs)
	}
	byTenant := map[string][]string{}
	for _, k := range primaryKeys {
		tenant, pr, err := splitKey(k)
		if err != nil {
			return err
		}
		byTenant[tenant] = append(byTenant[tenant], pr)
	}
	inv := &invalidation{kind: kindKeys, args: slices.Clone(primaryKeys)}
	return s.purge(ctx, inv, func(ctx context.Context) error {
		for tenant, prs := range byTenant {
			if err := s.l2.purgeKeys(ctx, tenant, prs); err != nil {
				return err
			}
		}
		return nil
	})
}

// PurgeTag removes every entry of tenantTag carrying tag (a surrogate key) from both layers of
// every replica. Entries of other tenants with the same tag stay. See Store for the guarantee.
func (s *Store) PurgeTag(ctx context.Context, tenantTag, tag string) error {
	if err := checkTenant(tenantTag); err != nil {
		return err
	}
	if err := checkTag(tag); err != nil {
		return err
	}
	inv := &invalidation{kind: kindTag, tenant: tenantTag, args: []string{tag}}
	return s.purge(ctx, inv, func(ctx context.Context) error { return s.l2.purgeTag(ctx, tenantTag, tag) })
}

// PurgePrefix removes every entry of tenantTag whose path (as given to Put) starts with
// urlPrefix, byte for byte ("/api/v1/" does not match "/api/v10"; "/api/v1" does), from both
// layers of every replica. See Store for the guarantee.
func (s *Store) PurgePrefix(ctx context.Context, tenantTag, urlPrefix string) error {
	if err := checkTenant(tenantTag); err != nil {
		return err
	}
	if len(urlPrefix) > maxPathBytes || strings.IndexByte(urlPrefix, 0) >= 0 {
		return fmt.Errorf("%w: path prefix of %d bytes (at most %d, no NUL)", ErrInvalid, len(urlPrefix), maxPathBytes)
	}
	inv := &invalidation{kind: kindPrefix, tenant: tenantTag, args: []string{urlPrefix}}
	return s.purge(ctx, inv, func(ctx context.Context) error { return s.l2.purgePrefix(ctx, tenantTag, urlPrefix) })
}

// PurgeTenant removes every entry of tenantTag from both layers of every replica, in O(1) in
// Redis (the tenant's generation moves: the old one is unreachable at once). Run then deletes
// the old generation's keys in the background, in batches (without Run they expire). See Store
// for the guarantee.
func (s *Store) PurgeTenant(ctx context.Context, tenantTag string) error {
	if err := checkTenant(tenantTag); err != nil {
		return err
	}
	inv := &invalidation{kind: kindTenant, tenant: tenantTag}
	var old string
	err := s.purge(ctx, inv, func(ctx context.Context) error {
		var err error
		old, err = s.l2.purgeTenant(ctx, tenantTag)
		return err
	})
	if err == nil && s.l2 != nil {
		select {
		case s.sweeps <- sweep{tenant: tenantTag, gen: old}:
		default: // Run is behind or not running: the old keys expire by themselves
		}
	}
	return err
}

// sweep is an old generation of a tenant, for Run to delete.
type sweep struct{ tenant, gen string }

// sweepOld is Run's worker deleting old generations.
func (s *Store) sweepOld(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case sw := <-s.sweeps:
			_ = s.call(ctx, opPurge, s.cfg.PurgeTimeout, func(ctx context.Context) error {
				return s.l2.sweep(ctx, sw.tenant, sw.gen)
			})
		}
	}
}

// purge runs one invalidation: inRedis deletes from the L2 (skipped without one), then this
// replica's L1 is invalidated, and the invalidation is published and waited for.
func (s *Store) purge(ctx context.Context, inv *invalidation, inRedis func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PurgeTimeout)
	defer cancel()
	// Logged before Redis too: a Put that checked the log before this point and writes Redis
	// after the deletion finds it once its write returns, and undoes the write (Store.put).
	s.races.add(inv)
	var err error
	if s.l2 != nil {
		err = s.call(ctx, opPurge, 0, inRedis)
	}
	// After Redis, so that a local fill that read Redis before the deletion is discarded.
	s.apply(inv)
	if err == nil && s.rdb != nil {
		err = s.broadcast(ctx, inv)
	}
	if err != nil && !errors.Is(err, ErrUnconfirmed) && s.l2 != nil {
		// Not in Redis (or not published): the entries stay there, and other replicas may keep
		// theirs. Run retries it; until then this replica reads what it covers as misses, so a
		// write acknowledged now is not followed by its old version from the L2 (pending.go).
		s.keepPending(inv, inRedis)
	}
	result := resultOK
	switch {
	case errors.Is(err, ErrUnconfirmed):
		result = resultUnconfirmed
	case err != nil:
		result = resultError
	}
	s.metrics.invalidations.WithLabelValues(inv.label(), result).Inc()
	if err != nil {
		return fmt.Errorf("cachefilter: %s invalidation: %w", inv.label(), err)
	}
	return nil
}

// apply invalidates this replica's L1, after logging inv for the fills and puts in flight
// (raceLog).
func (s *Store) apply(inv *invalidation) {
	s.races.add(inv)
	s.dropHints(inv)
	switch inv.kind {
	case kindKeys:
		s.l1.dropKeys(inv.args)
	case kindTag:
		tag := inv.args[0]
		s.l1.dropMatching(inv.tenant, func(it *item) bool { return it.entry != nil && slices.Contains(it.entry.Tags, tag) })
	case kindPrefix:
		prefix := inv.args[0]
		s.l1.dropMatching(inv.tenant, func(it *item) bool { return strings.HasPrefix(it.path, prefix) })
	case kindTenant:
		s.l1.dropMatching(inv.tenant, func(*item) bool { return true })
	}
}

// waiter collects the acknowledgements of one broadcast.
type waiter struct {
	mu     sync.Mutex // guards acked
	acked  map[string]bool
	notify chan struct{} // signalled (capacity 1) after each acknowledgement
}

// broadcast publishes inv and waits until every other replica in the registry acknowledged it
// or left the registry, or until ctx ends (ErrUnconfirmed).
func (s *Store) broadcast(ctx context.Context, inv *invalidation) error {
	inv.id = randomHex(8)
	inv.origin = s.replica
	w := &waiter{acked: map[string]bool{}, notify: make(chan struct{}, 1)}
	s.waitMu.Lock()
	s.waiters[inv.id] = w
	s.waitMu.Unlock()
	defer func() {
		s.waitMu.Lock()
		delete(s.waiters, inv.id)
		s.waitMu.Unlock()
	}()
	msg := inv.encode()
	if err := s.call(ctx, opPublish, 0, func(ctx context.Context) error {
		return s.rdb.Publish(ctx, s.channel, msg).Err()
	}); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	// Read after publishing: a replica registering later PINGs after the publication too.
	pending, err := s.others(ctx)
	if err != nil {
		return err
	}
	poll := time.NewTicker(s.cfg.SubscriptionLease / 4)
	defer poll.Stop()
	for {
		w.mu.Lock()
		for m := range w.acked {
			delete(pending, m)
		}
		w.mu.Unlock()
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-w.notify:
		case <-poll.C:
			// Replicas that left the registry (lease expired, or re-registered after clearing
			// their L1) are not waited for.
			live, err := s.others(ctx)
			if err != nil {
				continue
			}
			for m := range pending {
				if !live[m] {
					delete(pending, m)
				}
			}
		case <-ctx.Done():
			names := make([]string, 0, len(pending))
			for m := range pending {
				names = append(names, m)
			}
			slices.Sort(names)
			return fmt.Errorf("%w: no acknowledgement from %d replica(s) %v within the purge timeout", ErrUnconfirmed, len(names), names)
		}
	}
}

// others returns the registry's live members that are not this replica.
func (s *Store) others(ctx context.Context) (map[string]bool, error) {
	var members []string
	err := s.call(ctx, opRegistry, 0, func(ctx context.Context) error {
		var err error
		members, err = s.redisKeys.members(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read replica registry: %w", err)
	}
	set := make(map[string]bool, len(members))
	for _, m := range members {
		if !strings.HasPrefix(m, s.replica+".") {
			set[m] = true
		}
	}
	return set, nil
}

// member returns the registry name of this replica's incarnation inc.
func (s *Store) member(inc uint64) string { return s.replica + "." + strconv.FormatUint(inc, 10) }

// l1Trusted reports whether the L1 may be served without asking Redis: always without a Redis
// client, else while this replica holds its lease (see Store).
func (s *Store) l1Trusted() bool {
	if s.rdb == nil || s.cfg.SoleReplica {
		return true
	}
	u := s.trustUntil.Load()
	return u != 0 && int64(time.Since(s.start)) < u
}

// distrust ends the lease at once.
func (s *Store) distrust() {
	s.errSeq.Add(1)
	s.trustUntil.Store(0)
}

// Run receives invalidations from other replicas and applies them to the L1, keeps this
// replica's lease (see Store), counts hot keys in Redis and deletes the keys of purged tenant
// generations, until ctx ends; then it leaves the
// registry and returns nil. Without a Redis client it only waits for ctx. It returns an error if
// called while already running.
func (s *Store) Run(ctx context.Context) error {
	if s.rdb == nil {
		<-ctx.Done()
		return nil
	}
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("cachefilter: Run is already running")
	}
	defer s.running.Store(false)
	// A failed first subscription is retried by Receive, as is every lost one.
	ps := s.rdb.Subscribe(ctx, s.subscriptions()...)
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { s.heartbeat(ctx, ps) })
	wg.Go(func() { s.countHot(ctx) })
	wg.Go(func() { s.sweepOld(ctx) })
	wg.Go(func() { s.retryPending(ctx) })
	wg.Go(func() { s.publishAnnouncements(ctx) })
	wg.Go(func() { s.scanPresence(ctx) })
	s.receive(ctx, ps)
	wg.Wait()
	_ = ps.Close()
	return nil
}

// receive reads the subscription until ctx ends.
func (s *Store) receive(ctx context.Context, ps *redis.PubSub) {
	backoff := time.Duration(0)
	for {
		msg, err := ps.ReceiveTimeout(ctx, s.cfg.SubscriptionLease)
		if ctx.Err() != nil {
			s.presence.lost()
			s.distrust()
			return
		}
		if err != nil {
			if redisconn.IsTimeout(err) {
				continue // idle: the heartbeat decides whether the connection is alive
			}
			s.presence.lost()
			s.distrust()
			s.metrics.redisErrors.WithLabelValues(opSubscribe).Inc()
			s.logRedis(opSubscribe, err)
			// The next Receive reconnects and subscribes again; do not spin on a refused dial.
			backoff = min(max(2*backoff, 10*time.Millisecond), time.Second)
			select {
			case <-ctx.Done():
				s.distrust()
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == s.channel {
				s.subscribed()
			}
			if m.Kind == "subscribe" && m.Channel == s.presenceChannel() {
				s.presence.confirmed()
			}
		case *redis.Message:
			switch m.Channel {
			case s.channel:
				s.received(ctx, m.Payload)
			case s.ackChannel:
				s.acknowledged(m.Payload)
			case s.presenceChannel():
				s.receivedAnnouncements(m.Payload)
			}
		case *redis.Pong:
			select {
			case s.pongs <- m.Payload:
			default:
			}
		}
	}
}

// subscribed handles a (re)established subscription: invalidations published while it was down
// are lost, so the L1 is cleared, under a new incarnation that the heartbeat registers.
func (s *Store) subscribed() {
	s.trustUntil.Store(0)
	if !s.cfg.SoleReplica {
		s.l1.clear()
	}
	s.incarnation.Add(1)
	select {
	case s.kick <- struct{}{}: // register the new incarnation now
	default:
	}
}

// received applies another replica's invalidation and acknowledges it.
func (s *Store) received(ctx context.Context, payload string) {
	inv, err := decodeInvalidation(payload)
	if err != nil {
		s.metrics.redisErrors.WithLabelValues(opDecode).Inc()
		s.logRedis(opDecode, fmt.Errorf("invalidation message: %w", err))
		return
	}
	if inv.origin == s.replica {
		return // applied before publishing
	}
	s.apply(inv)
	s.metrics.invalidations.WithLabelValues(inv.label(), resultApplied).Inc()
	ack := inv.id + " " + s.member(s.incarnation.Load())
	actx, cancel := context.WithTimeout(ctx, s.cfg.SubscriptionLease/2)
	defer cancel()
	// Not through the breaker: a purger is waiting, and this is one call per purge.
	if err := s.rdb.Publish(actx, s.channel+":ack:"+inv.origin, ack).Err(); err != nil {
		s.metrics.redisErrors.WithLabelValues(opAck).Inc()
		s.logRedis(opAck, err)
	}
}

// acknowledged records another replica's acknowledgement of one of this replica's purges.
func (s *Store) acknowledged(payload string) {
	id, member, ok := strings.Cut(payload, " ")
	if !ok {
		return
	}
	s.waitMu.Lock()
	w := s.waiters[id]
	s.waitMu.Unlock()
	if w == nil {
		return // too late: that purge returned
	}
	w.mu.Lock()
	w.acked[member] = true
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// heartbeat renews this replica's lease every SubscriptionLease/4 until ctx ends, then leaves
// the registry. A round registers the current incarnation (on Redis's clock), then PINGs through
// the subscription; the PONG proves that every invalidation published before it was applied
// (messages are handled in order), so the L1 is trusted until a lease after the round started,
// less a tenth for clock-rate differences. A round without its PONG ends the lease and leaves
// the registry, so purgers stop waiting for this replica.
func (s *Store) heartbeat(ctx context.Context, ps *redis.PubSub) {
	lease := s.cfg.SubscriptionLease
	tick := time.NewTicker(lease / 4)
	defer tick.Stop()
	registered := "" // the member last written to the registry
	reg := s.redisKeys
	var round uint64
	for {
		if inc := s.incarnation.Load(); inc > 0 {
			round++
			member := s.member(inc)
			seq := s.errSeq.Load()
			anchor := time.Since(s.start)
			old := ""
			if registered != member {
				old = registered
			}
			err := s.call(ctx, opRegistry, lease/4, func(ctx context.Context) error {
				return reg.register(ctx, member, old, lease.Milliseconds())
			})
			if err == nil {
				registered = member
				payload := "hb " + member + " " + strconv.FormatUint(round, 10)
				if s.ping(ctx, ps, payload, lease/4) && s.incarnation.Load() == inc && s.errSeq.Load() == seq {
					s.trustUntil.Store(int64(anchor + lease*9/10))
				} else if ctx.Err() == nil && s.incarnation.Load() == inc {
					s.distrust()
					s.leave(ctx, reg, registered)
					registered = ""
				}
			}
		}
		select {
		case <-ctx.Done():
			s.distrust()
			if registered != "" {
				// The Run context is gone: leave with a fresh, short one.
				lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lease/4)
				s.leave(lctx, reg, registered)
				cancel()
			}
			return
		case <-tick.C:
		case <-s.kick:
		}
	}
}

// ping sends payload through the subscription and waits up to timeout for its PONG.
func (s *Store) ping(ctx context.Context, ps *redis.PubSub, payload string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := ps.Ping(ctx, payload); err != nil {
		return false
	}
	for {
		select {
		case p := <-s.pongs:
			if p == payload {
				return true
			}
		case <-ctx.Done():
			return false
		}
	}
}

// leave removes member from the registry (after the lease was ended).
func (s *Store) leave(ctx context.Context, reg *l2, member string) {
	if member == "" {
		return
	}
	_ = s.call(ctx, opRegistry, s.cfg.SubscriptionLease/4, func(ctx context.Context) error {
		return reg.deregister(ctx, member)
	})
}
