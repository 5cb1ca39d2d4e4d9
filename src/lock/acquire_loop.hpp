#pragma once
// The waiting shared by Lock and ReadWriteLock: attempts with a capped,
// jittered backoff between them, each wait cut short by a release's wake-up
// (BLPOP on `<key>:signal`) and by the holder's remaining TTL.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <fmt/format.h>

#include <retools/connection.hpp>
#include <retools/errors.hpp>
#include <retools/lock.hpp>

#include "client/signal_hub.hpp"
#include "lock/backoff.hpp"

namespace retools::detail {

/// The first backoff delay between attempts, as in Python retools.
inline constexpr std::chrono::microseconds first_retry_delay{5000};

/// The checks every lock kind makes of its key and LockOptions; `kind`
/// ("Lock", "ReadWriteLock") starts the message. Throws ConfigurationError.
inline void validate_lock_options(std::string_view kind, const std::string& key, const LockOptions& o) {
    using std::chrono::milliseconds;
    if (key.empty()) throw ConfigurationError(fmt::format("{}: the key must not be empty", kind));
    if (o.expires < milliseconds{1})
        throw ConfigurationError(
            fmt::format("{} '{}': expires must be at least 1 ms, got {} ms", kind, key, o.expires.count()));
    if (o.timeout < milliseconds{0})
        throw ConfigurationError(
            fmt::format("{} '{}': timeout must not be negative, got {} ms", kind, key, o.timeout.count()));
    if (o.max_retry_delay < milliseconds{1})
        throw ConfigurationError(fmt::format("{} '{}': max_retry_delay must be at least 1 ms, got {} ms",
                                             kind, key, o.max_retry_delay.count()));
}

/// A waiting budget in ms (from any duration) as whole milliseconds:
/// negative, zero or NaN mean one attempt; anything over ~30 years means
/// "forever" and still fits steady_clock when added to now().
inline std::chrono::milliseconds budget_ms(double ms) noexcept {
    if (!(ms > 0)) return std::chrono::milliseconds{0};
    return std::chrono::milliseconds{
        static_cast<std::chrono::milliseconds::rep>(std::ceil(std::min(ms, 1e12)))};
}

/// What one attempt found.
enum class Attempt {
    taken,    // acquired
    busy,     // held by someone else: wait and try again
    refused,  // give up now (e.g. too few replicas acknowledged)
};

/// Attempts until taken, refused or `budget` (0: one attempt) has passed.
/// `attempt(retry_in)` sets `retry_in` to the holder's remaining time when
/// busy (0: no hint); `wait(slice)` sleeps at most `slice`, waking early on a
/// release.
template <class AttemptFn, class WaitFn>
bool acquire_loop(std::chrono::milliseconds budget, std::chrono::milliseconds max_retry_delay,
                  AttemptFn&& attempt, WaitFn&& wait) {
    using std::chrono::milliseconds;
    const auto deadline = std::chrono::steady_clock::now() + budget;
    Backoff backoff{first_retry_delay, max_retry_delay};
    for (;;) {
        milliseconds retry_in{0};
        const Attempt a = attempt(retry_in);
        if (a != Attempt::busy) return a == Attempt::taken;
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return false;
        // A retools holder's release wakes the wait at once. The backoff delay
        // bounds it for releases that send no wake-up (Python retools holders),
        // and the key's TTL for a holder that died.
        auto slice = std::chrono::ceil<milliseconds>(backoff.next());
        if (retry_in > milliseconds{0}) slice = std::min(slice, retry_in);
        slice = std::clamp(slice, milliseconds{1}, std::chrono::ceil<milliseconds>(deadline - now));
        wait(slice);
    }
}

/// Sleeps at most `slice`, waking early when a message arrives on the
/// channel `signal` (a release publishes it): through the process's one
/// shared subscription connection (`subscription` is made on the first wait
/// and kept by the caller for its whole acquisition). On a Cluster, where
/// there is none, a BLPOP on the list `signal` on `wait_conn` (made on first
/// use, one connection) waits instead.
inline void wait_for_signal(std::optional<Connection>& wait_conn,
                            std::optional<SignalHub::Subscription>& subscription, const Connection& conn,
                            const std::string& signal, std::chrono::milliseconds slice, SignalWake wake) {
    if (!subscription) {
        if (SignalHub* hub = signal_hub(conn)) subscription.emplace(*hub, signal, wake);
    }
    if (subscription) {
        (void)subscription->wait(slice);
        return;
    }
    if (!wait_conn) {
        ConnectionOptions options = conn.options();
        options.pool_size = 1;
        wait_conn.emplace(std::move(options));
    }
    try {
        (void)wait_conn->blocking_command(slice, "BLPOP", signal,
                                          fmt::format("{:.3f}", static_cast<double>(slice.count()) / 1000.0));
    } catch (const ReplyError&) {
        // `signal` is not a list (or BLPOP is not allowed): poll instead.
        std::this_thread::sleep_for(slice);
    }
}

}  // namespace retools::detail
