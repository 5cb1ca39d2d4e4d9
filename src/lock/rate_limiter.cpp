#include <algorithm>
#include <cmath>
#include <thread>

#include <fmt/format.h>

#include <retools/errors.hpp>
#include <retools/rate_limiter.hpp>

#include "lock/scripts.hpp"
#include "util/random_token.hpp"

namespace retools {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

double checked_interval_us(const RateLimiterOptions& o) {
    if (o.rate == 0) throw ConfigurationError("RateLimiter: rate must be at least 1, got 0");
    if (o.period < milliseconds{1})
        throw ConfigurationError(
            fmt::format("RateLimiter: period must be at least 1 ms, got {} ms", o.period.count()));
    if (o.prefix.empty()) throw ConfigurationError("RateLimiter: prefix must not be empty");
    const double interval = static_cast<double>(microseconds(o.period).count()) / static_cast<double>(o.rate);
    if (interval < 1.0)
        throw ConfigurationError(
            fmt::format("RateLimiter '{}': {} per {} ms leaves under 1 microsecond between requests",
                        o.prefix, o.rate, o.period.count()));
    return interval;
}

// Microseconds from the script, rounded up to whole milliseconds.
milliseconds ceil_ms(long long us) {
    return std::chrono::ceil<milliseconds>(microseconds(std::max(us, 0LL)));
}

}  // namespace

RateLimiter::RateLimiter(RateLimiterOptions options)
    : options_(std::move(options)),
      conn_(options_.connection ? *options_.connection : global_connection()),
      interval_us_(checked_interval_us(options_)) {
    if (options_.burst == 0) options_.burst = options_.rate;
}

std::string RateLimiter::redis_key(std::string_view key) const {
    std::string k;
    k.reserve(options_.prefix.size() + 1 + key.size());
    return k.append(options_.prefix).append(":").append(key);
}

RateDecision RateLimiter::acquire(std::string_view key, std::uint64_t cost) const {
    if (cost > options_.burst)
        throw ConfigurationError(
            fmt::format("RateLimiter '{}': a cost of {} exceeds the burst of {} and could "
                        "never be admitted",
                        options_.prefix, cost, options_.burst));
    const Reply r = detail::rate_limiter_acquire_script()(
        conn_, {redis_key(key)}, fmt::format("{:.17g}", interval_us_), options_.burst, cost);
    RateDecision d;
    d.allowed = r[0].as_integer() == 1;
    d.remaining = static_cast<std::uint64_t>(std::max(r[1].as_integer(), 0LL));
    d.retry_after = ceil_ms(r[2].as_integer());
    d.reset_after = ceil_ms(r[3].as_integer());
    return d;
}

RateDecision RateLimiter::acquire_for(std::string_view key, milliseconds timeout, std::uint64_t cost) const {
    using Clock = std::chrono::steady_clock;
    // Clamped so that "forever" (milliseconds::max()) cannot overflow the deadline.
    const auto deadline =
        Clock::now() + std::clamp(timeout, milliseconds{0}, milliseconds{1'000'000'000'000});
    for (;;) {
        RateDecision d = acquire(key, cost);
        if (d.allowed) return d;
        const auto now = Clock::now();
        if (now + d.retry_after > deadline) return d;  // no admission can come in time
        // A little jitter (up to a tenth of the wait, at most 5 ms) keeps
        // waiters that were refused together from coming back together.
        const auto spread = std::min<long long>(d.retry_after.count() / 10, 5);
        const auto jitter =
            milliseconds(spread > 0 ? static_cast<long long>(detail::random_u64() % (spread + 1)) : 0);
        std::this_thread::sleep_until(std::min<Clock::time_point>(now + d.retry_after + jitter, deadline));
    }
}

}  // namespace retools
