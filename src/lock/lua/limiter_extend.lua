-- Limiter: a held slot's lease, renewed (LimiterSlot::extend and auto_renew).
-- Only a slot still in the set and not yet expired by the server's clock is
-- renewed: one that expired may have been counted as free by another
-- acquirer, so it is lost, and renewing it would exceed the limit.
--
-- KEYS[1]  the limiter's sorted set (its prefix)
-- ARGV[1]  the slot's member
-- ARGV[2]  the new lease in ms, from now
-- Returns  1 when renewed, 0 when the slot is lost.
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if not score or score < now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', string.format('%.17g', now + tonumber(ARGV[2]) / 1000), ARGV[1])
return 1
