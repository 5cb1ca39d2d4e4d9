#include "lock/scripts.hpp"

namespace retools::detail {

// SETNX + EXPIRE of Python retools in one command (the key is never left
// without a TTL), then a fencing token: max(last token + 1, server time in
// µs), so tokens strictly increase while `<key>:fence` lives and, once it has
// expired (a day after the last acquisition, or 2 x the lock's TTL if longer),
// keep increasing with the server's clock: no counter is kept forever.
// A caller that will wait marks `<key>:waiting` (kept for at least ARGV[4] ms)
// so that the release knows to wake someone.
// KEYS[1] = lock key, KEYS[2] = `<key>:fence`, KEYS[3] = `<key>:waiting`;
// ARGV[1] = token, ARGV[2] = TTL in ms, ARGV[3] = TTL of the fence key in ms,
// ARGV[4] = TTL of the waiting mark in ms (0: the caller will not wait).
// Returns {1, fencing token} when taken, else {0, PTTL of the key}.
const Script& lock_acquire_script() {
    static const Script script{R"lua(
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local wait = tonumber(ARGV[4])
  if wait > 0 and redis.call('PTTL', KEYS[3]) < wait then
    redis.call('SET', KEYS[3], '1', 'PX', wait)
  end
  return {0, redis.call('PTTL', KEYS[1])}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = math.max(now, (tonumber(redis.call('GET', KEYS[2])) or 0) + 1)
redis.call('SET', KEYS[2], string.format('%.0f', fence), 'PX', ARGV[3])
return {1, fence}
)lua"};
    return script;
}

// Compare-and-delete (a holder whose key expired never deletes a successor's
// lock); then, if someone is waiting, one element into the signal list, which
// wakes one BLPOP waiter and expires soon so that it cannot pile up. Still
// one round trip. KEYS[1] = lock key, KEYS[2] = `<key>:signal`, KEYS[3] =
// `<key>:waiting`; ARGV[1] = token, ARGV[2] = TTL of the signal in ms.
// Returns 1 when deleted, else 0.
const Script& lock_release_script() {
    static const Script script{R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
)lua"};
    return script;
}

// Compare-and-renew, for extend() and the watchdog.
// KEYS[1] = lock key; ARGV[1] = token, ARGV[2] = new TTL in ms. Returns 1 when renewed.
const Script& lock_extend_script() {
    static const Script script{R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
)lua"};
    return script;
}

// Python retools checks ZCARD, then ZADDs: two callers can both see room.
// Here the check and the add are one script, with the original's rule: the
// caller is added (or its expiry refreshed) only while fewer than `limit`
// members remain, whether or not it is one of them. Times come from the
// server's clock (TIME), so a client with a skewed clock cannot evict live
// holders; scores stay float Unix seconds, as Python writes them.
// KEYS[1] = the set; ARGV[1] = member, ARGV[2] = limit, ARGV[3] = expiration
// in ms, ARGV[4] = "1" to drop expired holders when the set is full (Python's
// retry=True). Returns 1 when added, 0 when the set is full.
const Script& limiter_acquire_script() {
    static const Script script{R"lua(
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
local set, limit = KEYS[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('ZCARD', set) >= limit then
  if ARGV[4] ~= '1' then return 0 end
  redis.call('ZREMRANGEBYSCORE', set, '-inf', string.format('%.17g', now))
  if redis.call('ZCARD', set) >= limit then return 0 end
end
redis.call('ZADD', set, string.format('%.17g', now + tonumber(ARGV[3]) / 1000), ARGV[1])
return 1
)lua"};
    return script;
}

}  // namespace retools::detail
