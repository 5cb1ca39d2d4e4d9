-- Lock: release.lua for many keys at once (DogpileLocks): per key,
-- compare-and-delete and, when a Lock waits for it (`<key>:waiting`), one
-- push to the list `<key>:signal` and a message on that channel, which wake
-- it at once (the list expires soon). A key whose
-- token differs (it expired, maybe retaken) is left alone. On a cluster it is
-- sent once per key, with the keys of that lock only (n = 1).
--
-- KEYS[3i-2]  the lock key of key i (i = 1..n)
-- KEYS[3i-1]  `<key>:signal` of key i, the wake-up list
-- KEYS[3i]    `<key>:waiting` of key i, set while someone waits
-- ARGV[1]     TTL of a signal in ms
-- ARGV[i+1]   the holder's token for key i
-- Returns     1.
for i = 1, #ARGV - 1 do
  local key, signal, waiting = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('DEL', key)
    if redis.call('EXISTS', waiting) == 1 then
      redis.call('DEL', signal)
      redis.call('LPUSH', signal, '1')
      redis.call('PUBLISH', signal, '1')
      redis.call('PEXPIRE', signal, ARGV[1])
    end
  end
end
return 1
