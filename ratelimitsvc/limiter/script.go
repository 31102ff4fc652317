package limiter

import "github.com/redis/go-redis/v9"

// Argument layout of limitScript, shared by the Go side (args) and the script.
const (
	argsPerItem = 6 // ARGV entries per item after ARGV[1]

	flagRefund = 1 // item flags bit: subtract Hits instead of adding them
	flagShadow = 2 // item flags bit: being over does not deny the request

	replyHead    = 2 // reply entries before the items: now ms, allowed
	replyPerItem = 3 // reply entries per item: over, used, reset after ms
)

// limitScript checks every item of one call and, only if no item that may deny is over, charges
// all of them, atomically (a script runs alone on its Redis). go-redis sends it with EVALSHA and
// falls back to EVAL on NOSCRIPT (Script.Run; the cluster path does the same by hand).
//
// Layout:
//
//	KEYS[i]   counter of item i. Fixed window: "<Key>:f:<window ms>"; the script appends
//	          ":<window start ms>" and uses that string key. Sliding window: the hash
//	          "<Key>:s:<window ms>:<sub-windows>". Both carry the item's {hash tag}, so the
//	          derived fixed-window key lives in the same Cluster slot as the declared one.
//	ARGV[1]   now in Unix milliseconds, or "" for the server's TIME (production: one clock for
//	          all sidecars, so client clock skew cannot stretch or shrink windows).
//	ARGV[2+6(i-1)] .. ARGV[7+6(i-1)]
//	          item i: algorithm (0 sliding, 1 fixed), limit, window ms, sub-windows, hits,
//	          flags (1 refund, 2 shadow). All decimal integers below 2^53.
//	reply     {now ms, allowed 0|1, then per item: over 0|1, used after the call, reset after ms}
//
// Order: refunds first (unconditional: they return quota of earlier requests), then every
// other item is checked against the state after refunds plus what earlier items of the same
// call would add to the same counter (so duplicate keys cannot overshoot together), then, if
// allowed, all of them are charged.
//
// Sliding window: a hash with one field "<k>" per sub-window index k = floor(now*N/window)
// holding its count, and "<k>:t" holding the time of its last admitted hit. The count is the
// sum of sub-windows k-N+1..k, which lie wholly inside (now-window, now], plus sub-window k-N,
// which straddles the window's start: it counts in full unless its last hit is at or before
// now-window. That never undercounts the hits of (now-window, now], so no window of that length
// ever holds more than limit admitted hits, and overcounts at most the hits of one sub-window
// that already left (for at most one sub-window's time). Memory: the hash gets its TTL
// (window + one sub-window) and loses dead fields (index < k-N) only when a new sub-window field
// is created, so it holds at most 2(N+1) fields plus what the current call adds.
//
// Numbers are Lua doubles: all arithmetic stays in integer milliseconds below 2^53 (now*N is
// about 2e14 for N=120) and integers are formatted with %d, never tostring, for key names.
var limitScript = redis.NewScript(limitScriptSource)

// ScriptSource returns the Lua source of the limit script, for tools that load
// it themselves (bench/ratelimit.sh times it with redis-benchmark).
func ScriptSource() string { return limitScriptSource }

