#pragma once
// The worker's counters (retools:stat:*), read by the retools CLI/dashboard:
// totals, per UTC day (TTL 180 days) and per UTC hour (TTL 48 h). They are
// bumped inside the scripts that acknowledge finished jobs, so they cost no
// round trip of their own.

#include <ctime>
#include <string>
#include <string_view>

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

/// Lua: `count_finished(processed, failed, day, hour)` bumps the counters
/// (nothing for zero). A counter key of the wrong type is skipped: counting
/// must never stop a job from being acknowledged.
inline constexpr std::string_view counters_lua = R"lua(
local function count_finished(processed, failed, day, hour)
  for _, c in ipairs({{'processed', processed}, {'failed', failed}}) do
    if c[2] > 0 then
      local base = 'retools:stat:' .. c[1]
      redis.pcall('INCRBY', base, c[2])
      redis.pcall('INCRBY', base .. ':' .. day, c[2])
      redis.pcall('EXPIRE', base .. ':' .. day, 15552000)
      redis.pcall('INCRBY', base .. ':' .. hour, c[2])
      redis.pcall('EXPIRE', base .. ':' .. hour, 172800)
    end
  end
end
)lua";

}  // namespace retools::detail
