#pragma once
// Capped exponential backoff with full jitter, for callers that poll Redis.

#include <algorithm>
#include <chrono>
#include <thread>

#include "util/random_token.hpp"

namespace retools::detail {

/// Each call to next() returns a delay uniform in [0, d], where d starts at
/// `initial` and doubles up to `cap`. Full jitter spreads waiters out so they
/// do not retry in lock-step, and the cap bounds the commands per second a
/// waiter sends (about 2/cap once backed off).
class Backoff {
public:
    Backoff(std::chrono::microseconds initial, std::chrono::microseconds cap) noexcept
        : ceiling_(std::max(std::min(initial, cap), std::chrono::microseconds{1})), cap_(cap) {}

    std::chrono::microseconds next() noexcept {
        auto span = static_cast<std::uint64_t>(ceiling_.count()) + 1;
        auto delay = std::chrono::microseconds(static_cast<long long>(random_u64() % span));
        ceiling_ = std::min(ceiling_ * 2, cap_);
        return delay;
    }

    /// Sleeps next(), but never past `deadline`.
    void sleep_until_at_most(std::chrono::steady_clock::time_point deadline) {
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return;
        std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(next(), deadline - now));
    }

private:
    std::chrono::microseconds ceiling_;
    std::chrono::microseconds cap_;
};

}  // namespace retools::detail
