"""The Redis side of the limits: one Lua script, loaded once (`SCRIPT LOAD`, then `EVALSHA` by redis-py's
Script, which reloads it if the server forgot it), that checks and charges every window and the
concurrency slot of a request in one atomic round trip, and settles a request in one more.

It mirrors `limit_windows.MemoryCounters` step for step: each window is a hash {i: window index,
p: previous count, c: current count}, read on the server's clock (`TIME`) so replicas agree, rolled
forward when the window moved on, and written back only when the whole request is admitted.

admit: KEYS = windows..., [slot], then the settlements' keys; ARGV = "admit", n, slot limit (0: none),
slot ttl, then per window amount, seconds, cost, group, then m (settlements carried along: 0 or more)
and the index in KEYS of their first key, then the settlements. Refused: {group or 3, now_ms, window
(1-based), remaining, reset_ms}. Admitted: {0, now_ms, used slots, then per group 1, 2: window (0:
none), remaining, reset_ms}.
settle: KEYS = the settlements' keys; ARGV = "settle", m, then the settlements.
A settlement: ARGV n, release (0/1), at_ms, then per window seconds, delta; KEYS its n windows, then
its slot if it releases one. Settlements carried by an admission are applied before it is checked, so
a process's finished requests count as finished for its next admission.
"""

from __future__ import annotations

SCRIPT = """
local function settle(a, k, m)
  for e = 1, m do
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
  end
end
if ARGV[1] == 'settle' then
  settle(3, 1, tonumber(ARGV[2]))
  return 0
end
local n = tonumber(ARGV[2])
settle(7 + 4 * n, tonumber(ARGV[6 + 4 * n]), tonumber(ARGV[5 + 4 * n]))
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seen = {}
for j = 1, n do
  local b = 4 + 4 * (j - 1)
  local amount, span = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]) * 1000
  local cost, group = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local index = math.floor(now / span)
  local h = redis.call('HMGET', KEYS[j], 'i', 'p', 'c')
  local i, p, c = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if i == index - 1 then p, c = c, 0 elseif i ~= index then p, c = 0, 0 end
  local left = span - (now - index * span)
  local weighted = math.max(0, p * left / span + c)
  local remaining = math.max(0, amount - math.floor(weighted))
  local reset = nil
  if p > 0 then reset = math.fmod(left, span / p) end
  if c > 0 and (reset == nil or left < reset) then reset = left end
  reset = math.floor(reset or span)
  if weighted + cost > amount then return {group, now, j, remaining, reset} end
  seen[j] = {index, p, c, remaining, reset, amount, span, cost, group}
end
local used = 0
if tonumber(ARGV[3]) > 0 then
  used = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
  if used >= tonumber(ARGV[3]) then return {3, now, 0, 0, 1000} end
end
local best = {{0, 0, 0, 2}, {0, 0, 0, 2}}
for j = 1, n do
  local s = seen[j]
  redis.call('HSET', KEYS[j], 'i', s[1], 'p', s[2], 'c', s[3] + s[8])
  redis.call('PEXPIRE', KEYS[j], 2 * s[7])
  local after = math.max(0, s[4] - s[8])
  if after / s[6] < best[s[9]][4] then best[s[9]] = {j, after, s[5], after / s[6]} end
end
if tonumber(ARGV[3]) > 0 then
  used = redis.call('INCR', KEYS[n + 1])
  redis.call('EXPIRE', KEYS[n + 1], ARGV[4])
end
return {0, now, used, best[1][1], best[1][2], best[1][3], best[2][1], best[2][2], best[2][3]}
"""
