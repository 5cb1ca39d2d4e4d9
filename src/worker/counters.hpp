#pragma once
// The worker's counters (retools:stat:*), read by the retools CLI/dashboard:
// totals, per UTC day (TTL 180 days) and per UTC hour (TTL 48 h). They are
// bumped inside the scripts that acknowledge finished jobs (with
// count_finished, src/worker/lua/counters.lua), so they cost no round trip of
// their own.

#include <ctime>
#include <string>

#include <fmt/format.h>

namespace retools::detail {

/// The UTC day `YYYY-MM-DD` and hour `YYYY-MM-DDTHH` of a Unix time.
struct StatPeriods {
    std::string day;
    std::string hour;
};

inline StatPeriods stat_periods(double unix_seconds) {
    std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    StatPeriods p;
    p.day = fmt::format("{:04}-{:02}-{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    p.hour = fmt::format("{}T{:02}", p.day, tm.tm_hour);
    return p;
}

}  // namespace retools::detail
