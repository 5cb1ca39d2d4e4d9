#pragma once
// Limiter: at most N holders at once across processes, compatible with Python retools' Limiter.

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <retools/connection.hpp>
#include <retools/errors.hpp>
#include <retools/lock.hpp>  // ReleaseResult

namespace retools {

/// How a Limiter counts holders. An aggregate: use designated initializers.
///
/// ```cpp
/// retools::Limiter limiter{{.limit = 10, .prefix = "my-operation", .expiration = 10s}};
/// ```
struct LimiterOptions {
    /// Most holders at once. Required: the default 0 is rejected with ConfigurationError.
    std::size_t limit = 0;
    /// Name of the sorted set that records the holders (member = holder key,
    /// score = Unix time its slot expires). Default `retools_limiter`, as in
    /// Python retools; empty is rejected.
    std::string prefix = "retools_limiter";
    /// How long a slot lasts when not released (a crashed holder's slot is
    /// reclaimed after this). Default 10 s; must be at least 1 ms (0 is rejected).
    std::chrono::milliseconds expiration{10000};
    /// Slots from acquire() and acquire_for() renew their lease (to their
    /// expiration, every third of it) while held, through the process's one
    /// renewal thread (shared with Lock's auto_renew), so a holder that
    /// works longer than `expiration` keeps its slot; a crashed holder's slot
    /// is still reclaimed after `expiration`. LimiterSlot::renewal_failed()
    /// says when a renewal found the slot lost. Default false.
    bool auto_renew = false;
    /// Connection to use; nullopt (the default) means global_connection() at construction.
    std::optional<Connection> connection{};
};

class Limiter;

/// A held Limiter slot that releases itself: returned by Limiter::acquire().
/// Each slot is a member of its own in the sorted set, `<key>:<32 hex
/// characters>` (see member()), so two slots for the same key are two
/// holders: both count against the limit, and releasing one never frees the
/// other. Move-only; the destructor releases and never throws.
///
/// A slot is a lease: it expires `expiration` after it was taken (or last
/// extended), and once expired an acquirer may count it free and take the
/// room. extend() renews it by hand, LimiterOptions::auto_renew does it in
/// the background; release() says whether the slot was still held.
///
/// ```cpp
/// if (auto slot = limiter.acquire("crawl:example.com")) {
///     crawl();            // the slot is released when `slot` goes out of scope, even on throw
/// }
/// ```
class LimiterSlot {
public:
    LimiterSlot(LimiterSlot&& other) noexcept;
    /// Releases this slot (like the destructor), then takes over `other`.
    LimiterSlot& operator=(LimiterSlot&& other) noexcept;
    LimiterSlot(const LimiterSlot&) = delete;
    LimiterSlot& operator=(const LimiterSlot&) = delete;
    /// Releases if still held; never throws (an unreachable server leaves the
    /// slot to expire after the limiter's expiration).
    ~LimiterSlot();

    /// The key given to Limiter::acquire().
    const std::string& key() const noexcept { return key_; }
    /// This slot's member of the sorted set: `<key>:<32 lowercase hex characters>`,
    /// fresh for every slot.
    const std::string& member() const noexcept { return member_; }
    /// Whether this guard still holds its slot locally (false after release() or a move).
    bool held() const noexcept { return held_; }
    /// Releases now, one round trip: ReleaseResult::released when the slot
    /// was held until now, ReleaseResult::lost when it had expired (by the
    /// server's clock; another holder may have had the room meanwhile),
    /// ReleaseResult::not_held when this guard had already released it
    /// (nothing sent). Throws ConnectionError (the slot then expires on its own).
    ReleaseResult release();
    /// Renews the lease to `ttl` from now (by the server's clock), one round
    /// trip: true when renewed, false when the slot was already lost (it
    /// expired, or was dropped by an acquirer that found the set full).
    /// ConfigurationError if `ttl` < 1 ms; false when not held.
    bool extend(std::chrono::milliseconds ttl);
    /// With LimiterOptions::auto_renew: whether a renewal found the slot lost.
    [[nodiscard]] bool renewal_failed() const noexcept;

private:
    friend class Limiter;
    LimiterSlot(Connection conn, std::string prefix, std::string key, std::string member,
                std::optional<std::chrono::milliseconds> renew_every_third_of);
    void stop_renewal() noexcept;

    Connection conn_;
    std::string prefix_;
    std::string key_;
    std::string member_;
    bool held_ = true;
    std::unique_ptr<detail::Watchdog> watchdog_;  // auto_renew (src/lock/watchdog.hpp)
};

/// Caps how many holders run at once across threads, processes and machines,
/// sharing its sorted set with Python retools' `Limiter`. Each acquire is one
/// atomic script: expired holders are dropped and the caller is added only if
/// fewer than `limit` remain, so concurrent callers never exceed the limit.
/// Expiry scores (float Unix seconds, as Python writes them) come from the
/// server's clock. acquire_limit() keys are shared as in Python retools (one
/// member per key); acquire() and acquire_for() give each holder a member of
/// its own. Cheap to copy; safe to share between threads.
///
/// ```cpp
/// retools::Limiter limiter{{.limit = 10, .prefix = "my-operation"}};
/// if (limiter.acquire_limit("operation-1")) {
///     do_operation();
///     limiter.release_limit("operation-1");
/// }
/// ```
class Limiter {
public:
    /// Throws ConfigurationError when `limit` is 0, `prefix` empty or `expiration` < 1 ms.
    explicit Limiter(LimiterOptions options);

    /// Takes a slot for `key` (the member, verbatim) until released or until
    /// `expiration` (default: the limiter's) has passed, as Python retools'
    /// acquire_limit: true when fewer than `limit` members were present, the
    /// caller's own included. So re-acquiring a key that holds a slot
    /// refreshes its expiry and takes no second slot while there is room, and
    /// returns false when the set is full (its slot stays, with its old
    /// expiry). With `retry` (the default), expired holders are dropped first
    /// when the set is full; without, a full set is final. One round trip.
    [[nodiscard]] bool acquire_limit(std::string_view key,
                                     std::optional<std::chrono::milliseconds> expiration = std::nullopt,
                                     bool retry = true);

    /// Frees `key`'s slot (`ZREM`); no-op when it holds none.
    void release_limit(std::string_view key);

    /// Takes a slot of its own for `key` (member `<key>:<fresh token>`, see
    /// LimiterSlot::member()) and returns an RAII guard that releases it on
    /// destruction; nullopt when the limit is reached. Two acquire() calls
    /// with the same key are two holders.
    [[nodiscard]] std::optional<LimiterSlot> acquire(
        std::string key, std::optional<std::chrono::milliseconds> expiration = std::nullopt);

    /// Like acquire(), but keeps trying for up to `timeout` (real time, with
    /// jittered exponential backoff capped at 1 s); nullopt when no slot freed up.
    [[nodiscard]] std::optional<LimiterSlot> acquire_for(
        std::string key, std::chrono::milliseconds timeout,
        std::optional<std::chrono::milliseconds> expiration = std::nullopt);

    /// Current holders, expired ones included until the next acquire drops them (`ZCARD`).
    [[nodiscard]] std::size_t holders() const;

    const LimiterOptions& options() const noexcept { return options_; }

private:
    static std::string slot_member(std::string_view key);
    /// The lease a slot renews to with auto_renew; nullopt without.
    std::optional<std::chrono::milliseconds> renewal(
        std::optional<std::chrono::milliseconds> expiration) const;

    LimiterOptions options_;
    Connection conn_;
};

}  // namespace retools
