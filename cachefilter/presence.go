package cachefilter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The presence filter: no Redis round trip for keys that are not in the L2.
//
// Each replica keeps, per slot of a fixed array indexed by a hash of the primary key, the time
// until which some key hashing there may have a record in Redis. A lookup whose slot is out of
// time is answered "miss" without asking Redis, but only while the filter is authoritative:
//
//   - every Put that writes Redis sets its slot first (locally) and announces the key with its
//     expiry on the presence channel (StoreConfig.Channel + ":present"), which every replica
//     subscribes to on the same connection as invalidations;
//   - after each (re)subscription, once the presence channel is confirmed, the replica scans
//     Redis for the records that exist (SCAN, with their PTTL) and sets their slots. A key
//     written before the subscription is found by the scan (SCAN returns every key present for
//     its whole duration); one written after it is announced on a channel the replica already
//     receives. Only when the scan completes with no connection loss since the confirmation does
//     the filter become authoritative, and it stays so until the subscription connection is
//     lost (every lost message is on a lost connection: Redis drops a subscriber rather than
//     skip its messages, client-output-buffer-limit pubsub), and only while the replica holds
//     its lease (the subscription is proven to deliver, see Store);
//   - slots only grow until their time passes, except those of the exact keys an invalidation
//     deletes (Invalidate, an unsafe method's §4.4 invalidation), which the invalidation clears
//     on every replica as it applies it; tag, prefix and tenant purges leave slots set.
//
// So the filter can be wrong in one direction by design ("maybe present" for a key that is gone:
// a Redis lookup that misses, as before), and in the other ("absent" for a key that is there)
// only when an announcement is lost without the connection (a Redis Cluster node failing between
// a write and the cluster bus carrying its PUBLISH, or a full announcement queue), or when an
// invalidation clears a slot that a later put, or another key, also uses: the request then goes
// upstream and its response is stored again, which announces it. An "absent"
// never serves anything, so it costs a fetch, never a wrong answer; restarts, failovers and
// FLUSHALL are a lost connection (a full rescan) or keys that vanish (lookups that miss).

// DefaultPresenceSlots is StoreConfig.PresenceSlots's default: 4 MiB per replica, few false
// "maybe present" below a few hundred thousand keys.
const DefaultPresenceSlots = 1 << 20

// opPresence labels the presence filter's Redis calls (announcements, scans).
const opPresence = "presence"

// presence is the filter. The zero value is not usable; a nil *presence is never authoritative.
type presence struct {
	seed  maphash.Seed
	slots []atomic.Uint32 // seconds after base until which a key of the slot may be in Redis; 0: none
	base  int64           // Unix seconds

	// drops counts lost subscription connections; subscribed is drops+1 once the presence
	// channel is confirmed on the current connection, ready is drops+1 once a scan on it
	// completed. Only the receive goroutine writes drops and subscribed.
	drops, subscribed, ready atomic.Uint64
	kick                     chan struct{} // a scan is due
	queue                    chan announcement
}

func newPresence(slots int) *presence {
	if slots <= 0 {
		return nil
	}
	return &presence{
		seed:  maphash.MakeSeed(),
		slots: make([]atomic.Uint32, slots),
		base:  time.Now().Unix() - 1,
		kick:  make(chan struct{}, 1),
		queue: make(chan announcement, 4096),
	}
}

func (p *presence) slot(primary string) *atomic.Uint32 {
	return &p.slots[maphash.String(p.seed, primary)%uint64(len(p.slots))]
}

// secs converts a time to the slots' unit, rounded up.
func (p *presence) secs(t time.Time) uint32 {
	s := t.Unix() - p.base
	if t.Nanosecond() > 0 {
		s++
	}
	return uint32(min(max(s, 1), 1<<32-1))
}

// add records that primary may be in Redis until until.
func (p *presence) add(primary string, until time.Time) {
	if p == nil {
		return
	}
	v := p.secs(until)
	sl := p.slot(primary)
	for {
		old := sl.Load()
		if old >= v || sl.CompareAndSwap(old, v) {
			return
		}
	}
}

// forget clears the slots of primaries, which an invalidation has just deleted from Redis, so
// that the next lookup of each does not ask Redis for what is gone. A key of the same slot, or
// one put again between the deletion and this call, is then "absent" while it is there: a miss,
// whose response is stored again (and announced), never a wrong answer.
func (p *presence) forget(primaries []string) {
	if p == nil {
		return
	}
	for _, k := range primaries {
		p.slot(k).Store(0)
	}
}

// absent reports whether primary is surely not in Redis at now, by the slots alone.
func (p *presence) absent(primary string, now time.Time) bool {
	return p.slot(primary).Load() < p.secs(now)
}

// lost records a lost subscription connection: the filter stops being authoritative.
func (p *presence) lost() {
	if p != nil {
		p.drops.Add(1)
	}
}

