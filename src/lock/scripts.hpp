#pragma once
// The Lua scripts of the lock and the limiter (their text: src/lock/lua/), in
// one place so that the benchmark floor runs the same ones.

#include <chrono>

#include <retools/script.hpp>

namespace retools::detail {

/// How long a release's wake-up stays in `<key>:signal` for a waiter that is
/// between a failed attempt and its BLPOP.
inline constexpr std::chrono::milliseconds lock_signal_ttl{1000};

/// Takes the lock and draws a fencing token, or reports the holder's TTL.
const Script& lock_acquire_script();
/// Compare-and-delete, and wakes one waiter.
const Script& lock_release_script();
/// Compare-and-renew.
const Script& lock_extend_script();
/// lock_acquire_script() for many keys, one attempt each (no waiting mark):
/// the cache's dogpile locks of a batch.
const Script& lock_acquire_many_script();
/// lock_release_script() for many keys, waking a waiting Lock of each.
const Script& lock_release_many_script();

/// The limiter's atomic count-prune-add, timed by the server's clock.
const Script& limiter_acquire_script();
/// A held slot's lease renewed, if still held (for extend() and auto_renew).
const Script& limiter_extend_script();
/// A slot removed, saying whether it was still held.
const Script& limiter_release_script();

/// ReadWriteLock: a reader admitted, a writer taken, a reader leaving, a
/// reader's hold renewed (a writer's release and renewal are Lock's).
const Script& rw_acquire_read_script();
const Script& rw_acquire_write_script();
const Script& rw_release_read_script();
const Script& rw_extend_read_script();

/// RateLimiter's GCRA decision, timed by the server's clock.
const Script& rate_limiter_acquire_script();

}  // namespace retools::detail
