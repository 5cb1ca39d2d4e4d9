#pragma once
// RateLimiter: requests per time window across processes (GCRA, as
// redis-cell's CL.THROTTLE), one script and one round trip per decision.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <retools/connection.hpp>

namespace retools {

/// How a RateLimiter admits requests. An aggregate: use designated initializers.
///
/// ```cpp
/// retools::RateLimiter api{{.rate = 100, .period = 1s, .burst = 20, .prefix = "api"}};
/// ```
struct RateLimiterOptions {
    /// Requests admitted per `period`, sustained. Required: the default 0 is
    /// rejected with ConfigurationError.
    std::uint64_t rate = 0;
    /// The window `rate` is counted over. Default 1 s; at least 1 ms.
    std::chrono::milliseconds period{1000};
    /// The most requests admitted at once by a key that has been idle (for
    /// redis-cell users: its max_burst + 1). 0 (the default) means `rate`:
    /// a whole period's worth at once.
    std::uint64_t burst = 0;
    /// Keys are `<prefix>:<key>`. Default `retools:rate`; empty is rejected.
    std::string prefix = "retools:rate";
    /// Connection to use; nullopt (the default) means global_connection() at construction.
    std::optional<Connection> connection{};
};

/// One RateLimiter decision, with the meaning of CL.THROTTLE's reply.
struct RateDecision {
    /// Whether the request was admitted (and counted).
    bool allowed = false;
    /// How many more requests of cost 1 the key admits right now.
    std::uint64_t remaining = 0;
    /// Refused: wait this long and the same request is admitted (if no one
    /// else takes the room first); rounded up, so waiting it always
    /// suffices. 0 when allowed.
    std::chrono::milliseconds retry_after{0};
    /// Until the key is rested again (its whole burst available), rounded up.
    std::chrono::milliseconds reset_after{0};

    explicit operator bool() const noexcept { return allowed; }
};

/// Admits at most `rate` requests per `period` for each key, with bursts of
/// up to `burst`, across threads, processes and machines. GCRA (the generic
/// cell rate algorithm): one key per limited key holds the instant it is
/// rested again, timed by the server's clock (so clients' clocks do not
/// matter), and expires at that instant, so idle keys cost nothing. Each
/// decision is one script run, one round trip, atomic; correct on a Redis
/// Cluster (one key per decision). Cheap to copy; safe to share between threads.
///
/// ```cpp
/// retools::RateLimiter api{{.rate = 100, .period = 1s, .burst = 20, .prefix = "api"}};
/// retools::RateDecision d = api.acquire("user:42");
/// if (!d.allowed) { /* answer 429, Retry-After: d.retry_after */ }
/// ```
///
/// A failure to reach Redis throws ConnectionError: the request was not
/// counted if ConnectionError::maybe_executed() is false, and may have been
/// otherwise. What to do then (admit or refuse) is the caller's policy.
class RateLimiter {
public:
    /// Throws ConfigurationError when `rate` is 0, `period` under 1 ms,
    /// `prefix` empty, or the interval between requests (period / rate)
    /// under 1 microsecond.
    explicit RateLimiter(RateLimiterOptions options);

    /// Asks for `cost` requests for `key` at once (0: only report). One round
    /// trip. Throws ConfigurationError when `cost` exceeds the burst (it
    /// could never be admitted).
    [[nodiscard]] RateDecision acquire(std::string_view key, std::uint64_t cost = 1) const;

    /// Like acquire(), waiting for admission up to `timeout`: between tries it
    /// sleeps the decision's retry_after (with a little jitter), never polling.
    /// Returns the refusal at once when retry_after is longer than the time left.
    [[nodiscard]] RateDecision acquire_for(std::string_view key, std::chrono::milliseconds timeout,
                                           std::uint64_t cost = 1) const;

    /// The Redis key of `key`: `<prefix>:<key>`.
    std::string redis_key(std::string_view key) const;

    const RateLimiterOptions& options() const noexcept { return options_; }

private:
    RateLimiterOptions options_;
    Connection conn_;
    double interval_us_;  // period / rate
};

}  // namespace retools
