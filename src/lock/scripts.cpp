#include "lock/scripts.hpp"

namespace retools::detail {

// SETNX + EXPIRE of Python retools in one command (the key is never left
// without a TTL), then a fencing token: max(last token + 1, server time in
// µs), so tokens strictly increase while `<key>:fence` lives and, once it has
// expired (a day after the last acquisition, or 2 x the lock's TTL if longer),
// keep increasing with the server's clock: the counter costs no memory forever.
// KEYS[1] = lock key, KEYS[2] = `<key>:fence`; ARGV[1] = token, ARGV[2] = TTL
// in ms, ARGV[3] = TTL of the fence key in ms.
// Returns {1, fencing token} when taken, else {0, PTTL of the key}.
const Script& lock_acquire_script() {
    static const Script script{R"lua(
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes, Redis < 5
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
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
// lock), then one token into the signal list, which wakes one BLPOP waiter;
// it expires soon so that it cannot pile up. Still one round trip.
// KEYS[1] = lock key, KEYS[2] = `<key>:signal`; ARGV[1] = token, ARGV[2] =
// TTL of the signal in ms. Returns 1 when deleted, else 0.
const Script& lock_release_script() {
    static const Script script{R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('LPUSH', KEYS[2], '1')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
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

}  // namespace retools::detail
