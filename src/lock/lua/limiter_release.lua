-- Limiter: a slot released by its holder (LimiterSlot::release). The member
-- is unique to the slot, so this never frees another holder's slot; it says
-- whether the slot was still held: expired by the server's clock, or already
-- dropped by an acquirer that found the set full, it was lost.
--
-- KEYS[1]  the limiter's sorted set (its prefix)
-- ARGV[1]  the slot's member
-- Returns  1 when it was held until now, 0 when it had been lost.
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not score then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local t = redis.call('TIME')
if score < tonumber(t[1]) + tonumber(t[2]) / 1000000 then return 0 end
return 1
