-- Worker: take jobs of one queue and finish its previous batch on a Redis
-- Cluster (ReliableFetch), promoting its due delayed jobs with promote_queue.
-- A retry is scheduled only if its job was removed here (resending a batch
-- whose reply was lost changes nothing).
--! use queue_promote_queue
--
-- KEYS[1]  the worker's processing list of this queue
-- KEYS[2]  the queue's delayed set
-- KEYS[3]  the queue (all three in one slot)
-- ARGV[1]  how many jobs to take
-- ARGV[2]  now (float Unix seconds)
-- ARGV[3]  the queue name
-- ARGV[4]  the promotion limit
-- ARGV[5..] finish operations of this queue, five arguments each: op ('D'
--          remove a finished job, 'R' put it back at the head of the queue),
--          its position in the batch, entry, retry score ('' = none), retry member
-- Returns  {entries taken, delayed members promotion could not read, note,
--          positions removed, positions kept (a key of the wrong type),
--          queue length left}.
local function is(k, want)
  local t = redis.call('TYPE', k)['ok']
  return t == 'none' or t == want, t
end
local ok1, t1 = is(KEYS[1], 'list')
if not ok1 then return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. t1 .. ', not a list') end
local delayed_ok = is(KEYS[2], 'zset')
local queue_ok, tq = is(KEYS[3], 'list')
local notes = {}
local removed, kept = {}, {}
for i = 5, #ARGV, 5 do
  local op, pos, e, score, member = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if op == 'D' then
    if score ~= '' and not delayed_ok then
      kept[#kept + 1] = pos
    elseif redis.call('LREM', KEYS[1], 1, e) == 1 then
      removed[#removed + 1] = pos
      if score ~= '' then redis.call('ZADD', KEYS[2], score, member) end
    end
  elseif not queue_ok then
    kept[#kept + 1] = pos
  elseif redis.call('LREM', KEYS[1], 1, e) == 1 then
    local nl = string.find(e, '\n', 1, true)
    redis.call('LPUSH', KEYS[3], string.sub(e, (nl or 0) + 1))
  end
end
if #kept > 0 then
  notes[#notes + 1] = #kept .. ' finished job(s) kept in ' .. KEYS[1] ..
    ' until ' .. KEYS[2] .. ' or ' .. KEYS[3] .. ' holds the right type'
end
local bad = {}
local limit = tonumber(ARGV[4])
if limit > 0 then
  local _, b, note = promote_queue(KEYS[2], KEYS[3], ARGV[3], ARGV[2], limit)
  bad = b
  if note then notes[#notes + 1] = note end
end
local out = {}
local want = tonumber(ARGV[1])
if not queue_ok then
  notes[#notes + 1] = KEYS[3] .. ' holds a ' .. tq .. ', not a list: skipped'
  return {out, bad, table.concat(notes, '; '), removed, kept, 0}
end
if want > 0 then
  local items = redis.call('LRANGE', KEYS[3], 0, want - 1)
  if #items > 0 then
    redis.call('LTRIM', KEYS[3], #items, -1)
    for j = 1, #items do
      items[j] = ARGV[3] .. '\n' .. items[j]
      out[#out + 1] = items[j]
    end
    redis.call('RPUSH', KEYS[1], unpack(items))
  end
end
return {out, bad, table.concat(notes, '; '), removed, kept, redis.call('LLEN', KEYS[3])}
