-- Queue: remove a scheduled job by id (QueueManager::cancel_scheduled).
--
-- KEYS[1]  the delayed set (retools:delayed, or retools:delayed:{q} on a Cluster)
-- ARGV[1]  the job id
-- Returns  1 when removed, else 0.
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local ok, entry = pcall(cjson.decode, member)
  if ok and type(entry) == 'table' and type(entry.payload) == 'string' then
    local ok2, job = pcall(cjson.decode, entry.payload)
    if ok2 and type(job) == 'table' and job.job_id == ARGV[1] then
      redis.call('ZREM', KEYS[1], member)
      return 1
    end
  end
end
return 0
