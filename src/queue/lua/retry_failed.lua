-- Queue: move one failed job back to its queue (QueueManager::retry_failed,
-- single node). The queue key is checked before the entry leaves the failed
-- list: a script error keeps the writes before it, and would lose the job.
--
-- KEYS[1]  retools:failed
-- KEYS[2]  the job's queue key
-- KEYS[3]  retools:queues
-- ARGV[1]  the failed-list entry
-- ARGV[2]  its payload (exact bytes)
-- ARGV[3]  its queue name
-- Returns  1 when moved, 0 when the entry is no longer in the list; a
--          WRONGTYPE error when the queue key is not a list.
local t = redis.call('TYPE', KEYS[2]).ok
if t ~= 'none' and t ~= 'list' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. t .. ', not a list')
end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
