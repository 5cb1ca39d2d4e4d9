-- Cache: a stored value joins the sets of its tags (CachedFunction::with_tags),
-- which invalidate_tag reads. A set's TTL only grows, so it outlives every
-- value in it even when values of regions with different redis_expiration
-- share a tag. On a cluster it is sent once per tag (n = 1).
--
-- KEYS[i]  the tag sets `retools:tag:<tag>` (i = 1..n)
-- ARGV[1]  the member: the value hash's key
-- ARGV[2]  the value hash's TTL in seconds (its region's redis_expiration)
-- Returns  1.
local ttl = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('SADD', key, ARGV[1])
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
return 1
