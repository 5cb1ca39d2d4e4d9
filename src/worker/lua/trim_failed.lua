-- Worker: keep retools:failed bounded (WorkerOptions::failed_retention), run
-- by every worker at start-up and with its recovery step (every heartbeat
-- interval). The newest `max_entries` entries stay (RPUSH appends, so the
-- oldest are at the head); then entries at the head older than `max_age`
-- (their `failed_at`) go, at most 1,000 a call. An entry that is not a JSON
-- object with a numeric failed_at stops the age trim (it is not guessed at).
-- A key of another type is left alone.
--
-- KEYS[1]  retools:failed
-- ARGV[1]  max_entries (0: no limit)
-- ARGV[2]  max_age in seconds (0: no limit)
-- ARGV[3]  now (float Unix seconds)
-- Returns  how many entries were removed.
if redis.call('TYPE', KEYS[1])['ok'] ~= 'list' then return 0 end
local removed = 0
local max_entries, max_age = tonumber(ARGV[1]), tonumber(ARGV[2])
local len = redis.call('LLEN', KEYS[1])
if max_entries > 0 and len > max_entries then
  redis.call('LTRIM', KEYS[1], -max_entries, -1)
  removed = len - max_entries
end
if max_age > 0 then
  local cutoff = tonumber(ARGV[3]) - max_age
  for _ = 1, 1000 do
    local head = redis.call('LINDEX', KEYS[1], 0)
    if not head then break end
    local ok, entry = pcall(cjson.decode, head)
    if not ok or type(entry) ~= 'table' or type(entry.failed_at) ~= 'number' or entry.failed_at >= cutoff then
      break
    end
    redis.call('LPOP', KEYS[1])
    removed = removed + 1
  end
end
return removed
