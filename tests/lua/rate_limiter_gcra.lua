-- The GCRA arithmetic of src/lock/lua/rate_limiter_acquire.lua, without a
-- server: the script runs under a stub `redis` (a settable microsecond clock,
-- one string store with expiry) and is checked against redis-cell's
-- documented example and the burst, rate, retry and TTL rules.
-- Usage: lua5.1 rate_limiter_gcra.lua <path of rate_limiter_acquire.lua>
local script = assert(loadfile(arg[1]))
local clock, store, expires_at = 0, {}, {}

redis = {
  call = function(command, key, value, _, ttl_ms)
    if command == 'TIME' then
      return {string.format('%d', math.floor(clock / 1e6)), string.format('%d', clock % 1e6)}
    elseif command == 'GET' then
      if store[key] == nil or clock >= expires_at[key] then return false end
      return store[key]
    elseif command == 'SET' then
      store[key], expires_at[key] = value, clock + tonumber(ttl_ms) * 1000
      return {ok = 'OK'}
    end
    error('unexpected command ' .. command)
  end,
}

local function throttle(key, interval_us, burst, cost)
  KEYS = {key}
  ARGV = {string.format('%.17g', interval_us), tostring(burst), tostring(cost or 1)}
  local r = script()
  return {allowed = r[1], remaining = r[2], retry_after = r[3], reset_after = r[4]}
end

local failures = 0
local function check(name, got, want)
  if got ~= want then
    failures = failures + 1
    print(string.format('FAILED %s: got %s, want %s', name, tostring(got), tostring(want)))
  end
end

-- redis-cell's README: CL.THROTTLE user123 15 30 60 -> 0, 16, 15, -1, 2
-- (max_burst 15 admits 16 at once; 30 per 60 s is one every 2 s).
clock = 1700000000 * 1e6
local r = throttle('user123', 2e6, 16)
check('cell example allowed', r.allowed, 1)
check('cell example remaining', r.remaining, 15)
check('cell example retry_after', r.retry_after, 0)
check('cell example reset_after', r.reset_after, 2e6)

-- A rested key admits `burst` at once, then one per interval.
clock = 1700000100 * 1e6
for i = 1, 20 do
  r = throttle('burst', 10000, 20)
  check('burst ' .. i .. ' allowed', r.allowed, 1)
  check('burst ' .. i .. ' remaining', r.remaining, 20 - i)
end
r = throttle('burst', 10000, 20)
check('over burst refused', r.allowed, 0)
check('over burst remaining', r.remaining, 0)
check('over burst retry_after', r.retry_after, 10000)
check('over burst reset_after', r.reset_after, 200000)
-- retry_after is honest: waiting it suffices, waiting less does not.
clock = clock + 9999
check('before retry_after', throttle('burst', 10000, 20).allowed, 0)
clock = clock + 1
check('at retry_after', throttle('burst', 10000, 20).allowed, 1)

-- Sustained: hammered every 1 ms for 10 s from rested, 1,000 + burst admitted.
clock = 1700000200 * 1e6
local admitted = 0
for _ = 0, 10000 do
  admitted = admitted + throttle('steady', 10000, 20).allowed
  clock = clock + 1000
end
check('10 s at 100/s with burst 20', admitted, 1020)

-- A fractional interval (3 per second) never refuses the last of a burst.
clock = 1700000300 * 1e6
for i = 1, 3 do check('fractional ' .. i, throttle('third', 1e6 / 3, 3).allowed, 1) end
r = throttle('third', 1e6 / 3, 3)
check('fractional over burst', r.allowed, 0)
clock = clock + r.retry_after
check('fractional after retry_after', throttle('third', 1e6 / 3, 3).allowed, 1)

-- The key expires when it would be rested again, and not before.
clock = 1700000400 * 1e6
throttle('ttl', 10000, 5)
throttle('ttl', 10000, 5)
check('ttl while needed', store['ttl'] ~= nil and clock < expires_at['ttl'], true)
check('ttl is the time to rest', expires_at['ttl'] - clock, 20000)
clock = clock + 20000
check('rested key is gone', redis.call('GET', 'ttl'), false)
check('rested key has its whole burst', throttle('ttl', 10000, 5).remaining, 4)

-- cost: many requests at once; 0 only reports.
clock = 1700000500 * 1e6
r = throttle('cost', 10000, 5, 0)
check('cost 0 reports', r.remaining, 5)
check('cost 0 writes nothing', store['cost'], nil)
r = throttle('cost', 10000, 5, 5)
check('cost 5 of 5', r.allowed, 1)
check('cost 5 leaves none', r.remaining, 0)
r = throttle('cost', 10000, 5, 2)
check('cost 2 refused', r.allowed, 0)
check('cost 2 retry_after', r.retry_after, 20000)

if failures > 0 then os.exit(1) end
print('rate limiter GCRA: all checks passed')
