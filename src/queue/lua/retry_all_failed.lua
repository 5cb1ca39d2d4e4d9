-- Queue: move every failed job back to its queue (QueueManager::retry_all_failed,
-- single node). Entries that cannot be retried (unreadable, or their queue key
-- is not a list) stay, in order. Nothing may fail half-way: an error after
-- some pushes would leave those entries in the list too, to be retried twice.
--! use queue_failed_entry
--
-- KEYS[1]  retools:failed
-- KEYS[2]  retools:queues
-- ARGV[1]  the queue key prefix (`retools:queue:`)
-- Returns  how many jobs were moved; a WRONGTYPE error when KEYS[2] is not a set.
local t = redis.call('TYPE', KEYS[2]).ok
if t ~= 'none' and t ~= 'set' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. t .. ', not a set')
end
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local keep = {}
local moved = 0
for _, e in ipairs(entries) do
  local ok, f = pcall(cjson.decode, e)
  local pushed = false
  local payload = ok and type(f) == 'table' and entry_payload(f)
  if payload and type(f.queue) == 'string' and f.queue ~= '' and not string.find(f.queue, '[:,]') then
    local r = redis.pcall('RPUSH', ARGV[1] .. f.queue, payload)
    pushed = not (type(r) == 'table' and r.err)
  end
  if pushed then
    redis.call('SADD', KEYS[2], f.queue)
    moved = moved + 1
  else
    keep[#keep + 1] = e
  end
end
redis.call('DEL', KEYS[1])
for i = 1, #keep, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 999, #keep)))
end
return moved
