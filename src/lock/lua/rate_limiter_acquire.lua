-- RateLimiter: GCRA (the generic cell rate algorithm, as redis-cell's
-- CL.THROTTLE) in one script, timed by the server's clock. The key holds
-- the theoretical arrival time (TAT): the instant, in microseconds of the
-- server's clock, at which the key is rested again. A request of `cost`
-- moves it `cost` emission intervals later, and is admitted while the TAT
-- stays within `burst` intervals of now. The key expires at the TAT, when it
-- would mean the same as no key: its TTL never outlives its need.
-- Differences of half a microsecond or less count as none (the clock ticks
-- in whole microseconds; a double near 1.7e15 us is exact to 0.25 us), so the
-- rounding of fractional intervals never refuses the last request of a burst.
--
-- KEYS[1]  the key's state (`<prefix>:<key>`)
-- ARGV[1]  the emission interval in microseconds (period / rate; may be fractional)
-- ARGV[2]  burst: the most requests admitted at once from a rested key
-- ARGV[3]  cost: the requests this call asks for (0 only reports)
-- Returns  {allowed (1 or 0), remaining, retry_after (us), reset_after (us)}:
--          remaining: requests admitted now after this one; retry_after: wait
--          this long and the same request is admitted (0 when allowed);
--          reset_after: until the key is rested again.
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
local interval, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then tat = now end
local tolerance = interval * burst
local new_tat = tat + interval * cost
local allow_at = new_tat - tolerance
local function left(from) return math.max(0, math.floor((now - from + 0.5) / interval)) end
if allow_at - now > 0.5 then
  return {0, left(tat - tolerance), math.ceil(allow_at - now), math.ceil(tat - now)}
end
if cost > 0 then
  redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
end
return {1, left(new_tat - tolerance), 0, math.ceil(new_tat - now)}
