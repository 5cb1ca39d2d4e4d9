-- Queue: promote one queue's due delayed jobs on a Redis Cluster
-- (QueueManager::promote_due_jobs), with promote_queue.
--! use queue_promote_queue
--
-- KEYS[1]  retools:delayed:{q}, the queue's delayed set
-- KEYS[2]  retools:queue:{q}, the queue (same slot)
-- ARGV[1]  now (float Unix seconds)
-- ARGV[2]  how many to move at most
-- ARGV[3]  the queue name q
-- Returns  {moved, members that could not be read, note ('' = none)}.
local moved, bad, note = promote_queue(KEYS[1], KEYS[2], ARGV[3], ARGV[1], tonumber(ARGV[2]))
return {moved, bad, note or ''}
