-- Worker: give back a dead worker's jobs of one queue on a Redis Cluster
-- (recover_worker). Moves the processing list's entries, from the tail, to the
-- head of the queue (their order is kept, ahead of anything enqueued since),
-- except those already filed in retools:failed.
--
-- KEYS[1]  the worker's processing list of that queue
-- KEYS[2]  the queue (same slot)
-- ARGV     the entries already filed in retools:failed (each dropped once)
-- Returns  how many jobs were requeued; a WRONGTYPE error (nothing moved)
--          when either key is not a list.
for _, k in ipairs({{KEYS[1], 'list'}, {KEYS[2], 'list'}}) do
  local t = redis.call('TYPE', k[1])['ok']
  if t ~= 'none' and t ~= k[2] then
    return redis.error_reply('WRONGTYPE ' .. k[1] .. ' holds a ' .. t .. ', not a list; ' .. KEYS[1] .. ' keeps its jobs')
  end
end
local drop = {}
for i = 1, #ARGV do drop[ARGV[i]] = (drop[ARGV[i]] or 0) + 1 end
local n = 0
while true do
  local e = redis.call('RPOP', KEYS[1])
  if not e then break end
  if drop[e] and drop[e] > 0 then
    drop[e] = drop[e] - 1
  else
    local nl = string.find(e, '\n', 1, true)
    redis.call('LPUSH', KEYS[2], string.sub(e, (nl or 0) + 1))
    n = n + 1
  end
end
return n
