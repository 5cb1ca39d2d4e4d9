-- Lock: compare-and-delete, then wake one waiter (Lock::unlock).
-- A holder whose key expired never deletes a successor's lock. If someone is
-- waiting, a message on the channel `<key>:signal` wakes a waiter through
-- its process's shared subscription, and one element goes into the list of
-- the same name for waiters that block on it (BLPOP, on a Cluster); the list
-- expires soon so that it cannot pile up. Still one round trip.
--
-- KEYS[1]  the lock key
-- KEYS[2]  `<key>:signal`, the wake-up list (and channel)
-- KEYS[3]  `<key>:waiting`, set while someone waits
-- ARGV[1]  the holder's token
-- ARGV[2]  TTL of the signal in ms
-- Returns  1 when deleted, else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('PUBLISH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
