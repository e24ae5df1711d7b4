"""The Redis side of the limits: one Lua script, loaded once (`SCRIPT LOAD`, then `EVALSHA`; reloaded
when the server answers NOSCRIPT), that settles finished requests and then admits several requests in
one atomic round trip: each admission checks and charges every window and the concurrency slot of one
request, all or nothing, in the order the requests arrived (`limit_redis.py` gathers them).

It mirrors `limit_windows.MemoryCounters` step for step: each window is a hash {i: window index,
p: previous count, c: current count}, read on the server's clock (`TIME`, once per call, so every
admission of a call sees the same instant) so that replicas agree, rolled forward when the window moved
on, and written back only when the whole request is admitted. Admissions later in a call see the
charges of the earlier ones, as they would in separate calls.

KEYS: the settlements' keys, then each admission's keys (its windows, then its slot if it has one).
ARGV: slot ttl, m (settlements), the settlements, q (admissions), the admissions.
A settlement: n, release (0/1), at_ms, then per window seconds, delta; its KEYS are its n windows,
then its slot if it releases one.
An admission: n, has slot (0/1), slot limit (0: not checked), then per window amount, seconds, cost,
group.
The answer is one string of integers (cheaper to parse than an array of them): now_ms, then eight per
admission. Refused: group (3: the slot), 0, window (1-based; 0 for the slot), remaining, reset_ms, 0,
0, 0. Admitted: 0, slots used, then per group 1, 2: window (0: none), remaining, reset_ms.
"""

from __future__ import annotations

SCRIPT = """
local function settle(a, k)
  local n, release, at = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  for j = 1, n do
    local span = tonumber(ARGV[a]) * 1000
    local delta = tonumber(ARGV[a + 1])
    a = a + 2
    local index = math.floor(at / span)
    local h = redis.call('HMGET', KEYS[k], 'i', 'p', 'c')
    local i = tonumber(h[1])
    if i == index then
      redis.call('HSET', KEYS[k], 'c', math.max(0, (tonumber(h[3]) or 0) + delta))
    elseif i == index + 1 then
      redis.call('HSET', KEYS[k], 'p', math.max(0, (tonumber(h[2]) or 0) + delta))
    end
    k = k + 1
  end
  if release == 1 then
    local left = redis.call('DECR', KEYS[k])
    if left <= 0 then redis.call('DEL', KEYS[k]) end
    k = k + 1
  end
  return a, k
end

local function admit(a, k, n, limit, now, ttl)
  local seen = {}
  for j = 1, n do
    local b = a + 4 * (j - 1)
    local amount, span = tonumber(ARGV[b]), tonumber(ARGV[b + 1]) * 1000
    local cost, group = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    local key = KEYS[k + j - 1]
    local index = math.floor(now / span)
    local h = redis.call('HMGET', key, 'i', 'p', 'c')
    local i, p, c = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
    if i == index - 1 then p, c = c, 0 elseif i ~= index then p, c = 0, 0 end
    local left = span - (now - index * span)
    local weighted = math.max(0, p * left / span + c)
    local remaining = math.max(0, amount - math.floor(weighted))
    local reset = nil
    if p > 0 then reset = math.fmod(left, span / p) end
    if c > 0 and (reset == nil or left < reset) then reset = left end
    reset = math.floor(reset or span)
    if weighted + cost > amount then
      return string.format('%d 0 %d %d %d 0 0 0', group, j, remaining, reset)
    end
    seen[j] = {index, p, c, remaining, reset, amount, span, cost, group, key}
  end
  local slot = KEYS[k + n]
  local used = 0
  if limit > 0 then
    used = tonumber(redis.call('GET', slot) or '0')
    if used >= limit then return '3 0 0 0 1000 0 0 0' end
  end
  local best = {{0, 0, 0, 2}, {0, 0, 0, 2}}
  for j = 1, n do
    local s = seen[j]
    redis.call('HSET', s[10], 'i', s[1], 'p', s[2], 'c', s[3] + s[8])
    redis.call('PEXPIRE', s[10], 2 * s[7])
    local after = math.max(0, s[4] - s[8])
    if after / s[6] < best[s[9]][4] then best[s[9]] = {j, after, s[5], after / s[6]} end
  end
  if limit > 0 then
    used = redis.call('INCR', slot)
    redis.call('EXPIRE', slot, ttl)
  end
  return string.format('0 %d %d %d %d %d %d %d', used, best[1][1], best[1][2], best[1][3],
    best[2][1], best[2][2], best[2][3])
end

local ttl = ARGV[1]
local a, k = 3, 1
for e = 1, tonumber(ARGV[2]) do
  a, k = settle(a, k)
end
local q = tonumber(ARGV[a])
a = a + 1
if q == 0 then return '' end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {string.format('%d', now)}
for r = 1, q do
  local n, has, limit = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  out[r + 1] = admit(a, k, n, limit, now, ttl)
  a = a + 4 * n
  k = k + n + has
end
return table.concat(out, ' ')
"""