// confirmed records the presence channel's subscription on the current connection.
func (p *presence) confirmed() {
	if p == nil {
		return
	}
	p.subscribed.Store(p.drops.Load() + 1)
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// authoritative reports whether absent may be believed: a scan completed on the current
// subscription connection.
func (p *presence) authoritative() bool {
	return p != nil && p.ready.Load() == p.drops.Load()+1
}

// absentFromL2 reports whether a lookup of primary may skip Redis: the filter is authoritative,
// the lease held, and the slot out of time.
func (s *Store) absentFromL2(primary string, now time.Time) bool {
	return s.presence.authoritative() && s.l1Trusted() && s.presence.absent(primary, now)
}

// PresenceReady reports whether the presence filter answers lookups of absent keys without
// Redis now (see presence.go).
func (s *Store) PresenceReady() bool { return s.presence.authoritative() && s.l1Trusted() }

// Kinds of announcement.
const (
	announcePresent byte = 'p' // primary has a record in Redis until until
	announcePass    byte = 'f' // primary is marked hit-for-pass until until (pass.go)
)

// announcement is one record of a presence message.
type announcement struct {
	kind    byte
	primary string
	until   time.Time
	// hit-for-pass only
	path    string
	vary    []string
	variant string
}

// announceVersion is the first byte of a presence message.
const announceVersion = 1

// Bounds of one presence message.
const (
	maxAnnouncements = 512
	maxAnnounceBytes = 64 << 10
)

// encodeAnnouncements encodes a presence message from origin.
func encodeAnnouncements(origin string, as []announcement) string {
	b := []byte{announceVersion}
	b = appendString(b, origin)
	for _, a := range as {
		b = append(b, a.kind)
		b = appendString(b, a.primary)
		b = binary.AppendVarint(b, a.until.UnixMilli())
		if a.kind == announcePass {
			b = appendString(b, a.path)
			b = appendStrings(b, a.vary)
			b = appendString(b, a.variant)
		}
	}
	return string(b)
}

// decodeAnnouncements decodes a presence message; every key is checked as Lookup checks one.
func decodeAnnouncements(s string) (origin string, as []announcement, err error) {
	r := reader{b: []byte(s)}
	if v := r.byte(); v != announceVersion && r.err == nil {
		return "", nil, fmt.Errorf("%w: presence message version %d, want %d", ErrCorrupt, v, announceVersion)
	}
	origin = r.string()
	for len(r.b) > 0 && r.err == nil {
		if len(as) == maxAnnouncements {
			return "", nil, fmt.Errorf("%w: more than %d announcements", ErrCorrupt, maxAnnouncements)
		}
		a := announcement{kind: r.byte(), primary: r.string()}
		a.until = time.UnixMilli(r.varint())
		switch a.kind {
		case announcePresent:
		case announcePass:
			a.path = r.string()
			a.vary = r.strings(maxVaryNames)
			a.variant = r.string()
		default:
			if r.err == nil {
				return "", nil, fmt.Errorf("%w: announcement kind %d", ErrCorrupt, a.kind)
			}
		}
		if r.err != nil {
			break
		}
		tenant, _, err := splitKey(a.primary)
		if err != nil {
			return "", nil, err
		}
		if a.kind == announcePass && (len(a.vary) == 0) != (a.variant == "") {
			return "", nil, fmt.Errorf("%w: hit-for-pass mark of %q with %d Vary names and variant %q", ErrCorrupt, a.primary, len(a.vary), a.variant)
		}
		if a.variant != "" {
			if _, err := variantKey(tenant, a.variant); err != nil {
				return "", nil, err
			}
		}
		as = append(as, a)
	}
	if r.err != nil {
		return "", nil, r.err
	}
	return origin, as, nil
}

// announce queues a for the other replicas. A full queue drops it: a replica that misses a
// presence announcement asks Redis or goes upstream for the key, nothing worse.
func (s *Store) announce(a announcement) {
	if s.presence == nil || s.rdb == nil {
		return
	}
	select {
	case s.presence.queue <- a:
	default:
	}
}

// presenceChannel is the channel of presence and hit-for-pass announcements.
func (s *Store) presenceChannel() string { return s.channel + ":present" }

// publishAnnouncements is Run's worker sending the queued announcements: what is queued when a
// message goes, up to maxAnnouncements, so that under load one PUBLISH carries many and an idle
// replica announces at once.
func (s *Store) publishAnnouncements(ctx context.Context) {
	if s.presence == nil {
		return
	}
	batch := make([]announcement, 0, maxAnnouncements)
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-s.presence.queue:
			batch = append(batch, a)
		}
	drain:
		for len(batch) < maxAnnouncements {
			select {
			case a := <-s.presence.queue:
				batch = append(batch, a)
			default:
				break drain
			}
		}
		msg := encodeAnnouncements(s.replica, batch)
		_ = s.call(ctx, opPresence, s.cfg.PurgeTimeout, func(ctx context.Context) error {
			return s.rdb.Publish(ctx, s.presenceChannel(), msg).Err()
		})
		batch = batch[:0]
	}
}

