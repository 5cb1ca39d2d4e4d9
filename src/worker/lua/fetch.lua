-- Worker: take jobs and finish the previous batch in one call (ReliableFetch,
-- single node). Moves up to ARGV[1] jobs from the first non-empty queues, in
-- priority order, to the processing list, after applying the finish
-- operations of the jobs finished since the last call.
-- A D (with what follows it) or R that cannot be applied for a key of the
-- wrong type is skipped, its job left in the processing list, and its position
-- in the operations returned, for the worker to send again later.
-- Due delayed jobs are promoted as QueueManager::promote_due_jobs does, in the
-- same call. A script error keeps the writes made before it, so no key of the
-- wrong type may raise one half-way: every key written is checked first. A
-- queue key of the wrong type is skipped (its queue stalls, the others do
-- not); a finished job whose failed-list entry, retry or requeue has nowhere
-- to go stays in the processing list (recovered once the key is fixed); a bad
-- retools:delayed only stops promotion. The notes say what was skipped.
--! use queue_failed_entry
--! use worker_counters
--
-- KEYS[1]    the processing list
-- KEYS[2]    the worker key
-- KEYS[3]    retools:failed
-- KEYS[4]    retools:delayed
-- KEYS[5..]  the queues, in priority order
-- ARGV[1]    how many jobs to take
-- ARGV[2]    now (float Unix seconds)
-- ARGV[3]    '1' when the worker will be idle
-- ARGV[4]    the worker id
-- ARGV[5]    UTC day, ARGV[6] UTC hour (counters)
-- ARGV[7]    heartbeat JSON ('' = no beat this time)
-- ARGV[8]    its TTL in ms
-- ARGV[9]    queue names, ARGV[10] start time, ARGV[11] concurrency (to
--            register again when pruned)
-- ARGV[12..] finish operations:
--   D <entry>                remove a finished job from the processing list
--   R <entry>                remove it and put its payload back at the head of its queue
--   F <failed entry json>    append to the failed list                  } only if the D just
--   S <key> <value> <ttl s>  store a result (a one-element list, as     } before removed its
--                            QueueManager::store_result)                } job: resending a
--   Z <score> <member>       schedule a retry in the delayed set        } batch whose reply was
--                            (as QueueManager::retry_later)             } lost changes nothing
-- Returns  {entries taken ("<queue>\n<payload>"), notes, positions of operations kept}.
local function is(k, want)
  local t = redis.call('TYPE', k)['ok']
  return t == 'none' or t == want, t
end
local notes = {}
local ok1, t1 = is(KEYS[1], 'list')
if not ok1 then return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. t1 .. ', not a list') end
local failed_ok = is(KEYS[3], 'list')
local delayed_ok = is(KEYS[4], 'zset')
local now = ARGV[2]
local id = ARGV[4]

if ARGV[7] ~= '' then
  redis.pcall('SET', 'retools:heartbeat:' .. id, ARGV[7], 'PX', ARGV[8])
  redis.pcall('ZADD', 'retools:heartbeats', now, id)
  if redis.pcall('SADD', 'retools:workers', id) == 1 then
    redis.call('SET', 'retools:worker:' .. id .. ':started', ARGV[10])
    redis.call('SET', 'retools:worker:' .. id .. ':queues', ARGV[9])
    redis.call('SET', 'retools:worker:' .. id .. ':threads', ARGV[11])
  end
end

