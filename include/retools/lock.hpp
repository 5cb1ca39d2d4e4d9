#pragma once
// Lock: a distributed mutex on one Redis key, compatible with Python retools' Lock.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <retools/connection.hpp>
#include <retools/errors.hpp>

namespace retools {

namespace detail {
class DogpileLocks;  // the cache's batch form of Lock (src/lock/dogpile.hpp)
class Watchdog;      // auto-renewal of locks and limiter slots (src/lock/watchdog.hpp)
}  // namespace detail

/// How a Lock acquires and keeps its key. An aggregate: use designated initializers.
///
/// ```cpp
/// retools::Lock lock{"jobs:nightly", {.expires = 30s, .timeout = 0s}};
/// ```
struct LockOptions {
    /// TTL of the lock key: a holder that crashes frees the lock after this.
    /// Default 60 s. Must be at least 1 ms (0 is rejected with ConfigurationError).
    std::chrono::milliseconds expires{60000};
    /// Real time lock() (and the acquiring constructor) keeps trying before
    /// throwing LockTimeout. Default 10 s; 0 means exactly one attempt.
    std::chrono::milliseconds timeout{10000};
    /// Connection to use; nullopt (the default) means global_connection() at construction.
    std::optional<Connection> connection{};
    /// Cap of the randomized exponential backoff between attempts (delays
    /// start at 5 ms and double up to this; each wait is uniform in [0, delay]).
    /// A waiter is woken as soon as a retools holder releases, so this only
    /// bounds how late it notices a release that sends no wake-up (a Python
    /// retools holder, a key that expired). Default 1 s, as in Python retools:
    /// a waiter sends about 2 attempts per second once backed off. Must be at
    /// least 1 ms (0 is rejected).
    std::chrono::milliseconds max_retry_delay{1000};
    /// When true, a background thread renews the key's TTL to `expires` every
    /// `expires / 3` while the lock is held, so work may outlive `expires`
    /// (a crashed process still frees the lock after at most `expires`).
    /// Default false: the key simply expires after `expires`.
    bool auto_renew = false;
    /// Replica-acknowledged acquisition: after the key is taken, `WAIT` (in
    /// the same round trip) until this many replicas have it. If fewer
    /// acknowledge within `replica_timeout`, the key is deleted again and the
    /// acquisition fails: try_lock() and try_lock_for() return false at once,
    /// lock() throws LockTimeout saying how many replicas answered. This
    /// narrows the window in which a failover to a replica that never got the
    /// key lets a second holder in; it is not consensus (see
    /// docs/lock-advanced.md, "Failover"). 0 (the default): no wait.
    std::size_t min_replicas = 0;
    /// How long to wait for `min_replicas` (WAIT's timeout). Default 100 ms;
    /// at least 1 ms, and less than the connection's command_timeout.
    std::chrono::milliseconds replica_timeout{100};
};

/// What Lock::release() found in Redis.
enum class ReleaseResult {
    /// The key held this holder's token and was deleted.
    released,
    /// The key had expired (and may have been taken by another owner): nothing
    /// was deleted. The critical section was not protected for its whole duration.
    lost,
    /// This Lock did not hold the lock; nothing was sent.
    not_held,
};

/// A distributed lock on one Redis key, shared with Python retools processes:
/// the key (used verbatim) is a plain string holding a fresh random token of
/// 32 lowercase hex characters, with a TTL of `expires`. Acquire is one
/// `SET NX PX` round trip, release one compare-and-delete round trip, both as
/// scripts sent with EVALSHA.
///
/// Extra keys beside it, which Python retools never reads: `<key>:fence`
/// (the last fencing token, see fencing_token(); expires a day after the last
/// acquisition) and, only while someone waits, `<key>:waiting` (a mark) and
/// `<key>:signal` (a list the release pushes to, kept 1 s, so that a waiter
/// blocked on it with `BLPOP` wakes at once instead of at its next retry). A
/// waiting Lock blocks
/// on a connection of its own (one socket per Lock object that has waited,
/// opened on its first wait and kept until it is destroyed), never on one of
/// the pool's, so waiters cannot starve the pool. See docs/lock-advanced.md.
///
/// RAII: the acquiring constructor takes the lock or throws LockTimeout; the
/// destructor releases it, never throws, and never deletes a token that is not
/// its own. It is a standard *TimedLockable*, so `std::unique_lock`,
/// `std::scoped_lock` and `std::lock` work. Move-only. One Lock object is used
/// by one thread at a time (like std::unique_lock); different threads and
/// processes contend through separate Lock objects on the same key.
///
/// ```cpp
/// {
///     retools::Lock lock{"reports:daily", {.expires = 60s, .timeout = 10s}};  // or LockTimeout
///     build_report();
/// }   // released here
///
/// retools::Lock lazy{"reports:daily", std::defer_lock};
/// std::unique_lock guard{lazy, std::try_to_lock};
/// if (guard.owns_lock()) build_report();
/// ```
///
/// A holder whose key expired (work outlived `expires` without `extend()` or
/// `auto_renew`) finds out: `extend()` throws LockLost, `release()` returns
/// ReleaseResult::lost, and `owns_lock()` returns false. In a forked child, a
/// Lock inherited from the parent belongs to the parent: the child's copy
/// forgets it without touching Redis.
class Lock {
public:
    /// Acquires `key`, retrying for up to `options.timeout`; throws
    /// LockTimeout (naming the key and the time waited) when it cannot.
    explicit Lock(std::string key, LockOptions options = {});
    /// Does not acquire; call lock() / try_lock() / try_lock_for() later.
    /// (Every constructor rejects an empty key with ConfigurationError.)
    Lock(std::string key, std::defer_lock_t);
    /// Same, with options.
    Lock(std::string key, LockOptions options, std::defer_lock_t);

