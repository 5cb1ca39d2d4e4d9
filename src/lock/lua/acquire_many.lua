-- Lock: acquire.lua for many keys at once, one attempt each (DogpileLocks,
-- the cache's batch of dogpile locks): per key, SET NX PX and, when taken,
-- the fencing token drawn as acquire.lua draws it (one TIME for the batch).
-- Nothing waits, so no `<key>:waiting` mark is set. On a cluster it is sent
-- once per key, with the keys of that lock only (n = 1).
--
-- KEYS[3i-2]  the lock key of key i (i = 1..n)
-- KEYS[3i-1]  `<key>:fence` of key i, its last fencing token
-- KEYS[3i]    `<key>:waiting` of key i (passed for the slot; not touched)
-- ARGV[1]     the locks' TTL in ms
-- ARGV[2]     TTL of the fence keys in ms
-- ARGV[i+2]   the holder's token for key i
-- Returns     per key i, its fencing token when taken, else 0.
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
local out, now = {}, nil
for i = 1, #ARGV - 2 do
  local key, fence_key = KEYS[3 * i - 2], KEYS[3 * i - 1]
  out[i] = 0
  if redis.call('SET', key, ARGV[i + 2], 'NX', 'PX', ARGV[1]) then
    if not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    local fence = math.max(now, (tonumber(redis.call('GET', fence_key)) or 0) + 1)
    redis.call('SET', fence_key, string.format('%.0f', fence), 'PX', ARGV[2])
    out[i] = fence
  end
end
return out
