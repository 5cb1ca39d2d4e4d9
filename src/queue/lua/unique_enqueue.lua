-- Queue: enqueue unique jobs (EnqueueOptions::unique_for). Each job whose
-- claim key is free takes it (holding its id, for the claim's lifetime) and
-- goes to the tail of the queue; a job whose claim is held is not enqueued
-- and gets the holder's id. Two commands per job, the fewest that can do it:
-- the script is the cost of a unique enqueue over a plain one.
--
-- KEYS[1]     the queue
-- KEYS[2..]   one claim key per job (same slot as the queue on a cluster)
-- ARGV[1]     the claims' lifetime in ms
-- ARGV[2..]   per job: its id, its payload
-- Returns     the id of each job: its own, or the one holding its claim; a
--             WRONGTYPE error, with nothing written, when the queue key is
--             not a list (every push goes to that key, so the first one fails).
local out = {}
for i = 2, #KEYS do
  local id, payload = ARGV[2 * i - 2], ARGV[2 * i - 1]
  if redis.call('SET', KEYS[i], id, 'NX', 'PX', ARGV[1]) then
    local pushed = redis.pcall('RPUSH', KEYS[1], payload)
    if type(pushed) == 'table' and pushed.err then
      redis.call('DEL', KEYS[i])
      return redis.error_reply(KEYS[1] .. ' refused the job: ' .. pushed.err)
    end
    out[#out + 1] = id
  else
    out[#out + 1] = redis.call('GET', KEYS[i])
  end
end
return out