// ownAnnouncement reports whether payload is a presence message from replica, reading only its
// head.
func ownAnnouncement(payload, replica string) bool {
	r := reader{b: []byte(payload[:min(len(payload), 1+binary.MaxVarintLen64+len(replica))])}
	return r.byte() == announceVersion && r.string() == replica && r.err == nil
}

// receivedAnnouncements applies another replica's presence message.
func (s *Store) receivedAnnouncements(payload string) {
	if len(payload) > maxAnnounceBytes*4 {
		return
	}
	if ownAnnouncement(payload, s.replica) {
		return // applied before publishing; not decoded, every one of them comes back
	}
	origin, as, err := decodeAnnouncements(payload)
	if err != nil {
		s.metrics.redisErrors.WithLabelValues(opDecode).Inc()
		s.logRedis(opDecode, fmt.Errorf("presence message: %w", err))
		return
	}
	if origin == s.replica {
		return // applied before publishing
	}
	for _, a := range as {
		switch a.kind {
		case announcePresent:
			s.presence.add(a.primary, a.until)
		case announcePass:
			if s.passes != nil && time.Until(a.until) <= s.cfg.PassTTL+time.Minute {
				_ = s.passes.add(a.primary, a.path, a.vary, a.variant, a.until)
			}
		}
	}
}

// scanPresence is Run's worker filling the filter from Redis after each subscription.
func (s *Store) scanPresence(ctx context.Context) {
	if s.presence == nil || s.l2 == nil {
		return
	}
	p := s.presence
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		}
		for ctx.Err() == nil {
			token := p.drops.Load() + 1
			if p.subscribed.Load() != token {
				break // not subscribed on this connection yet: its confirmation kicks again
			}
			err := s.scanRecords(ctx)
			if err == nil && p.drops.Load()+1 == token {
				p.ready.Store(token)
				break
			}
			if err == nil {
				continue // the connection was lost meanwhile: scan again for the new one
			}
			select { // Redis failed: try again shortly
			case <-ctx.Done():
				return
			case <-time.After(s.cfg.SubscriptionLease):
			}
		}
	}
}

// scanBatch is how many keys one SCAN call returns, about.
const scanBatch = 1000

// scanRecords sets the slot of every record key in Redis, with its PTTL.
func (s *Store) scanRecords(ctx context.Context) error {
	match := globEscape(s.l2.prefix) + "c:{*}:k:*"
	scan := func(ctx context.Context, c *redis.Client) error {
		var cursor uint64
		for {
			var keys []string
			err := s.call(ctx, opPresence, s.cfg.PurgeTimeout, func(ctx context.Context) error {
				var err error
				keys, cursor, err = c.Scan(ctx, cursor, match, scanBatch).Result()
				return err
			})
			if err != nil {
				return fmt.Errorf("cachefilter: presence scan: %w", err)
			}
			if len(keys) > 0 {
				ttls := make([]*redis.DurationCmd, len(keys))
				err = s.call(ctx, opPresence, s.cfg.PurgeTimeout, func(ctx context.Context) error {
					_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
						for i, k := range keys {
							ttls[i] = p.PTTL(ctx, k)
						}
						return nil
					})
					return err
				})
				if err != nil && !errors.Is(err, redis.Nil) {
					return fmt.Errorf("cachefilter: presence scan: %w", err)
				}
				now := s.now() // the clock of entry expiry, which lookups compare with
				for i, k := range keys {
					primary, ok := s.l2.primaryOfRecord(k)
					if !ok {
						continue
					}
					ttl := ttls[i].Val()
					switch {
					case ttl == -2*time.Nanosecond || ttl == -2*time.Millisecond:
						continue // gone since the SCAN
					case ttl < 0:
						ttl = s.cfg.MaxTTL // no expiry: Sluice sets none, but be safe
					}
					s.presence.add(primary, now.Add(ttl+time.Second))
				}
			}
			if cursor == 0 {
				return nil
			}
		}
	}
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, scan)
	case *redis.Client:
		return scan(ctx, c)
	}
	return fmt.Errorf("cachefilter: presence scan: client %T", s.rdb)
}

// primaryOfRecord returns the primary key of a record key (see l2 for the layout).
func (l *l2) primaryOfRecord(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, l.prefix+"c:{")
	if !ok {
		return "", false
	}
	tenant, pr, ok := strings.Cut(rest, "}:k:")
	if !ok || tenant == "" || pr == "" || checkTenant(tenant) != nil {
		return "", false
	}
	return tenant + ":" + pr, true
}

// globEscape escapes the glob characters of Redis's MATCH.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// subscriptions are the channels Run subscribes to.
func (s *Store) subscriptions() []string {
	if s.presence == nil {
		return []string{s.channel, s.ackChannel}
	}
	return []string{s.channel, s.ackChannel, s.presenceChannel()}
}
