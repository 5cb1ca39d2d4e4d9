-- Queue: promote due delayed jobs on a single node (QueueManager::promote_due_jobs).
-- Queue keys are derived from the entries (they cannot be known beforehand).
-- Nothing leaves retools:delayed before it has landed elsewhere: a key of the
-- wrong type must not turn a script error (which keeps earlier writes) into a
-- lost job. Tracking keys are checked up front; a queue key that will not take
-- the job files it, intact, in retools:failed with the reason.
-- (retools:queues is only an index: it is written last.)
--! use queue_failed_entry
--
-- KEYS[1]  retools:delayed
-- KEYS[2]  retools:queues
-- KEYS[3]  retools:failed
-- ARGV[1]  now (float Unix seconds)
-- ARGV[2]  how many to move at most
-- ARGV[3]  the queue key prefix (`retools:queue:`)
-- ARGV[4]  failed_at for entries filed in retools:failed
-- Returns  how many jobs were moved; a WRONGTYPE error when KEYS[1] or
--          KEYS[3] holds the wrong type.
for _, check in ipairs({{KEYS[1], 'zset'}, {KEYS[3], 'list'}}) do
  local t = redis.call('TYPE', check[1])['ok']
  if t ~= 'none' and t ~= check[2] then
    return redis.error_reply('WRONGTYPE ' .. check[1] .. ' holds a ' .. t .. ', not a ' .. check[2])
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, member in ipairs(due) do
  local ok, entry = pcall(cjson.decode, member)
  local problem, payload, queue = 'malformed entry in retools:delayed', member, ''
  if ok and type(entry) == 'table' and type(entry.queue) == 'string' and type(entry.payload) == 'string'
     and entry.queue ~= '' and not string.find(entry.queue, '[:,]') then
    local pushed = redis.pcall('RPUSH', ARGV[3] .. entry.queue, entry.payload)
    if type(pushed) == 'table' and pushed.err then
      problem, payload, queue = ARGV[3] .. entry.queue .. ' refused the job: ' .. pushed.err, entry.payload, entry.queue
    else
      problem = nil
      moved = moved + 1
    end
  end
  if problem then
    redis.call('RPUSH', KEYS[3], failed_entry(payload, queue, '', problem, tonumber(ARGV[4])))
  end
  redis.call('ZREM', KEYS[1], member)
  if not problem then redis.call('SADD', KEYS[2], entry.queue) end
end
return moved
