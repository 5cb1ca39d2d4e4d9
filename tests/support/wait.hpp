#pragma once
// Bounded polling for tests that wait on another thread or process.

#include <chrono>
#include <thread>

#include <retools/errors.hpp>

namespace retools::test {

/// Polls `pred` every 2 ms until it holds (true) or `within` elapses (false).
template <class F>
bool wait_until(F pred, std::chrono::milliseconds within = std::chrono::seconds(3)) {
    auto deadline = std::chrono::steady_clock::now() + within;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
}

/// Runs `f` until it does not throw retools::ConnectionError, for at most
/// `within` (then the error propagates). After an outage a Connection fails
/// fast, sending nothing, until its backoff has passed and a probe was
/// answered: a test that restarts Redis and calls at once waits that out.
template <class F>
auto once_served(F f, std::chrono::milliseconds within = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    for (;;) {
        try {
            return f();
        } catch (const retools::ConnectionError&) {
            if (std::chrono::steady_clock::now() > deadline) throw;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
}

}  // namespace retools::test
