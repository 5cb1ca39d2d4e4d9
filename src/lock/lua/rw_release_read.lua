-- ReadWriteLock: a reader leaves (unlock_shared). When it was the last one
-- and someone waits (a writer, typically), it wakes them as Lock's release
-- does (a message on the channel `<key>:signal`, an element in that list).
--
-- KEYS[1]  `<key>:readers`
-- KEYS[2]  `<key>:signal`, the wake-up list (and channel)
-- KEYS[3]  `<key>:waiting`, set while someone waits
-- ARGV[1]  the reader's token
-- ARGV[2]  TTL of the signal in ms
-- Returns  1 when the reader was still in, else 0 (its hold had expired).
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not score then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZCOUNT', KEYS[1], now_ms + 1, '+inf') == 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('PUBLISH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if score < now_ms then return 0 end
return 1
