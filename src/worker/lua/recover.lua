-- Worker: give back a worker's jobs on a single node (recover_worker).
-- Takes from the tail and pushes on the head, so the jobs keep their order
-- and come before anything enqueued since. Deaths are counted only for the
-- first <:threads> entries (the oldest, the ones that can have been
-- running). An entry leaves the list only once it has landed somewhere.
--! use queue_failed_entry
--! use worker_counters
--
-- KEYS[1]   the worker's processing list
-- KEYS[2]   retools:workers
-- KEYS[3]   the worker key
-- KEYS[4]   its :started key
-- KEYS[5]   its :queues key
-- KEYS[6]   retools:failed
-- KEYS[7]   its heartbeat key
-- KEYS[8]   retools:recoveries
-- KEYS[9]   its :threads key
-- KEYS[10]  retools:heartbeats
-- ARGV[1]   the worker id
-- ARGV[2]   mode: resync | own | dead
-- ARGV[3]   now (float Unix seconds)
-- ARGV[4]   max recoveries (0 = no limit)
-- ARGV[5]   the heartbeat value a 'dead' owner may still have ('' = none)
-- ARGV[6]   '1' to unregister the worker
-- ARGV[7]   UTC day, ARGV[8] UTC hour (counters of quarantined jobs)
-- Returns   {requeued, quarantined}, or {-1, 0} when the owner is alive.
local function typ(k) return redis.call('TYPE', k)['ok'] end
local mode = ARGV[2]
if mode == 'dead' then
  local t = typ(KEYS[7])
  if t == 'string' then
    if ARGV[5] == '' or redis.call('GET', KEYS[7]) ~= ARGV[5] then return {-1, 0} end
  elseif t ~= 'none' then
    return {-1, 0}
  end
end
local t = typ(KEYS[1])
if t ~= 'list' and t ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. t .. ', not a list')
end
local ft = typ(KEYS[6])
local failed_ok = ft == 'none' or ft == 'list'
local rt = typ(KEYS[8])
local counting = mode ~= 'resync' and (rt == 'none' or rt == 'hash')
local threads = 1
if counting then
  local th = redis.pcall('GET', KEYS[9])
  if type(th) == 'string' and tonumber(th) then threads = tonumber(th) end
end
local max = tonumber(ARGV[4])
local len = redis.call('LLEN', KEYS[1])
local n, q = 0, 0
while len > 0 do
  local e = redis.call('LINDEX', KEYS[1], -1)
  local nl = string.find(e, '\n', 1, true)
  local problem, payload, queue, poison = 'unreadable processing-list entry', e, '', false
  if nl and nl > 1 then
    queue, payload, problem = string.sub(e, 1, nl - 1), string.sub(e, nl + 1), nil
    if counting and len - 1 < threads then
      local f = redis.sha1hex(e)
      local c = redis.call('HINCRBY', KEYS[8], f, 1)
      redis.call('EXPIRE', KEYS[8], 604800)
      if max > 0 and c >= max then
        problem, poison = 'worker died ' .. c .. ' times while running this job', true
        redis.call('HDEL', KEYS[8], f)
      end
    end
    if not problem or (poison and not failed_ok) then
      local key = 'retools:queue:' .. queue
      local r = redis.pcall('LPUSH', key, payload)
      if type(r) == 'table' and r.err then
        problem = key .. ' refused the job: ' .. r.err
      else
        problem = nil
        n = n + 1
      end
    end
  end
  if problem then
    if not failed_ok then
      return redis.error_reply('WRONGTYPE ' .. KEYS[6] .. ' holds a ' .. ft .. ', not a list; ' ..
        KEYS[1] .. ' keeps its remaining jobs')
    end
    redis.call('RPUSH', KEYS[6], failed_entry(payload, queue, ARGV[1], problem, tonumber(ARGV[3])))
    q = q + 1
  end
  redis.call('RPOP', KEYS[1])
  len = len - 1
end
count_finished(q, q, ARGV[7], ARGV[8])
if ARGV[6] == '1' then
  redis.pcall('SREM', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[9])
end
if mode == 'dead' then
  if ARGV[5] ~= '' then redis.call('DEL', KEYS[7]) end
  redis.pcall('ZREM', KEYS[10], ARGV[1])
end
return {n, q}
