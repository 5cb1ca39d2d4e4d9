-- ReadWriteLock: the exclusive (write) hold (lock, try_lock_for). Taken when
-- no writer holds the lock and no unexpired reader is in; the lock key then
-- holds the writer's token, with a TTL, exactly as a Lock's. A writer that
-- will wait sets `<key>:writer_waiting`, which keeps new readers out until it
-- is in (its own successful attempt deletes the mark). Fencing tokens as
-- Lock's acquire draws them.
--
-- KEYS[1]  the lock key
-- KEYS[2]  `<key>:readers`, sorted set: member = reader token, score = expiry (ms)
-- KEYS[3]  `<key>:writer_waiting`, set while a writer waits
-- KEYS[4]  `<key>:fence`, the last fencing token
-- KEYS[5]  `<key>:waiting`, set while someone waits (for the release's wake-up)
-- ARGV[1]  the writer's token
-- ARGV[2]  the hold's TTL in ms
-- ARGV[3]  TTL of the fence key in ms
-- ARGV[4]  TTL of the waiting marks in ms (0: the caller will not wait)
-- Returns  {1, fencing token} when taken, else {0, ms until worth trying again}.
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
local last_reader = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if last_reader[2] or redis.call('EXISTS', KEYS[1]) == 1 then
  local wait = tonumber(ARGV[4])
  if wait > 0 then
    redis.call('SET', KEYS[3], ARGV[1], 'PX', wait)
    if redis.call('PTTL', KEYS[5]) < wait then redis.call('SET', KEYS[5], '1', 'PX', wait) end
  end
  if last_reader[2] then return {0, math.max(tonumber(last_reader[2]) - now_ms, 0)} end
  return {0, math.max(redis.call('PTTL', KEYS[1]), 0)}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
local fence = math.max(now, (tonumber(redis.call('GET', KEYS[4])) or 0) + 1)
redis.call('SET', KEYS[4], string.format('%.0f', fence), 'PX', ARGV[3])
return {1, fence}
