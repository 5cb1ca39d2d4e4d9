#include "cache/keys.hpp"

#include <chrono>

#include "util/clock.hpp"

namespace retools::detail {

std::string today() {
    // localtime_r takes a process-wide lock; the hot path asks once per call.
    struct Cached {
        std::chrono::system_clock::rep second = -1;
        std::string date;
    };
    thread_local Cached cached;
    const auto now = std::chrono::system_clock::now();
    const auto second = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    if (second != cached.second) {
        cached.date = local_date(now);
        cached.second = second;
    }
    return cached.date;
}

}  // namespace retools::detail
