-- Library, prepended (`--! use worker_counters`) to the scripts that finish
-- jobs: count_finished(processed, failed, day, hour) bumps the counters
-- (nothing for zero). A counter key of the wrong type is skipped: counting
-- must never stop a job from being acknowledged.
--
-- KEYS, ARGV: none of its own (it only defines a local function).
-- Returns  nothing.
local function count_finished(processed, failed, day, hour)
  for _, c in ipairs({{'processed', processed}, {'failed', failed}}) do
    if c[2] > 0 then
      local base = 'retools:stat:' .. c[1]
      redis.pcall('INCRBY', base, c[2])
      redis.pcall('INCRBY', base .. ':' .. day, c[2])
      redis.pcall('EXPIRE', base .. ':' .. day, 15552000)
      redis.pcall('INCRBY', base .. ':' .. hour, c[2])
      redis.pcall('EXPIRE', base .. ':' .. hour, 172800)
    end
  end
end
