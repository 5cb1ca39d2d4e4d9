-- Cache: invalidation on a cluster, where the value hashes are in many slots:
-- one call per value hash (sent as one split pipeline per chunk). Backdates
-- it as backdate.lua does if it is a hash; the caller drops from the key set
-- the members whose type comes back `none`.
--
-- KEYS[1]  a value hash
-- ARGV[1]  the new `created` (float Unix seconds)
-- Returns  the key's type before the call (`hash`, `none`, ...).
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'hash' then redis.call('HSET', KEYS[1], 'created', ARGV[1]) end
return t
