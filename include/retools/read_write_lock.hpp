#pragma once
// ReadWriteLock: many readers or one writer, across processes.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>  // std::unique_lock, for writers
#include <optional>
#include <shared_mutex>  // std::shared_lock, for readers
#include <string>

#include <retools/connection.hpp>
#include <retools/lock.hpp>

namespace retools {

/// A distributed shared/exclusive lock on one key: any number of readers at
/// once, or one writer. It meets the standard's *SharedTimedLockable*
/// requirements, so `std::shared_lock` takes it for reading and
/// `std::unique_lock` for writing. Like Lock, one object belongs to one
/// thread at a time and holds one acquisition (shared or exclusive); make
/// one per thread. Options are Lock's (LockOptions): `expires` is each
/// hold's TTL (a crashed holder frees its part after it), `timeout` bounds
/// lock() and lock_shared(), `auto_renew` renews a hold while it lasts,
/// `max_retry_delay` caps the backoff between attempts; `min_replicas` is not
/// supported here (rejected with ConfigurationError).
///
/// Writers are not starved: a writer that waits keeps new readers out, so
/// it gets in as soon as the readers already in have left (or expired).
/// A release wakes one waiter at once; the others notice at their next
/// attempt. Each acquisition draws a fencing token, as Lock's does.
///
/// ```cpp
/// retools::ReadWriteLock rw{"config", {.expires = 30s, .timeout = 5s}};
/// { std::shared_lock reader{rw}; /* read: others may read too */ }
/// { std::unique_lock writer{rw}; /* write: nobody else is in */ }
/// ```
///
/// Keys (docs/lock-advanced.md): the writer's token in `<key>` (so a writer
/// looks like a Lock on `<key>`), readers in the sorted set `<key>:readers`,
/// a waiting writer in `<key>:writer_waiting`, and Lock's `<key>:fence`,
/// `<key>:signal` and `<key>:waiting`.
class ReadWriteLock {
public:
    /// Does not acquire. Throws ConfigurationError for an empty key or bad options.
    explicit ReadWriteLock(std::string key, LockOptions options = {});
    ReadWriteLock(ReadWriteLock&& other) noexcept;
    /// Releases what this object holds (like the destructor), then takes over `other`.
    ReadWriteLock& operator=(ReadWriteLock&& other) noexcept;
    ReadWriteLock(const ReadWriteLock&) = delete;
    ReadWriteLock& operator=(const ReadWriteLock&) = delete;
    /// Releases if held. Never throws.
    ~ReadWriteLock();

    /// Exclusive: acquires, retrying for up to `options.timeout`, or throws
    /// LockTimeout. ConfigurationError if this object already holds the lock.
    void lock();
    /// Exclusive: exactly one attempt.
    [[nodiscard]] bool try_lock();
    /// Exclusive: retries until acquired or `timeout` has passed.
    template <class Rep, class Period>
    [[nodiscard]] bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
        return acquire_within(Mode::exclusive, budget_of(timeout));
    }
    /// Exclusive: retries until acquired or `deadline` has passed.
    template <class Clock, class Duration>
    [[nodiscard]] bool try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline) {
        return acquire_within(Mode::exclusive, budget_of(deadline - Clock::now()));
    }
    /// Releases an exclusive hold; never throws (see Lock::unlock()).
    void unlock() noexcept;

    /// Shared: acquires, retrying for up to `options.timeout`, or throws LockTimeout.
    void lock_shared();
    /// Shared: exactly one attempt.
    [[nodiscard]] bool try_lock_shared();
    /// Shared: retries until acquired or `timeout` has passed.
    template <class Rep, class Period>
    [[nodiscard]] bool try_lock_shared_for(const std::chrono::duration<Rep, Period>& timeout) {
        return acquire_within(Mode::shared, budget_of(timeout));
    }
    /// Shared: retries until acquired or `deadline` has passed.
    template <class Clock, class Duration>
    [[nodiscard]] bool try_lock_shared_until(const std::chrono::time_point<Clock, Duration>& deadline) {
        return acquire_within(Mode::shared, budget_of(deadline - Clock::now()));
    }
    /// Releases a shared hold; never throws.
    void unlock_shared() noexcept;

    /// Releases whatever is held and says what Redis held: released, lost
    /// (the hold had expired) or not_held. Throws ConnectionError.
    ReleaseResult release();
    /// Resets the hold's TTL to `ttl` from now, if it is still this holder's;
    /// LockLost otherwise (or when nothing is held).
    void extend(std::chrono::milliseconds ttl);

    /// Whether this object holds the lock shared / exclusively (no round trip).
    [[nodiscard]] bool held_shared() const noexcept { return mode_ == Mode::shared; }
    [[nodiscard]] bool held_exclusive() const noexcept { return mode_ == Mode::exclusive; }
    /// With auto_renew: whether a renewal found the hold lost.
    [[nodiscard]] bool renewal_failed() const noexcept;
    /// The fencing token of the current hold; 0 when not held.
    std::uint64_t fencing_token() const noexcept { return mode_ == Mode::none ? 0 : fence_; }
    const std::string& key() const noexcept { return key_; }
    const LockOptions& options() const noexcept { return options_; }

private:
    enum class Mode { none, shared, exclusive };

    template <class Rep, class Period>
    static std::chrono::milliseconds budget_of(const std::chrono::duration<Rep, Period>& d) noexcept {
        return budget_ms(std::chrono::duration<double, std::milli>(d).count());
    }
    static std::chrono::milliseconds budget_ms(double ms) noexcept;
    bool acquire_within(Mode mode, std::chrono::milliseconds budget);
    void acquire_or_throw(Mode mode);
    bool attempt(Mode mode, std::chrono::milliseconds& retry_in, bool will_wait);
    void forget() noexcept;

    std::string key_;
    LockOptions options_;
    Connection conn_;
    std::optional<Connection> wait_conn_;  // opened on the first wait, for BLPOP only
    Mode mode_ = Mode::none;
    std::string token_;
    std::uint64_t fence_ = 0;
    long owner_pid_ = 0;
    std::unique_ptr<detail::Watchdog> watchdog_;
};

}  // namespace retools
