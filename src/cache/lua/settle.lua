-- Cache: settle the hit/miss statistics of the keys a load produced, in the
-- store's round trip: every hit counted since a key was read (ours included)
-- becomes a miss, and the hits from before are put back (the original's
-- GETSET arithmetic). On a cluster it is sent once per key (n = 1).
--
-- Both counters then get the region's stats_retention as their TTL (GETSET
-- would otherwise have dropped the hit counter's).
--
-- KEYS[2i-1]  the hit counter of key i (i = 1..n)
-- KEYS[2i]    the miss counter of key i
-- ARGV[1]     the counters' TTL in seconds (0: none)
-- ARGV[i+1]   the hits key i had before this load counted one
-- Returns     1.
local ttl = tonumber(ARGV[1])
for i = 1, #ARGV - 1 do
  local hit, miss, existing = KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[i + 1])
  local new_hits = tonumber(redis.call('GETSET', hit, 0)) or 0
  redis.call('INCRBY', hit, existing)
  if new_hits ~= existing then redis.call('INCRBY', miss, new_hits - existing) end
  if ttl > 0 then
    redis.call('EXPIRE', hit, ttl)
    if redis.call('EXISTS', miss) == 1 then redis.call('EXPIRE', miss, ttl) end
  end
end
return 1
