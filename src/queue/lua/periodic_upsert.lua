-- Queue: define or redefine a periodic job (QueueManager::schedule_periodic).
-- The same definition again changes nothing, so every process may call it at
-- start-up. A new schedule takes effect at once; a definition whose schedule
-- is unchanged keeps its next run (a run already due is not skipped).
--
-- KEYS[1]  the definitions hash (retools:periodic, on a cluster retools:periodic:{q})
-- KEYS[2]  the next-run sorted set beside it
-- ARGV[1]  the id
-- ARGV[2]  the definition (JSON with a "schedule" field)
-- ARGV[3]  the next run computed from now (Unix seconds)
-- Returns  1 when the definition was added or changed, 0 when it was already there.
local old = redis.call('HGET', KEYS[1], ARGV[1])
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if old == ARGV[2] and score then return 0 end
local next_run = ARGV[3]
if old and score then
  local ok1, o = pcall(cjson.decode, old)
  local ok2, n = pcall(cjson.decode, ARGV[2])
  if ok1 and ok2 and type(o) == 'table' and type(n) == 'table' and o.schedule == n.schedule then
    next_run = score
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], next_run, ARGV[1])
return 1
