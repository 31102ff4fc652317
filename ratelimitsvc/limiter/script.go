package limiter

import (
	"encoding/binary"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Input and reply layout of limitScript, shared by the Go side and the script.
const (
	itemBytes = 22 // bytes per item in ARGV[2]: flags, sub-windows, limit, window ms, hits
	reqBytes  = 4  // bytes before a request's items in ARGV[2]: its item count

	flagRefund = 1 // item flags bit: subtract Hits instead of adding them
	flagShadow = 2 // item flags bit: being over does not deny the request
	flagFixed  = 4 // item flags bit: fixed window (else sliding)

	replyHead    = 1 // reply entries before the requests: now ms
	replyPerReq  = 1 // reply entries per request before its items: allowed 1|0, or -i (item i unreadable)
	replyPerItem = 3 // reply entries per item: over, used, reset after ms
)

// limitScript decides a batch of requests, each with its own items, in order: every request
// checks all its items and, only if none that may deny is over, charges all of them; each
// request sees what the requests before it charged. A script runs alone on its Redis, so each
// request is atomic. go-redis sends it with EVALSHA and falls back to EVAL on NOSCRIPT (by hand,
// see evalScript).
//
// Layout:
//
//	KEYS      the counter of every item of every request, in order. Fixed window:
//	          "<Key>:f:<window ms>"; the script appends ":<window start ms>" and uses that string
//	          key. Sliding window: the string "<Key>:sw:<window ms>:<sub-windows>". Both carry
//	          the item's {hash tag}, so the derived fixed-window key lives in the same Cluster
//	          slot.
//	ARGV[1]   now in Unix milliseconds, or "" for the server's TIME (production: one clock for
//	          all sidecars, so client clock skew cannot stretch or shrink windows). One time for
//	          the whole batch.
//	ARGV[2]   binary, unsigned little-endian integers: for each request its item count (4 bytes),
//	          then for each item flags (1 byte: 1 refund, 2 shadow, 4 fixed, 8 lease),
//	          sub-windows (1), limit (7), window ms (6) and hits (7); a lease item (alone in its
//	          request) then has want (7), held (7), cap (7), ttl ms (6), the number of grants it
//	          gives back (1) and for each its hits (7) and time ms (6); see the lease function.
//	ARGV[3]   the replica's id in lease registries (lease requests only)
//	reply     {now ms, then per request: allowed 1|0 (or -i if its item i holds a value of another
//	          type or format: that request is skipped), then per item: over 0|1, used after the
//	          call, reset after ms; and for a lease item, the hits leased beyond its need and the
//	          replicas holding leases}
//
// Every number the script reads or writes is an integer that Lua's doubles hold exactly (below
// 2^53), decoded from bytes with string.byte and written with %d: no library beyond Lua 5.1's
// own, so Redis and the Lua of Redis-protocol servers such as sluice dev's embedded miniredis
// run the same code.
//
// Each counter is read once per batch into Lua tables, every request is decided against those,
// and each changed counter is written back once at the end. A key of another type fails the
// requests that use it, not the batch. Within a request: refunds first (unconditional: they
// return quota of earlier requests), then every other item is checked against the state after
// refunds plus what earlier items of the same request would add to the same counter (so
// duplicate keys cannot overshoot together), then, if allowed, all of them are charged.
//
// Every counter of a batch is read with one MGET. Fixed window: a string count, written with
// INCRBY of the difference, or SET with PX when the key is created.
//
// Sliding window: a string of fixed-width decimal integers: the newest sub-window charged, the sum
// of the counts of all slots, the oldest counted sub-window and its last hit, then for each of
// the N+1 slots its count and the time of its last admitted hit; in lease mode the registry of
// leases follows (see the lease function). Sub-window j (j = floor(now*N/window)) lives in slot
// j mod (N+1). The count at sub-window k is the sum of sub-windows k-N+1..k, which lie wholly
// inside (now-window, now], plus sub-window k-N, which straddles the window's start: it counts
// in full unless its last hit is at or before now-window. That never undercounts the hits of
// (now-window, now], so no window of that length ever holds more than limit admitted hits, and
// overcounts at most the hits of one sub-window that already left (for at most one sub-window's
// time). The running sum and the oldest counted sub-window make a decision decode only a few
// fields (the head and the slots of sub-windows k-N and k), other slots only where needed (a
// refund, a counter idle for two sub-windows or more). A change writes the ring back with one
// SETRANGE, which keeps the TTL and the registry; a change of the registry writes the whole
// value with SET KEEPTTL. The key gets its TTL (window + one sub-window, or longer while a
// lease in its registry lasts longer) when it is created and when a charge opens a new
// sub-window, never otherwise.
var limitScript = redis.NewScript(limitScriptSource)

// ScriptSource returns the Lua source of the limit script, for tools that load
// it themselves (bench/ratelimit.sh times it alone).
func ScriptSource() string { return limitScriptSource }

// appendRequest appends the ARGV[2] share of one request, the calls at idx (all calls if idx is
// nil), to b.
func appendRequest(b []byte, calls []call, idx []int) []byte {
	n := len(calls)
	if idx != nil {
		n = len(idx)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	for j := range n {
		c := &calls[j]
		if idx != nil {
			c = &calls[idx[j]]
		}
		it := c.item
		var flags byte
		if it.Refund {
			flags |= flagRefund
		}
		if it.Shadow {
			flags |= flagShadow
		}
		if it.Algorithm == FixedWindow {
			flags |= flagFixed
		}
		b = append(b, flags, byte(c.subs))
		b = appendUint(b, min(it.Limit, MaxCount), 7)
		b = appendUint(b, uint64(it.Window.Milliseconds()), 6)
		b = appendUint(b, it.Hits, 7)
	}
	return b
}

// appendUint appends the n low bytes of v, little-endian.
func appendUint(b []byte, v uint64, n int) []byte {
	for range n {
		b = append(b, byte(v))
		v >>= 8
	}
	return b
}

var limitScriptSource = `
local byte, floor, max, min, fmt, sub = string.byte, math.floor, math.max, math.min, string.format, string.sub
local call, unpack = redis.call, unpack

-- unsigned little-endian integers of ARGV[2]
local function u4(s, p)
  local a, b, c, d = byte(s, p, p + 3)
  return ((d * 256 + c) * 256 + b) * 256 + a
end
local function u6(s, p)
  local a, b, c, d, e, f = byte(s, p, p + 5)
  return ((((f * 256 + e) * 256 + d) * 256 + c) * 256 + b) * 256 + a
end
local function u7(s, p)
  local a, b, c, d, e, f, g = byte(s, p, p + 6)
  return (((((g * 256 + f) * 256 + e) * 256 + d) * 256 + c) * 256 + b) * 256 + a
end

local now
if ARGV[1] == "" then
  local t = call("TIME")
  now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end

-- A sliding counter is fixed-width decimal: a head of k (the newest sub-window), s (the sum of
-- all counts), o (the oldest sub-window with a count, 0 if none; 16 digits each), ot (its last
-- hit, 13 digits), and the count (16) and last hit (13) of sub-window k; then n+1 slots of a
-- count (16) and a last-hit ms (13) for the sub-windows before k. Sub-window k's own slot in
-- the ring is stale: the head holds it, so that a charge in the newest sub-window, the usual
-- case, writes the head alone.
local HEAD, SLOT = 90, 29
local function headOf(k, s, o, t, h, ht) return fmt("%016d%016d%016d%013d%016d%013d", k, s, o, t, h, ht) end
local function slotOf(h, t) return fmt("%016d%013d", h, t) end

-- Counters, one per distinct KEYS entry, in arrays indexed by counter number c:
--   name[c]  Redis key (fixed window: with ":<window start ms>" appended)
--   win[c], subs[c]  window ms and sub-windows; subs[c] == 0 for a fixed window
--   cur[c]   sliding: index of the sub-window holding now; fixed: ms until the window ends
--   used[c]  hits counted now
--   state[c] 0 unchanged, -2 absent and unchanged, 1 changed, 2 changed and needing a (new) TTL
--            (absent, or a charge opened a new sub-window), -1 unreadable (another type or format)
--   old[c]   fixed: the count read; sliding: the newest sub-window as stored
-- and for a sliding window, its ring of n+1 slots (sub-window j lives in slot j % (n+1)):
--   raw[c]   the value read (nil if absent)
--   sum[c]   the sum of the counts of all slots
--   hc[c], ht[c]  the count and last-hit ms of sub-window cur[c] (the head's when it is the
--            newest stored): the usual charge touches these arrays alone
--   cnt[S*c+i], tim[S*c+i]  the count and last-hit ms of every other slot i, decoded from
--            raw[c] when first needed: one table for all counters, so that a counter costs no
--            tables of its own (count() and setCount() pick hc or cnt by slot)
--   dirty[S*c+i]  true for those other slots that differ from Redis, which dl[c] (made when
--            first needed: a new sub-window, a refund) lists; nd[c] > 0 when any slot differs
--   oldest[c], ot[c]  the oldest sub-window with a count, and its last hit; oldest[c] is nil
--            while unknown (its sub-window left or was emptied), 0 when nothing is counted
--   reg[c]   its registry of leases, once a lease call read it (registry()); regDirty[c] when
--            changed (both tables made by the first lease item)
local ids, name, win, subs, cur, used, state, pending, old = {}, {}, {}, {}, {}, {}, {}, {}, {}
local raw, sum, cnt, tim, dirty, nd, dl, oldest, ot, reg, regDirty = {}, {}, {}, {}, {}, {}, {}, {}, {}, nil, nil
local hc, ht = {}, {}
local S = 128 -- more than the slots of any counter (MaxSubWindows + 1)
-- per item; ilease (made by the first lease item) holds a lease item's fields
local ic, ihits, ilimit, iflags, iover, ilease = {}, {}, {}, {}, {}, nil
local reqs = {}
if #KEYS > 2 then
  -- The arrays indexed by item, request or counter number are made with room for the batch's
  -- items (up to 256: unpack's results live on the Lua stack), filled with the KEYS strings as
  -- placeholders, so that filling them does not grow and rehash them one power of two at a
  -- time. No placeholder is read: every entry is written before it is read (a bug would do
  -- arithmetic on a string and fail loudly), and the counters in use are the first nc. Tables
  -- with nil entries that mean something (raw, oldest, ot, dl) and hashes keep growing as they
  -- go. A small batch skips this: unpack costs more than it saves there.
  local P = min(#KEYS, 256)
  local function sized() return {unpack(KEYS, 1, P)} end
  name, win, subs, cur, used, state, pending, old = sized(), sized(), sized(), sized(), sized(), sized(), sized(), sized()
  sum, nd, hc, ht = sized(), sized(), sized(), sized()
  ic, ihits, ilimit, iflags, iover, reqs = sized(), sized(), sized(), sized(), sized(), sized()
end
local nc = 0 -- counters
local anyRefund = false
local nr = 0 -- requests

local blob, pos, x, kx = ARGV[2], 1, 0, 0
while pos <= #blob do
  local m = u4(blob, pos)
  pos = pos + 4
  nr = nr + 1
  reqs[nr] = m
  for _ = 1, m do
    x = x + 1
    local flags, n, a1, a2, a3, a4, a5, a6, a7, b1, b2, b3, b4, b5, b6, h1, h2, h3, h4, h5, h6, h7 = byte(blob, pos, pos + 21)
    local limit = (((((a7 * 256 + a6) * 256 + a5) * 256 + a4) * 256 + a3) * 256 + a2) * 256 + a1
    local w = ((((b6 * 256 + b5) * 256 + b4) * 256 + b3) * 256 + b2) * 256 + b1
    local hits = (((((h7 * 256 + h6) * 256 + h5) * 256 + h4) * 256 + h3) * 256 + h2) * 256 + h1
    pos = pos + 22
    kx = kx + 1
    local key = KEYS[kx]
    if flags % 16 >= 8 then
      -- a lease: what the replica wants to hold after the call and holds now, the cap on hits
      -- leased by all replicas, how long a lease lasts, and the unused hits it gives back, each
      -- with the time of the grant that charged them
      local L = {want = u7(blob, pos), held = u7(blob, pos + 7), cap = u7(blob, pos + 14),
        ttl = u6(blob, pos + 21), ret = {}}
      local nret = byte(blob, pos + 27)
      pos = pos + 28
      for j = 1, nret do
        L.ret[j] = {u7(blob, pos), u6(blob, pos + 7)}
        pos = pos + 13
      end
      ilease = ilease or {}
      ilease[x] = L
    end
    local c = ids[key]
    if c == nil then
      nc = nc + 1
      c = nc
      ids[key] = c
      win[c], used[c], state[c], pending[c] = w, 0, 0, 0
      if flags % 8 >= 4 then
        local start = now - now % w
        name[c], subs[c], cur[c] = key .. ":" .. fmt("%d", start), 0, start + w - now
      else
        local y = now * n
        local k = floor(y / w)
        while k * w > y do k = k - 1 end
        while (k + 1) * w <= y do k = k + 1 end
        name[c], subs[c], cur[c] = key, n, k
      end
    end
    ic[x], iflags[x], ilimit[x], ihits[x] = c, flags % 4, limit, hits
    if flags % 2 == 1 then anyRefund = true end
  end
end
if kx ~= #KEYS then return redis.error_reply("limiter: " .. #KEYS .. " keys for " .. kx .. " expected") end

if x == 0 then return {now} end

-- count returns the count of slot i of sliding counter c (the current sub-window's is hc[c]),
-- decoding it first if needed.
local function count(c, i)
  if i == cur[c] % (subs[c] + 1) then return hc[c] end
  local x = S * c + i
  local h = cnt[x]
  if h == nil then
    local r, p = raw[c], HEAD + SLOT * i + 1
    if r == nil then
      h = 0
      tim[x] = 0
    else
      h = tonumber(sub(r, p, p + 15)) or 0
      tim[x] = tonumber(sub(r, p + 16, p + 28)) or 0
    end
    cnt[x] = h
  end
  return h
end

-- setCount sets the count of slot i of sliding counter c, in this call's view, and records that
-- the slot differs from Redis.
local function setCount(c, i, h)
  if i == cur[c] % (subs[c] + 1) then
    hc[c], nd[c] = h, nd[c] + 1
    return
  end
  local x = S * c + i
  cnt[x] = h
  if dirty[x] then return end
  dirty[x], nd[c] = true, nd[c] + 1
  local l = dl[c]
  if l == nil then
    l = {}
    dl[c] = l
  end
  l[#l + 1] = i
end

-- clear empties slot i of sliding counter c, in this call's view.
local function clear(c, i)
  sum[c] = sum[c] - count(c, i)
  if i == cur[c] % (subs[c] + 1) then ht[c] = 0 else tim[S * c + i] = 0 end
  setCount(c, i, 0)
end

-- findOldest finds the oldest counted sub-window of sliding counter c.
local function findOldest(c)
  oldest[c] = 0
  if sum[c] <= 0 then return end
  local k, n = cur[c], subs[c]
  for j = k - n, k do
    local i = j % (n + 1)
    if count(c, i) > 0 then
      oldest[c], ot[c] = j, j == k and ht[c] or tim[S * c + i]
      return
    end
  end
end

local raws = call("MGET", unpack(name, 1, nc))
for c = 1, nc do
  local r, n = raws[c], subs[c]
  if not r then
    if call("EXISTS", name[c]) == 1 then state[c] = -1 else state[c] = -2 end -- another type, or absent
    old[c] = 0
  elseif n == 0 then
    used[c] = tonumber(r)
    old[c] = used[c]
    if used[c] == nil then state[c] = -1 end
  elseif #r < HEAD + SLOT * (n + 1) then
    state[c] = -1 -- another format
  end
  if n > 0 and state[c] ~= -1 then
    nd[c] = 0
    local m, k, w = n + 1, cur[c], win[c]
    if state[c] == -2 then
      sum[c], oldest[c], ot[c], hc[c], ht[c] = 0, 0, 0, 0, 0
    else
      local newest, s, o, ot0 = tonumber(sub(r, 1, 16)), tonumber(sub(r, 17, 32)), tonumber(sub(r, 33, 48)), tonumber(sub(r, 49, 61))
      local h, t = tonumber(sub(r, 62, 77)), tonumber(sub(r, 78, 90))
      if newest == nil or s == nil or o == nil or ot0 == nil or h == nil or t == nil then
        state[c] = -1
      else
        raw[c], old[c], sum[c], oldest[c], ot[c] = r, newest, s, o, ot0
        if k < newest - n or k - newest > n then
          -- the clock went back more than a window, or the counter was idle for a window:
          -- nothing counted
          hc[c], ht[c] = 0, 0
          for i = 0, n do clear(c, i) end
          sum[c], oldest[c] = 0, 0
        elseif k <= newest then
          -- the clock went back within the window: count from the newest sub-window charged
          k = newest
          cur[c], hc[c], ht[c] = k, h, t
        else
          -- the head's sub-window goes to its slot; sub-windows newest+1..k start empty: their
          -- slots held sub-windows that left (sub-window k's slot among them, read from the ring)
          local zn, p = newest % m, HEAD + SLOT * (k % m) + 1
          cnt[S * c + zn], tim[S * c + zn] = h, t
          setCount(c, zn, h)
          hc[c], ht[c] = tonumber(sub(r, p, p + 15)) or 0, tonumber(sub(r, p + 16, p + 28)) or 0
          for j = newest + 1, k do clear(c, j % m) end
          if oldest[c] < k - n then oldest[c] = nil end
        end
        -- the sub-window straddling the window's start counts until its last hit leaves; the
        -- head says when that is if it is the oldest counted, and that nothing is counted in it
        -- if a later one is (0 with a sum is sub-window 0, not "none": decoded, as unknown)
        local a, o = (k + 1) % m, oldest[c]
        if o == nil or (o == 0 and sum[c] > 0) then
          if count(c, a) > 0 and tim[S * c + a] <= now - w then
            clear(c, a)
            if oldest[c] == k - n then oldest[c] = nil end
          end
        elseif o == k - n and ot[c] <= now - w then
          clear(c, a)
          oldest[c] = nil
        end
        if sum[c] <= 0 then oldest[c] = 0 end
      end
    end
    if state[c] ~= -1 then used[c] = sum[c] end
  end
end

-- changed marks counter c for writing; a sliding one needs a new TTL when it is created or
-- opens a new sub-window.
local function changed(c)
  if state[c] == -2 or state[c] == 2 or (subs[c] > 0 and cur[c] ~= old[c]) then
    state[c] = 2
  else
    state[c] = 1
  end
end

local function charge(c, hits)
  used[c] = used[c] + hits
  local n = subs[c]
  if n > 0 then
    local k = cur[c]
    if sum[c] <= 0 then oldest[c], ot[c] = k, now elseif oldest[c] == k then ot[c] = now end
    hc[c], ht[c], nd[c] = hc[c] + hits, now, nd[c] + 1
    sum[c] = sum[c] + hits
    local st = state[c]
    if st == -2 or st == 2 or k ~= old[c] then state[c] = 2 else state[c] = 1 end
  else
    changed(c)
  end
end

-- refund subtracts hits from the counter (sliding: from the newest non-empty sub-windows).
local refund
if anyRefund then
refund = function(c, hits)
  local n = subs[c]
  if n == 0 then
    local d = min(used[c], hits)
    if d > 0 then
      used[c] = used[c] - d
      changed(c)
    end
    return
  end
  local k, m = cur[c], n + 1
  for j = k, k - n, -1 do
    if hits <= 0 then break end
    local i = j % m
    local h = count(c, i)
    if h > 0 then
      local d = min(h, hits)
      setCount(c, i, h - d)
      hits, sum[c], used[c] = hits - d, sum[c] - d, used[c] - d
      if h == d and oldest[c] == j then oldest[c] = nil end
      changed(c)
    end
  end
  if sum[c] <= 0 then oldest[c] = 0 end
end
end

-- Lease mode only: these exist when the batch has a lease item.
local subwindow, refundAt, registry, lease
if ilease then
-- subwindow returns the index of the sub-window of sliding counter c holding time t.
subwindow = function(c, t)
  local n, w = subs[c], win[c]
  local y = t * n
  local k = floor(y / w)
  while k * w > y do k = k - 1 end
  while (k + 1) * w <= y do k = k + 1 end
  return k
end

-- refundAt subtracts hits from the sub-window holding time at, if it is still counted: the
-- unused part of a lease goes back where it was charged.
refundAt = function(c, hits, at)
  local j, k, n = subwindow(c, at), cur[c], subs[c]
  if j < k - n or j > k then return end
  local i = j % (n + 1)
  local h = count(c, i)
  local d = min(h, hits)
  if d <= 0 then return end
  setCount(c, i, h - d)
  sum[c], used[c] = sum[c] - d, used[c] - d
  if h == d and oldest[c] == j then oldest[c] = nil end
  if sum[c] <= 0 then oldest[c] = 0 end
  changed(c)
end

-- registry returns the registry of sliding counter c, read from the tail of its value: what
-- each replica may still admit without asking, {id -> {hits, expiry ms}}.
registry = function(c)
  if not reg then reg, regDirty = {}, {} end
  local g = reg[c]
  if g then return g end
  g = {}
  local r = raw[c]
  if r and #r > HEAD + SLOT * (subs[c] + 1) then
    for id, h, e in string.gmatch(sub(r, HEAD + SLOT * (subs[c] + 1) + 1), "([^=;]+)=(%d+)@(%d+);") do
      g[id] = {tonumber(h), tonumber(e)}
    end
  end
  reg[c] = g
  return g
end

-- lease decides one lease item i: the unused hits the replica gives back go back where they
-- were charged, the hits it needs now are charged if they fit, and it gets a lease on more if
-- the cap on hits leased by all replicas and its share of it allow. The registry holds what
-- every replica may still admit without asking; entries past their expiry count for nothing
-- and are dropped. It returns over, the hits leased beyond the need, and the replicas holding
-- leases.
lease = function(i)
  local c, L, me, need, limit = ic[i], ilease[i], ARGV[3], ihits[i], ilimit[i]
  for _, r in ipairs(L.ret) do refundAt(c, r[1], r[2]) end
  local g, others, replicas = registry(c), 0, 1
  for id, e in pairs(g) do
    if e[2] <= now then
      g[id] = nil
      regDirty[c] = true
    elseif id ~= me then
      others, replicas = others + e[1], replicas + 1
    end
  end
  local over, more = 0, 0
  if need > 0 and used[c] + need > limit then
    over = 1
  else
    -- at least a quarter of the replica's share: a key used far below its limit renews its
    -- lease as seldom as one used near it (leases of all replicas stay within the cap); want 0
    -- gives the lease back
    local share, want = floor(L.cap / replicas), L.want
    if want > 0 then want = max(want, floor(share / 4)) end
    local avail = limit - used[c] - need
    more = max(0, min(want - L.held, avail, L.cap - others - L.held, share - L.held))
    if need + more > 0 then charge(c, need + more) end
  end
  local mine = L.held + more
  if mine > 0 then
    g[me] = {mine, now + L.ttl}
    regDirty[c] = true
  elseif g[me] then
    g[me] = nil
    regDirty[c] = true
  end
  if regDirty[c] and state[c] <= 0 then state[c] = 1 end
  return over, more, replicas
end
end

-- resetAfter is when quota next frees: a fixed window's end, or when the last hit of the
-- oldest counted sub-window leaves the window.
local function resetAfter(c)
  local n = subs[c]
  if n == 0 then return cur[c] end
  if sum[c] <= 0 then return 0 end
  if oldest[c] == nil then findOldest(c) end
  if oldest[c] <= 0 then return 0 end
  local w = win[c]
  local t = ot[c] + w - now
  if t > w then return w elseif t < 0 then return 0 end
  return t
end

local out, o = {now}, 1
x = 1
for r = 1, nr do
  local last = x + reqs[r] - 1
  local bad = 0
  for i = x, last do
    if state[ic[i]] == -1 then bad = i - x + 1; break end
  end
  if bad > 0 then
    out[o + 1] = -bad
    o = o + 1
    for i = x, last do
      out[o + 1], out[o + 2], out[o + 3] = 0, 0, 0
      o = o + 3
      if ilease and ilease[i] then
        out[o + 1], out[o + 2] = 0, 0
        o = o + 2
      end
    end
  elseif ilease and ilease[x] then
    -- a lease request: one lease item
    local c = ic[x]
    local over, g, replicas = lease(x)
    out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5], out[o + 6] = 1, over, used[c], resetAfter(c), g, replicas
    o = o + 6
  else
    for i = x, last do pending[ic[i]] = 0 end
    if anyRefund then
      for i = x, last do
        if iflags[i] % 2 == 1 and ihits[i] > 0 then refund(ic[i], ihits[i]) end
      end
    end
    local allowed = 1
    for i = x, last do
      local c, hits, f = ic[i], ihits[i], iflags[i]
      iover[i] = 0
      if f % 2 == 0 then
        local p = pending[c]
        if (hits > 0 and used[c] + p + hits > ilimit[i]) or (hits == 0 and used[c] + p >= ilimit[i]) then
          iover[i] = 1
          if f < 2 then allowed = 0 end
        end
        pending[c] = p + hits
      end
    end
    if allowed == 1 then
      for i = x, last do
        if iflags[i] % 2 == 0 and ihits[i] > 0 then charge(ic[i], ihits[i]) end
      end
    end
    out[o + 1] = allowed
    o = o + 1
    for i = x, last do
      local c = ic[i]
      out[o + 1], out[o + 2], out[o + 3] = iover[i], used[c], resetAfter(c)
      o = o + 3
    end
  end
  x = last + 1
end

for c = 1, nc do
  local st, n = state[c], subs[c]
  if n == 0 then
    if st == 1 then
      local d = used[c] - old[c]
      if d ~= 0 then call("INCRBY", name[c], fmt("%d", d)) end
    elseif st == 2 then
      call("SET", name[c], fmt("%d", used[c]), "PX", cur[c])
    end
  elseif st > 0 or (st == 0 and nd[c] > 0) then
    -- a changed counter, or one whose view moved on: written back, so that the next call
    -- starts from here
    if oldest[c] == nil then findOldest(c) end
    local tail, ttl = "", 0
    local rd = regDirty and regDirty[c]
    if st == 2 or rd or raw[c] == nil then ttl = win[c] + floor((win[c] + n - 1) / n) end
    if rd then
      -- the registry goes after the ring; the key lives as long as its last entry
      local t = {}
      for id, e in pairs(reg[c]) do
        t[#t + 1] = fmt("%s=%d@%d;", id, e[1], e[2])
        if e[2] - now > ttl then ttl, st = e[2] - now, 2 end
      end
      tail = table.concat(t)
    end
    local head = headOf(cur[c], sum[c], oldest[c], ot[c], hc[c], ht[c])
    if raw[c] == nil or rd then
      local zc = cur[c] % (n + 1)
      -- a new value: created, or with a registry of another length (SET, keeping the TTL
      -- unless it must grow); every slot as read or as changed
      local parts, r, b = {head}, raw[c], S * c
      for i = 0, n do
        if i == zc or r == nil or dirty[b + i] then
          parts[i + 2] = slotOf(i ~= zc and count(c, i) or 0, i ~= zc and tim[b + i] or 0)
        else
          parts[i + 2] = sub(r, HEAD + SLOT * i + 1, HEAD + SLOT * (i + 1))
        end
      end
      parts[n + 3] = tail
      if r == nil then
        call("SET", name[c], table.concat(parts), "PX", ttl)
      else
        call("SET", name[c], table.concat(parts), "KEEPTTL")
        if st == 2 then call("PEXPIRE", name[c], ttl) end
      end
    else
      -- SETRANGE of the head, and of each other slot changed (a new sub-window, a refund):
      -- it keeps the TTL and the registry after the ring
      call("SETRANGE", name[c], 0, head)
      local l = dl[c]
      if l then
        for j = 1, #l do
          local i = l[j]
          call("SETRANGE", name[c], HEAD + SLOT * i, slotOf(cnt[S * c + i], tim[S * c + i]))
        end
      end
      if st == 2 then call("PEXPIRE", name[c], ttl) end
    end
  end
end
return out
`

// ScriptCall returns the KEYS and ARGV[2] with which the limiter sends items to the limit
// script as one request (ARGV[1] is the time: "" for the Redis server's), for tools that call
// the script themselves (bench/rlsscript, bench/rlsfloor). It fails on an item Do would refuse.
func ScriptCall(items []Item) (keys []string, input []byte, err error) {
	calls := make([]call, len(items))
	for i := range items {
		if err := prepare(&items[i], &calls[i], false); err != nil {
			return nil, nil, fmt.Errorf("limiter: item %d: %w", i, err)
		}
		keys = append(keys, calls[i].counter)
	}
	return keys, appendRequest(nil, calls, nil), nil
}
