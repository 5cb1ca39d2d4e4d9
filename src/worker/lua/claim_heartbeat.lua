-- Worker: claim a worker id's heartbeat (claim_heartbeat), unless another
-- instance holds it.
--
-- KEYS[1]  the heartbeat key
-- ARGV[1]  the heartbeat JSON
-- ARGV[2]  its TTL in ms
-- ARGV[3]  `"instance": "<token>"`, this instance's mark inside the JSON
-- Returns  the heartbeat of another instance holding the id (or 'a <type>'
--          when the key is not a string), or nil once claimed.
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' then
  if t ~= 'string' then return 'a ' .. t end
  local cur = redis.call('GET', KEYS[1])
  if not string.find(cur, ARGV[3], 1, true) then return cur end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
