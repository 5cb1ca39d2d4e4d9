#pragma once
// Bounded polling for tests that wait on another thread or process.

#include <chrono>
#include <thread>

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

}  // namespace retools::test
