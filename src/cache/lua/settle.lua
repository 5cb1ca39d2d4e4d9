-- Cache: settle the hit/miss statistics of the keys a load produced, in the
-- store's round trip: every hit counted since a key was read (ours included)
-- becomes a miss, and the hits from before are put back (the original's
-- GETSET arithmetic). On a cluster it is sent once per key (n = 1).
--
-- KEYS[2i-1]  the hit counter of key i (i = 1..n)
-- KEYS[2i]    the miss counter of key i
-- ARGV[i]     the hits key i had before this load counted one
-- Returns     1.
for i = 1, #ARGV do
  local hit, miss, existing = KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[i])
  local new_hits = tonumber(redis.call('GETSET', hit, 0)) or 0
  redis.call('INCRBY', hit, existing)
  if new_hits ~= existing then redis.call('INCRBY', miss, new_hits - existing) end
end
return 1
