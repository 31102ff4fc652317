package cachefilter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Redis layout of the L2, for key prefix P and tenant tag T. Every key carries the hash tag {T},
// so that all of a tenant's keys live in one Redis Cluster slot and each operation below is one
// script call or one pipeline. g is the tenant's generation (0 until its first PurgeTenant), pr
// the primary key without "T:", vr a variant key without "T:".
//
//	P c:{T}:gen           string  the generation g; no TTL (one small key per purged tenant)
//	P c:{T}:k:<pr>        hash    the primary's record: n = Vary names joined by ",", i = record
//	                              id (hex; a new one whenever the record is created), p = path,
//	                              g = the generation it belongs to, v:<vr> = expiry (Unix ms) of
//	                              each variant stored; TTL = its longest-lived variant's
//	P c:{T}:e:<vr>        string  an entry, encoded by appendEntry; TTL = the entry's
//	P c:{T}:g:exp         zset    pr by expiry (ms): expired keys are cleaned up, and the tenant
//	                              is capped at MaxKeysPerTenant keys (soonest-expiring go first)
//	P c:{T}:g:meta        hash    pr -> path and tags, NUL-separated: what to unindex when pr goes
//	P c:{T}:g:paths       zset    "path NUL pr", all scores 0: prefix purges by ZRANGE BYLEX
//	P tag:{T}:g:<tag>     set     pr of every key whose entries carry the tag
//	P hot:{T}             zset    sampled hit counts per primary key (HotKeys); P hot:{T}:d holds
//	                              the time of its last halving
//	P c:replicas          zset    replicas that receive invalidations, by lease expiry (ms)
//
// A record counts only if its g is the current generation and an entry only if its record lists
// it, so PurgeTenant is one INCR: every record of the old generation is invisible at once. Its
// keys are then deleted in batches (sweep), or expire. A lookup reads the generation, the record
// and the guessed entry in one pipeline (no script: a few microseconds of Redis time); writes
// and purges are Lua scripts, atomic per call. Index keys expire MaxTTL after their last write,
// records and entries with the entries they hold, so a tenant that stops writing leaves nothing.
type l2 struct {
	rdb    redis.UniversalClient
	prefix string
	maxTTL int64 // ms: the TTL of index keys
}

// lookupReply is what lookup found.
type lookupReply struct {
	found   bool   // the primary's record exists in the current generation
	gen     string // the tenant's generation
	names   string // the record's Vary names, joined
	id      uint64 // the record's id
	path    string
	entry   []byte // the guessed variant's entry, nil if not read or absent
	corrupt bool   // the record exists but its id does not parse
}

func (l *l2) tenantPrefix(tenant string) string { return l.prefix + "c:{" + tenant + "}:" }

func (l *l2) genKey(tenant string) string { return l.tenantPrefix(tenant) + "gen" }

func (l *l2) recordKey(tenant, pr string) string { return l.tenantPrefix(tenant) + "k:" + pr }

func (l *l2) entryKey(tenant, vr string) string { return l.tenantPrefix(tenant) + "e:" + vr }

func (l *l2) hotKey(tenant string) string { return l.prefix + "hot:{" + tenant + "}" }

func (l *l2) registryKey() string { return l.prefix + "c:replicas" }

// lookup reads the tenant's generation, the record of pr and, if its Vary names are guessNames,
// the entry of guessVr, in one pipeline. The reads need not be atomic: a record counts only if
// its generation is the one read before it and it lists the variant, and the entry is read last,
// so a purge that runs in between makes the lookup miss, or return what was stored after it.
// (A purge that runs after a read cannot be told from one after the whole lookup; the L1's
// epochs keep such a result out of the L1.)
func (l *l2) lookup(ctx context.Context, tenant, pr, guessNames, guessVr string) (lookupReply, error) {
	var gen, rec *redis.SliceCmd
	var entry *redis.StringCmd
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		// MGET: a missing generation (the usual case) is no redis.Nil error, which go-redis
		// classifies at some cost.
		gen = p.MGet(ctx, l.genKey(tenant))
		rec = p.HMGet(ctx, l.recordKey(tenant, pr), "n", "i", "p", "g", "v:"+guessVr)
		entry = p.Get(ctx, l.entryKey(tenant, guessVr))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return lookupReply{}, fmt.Errorf("cachefilter: l2 lookup: %w", err)
	}
	r := lookupReply{gen: "0"}
	if g := gen.Val(); len(g) == 1 && g[0] != nil {
		r.gen, _ = g[0].(string)
	}
	v := rec.Val()
	if len(v) != 5 || v[1] == nil {
		return r, nil
	}
	if g, _ := v[3].(string); g != r.gen {
		return r, nil // a record of a purged generation
	}
	id, _ := v[1].(string)
	if r.id, err = strconv.ParseUint(id, 16, 64); err != nil || r.id == 0 {
		r.corrupt = true // a miss, not a Redis failure: it must not open the breaker
		return r, nil
	}
	r.found = true
	r.names, _ = v[0].(string)
	r.path, _ = v[2].(string)
	if v[4] != nil && r.names == guessNames {
		if b, err := entry.Bytes(); err == nil {
			r.entry = b
		}
	}
	return r, nil
}

