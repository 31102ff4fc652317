package limiter

import (
	"encoding/binary"
	"math"

	"github.com/redis/go-redis/v9"
)

// Input and reply layout of limitScript, shared by the Go side and the script.
const (
	itemBytes = 26 // bytes per item in ARGV[2]: flags, sub-windows, limit, window ms, hits
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
//	          key. Sliding window: the string "<Key>:s:<window ms>:<sub-windows>". Both carry the
//	          item's {hash tag}, so the derived fixed-window key lives in the same Cluster slot.
//	ARGV[1]   now in Unix milliseconds, or "" for the server's TIME (production: one clock for
//	          all sidecars, so client clock skew cannot stretch or shrink windows). One time for
//	          the whole batch.
//	ARGV[2]   binary, little-endian: for each request its item count (uint32), then for each
//	          item flags (uint8: 1 refund, 2 shadow, 4 fixed), sub-windows (uint8), limit, window
//	          ms and hits (float64 each, integers below 2^53).
//	reply     {now ms, then per request: allowed 1|0 (or -i if its item i holds a value of another
//	          type or format: that request is skipped), then per item: over 0|1, used after the
//	          call, reset after ms}
//
// Each counter is read once per batch (one MGET for all of them) into Lua tables, every request
// is decided against those, and each changed counter is written back once at the end: SETRANGE
// of the whole value (sliding) or INCRBY (fixed), which keep the TTL, or SET with PX where the
// key or a new sub-window is created. A key missing from the MGET is checked with EXISTS (a key
// of another type reads as missing), so a request on a key of another type fails, not the key. Within a request: refunds first
// (unconditional: they return quota of earlier requests), then every other item is checked
// against the state after refunds plus what earlier items of the same request would add to the
// same counter (so duplicate keys cannot overshoot together), then, if allowed, all of them are
// charged.
//
// Sliding window: a string of 8(2N+3) bytes, packed with Redis Lua's struct library (float64,
// little-endian): the index of the newest sub-window charged, then N+1 slots of (count, time of
// the last admitted hit). Sub-window k (k = floor(now*N/window)) lives in slot k mod (N+1); the
// slots between the newest and k are cleared when a charge reaches k. The count is the sum of
// sub-windows k-N+1..k, which lie wholly inside (now-window, now], plus sub-window k-N, which
// straddles the window's start: it counts in full unless its last hit is at or before
// now-window. That never undercounts the hits of (now-window, now], so no window of that length
// ever holds more than limit admitted hits, and overcounts at most the hits of one sub-window
// that already left (for at most one sub-window's time). The key gets its TTL (window + one
// sub-window) when it is created and when a charge opens a new sub-window, never otherwise.
//
// Numbers are Lua doubles: all arithmetic stays in integer milliseconds below 2^53 (now*N is
// about 2e14 for N=120) and integers are formatted with %d, never tostring, for key names.
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
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(float64(min(it.Limit, MaxCount))))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(float64(it.Window.Milliseconds())))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(float64(it.Hits)))
	}
	return b
}

