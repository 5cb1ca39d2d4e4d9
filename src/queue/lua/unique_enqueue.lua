-- Queue: enqueue unique jobs (EnqueueOptions::unique_for). Each job whose
-- claim key is free takes it (holding its id, for the claim's lifetime) and
-- goes to the tail of the queue; a job whose claim is held is not enqueued
-- and gets the holder's id.
--
-- KEYS[1]     the queue
-- KEYS[2..]   one claim key per job (same slot as the queue on a cluster)
-- ARGV[1]     the claims' lifetime in ms
-- ARGV[2..]   per job: its id, its payload
-- Returns     the id of each job: its own, or the one holding its claim.
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'list' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. t .. ', not a list')
end
local out = {}
for i = 2, #KEYS do
  local id, payload = ARGV[2 * i - 2], ARGV[2 * i - 1]
  local held = redis.call('GET', KEYS[i])
  if held then
    out[#out + 1] = held
  else
    redis.call('SET', KEYS[i], id, 'PX', ARGV[1])
    redis.call('RPUSH', KEYS[1], payload)
    out[#out + 1] = id
  end
end
return out
