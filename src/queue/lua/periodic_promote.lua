-- Queue: enqueue one due run of a periodic job (QueueManager::promote_periodic_jobs
-- and every worker). The caller read the next run and the definition, built
-- the job and computed the run after this one; this script applies that only
-- if both are still what it read (compare-and-set), so of all the workers
-- that saw the same due time exactly one enqueues it.
--
-- KEYS[1]  the definitions hash
-- KEYS[2]  the next-run sorted set (same slot)
-- KEYS[3]  the queue the definition names (same slot)
-- ARGV[1]  the id
-- ARGV[2]  the next run the caller read (as Redis wrote it)
-- ARGV[3]  the definition the caller read
-- ARGV[4]  the run after this one (Unix seconds)
-- ARGV[5]  the job's payload
-- Returns  1 when this call enqueued the run, 0 when another did (or the
--          definition changed or went); a WRONGTYPE error when the queue key
--          is not a list (nothing changes: the run waits).
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[3] then return 0 end
local t = redis.call('TYPE', KEYS[3])['ok']
if t ~= 'none' and t ~= 'list' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[3] .. ' holds a ' .. t .. ', not a list')
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[5])
return 1
