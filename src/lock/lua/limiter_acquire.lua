-- Limiter: the atomic count-prune-add of Limiter::acquire_limit.
-- Python retools checks ZCARD, then ZADDs: two callers can both see room.
-- Here the check and the add are one script, with the original's rule: the
-- caller is added (or its expiry refreshed) only while fewer than `limit`
-- members remain, whether or not it is one of them. Times come from the
-- server's clock (TIME), so a client with a skewed clock cannot evict live
-- holders; scores stay float Unix seconds, as Python writes them.
--
-- KEYS[1]  the limiter's sorted set (its prefix)
-- ARGV[1]  the member (the caller's key)
-- ARGV[2]  the limit
-- ARGV[3]  the expiration in ms
-- ARGV[4]  '1' to drop expired holders when the set is full (Python's retry=True)
-- Returns  1 when added, 0 when the set is full.
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
local set, limit = KEYS[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('ZCARD', set) >= limit then
  if ARGV[4] ~= '1' then return 0 end
  redis.call('ZREMRANGEBYSCORE', set, '-inf', string.format('%.17g', now))
  if redis.call('ZCARD', set) >= limit then return 0 end
end
redis.call('ZADD', set, string.format('%.17g', now + tonumber(ARGV[3]) / 1000), ARGV[1])
return 1
