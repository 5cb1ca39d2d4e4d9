-- Cache: invalidation of a whole namespace on a single node. As backdate.lua
-- for the members of the namespace's key set, and a member whose hash is gone
-- (expired) is dropped from the set; a key of another type is skipped.
--
-- KEYS[1]    the namespace's key set
-- KEYS[i]    the value hash of member ARGV[i] (i = 2..n)
-- ARGV[1]    the new `created` (float Unix seconds)
-- ARGV[i]    the member of KEYS[1] whose value hash is KEYS[i] (i = 2..n)
-- Returns    how many hashes were backdated.
local n = 0
for i = 2, #KEYS do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t == 'hash' then
    redis.call('HSET', KEYS[i], 'created', ARGV[1])
    n = n + 1
  elseif t == 'none' then
    redis.call('SREM', KEYS[1], ARGV[i])
  end
end
return n