const limitScriptSource = `
local function str(n) return string.format("%d", n) end

local now
if ARGV[1] == "" then
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end

-- index of the sub-window of width w/n that holds now: floor(now*n/w), corrected for rounding
local function subIndex(w, n)
  local x = now * n
  local k = math.floor(x / w)
  while k * w > x do k = k - 1 end
  while (k + 1) * w <= x do k = k + 1 end
  return k
end

-- sliding window state: k, counts[1..n+1] of sub-windows k-n..k (the first zeroed if it left),
-- used (their sum), oldestIdx (1..n+1) of the oldest counted non-empty sub-window and, unless
-- that is the current one (k), oldest: the time of its last hit
local function slidingRead(key, w, n)
  local k = subIndex(w, n)
  local f = {}
  for j = k - n, k do f[#f + 1] = str(j) end
  f[#f + 1] = str(k - n) .. ":t"
  local v = redis.call("HMGET", key, unpack(f))
  local s = {k = k, counts = {}, used = 0}
  for i = 1, n + 1 do s.counts[i] = tonumber(v[i]) or 0 end
  local t0 = tonumber(v[n + 2])
  if s.counts[1] > 0 and t0 ~= nil and t0 <= now - w then s.counts[1] = 0 end
  for i = 1, n + 1 do
    local c = s.counts[i]
    if c > 0 then
      if s.oldestIdx == nil then
        local t = t0
        if i > 1 and i <= n then t = tonumber(redis.call("HGET", key, str(k - n + i - 1) .. ":t")) end
        -- a missing time cannot happen; assume the last moment of the sub-window
        if i <= n then s.oldest = t or math.floor(((k - n + i) * w - 1) / n) end
        s.oldestIdx = i
      end
      s.used = s.used + c
    end
  end
  return s
end

local function slidingCharge(key, w, n, k, hits)
  local f = str(k)
  local c = redis.call("HINCRBY", key, f, hits)
  redis.call("HSET", key, f .. ":t", str(now))
  if c == tonumber(hits) then
    -- a new sub-window: extend the TTL to cover it and drop the fields that left the window
    redis.call("PEXPIRE", key, str(w + math.floor((w + n - 1) / n)))
    local dead = {}
    for _, name in ipairs(redis.call("HKEYS", key)) do
      local idx = tonumber(string.match(name, "^%-?%d+"))
      if idx ~= nil and idx < k - n then dead[#dead + 1] = name end
    end
    if #dead > 0 then redis.call("HDEL", key, unpack(dead)) end
  end
end

-- subtract hits from the newest counted non-empty sub-windows, floor 0
local function slidingRefund(key, w, n, hits)
  local s = slidingRead(key, w, n)
  for i = n + 1, 1, -1 do
    if hits <= 0 then break end
    local c = s.counts[i]
    if c > 0 then
      local d = math.min(c, hits)
      redis.call("HINCRBY", key, str(s.k - n + i - 1), str(-d))
      hits = hits - d
    end
  end
end

local function fixedUsed(key) return tonumber(redis.call("GET", key) or "0") or 0 end

local items = {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 6
  local x = {key = KEYS[i], alg = tonumber(ARGV[a]), limit = tonumber(ARGV[a + 1]),
    w = tonumber(ARGV[a + 2]), n = tonumber(ARGV[a + 3]), hitsArg = ARGV[a + 4],
    hits = tonumber(ARGV[a + 4]), flags = tonumber(ARGV[a + 5])}
  x.refund = math.fmod(x.flags, 2) == 1
  x.shadow = math.fmod(math.floor(x.flags / 2), 2) == 1
  if x.alg == 1 then
    x.start = now - math.fmod(now, x.w)
    x.counter = x.key .. ":" .. str(x.start)
  else
    x.counter = x.key
  end
  items[i] = x
end

for _, x in ipairs(items) do
  if x.refund and x.hits > 0 then
    if x.alg == 1 then
      local d = math.min(fixedUsed(x.counter), x.hits)
      if d > 0 then redis.call("DECRBY", x.counter, str(d)) end
    else
      slidingRefund(x.counter, x.w, x.n, x.hits)
    end
  end
end

local state, pending, allowed = {}, {}, 1
for _, x in ipairs(items) do
  local s = state[x.counter]
  if s == nil then
    if x.alg == 1 then s = {used = fixedUsed(x.counter)} else s = slidingRead(x.counter, x.w, x.n) end
    s.charged = 0
    state[x.counter] = s
  end
  x.s = s
  x.over = 0
  if not x.refund then
    local p = pending[x.counter] or 0
    if (x.hits > 0 and s.used + p + x.hits > x.limit) or (x.hits == 0 and s.used + p >= x.limit) then
      x.over = 1
      if not x.shadow then allowed = 0 end
    end
    pending[x.counter] = p + x.hits
  end
end

if allowed == 1 then
  for _, x in ipairs(items) do
    if not x.refund and x.hits > 0 then
      if x.alg == 1 then
        local c = redis.call("INCRBY", x.counter, x.hitsArg)
        if c == x.hits then redis.call("PEXPIRE", x.counter, str(x.start + x.w - now)) end
      else
        slidingCharge(x.counter, x.w, x.n, x.s.k, x.hitsArg)
      end
      x.s.charged = x.s.charged + x.hits
    end
  end
end

local out = {now, allowed}
for _, x in ipairs(items) do
  local used = x.s.used + x.s.charged
  local reset = 0
  if x.alg == 1 then
    reset = x.start + x.w - now
  elseif x.s.oldest ~= nil then
    -- an older sub-window leaves first
    reset = math.max(0, math.min(x.w, x.s.oldest + x.w - now))
  elseif x.s.oldestIdx ~= nil and x.s.charged == 0 then
    -- only the current sub-window counts, and this call did not touch it
    reset = math.max(0, math.min(x.w, (tonumber(redis.call("HGET", x.counter, str(x.s.k) .. ":t")) or now) + x.w - now))
  elseif used > 0 then
    -- the current sub-window, last hit now
    reset = x.w
  end
  out[#out + 1] = x.over
  out[#out + 1] = used
  out[#out + 1] = reset
end
return out
`