// entry reads the entry of vr if the record of pr in generation gen with id lists it; nil if
// not. One pipeline, record first (see lookup).
func (l *l2) entry(ctx context.Context, tenant, pr, gen string, id uint64, vr string) ([]byte, error) {
	var rec *redis.SliceCmd
	var entry *redis.StringCmd
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		rec = p.HMGet(ctx, l.recordKey(tenant, pr), "i", "g", "v:"+vr)
		entry = p.Get(ctx, l.entryKey(tenant, vr))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("cachefilter: l2 get: %w", err)
	}
	v := rec.Val()
	if len(v) != 3 || v[2] == nil || v[0] != strconv.FormatUint(id, 16) || v[1] != gen {
		return nil, nil
	}
	b, err := entry.Bytes()
	if err != nil {
		return nil, nil
	}
	return b, nil
}

// putArgs are the arguments of one put.
type putArgs struct {
	tenant, pr, vr string
	names          string // Vary names, joined
	newID          uint64 // the record's id if put creates it
	path           string
	tags           []string
	data           []byte // the encoded entry
	ttlMillis      int64
	maxKeys        int
}

// put stores an entry and indexes its key; it returns the record's id and whether the entry was
// stored (false: the primary has maxVariantsPerKey live variants already).
func (l *l2) put(ctx context.Context, a putArgs) (id uint64, stored bool, err error) {
	v, err := putScript.Run(ctx, l.rdb, []string{l.genKey(a.tenant)},
		l.prefix, a.tenant, a.pr, a.vr, a.names, strconv.FormatUint(a.newID, 16), a.path,
		strings.Join(a.tags, "\x00"), a.data, a.ttlMillis, a.maxKeys, maxVariantsPerKey, l.maxTTL).Slice()
	if err != nil {
		return 0, false, fmt.Errorf("cachefilter: l2 put: %w", err)
	}
	if len(v) != 2 {
		return 0, false, fmt.Errorf("cachefilter: l2 put: reply of %d values", len(v))
	}
	s, _ := v[0].(string)
	n, _ := v[1].(int64)
	if id, err = strconv.ParseUint(s, 16, 64); err != nil || id == 0 {
		return 0, false, fmt.Errorf("%w: record id %q", ErrCorrupt, s)
	}
	return id, n == 1, nil
}

// purgeBatch is how many keys one purge script call drops, so that a large purge does not block
// Redis for long: about 1ms of script time per batch.
const purgeBatch = 256

// maxVariantsPerKey bounds the live variants of one primary key in Redis.
const maxVariantsPerKey = 64

// purgeKeys drops primary keys (pr) of tenant and all their variants.
func (l *l2) purgeKeys(ctx context.Context, tenant string, prs []string) error {
	for len(prs) > 0 {
		n := min(len(prs), purgeBatch)
		args := make([]any, 0, 2+n)
		args = append(args, l.prefix, tenant)
		for _, pr := range prs[:n] {
			args = append(args, pr)
		}
		if err := purgeKeysScript.Run(ctx, l.rdb, []string{l.genKey(tenant)}, args...).Err(); err != nil {
			return fmt.Errorf("cachefilter: l2 purge keys: %w", err)
		}
		prs = prs[n:]
	}
	return nil
}

// purgeTag drops every key of tenant whose entries carry tag, in batches.
func (l *l2) purgeTag(ctx context.Context, tenant, tag string) error {
	for {
		left, err := purgeTagScript.Run(ctx, l.rdb, []string{l.genKey(tenant)}, l.prefix, tenant, tag, purgeBatch).Int64()
		if err != nil {
			return fmt.Errorf("cachefilter: l2 purge tag: %w", err)
		}
		if left == 0 {
			return nil
		}
	}
}

