-- Queue: read a job's result (QueueManager::get_result). The documented form
-- is a one-element list; a plain string (SET by another writer) is read too.
--
-- KEYS[1]  the result key
-- ARGV     none
-- Returns  the result JSON, or nil when there is none (or the key holds another type).
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'list' then return redis.call('LINDEX', KEYS[1], 0) end
if t == 'string' then return redis.call('GET', KEYS[1]) end
return false
