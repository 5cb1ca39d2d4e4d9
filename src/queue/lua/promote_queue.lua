-- Library for a Redis Cluster, where each queue has its own delayed set beside
-- it (`--! use queue_promote_queue`):
--   promote_queue(delayed_key, queue_key, queue_name, now, limit) moves up to
--   `limit` due members of that set to the tail of the queue and returns
--   `moved, bad, note`: `bad` lists the due members it could not read (or
--   that name another queue), left in place for quarantine_delayed(); `note`
--   says why nothing moved (a key of the wrong type: nothing is lost, the
--   jobs wait).
--
-- KEYS, ARGV: none of its own (it only defines a local function).
-- Returns  nothing.
local function promote_queue(dk, qk, name, now, limit)
  local bad = {}
  local t = redis.call('TYPE', dk)['ok']
  if t ~= 'none' and t ~= 'zset' then return 0, bad, dk .. ' holds a ' .. t .. ', not a sorted set' end
  local qt = redis.call('TYPE', qk)['ok']
  if qt ~= 'none' and qt ~= 'list' then return 0, bad, qk .. ' holds a ' .. qt .. ', not a list: due jobs wait' end
  local moved = 0
  if limit <= 0 then return moved, bad, nil end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', dk, '-inf', now, 'LIMIT', 0, limit)) do
    local ok, d = pcall(cjson.decode, m)
    if ok and type(d) == 'table' and d.queue == name and type(d.payload) == 'string' then
      redis.call('RPUSH', qk, d.payload)
      redis.call('ZREM', dk, m)
      moved = moved + 1
    else
      bad[#bad + 1] = m
    end
  end
  return moved, bad, nil
end
