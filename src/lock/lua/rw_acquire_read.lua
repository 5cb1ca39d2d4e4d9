-- ReadWriteLock: a shared (read) hold (lock_shared, try_lock_shared_for).
-- Admitted while no writer holds the lock and none waits for it: a waiting
-- writer's mark keeps new readers out, so a stream of readers cannot starve
-- it (the readers already in finish within their hold). Each reader is a
-- member of `<key>:readers` scored with its expiry, in ms of the server's
-- clock; expired readers are dropped first. The set itself lives as long as
-- its longest reader. Fencing tokens as Lock's acquire draws them.
--
-- KEYS[1]  the lock key (a writer's token while a writer holds it)
-- KEYS[2]  `<key>:readers`, sorted set: member = reader token, score = expiry (ms)
-- KEYS[3]  `<key>:writer_waiting`, set while a writer waits
-- KEYS[4]  `<key>:fence`, the last fencing token
-- KEYS[5]  `<key>:waiting`, set while someone waits (for the release's wake-up)
-- ARGV[1]  the reader's token
-- ARGV[2]  the hold's TTL in ms
-- ARGV[3]  TTL of the fence key in ms
-- ARGV[4]  TTL of the waiting mark in ms (0: the caller will not wait)
-- Returns  {1, fencing token} when admitted, else {0, ms until worth trying again}.
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
local writer, waiting_writer = redis.call('PTTL', KEYS[1]), redis.call('PTTL', KEYS[3])
if writer ~= -2 or waiting_writer ~= -2 then
  local wait = tonumber(ARGV[4])
  if wait > 0 and redis.call('PTTL', KEYS[5]) < wait then redis.call('SET', KEYS[5], '1', 'PX', wait) end
  return {0, math.max(writer, waiting_writer, 0)}
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now_ms + ttl, ARGV[1])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
local fence = math.max(now, (tonumber(redis.call('GET', KEYS[4])) or 0) + 1)
redis.call('SET', KEYS[4], string.format('%.0f', fence), 'PX', ARGV[3])
return {1, fence}
