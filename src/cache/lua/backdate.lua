-- Cache: invalidation of values on a single node (CacheRegion::invalidate).
-- Backdates `created` of each existing value hash, so the next call
-- regenerates it; values are never deleted. Unlike the original's plain HSET,
-- a missing hash is not created (it would hold only `created`, with no TTL,
-- forever), and a key of another type (not a cache value; calls on it fail
-- naming it) is skipped rather than aborting the script half-way through.
--
-- KEYS[i]  the value hashes (i = 1..n)
-- ARGV[1]  the new `created` (float Unix seconds)
-- Returns  how many hashes were backdated.
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok == 'hash' then
    redis.call('HSET', key, 'created', ARGV[1])
    n = n + 1
  end
end
return n
