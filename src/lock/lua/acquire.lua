-- Lock: take the lock and draw a fencing token (Lock::lock, try_lock_for).
-- SETNX + EXPIRE of Python retools in one command (the key is never left
-- without a TTL), then a fencing token: max(last token + 1, server time in
-- µs), so tokens strictly increase while `<key>:fence` lives and, once it has
-- expired (a day after the last acquisition, or 2 x the lock's TTL if longer),
-- keep increasing with the server's clock: no counter is kept forever.
-- A caller that will wait marks `<key>:waiting` (kept for at least ARGV[4] ms)
-- so that the release knows to wake someone.
--
-- KEYS[1]  the lock key
-- KEYS[2]  `<key>:fence`, the last fencing token
-- KEYS[3]  `<key>:waiting`, set while someone waits
-- ARGV[1]  the holder's token
-- ARGV[2]  the lock's TTL in ms
-- ARGV[3]  TTL of the fence key in ms
-- ARGV[4]  TTL of the waiting mark in ms (0: the caller will not wait)
-- Returns  {1, fencing token} when taken, else {0, PTTL of the key}.
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local wait = tonumber(ARGV[4])
  if wait > 0 and redis.call('PTTL', KEYS[3]) < wait then
    redis.call('SET', KEYS[3], '1', 'PX', wait)
  end
  return {0, redis.call('PTTL', KEYS[1])}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = math.max(now, (tonumber(redis.call('GET', KEYS[2])) or 0) + 1)
redis.call('SET', KEYS[2], string.format('%.0f', fence), 'PX', ARGV[3])
return {1, fence}