    Lock(Lock&& other) noexcept;
    /// Releases what this Lock holds (like the destructor), then takes over `other`.
    Lock& operator=(Lock&& other) noexcept;
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;

    /// Releases if held. Never throws.
    ~Lock();

    /// Acquires, retrying for up to `options.timeout`, or throws LockTimeout.
    /// Throws ConfigurationError if this Lock already holds the lock (it is not
    /// re-entrant) and ConnectionError if the server cannot be reached (the
    /// try_lock family throws the same).
    void lock();
    /// Exactly one attempt.
    [[nodiscard]] bool try_lock();
    /// Retries until acquired or `timeout` has passed (0: one attempt).
    template <class Rep, class Period>
    [[nodiscard]] bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
        return acquire_within(to_budget(timeout));
    }
    /// Retries until acquired or `deadline` has passed.
    template <class Clock, class Duration>
    [[nodiscard]] bool try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline) {
        return acquire_within(to_budget(deadline - Clock::now()));
    }
    /// Releases if held; no-op otherwise. Never throws, because
    /// std::unique_lock calls it from its destructor: a lost lock or an
    /// unreachable server is not reported here (the key then expires on its
    /// own). Use release() to learn the outcome.
    void unlock() noexcept;

    /// Releases if held and says what Redis held: released, lost (the key had
    /// expired; nothing deleted) or not_held. Throws ConnectionError if the
    /// server cannot be reached (the lock then counts as not held here and
    /// expires on its own).
    ReleaseResult release();

    /// Resets the key's TTL to `ttl` from now, atomically and only if it still
    /// holds this holder's token. Throws LockLost if it does not (the lock
    /// expired; this Lock then no longer holds it) or if this Lock holds
    /// nothing; ConfigurationError if `ttl` < 1 ms. With `auto_renew`, the
    /// renewal thread sets the TTL back to `expires` at its next tick.
    void extend(std::chrono::milliseconds ttl);
    /// Resets the TTL to `options.expires`.
    void extend() { extend(options_.expires); }

    /// Asks Redis whether the key still holds this holder's token (one round
    /// trip). False when not held or lost. Throws ConnectionError.
    [[nodiscard]] bool owns_lock() const;
    /// Whether this object believes it holds the lock (no round trip): set by
    /// a successful acquire, cleared by release/unlock or a failed extend.
    [[nodiscard]] bool held() const noexcept { return !token_.empty(); }
    /// Whether the auto-renewal thread found the lock lost (always false without auto_renew).
    [[nodiscard]] bool renewal_failed() const noexcept;

    /// The Redis key, verbatim.
    const std::string& key() const noexcept { return key_; }
    /// The current acquisition's token; empty when not held.
    const std::string& token() const noexcept { return token_; }
    /// The fencing token of the current acquisition: a number that is larger
    /// for every acquisition of this key than for any earlier one, by any
    /// retools process (drawn in the acquire script from `<key>:fence` and the
    /// server's clock). Pass it with every write to the protected resource and
    /// have the resource refuse a token lower than the highest it has seen: a
    /// holder whose lock expired then cannot overwrite its successor's work.
    /// 0 when not held. (A Python retools holder draws none.)
    std::uint64_t fencing_token() const noexcept { return held() ? fence_ : 0; }
    /// The options given at construction.
    const LockOptions& options() const noexcept { return options_; }

private:
    friend class detail::DogpileLocks;  // takes over a Lock's acquisition and renewal

    static std::chrono::milliseconds to_budget_ms(double ms) noexcept;
    template <class Rep, class Period>
    static std::chrono::milliseconds to_budget(const std::chrono::duration<Rep, Period>& d) noexcept {
        return to_budget_ms(std::chrono::duration<double, std::milli>(d).count());
    }

    bool acquire_within(std::chrono::milliseconds budget);
    // One acquire round trip: true when taken; else `retry_in` is the key's
    // remaining TTL (zero when it has none). `will_wait`: mark `<key>:waiting`.
    bool attempt(std::chrono::milliseconds& retry_in, bool will_wait);
    // The acquire script's reply; with min_replicas, WAIT follows it on the
    // same connection and `acknowledged` is its answer.
    Reply run_acquire(const std::string& token, bool will_wait, long long& acknowledged);
    // Undoes an acquisition too few replicas acknowledged; sets unreplicated_.
    void undo_unreplicated(const std::string& token, long long acknowledged);
    // Blocks on `<key>:signal` for at most `slice` (a release wakes it).
    void forget() noexcept;

    std::string key_;
    LockOptions options_;
    Connection conn_;
    std::optional<Connection> wait_conn_;  // opened on the first wait, for BLPOP only
    std::string token_;                    // empty when not held
    std::uint64_t fence_ = 0;              // fencing token of token_'s acquisition
    long owner_pid_ = 0;                   // process that acquired token_
    std::unique_ptr<detail::Watchdog> watchdog_;  // auto-renewal (src/lock/watchdog.hpp)
    std::string unreplicated_;  // why the last acquisition was undone (min_replicas), else empty
};

}  // namespace retools
