#pragma once
// Wall-clock helpers shared by every component (the original stores time.time()).

#include <chrono>
#include <string>

namespace retools::detail {

/// Unix time in seconds, with sub-second precision.
inline double unix_now() {
    using namespace std::chrono;
    return duration<double>(system_clock::now().time_since_epoch()).count();
}

/// Seconds as a double, for durations sent to Redis as floats.
template <class Rep, class Period>
double to_seconds(std::chrono::duration<Rep, Period> d) {
    return std::chrono::duration<double>(d).count();
}

/// Local date `YYYY-MM-DD` of `t` (Python's `date.today()`).
std::string local_date(std::chrono::system_clock::time_point t = std::chrono::system_clock::now());

}  // namespace retools::detail