// purgePrefix drops every key of tenant whose path starts with prefix, in batches.
func (l *l2) purgePrefix(ctx context.Context, tenant, prefix string) error {
	for {
		n, err := purgePrefixScript.Run(ctx, l.rdb, []string{l.genKey(tenant)}, l.prefix, tenant, prefix, purgeBatch).Int64()
		if err != nil {
			return fmt.Errorf("cachefilter: l2 purge prefix: %w", err)
		}
		if n < purgeBatch {
			return nil
		}
	}
}

// purgeTenant moves the tenant's generation, which makes every key of the old one unreachable
// at once, and returns the old generation.
func (l *l2) purgeTenant(ctx context.Context, tenant string) (string, error) {
	old, err := purgeTenantScript.Run(ctx, l.rdb, []string{l.genKey(tenant)}).Text()
	if err != nil {
		return "", fmt.Errorf("cachefilter: l2 purge tenant: %w", err)
	}
	return old, nil
}

// sweep deletes the keys of an old generation of tenant, in batches, until none is left or ctx
// ends. They are unreachable already; this only frees memory before they expire.
func (l *l2) sweep(ctx context.Context, tenant, gen string) error {
	for {
		left, err := sweepScript.Run(ctx, l.rdb, []string{l.genKey(tenant)}, l.prefix, tenant, gen, purgeBatch).Int64()
		if err != nil {
			return fmt.Errorf("cachefilter: l2 sweep: %w", err)
		}
		if left == 0 {
			return nil
		}
	}
}

// register renews member in the replica registry until leaseMillis from Redis's now, and
// removes old (a previous incarnation of the same replica) if not empty.
func (l *l2) register(ctx context.Context, member, old string, leaseMillis int64) error {
	if err := registerScript.Run(ctx, l.rdb, []string{l.registryKey()}, member, leaseMillis, old).Err(); err != nil {
		return fmt.Errorf("cachefilter: register replica: %w", err)
	}
	return nil
}

// deregister removes member from the replica registry.
func (l *l2) deregister(ctx context.Context, member string) error {
	if err := l.rdb.ZRem(ctx, l.registryKey(), member).Err(); err != nil {
		return fmt.Errorf("cachefilter: deregister replica: %w", err)
	}
	return nil
}

// members returns the replicas whose lease has not expired by Redis's clock.
func (l *l2) members(ctx context.Context) ([]string, error) {
	v, err := membersScript.Run(ctx, l.rdb, []string{l.registryKey()}).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("cachefilter: read replica registry: %w", err)
	}
	return v, nil
}

// hit adds n sampled hits of primary to tenant's hot-key counter.
func (l *l2) hit(ctx context.Context, tenant, primary string, n, maxKeys int, halfLifeMillis int64) error {
	if err := hotScript.Run(ctx, l.rdb, []string{l.hotKey(tenant)}, primary, n, maxKeys, halfLifeMillis).Err(); err != nil {
		return fmt.Errorf("cachefilter: count hot key: %w", err)
	}
	return nil
}

// hotKeys returns the n primary keys of tenant with the most sampled hits, hottest first.
func (l *l2) hotKeys(ctx context.Context, tenant string, n int) ([]string, error) {
	v, err := l.rdb.ZRevRange(ctx, l.hotKey(tenant), 0, int64(n)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("cachefilter: read hot keys: %w", err)
	}
	return v, nil
}

// luaCommon is the start of every per-tenant script: ARGV[1] is the key prefix, ARGV[2] the
// tenant tag, KEYS[1] the tenant's generation key. Keys other than KEYS[1] are built inside the
// scripts; they all carry the tenant's hash tag, so they live in KEYS[1]'s Cluster slot.
const luaCommon = `
local P, T = ARGV[1], ARGV[2]
local K = P .. "c:{" .. T .. "}:"
local function base(g) return K .. g .. ":" end
local function tbase(g) return P .. "tag:{" .. T .. "}:" .. g .. ":" end
local function gen() return redis.call("GET", KEYS[1]) or "0" end
local function split0(s)
  local out, i = {}, 1
  while true do
    local j = string.find(s, "\0", i, true)
    if not j then out[#out + 1] = string.sub(s, i); return out end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end
-- wipe deletes the record of pr and the entries it lists.
local function wipe(pr)
  local rec = K .. "k:" .. pr
  for _, f in ipairs(redis.call("HKEYS", rec)) do
    if string.sub(f, 1, 2) == "v:" then redis.call("UNLINK", K .. "e:" .. string.sub(f, 3)) end
  end
  redis.call("UNLINK", rec)
end
-- drop removes pr from the indexes of generation g and, if its record belongs to g (or
-- always, with any), wipes it.
local function drop(g, pr, any)
  if any or redis.call("HGET", K .. "k:" .. pr, "g") == g then wipe(pr) end
  local b = base(g)
  local m = redis.call("HGET", b .. "meta", pr)
  if m then
    local parts = split0(m)
    redis.call("ZREM", b .. "paths", parts[1] .. "\0" .. pr)
    local tb = tbase(g)
    for i = 2, #parts do redis.call("SREM", tb .. parts[i], pr) end
    redis.call("HDEL", b .. "meta", pr)
  end
  redis.call("ZREM", b .. "exp", pr)
end
`

