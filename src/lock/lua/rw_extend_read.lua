-- ReadWriteLock: a reader's hold renewed (extend() while shared, auto_renew),
-- only while it is still in and unexpired by the server's clock.
--
-- KEYS[1]  `<key>:readers`
-- ARGV[1]  the reader's token
-- ARGV[2]  the new TTL in ms, from now
-- Returns  1 when renewed, 0 when the hold was lost.
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not score or score < now_ms then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', now_ms + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