local processing = KEYS[1]
local has_rec = redis.call('TYPE', 'retools:recoveries')['ok'] == 'hash'
local i, n = 12, #ARGV
local removed = false
local processed, failed, kept = 0, 0, {}
while i <= n do
  local op = ARGV[i]
  if op == 'D' then
    local e, nxt = ARGV[i + 1], ARGV[i + 2]
    if (nxt == 'F' and not failed_ok) or (nxt == 'Z' and not delayed_ok) then
      removed = false
      kept[#kept + 1] = i - 12
    else
      removed = redis.call('LREM', processing, 1, e) == 1
      if removed then
        processed = processed + 1
        if has_rec then redis.call('HDEL', 'retools:recoveries', redis.sha1hex(e)) end
      end
    end
    i = i + 2
  elseif op == 'R' then
    local e = ARGV[i + 1]
    local nl = string.find(e, '\n', 1, true)
    local key = 'retools:queue:' .. string.sub(e, 1, (nl or 1) - 1)
    if nl and is(key, 'list') then
      if redis.call('LREM', processing, 1, e) == 1 then redis.call('LPUSH', key, string.sub(e, nl + 1)) end
    elseif nl then
      kept[#kept + 1] = i - 12
    end
    i = i + 2
  elseif op == 'F' then
    if removed then
      redis.call('RPUSH', KEYS[3], ARGV[i + 1])
      failed = failed + 1
    end
    i = i + 2
  elseif op == 'S' then
    if removed then
      redis.call('DEL', ARGV[i + 1])
      redis.call('RPUSH', ARGV[i + 1], ARGV[i + 2])
      redis.call('EXPIRE', ARGV[i + 1], ARGV[i + 3])
    end
    i = i + 4
  elseif op == 'Z' then
    if removed then redis.call('ZADD', KEYS[4], ARGV[i + 1], ARGV[i + 2]) end
    i = i + 3
  else
    return redis.error_reply('retools: unknown finish operation ' .. tostring(op))
  end
end
count_finished(processed, failed, ARGV[5], ARGV[6])
if #kept > 0 then
  notes[#notes + 1] = #kept .. ' finished job(s) kept in ' .. processing ..
    ' until retools:failed, retools:delayed or their queue key holds the right type'
end

if not delayed_ok then
  notes[#notes + 1] = 'retools:delayed is not a sorted set: due jobs are not promoted'
elseif not failed_ok then
  notes[#notes + 1] = 'retools:failed is not a list: due jobs are not promoted'
else
  local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
  for _, m in ipairs(due) do
    local ok, d = pcall(cjson.decode, m)
    local problem, payload, queue = 'malformed entry in retools:delayed', m, ''
    if ok and type(d) == 'table' and type(d.queue) == 'string' and type(d.payload) == 'string'
       and d.queue ~= '' and not string.find(d.queue, '[:,]') then
      local pushed = redis.pcall('RPUSH', 'retools:queue:' .. d.queue, d.payload)
      if type(pushed) == 'table' and pushed.err then
        problem, payload, queue = 'retools:queue:' .. d.queue .. ' refused the job: ' .. pushed.err, d.payload, d.queue
      else
        problem = nil
      end
    end
    if problem then
      redis.call('RPUSH', KEYS[3], failed_entry(payload, queue, id, problem, tonumber(now)))
    end
    redis.call('ZREM', KEYS[4], m)
    if not problem then redis.pcall('SADD', 'retools:queues', d.queue) end
  end
end

local want = tonumber(ARGV[1])
local out = {}
for k = 5, #KEYS do
  if want <= 0 then break end
  local okq, tq = is(KEYS[k], 'list')
  if not okq then
    notes[#notes + 1] = KEYS[k] .. ' holds a ' .. tq .. ', not a list: skipped'
  else
    local items = redis.call('LRANGE', KEYS[k], 0, want - 1)
    local got = #items
    if got > 0 then
      redis.call('LTRIM', KEYS[k], got, -1)
      local name = string.sub(KEYS[k], 15)
      for j = 1, got do
        local e = name .. '\n' .. items[j]
        items[j] = e
        out[#out + 1] = e
      end
      redis.call('RPUSH', processing, unpack(items))
      want = want - got
    end
  end
end

if #out > 0 then
  local e = out[1]
  local nl = string.find(e, '\n', 1, true)
  local payload = string.sub(e, nl + 1)
  if not pcall(cjson.decode, payload) then payload = cjson.encode(payload) end
  redis.call('SET', KEYS[2], '{"queue": ' .. cjson.encode('retools:queue:' .. string.sub(e, 1, nl - 1)) ..
    ', "run_at": ' .. now .. ', "payload": ' .. payload .. '}')
elseif ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
end
return {out, table.concat(notes, '; '), kept}