// putScript: ARGV[3] pr, [4] vr, [5] Vary names, [6] id for a new record, [7] path, [8] tags
// (NUL-separated), [9] entry, [10] TTL ms, [11] max keys per tenant, [12] max variants per key,
// [13] TTL ms of index keys. Reply: {id, 1 if stored else 0}. A record of an old generation, or
// with other Vary names, is replaced, with its entries. Index entries are written only when they
// change (a key stored again with the same path and tags costs no index write but its expiry).
// One call in 8 (by the clock's microseconds) also cleans up to 8 expired keys and evicts keys
// beyond the tenant's cap, which it may so exceed by a few.
var putScript = redis.NewScript(luaCommon + `
local pr, vr, names, path = ARGV[3], ARGV[4], ARGV[5], ARGV[7]
local ttl, maxKeys, maxVariants, indexTTL = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local g = gen()
local b = base(g)
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = now + ttl
local rec = K .. "k:" .. pr
local r = redis.call("HMGET", rec, "n", "i", "g", "v:" .. vr)
local id = r[2]
if id and (r[3] ~= g or r[1] ~= names) then
  wipe(pr)
  id = false
end
if not id then
  id = ARGV[6]
elseif not r[4] and redis.call("HLEN", rec) >= 4 + maxVariants then
  local fs = redis.call("HGETALL", rec)
  for i = 1, #fs, 2 do
    if string.sub(fs[i], 1, 2) == "v:" and tonumber(fs[i + 1]) <= now then redis.call("HDEL", rec, fs[i]) end
  end
  if redis.call("HLEN", rec) >= 4 + maxVariants then return {id, 0} end
end
redis.call("SET", K .. "e:" .. vr, ARGV[9], "PX", ttl)
redis.call("HSET", rec, "n", names, "i", id, "p", path, "g", g, "v:" .. vr, exp)
if redis.call("PTTL", rec) < ttl then redis.call("PEXPIRE", rec, ttl) end

local meta = b .. "meta"
local old = redis.call("HGET", meta, pr)
local m, seen = path, {}
local oldPath
if old then
  local parts = split0(old)
  oldPath = parts[1]
  for i = 2, #parts do
    if not seen[parts[i]] then seen[parts[i]] = true; m = m .. "\0" .. parts[i] end
  end
end
if ARGV[8] ~= "" then
  local tb = tbase(g)
  for _, tag in ipairs(split0(ARGV[8])) do
    if not seen[tag] then
      seen[tag] = true
      m = m .. "\0" .. tag
      redis.call("SADD", tb .. tag, pr)
      redis.call("PEXPIRE", tb .. tag, indexTTL)
    end
  end
end
if m ~= old then
  redis.call("HSET", meta, pr, m)
  redis.call("PEXPIRE", meta, indexTTL)
end
if oldPath ~= path then
  if oldPath then redis.call("ZREM", b .. "paths", oldPath .. "\0" .. pr) end
  redis.call("ZADD", b .. "paths", 0, path .. "\0" .. pr)
  redis.call("PEXPIRE", b .. "paths", indexTTL)
end
redis.call("ZADD", b .. "exp", "GT", exp, pr)
redis.call("PEXPIRE", b .. "exp", indexTTL)

if tonumber(t[2]) % 8 == 0 then
  for _, d in ipairs(redis.call("ZRANGE", b .. "exp", "-inf", now, "BYSCORE", "LIMIT", 0, 8)) do
    drop(g, d, true)
  end
  local n = redis.call("ZCARD", b .. "exp")
  if n > maxKeys then
    for _, d in ipairs(redis.call("ZRANGE", b .. "exp", 0, math.min(n - maxKeys, 16) - 1)) do
      if d ~= pr then drop(g, d, true) end
    end
  end
end
return {id, 1}
`)