const limitScriptSource = `
local floor, max, min, fmt = math.floor, math.max, math.min, string.format
local unpack = unpack
local sunpack, spack
local lib = rawget(_G, "struct")
if lib then
  sunpack, spack = lib.unpack, lib.pack
else
  -- Portable subset of Redis' struct library for Redis-protocol servers that lack it (the
  -- embedded miniredis of 'sluice dev'): little-endian formats made of "<", "B", "I4" and "d"
  -- only, which is all this script uses. Real Redis always has struct.
  local byte, char, frexp, ldexp = string.byte, string.char, math.frexp, math.ldexp
  local parsed = {}
  local function codes(f)
    local c = parsed[f]
    if c then return c end
    c = {}
    local i = 1
    while i <= #f do
      local ch = string.sub(f, i, i)
      if ch == "<" then
        i = i + 1
      elseif ch == "B" or ch == "d" then
        c[#c + 1] = ch
        i = i + 1
      elseif ch == "I" and string.sub(f, i + 1, i + 1) == "4" then
        c[#c + 1] = "I4"
        i = i + 2
      else
        error("limiter: struct fallback cannot handle format " .. f)
      end
    end
    parsed[f] = c
    return c
  end
  local function getd(s, pos)
    local b1, b2, b3, b4, b5, b6, b7, b8 = byte(s, pos, pos + 7)
    local sign = 1
    if b8 >= 128 then sign = -1 end
    local e = (b8 % 128) * 16 + floor(b7 / 16)
    local m = ((((((b7 % 16) * 256 + b6) * 256 + b5) * 256 + b4) * 256 + b3) * 256 + b2) * 256 + b1
    if e == 0 then return sign * ldexp(m, -1074) end
    return sign * ldexp(m + 4503599627370496, e - 1075)
  end
  local function putd(v)
    local sign = 0
    if v < 0 then sign, v = 128, -v end
    if v == 0 then return char(0, 0, 0, 0, 0, 0, 0, sign) end
    local m, e = frexp(v)
    local ex, mant = e + 1022, 0
    if ex <= 0 then
      ex, mant = 0, ldexp(m, e + 1074)
    else
      mant = (m * 2 - 1) * 4503599627370496
    end
    local o = {}
    for i = 1, 6 do
      o[i] = mant % 256
      mant = floor(mant / 256)
    end
    o[7] = (ex % 16) * 16 + mant
    o[8] = sign + floor(ex / 16)
    return char(o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8])
  end
  sunpack = function(f, s, pos)
    pos = pos or 1
    local out = {}
    for _, c in ipairs(codes(f)) do
      if c == "B" then
        out[#out + 1] = byte(s, pos)
        pos = pos + 1
      elseif c == "I4" then
        local a, b, d, e = byte(s, pos, pos + 3)
        out[#out + 1] = ((e * 256 + d) * 256 + b) * 256 + a
        pos = pos + 4
      else
        out[#out + 1] = getd(s, pos)
        pos = pos + 8
      end
    end
    out[#out + 1] = pos
    return unpack(out)
  end
  spack = function(f, ...)
    local args, out = {...}, {}
    for i, c in ipairs(codes(f)) do
      local v = args[i]
      if c == "B" then
        out[i] = char(v)
      elseif c == "I4" then
        out[i] = char(v % 256, floor(v / 256) % 256, floor(v / 65536) % 256, floor(v / 16777216) % 256)
      else
        out[i] = putd(v)
      end
    end
    return table.concat(out)
  end
end

local now
if ARGV[1] == "" then
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end

local formats = {}

-- Counters, one per distinct KEYS entry, in arrays indexed by counter number c:
--   name[c]  Redis key (fixed window: with ":<window start ms>" appended)
--   win[c], subs[c]  window ms and sub-windows; subs[c] == 0 for a fixed window
--   cur[c]   sliding: index of the sub-window holding now; fixed: ms until the window ends
--   ring[c]  sliding: {newest index, then count and last-hit ms of each of the n+1 slots}
--   used[c]  hits counted now
--   state[c] 0 unchanged, -2 absent and unchanged, 1 changed, 2 changed and needing a (new) TTL
--            (absent, or a charge opened a new sub-window), -1 unreadable (another type or format)
local ids, name, win, subs, cur, ring, used, state, pending = {}, {}, {}, {}, {}, {}, {}, {}, {}
local ic, ihits, ilimit, iflags, iover = {}, {}, {}, {}, {}

local blob, pos, reqs, x = ARGV[2], 1, {}, 0
while pos <= #blob do
  local m
  m, pos = sunpack("<I4", blob, pos)
  reqs[#reqs + 1] = m
  for _ = 1, m do
    x = x + 1
    local flags, n, limit, w, hits
    flags, n, limit, w, hits, pos = sunpack("<BBddd", blob, pos)
    local key = KEYS[x]
    local c = ids[key]
    if c == nil then
      c = #name + 1
      ids[key] = c
      win[c], used[c], state[c], pending[c] = w, 0, 0, 0
      if flags >= 4 then
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
  end
end
if x ~= #KEYS then return redis.error_reply("limiter: " .. #KEYS .. " keys for " .. x .. " items") end

if x == 0 then return {now} end

local raws = redis.call("MGET", unpack(name))
for c = 1, #name do
  local raw, n = raws[c], subs[c]
  if not raw then
    if redis.call("EXISTS", name[c]) == 1 then state[c] = -1 end -- another type
    if n > 0 then
      local v = {cur[c]}
      for i = 2, 2 * n + 3 do v[i] = 0 end
      ring[c] = v
    end
    used[c] = 0
    if state[c] == 0 then state[c] = -2 end -- absent: any write creates it, with a TTL
  elseif n == 0 then
    used[c] = tonumber(raw)
    if used[c] == nil then state[c] = -1 end
  elseif #raw ~= 16 * n + 24 then
    state[c] = -1
  else
    local f = formats[n]
    if f == nil then
      f = "<d" .. string.rep("dd", n + 1)
      formats[n] = f
    end
    local v, k, w = {sunpack(f, raw)}, cur[c], win[c]
    ring[c] = v
    local newest, u = v[1], 0
    for j = max(k - n, newest - n), min(k, newest) do
      local i = 2 + 2 * (j % (n + 1))
      local h = v[i]
      if h > 0 then
        if j == k - n and v[i + 1] <= now - w then
          v[i] = 0 -- the sub-window straddling the window's start, its last hit gone: not counted
        else
          u = u + h
        end
      end
    end
    used[c] = u
  end
end

local function charge(c, hits)
  used[c] = used[c] + hits
  local n = subs[c]
  if n == 0 then
    if state[c] ~= -2 and state[c] ~= 2 then state[c] = 1 else state[c] = 2 end
    return
  end
  local v, k = ring[c], cur[c]
  local newest = v[1]
  local fresh = state[c] == -2 or state[c] == 2
  if k > newest then
    -- a new sub-window: clear the slots of the sub-windows since the newest
    for j = max(newest + 1, k - n), k do
      local i = 2 + 2 * (j % (n + 1))
      v[i], v[i + 1] = 0, 0
    end
    v[1] = k
    fresh = true
  elseif k < newest - n then
    -- the clock went back more than a window: start over
    for i = 2, 2 * n + 3 do v[i] = 0 end
    v[1] = k
    fresh = true
  end
  local i = 2 + 2 * (k % (n + 1))
  v[i], v[i + 1] = v[i] + hits, now
  if fresh then state[c] = 2 else state[c] = 1 end
end

local function refund(c, hits)
  local n = subs[c]
  if n == 0 then
    local d = min(used[c], hits)
    if d > 0 then
      used[c] = used[c] - d
      if state[c] == 0 then state[c] = 1 end
    end
    return
  end
  local v, k = ring[c], cur[c]
  local newest = v[1]
  for j = min(k, newest), max(k - n, newest - n), -1 do
    if hits <= 0 then break end
    local i = 2 + 2 * (j % (n + 1))
    local h = v[i]
    if h > 0 then
      local d = min(h, hits)
      v[i], hits, used[c] = h - d, hits - d, used[c] - d
      if state[c] == 0 then state[c] = 1 end
    end
  end
end

local function resetAfter(c)
  local n = subs[c]
  if n == 0 then return cur[c] end
  local v, k, w = ring[c], cur[c], win[c]
  local newest = v[1]
  for j = max(k - n, newest - n), min(k, newest) do
    local i = 2 + 2 * (j % (n + 1))
    if v[i] > 0 then return max(0, min(w, v[i + 1] + w - now)) end
  end
  return 0
end

local out, o = {now}, 1
x = 1
for r = 1, #reqs do
  local last = x + reqs[r] - 1
  local bad = 0
  for i = x, last do
    if state[ic[i]] == -1 then bad = i - x + 1; break end
  end
  if bad > 0 then
    out[o + 1] = -bad
    o = o + 1
    for _ = x, last do
      out[o + 1], out[o + 2], out[o + 3] = 0, 0, 0
      o = o + 3
    end
  else
    for i = x, last do
      pending[ic[i]] = 0
      if iflags[i] % 2 == 1 and ihits[i] > 0 then refund(ic[i], ihits[i]) end
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

for c = 1, #name do
  local st = state[c]
  if st > 0 then
    local n = subs[c]
    if n == 0 then
      if st == 1 then
        local d = used[c] - tonumber(raws[c])
        if d ~= 0 then redis.call("INCRBY", name[c], fmt("%d", d)) end
      else
        redis.call("SET", name[c], fmt("%d", used[c]), "PX", cur[c])
      end
    else
      local val = spack(formats[n] or ("<d" .. string.rep("dd", n + 1)), unpack(ring[c], 1, 2 * n + 3))
      if st == 1 then
        redis.call("SETRANGE", name[c], 0, val) -- same length: the whole value, TTL kept
      else
        redis.call("SET", name[c], val, "PX", win[c] + floor((win[c] + n - 1) / n))
      end
    end
  end
end
return out
`
