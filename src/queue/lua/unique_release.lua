-- Queue: release a unique job's claim (the worker, when the job starts or
-- ends), only while it still names that job: a claim that expired and was
-- taken by a newer job stays.
--
-- KEYS[1]  the claim key
-- ARGV[1]  the job id
-- Returns  1 when released, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
