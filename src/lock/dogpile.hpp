#pragma once
// The cache's dogpile locks: retools::Lock's protocol (key names, scripts,
// fencing counter, signal TTL, renewal) for the cache's single calls, and its
// batch form for get_many, which takes and releases many locks in one round
// trip each.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>
#include <retools/lock.hpp>

#include "lock/topology.hpp"

namespace retools::detail {

/// Dogpile locks are renewed every `ttl / 3` while their function runs, for
/// `expires` from 30 ms up, however long the function takes (a background
/// computation after a soft timeout included). Below 30 ms a renewal round
/// trip every few milliseconds would cost more than it protects. Renewals go
/// through the process's one renewal thread, which sequential misses reuse
/// (it lingers a second after the last lock; a fork ends it first).
inline constexpr std::chrono::milliseconds dogpile_min_renewed_expires{30};
/// Waiters for a first value are answering a request: they notice a release
/// that sends no wake-up within this.
inline constexpr std::chrono::milliseconds dogpile_max_retry_delay{100};

/// Whether a dogpile lock of a region with this `expires` is renewed.
constexpr bool dogpile_renewed(std::chrono::milliseconds expires) noexcept {
    return expires >= dogpile_min_renewed_expires;
}

/// The TTL of a dogpile lock: the region's `expires` (at least 1 ms), as in
/// the original, unless a test shortened it (set_dogpile_ttl_for_tests).
std::chrono::milliseconds dogpile_ttl(std::chrono::milliseconds expires) noexcept;
/// For tests: every dogpile lock taken from now on has this TTL whatever its
/// region's `expires` (renewed every ttl / 3 when dogpile_renewed(expires));
/// 0 restores the default. It lets a test run a function longer than a long
/// region's first lock TTL in seconds.
void set_dogpile_ttl_for_tests(std::chrono::milliseconds ttl) noexcept;

/// The LockOptions of a dogpile lock: TTL dogpile_ttl(expires), renewed as
/// dogpile_renewed() says, waiting up to `timeout`.
LockOptions dogpile_lock_options(const Connection& conn, std::chrono::milliseconds expires,
                                 std::chrono::milliseconds timeout);

/// TTL of `<key>:fence`: a day after the last acquisition, or twice the lock's TTL if longer.
std::chrono::milliseconds lock_fence_ttl(std::chrono::milliseconds expires) noexcept;

/// Dogpile locks of many keys, taken with one attempt each in one round trip
/// (with Lock's acquire, fencing token included) and released in one (with
/// Lock's release, waking a waiting Lock). Renewed as dogpile_renewed() says.
/// What is still held when this goes away is released then (one round trip).
/// On a cluster each lock is its own script call (they are in many slots) in
/// one split pipeline.
class DogpileLocks {
public:
    DogpileLocks(const Connection& conn, std::chrono::milliseconds expires);
    ~DogpileLocks();
    DogpileLocks(const DogpileLocks&) = delete;
    DogpileLocks& operator=(const DogpileLocks&) = delete;

    /// Appends one attempt at each of `keys` to `p` (one command, or one per
    /// key on a cluster). Call taken() with the replies from `p.size()` before.
    void add_try_lock(Pipeline& p, const std::vector<std::string>& keys);
    /// Reads the attempts' replies from replies[at]; true for each key taken.
    /// False for all when the server did not know the script (retry with
    /// `source_needed` set): nothing was taken then.
    std::vector<bool> taken(const std::vector<Reply>& replies, std::size_t at, bool& source_needed);
    /// Sends the scripts' source from now on (after taken() set `source_needed`).
    void send_source() noexcept { send_source_ = true; }

    /// Takes over a Lock that waited for its key (and its renewal).
    void adopt(Lock&& lock);
    /// Whether `key` is held here.
    bool holds(const std::string& key) const;
    /// Moves the hold of `key` (token and renewal) to `to`, which must talk to
    /// the same Redis; false when `key` is not held here.
    bool hand_over(const std::string& key, DogpileLocks& to);

    /// Appends the release of every held lock to `p` (they count as released).
    void add_release(Pipeline& p);
    /// Appends the release of `key` alone to `p`, if held.
    void add_release_of(Pipeline& p, const std::string& key);

private:
    void hold(std::string key, std::string token, std::unique_ptr<Watchdog> renewal);
    void add_release_at(Pipeline& p, std::size_t i);
    void forget_at(std::size_t i) noexcept;

    const Connection& conn_;
    const LockTopology topology_;
    const std::chrono::milliseconds ttl_;
    const bool renewed_;  // dogpile_renewed() of the region's expires
    bool send_source_ = false;
    std::vector<std::string> pending_keys_, pending_tokens_;  // the attempts in flight
    // The held locks: key, token and renewal (null when not renewed) of each.
    std::vector<std::string> keys_, tokens_;
    std::vector<std::unique_ptr<Watchdog>> renewals_;
};

}  // namespace retools::detail