// purgeKeysScript: ARGV[3..] the pr to drop.
var purgeKeysScript = redis.NewScript(luaCommon + `
local g = gen()
for i = 3, #ARGV do drop(g, ARGV[i], true) end
return #ARGV - 2
`)

// purgeTagScript: ARGV[3] tag, ARGV[4] batch. Drops up to batch keys carrying the tag; replies
// how many are left.
var purgeTagScript = redis.NewScript(luaCommon + `
local g = gen()
local key = tbase(g) .. ARGV[3]
local prs = redis.call("SRANDMEMBER", key, tonumber(ARGV[4]))
for _, pr in ipairs(prs) do drop(g, pr, true) end
if #prs > 0 then redis.call("SREM", key, unpack(prs)) end
return redis.call("SCARD", key)
`)

// purgePrefixScript: ARGV[3] path prefix, ARGV[4] batch. Drops up to batch keys whose path
// starts with the prefix (paths are ASCII: no byte 255); replies how many it dropped.
var purgePrefixScript = redis.NewScript(luaCommon + `
local g = gen()
local paths = base(g) .. "paths"
local ms = redis.call("ZRANGE", paths, "[" .. ARGV[3], "(" .. ARGV[3] .. "\255", "BYLEX", "LIMIT", 0, tonumber(ARGV[4]))
for _, m in ipairs(ms) do
  local i = string.find(m, "\0", 1, true)
  if i then drop(g, string.sub(m, i + 1), true) end
end
if #ms > 0 then redis.call("ZREM", paths, unpack(ms)) end
return #ms
`)

// purgeTenantScript moves the generation; replies the old one.
var purgeTenantScript = redis.NewScript(`
local old = redis.call("GET", KEYS[1]) or "0"
redis.call("INCR", KEYS[1])
return old
`)

// sweepScript: ARGV[3] an old generation, ARGV[4] batch. Drops up to batch of its keys (records
// created again in a newer generation stay); replies how many are left.
var sweepScript = redis.NewScript(luaCommon + `
for _, pr in ipairs(redis.call("ZRANGE", base(ARGV[3]) .. "exp", 0, tonumber(ARGV[4]) - 1)) do drop(ARGV[3], pr, false) end
return redis.call("ZCARD", base(ARGV[3]) .. "exp")
`)

// registerScript: KEYS[1] the registry, ARGV[1] member, ARGV[2] lease ms, ARGV[3] a member to
// remove ("" for none). The lease is counted from Redis's TIME, the clock every purger reads.
var registerScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
if ARGV[3] ~= "" then redis.call("ZREM", KEYS[1], ARGV[3]) end
redis.call("ZADD", KEYS[1], now + lease, ARGV[1])
if redis.call("PTTL", KEYS[1]) < 10 * lease then redis.call("PEXPIRE", KEYS[1], 10 * lease) end
return now
`)

// membersScript: KEYS[1] the registry. Replies the members whose lease has not expired.
var membersScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call("ZRANGE", KEYS[1], "(" .. now, "+inf", "BYSCORE")
`)

// hotScript: KEYS[1] a tenant's hot-key zset, ARGV[1] primary key, ARGV[2] hits to add, ARGV[3]
// keys to keep, ARGV[4] half-life ms. Counts are halved once per half-life, and only the
// hottest ARGV[3] keys are kept.
var hotScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hl, keep = tonumber(ARGV[4]), tonumber(ARGV[3])
local d = KEYS[1] .. ":d"
local last = tonumber(redis.call("GET", d) or "0")
if last == 0 or now - last >= hl then
  if last ~= 0 then redis.call("ZUNIONSTORE", KEYS[1], 1, KEYS[1], "WEIGHTS", 0.5) end
  redis.call("SET", d, now, "PX", 4 * hl)
end
redis.call("ZINCRBY", KEYS[1], ARGV[2], ARGV[1])
local n = redis.call("ZCARD", KEYS[1])
if n > keep then redis.call("ZREMRANGEBYRANK", KEYS[1], 0, n - keep - 1) end
redis.call("PEXPIRE", KEYS[1], 4 * hl)
return n
`)
