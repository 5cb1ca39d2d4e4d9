#pragma once
// The schedule of a periodic job: a cron expression or `@every <duration>`,
// in UTC. Pure: no I/O, no clock of its own. Not installed.

#include <bitset>
#include <chrono>
#include <string>
#include <string_view>

namespace retools::detail {

/// A parsed schedule. Accepted forms (case-insensitive):
/// - five fields `minute hour day-of-month month day-of-week`, each `*`,
///   a value, a range `a-b`, a step `*/s`, `a-b/s` or `a/s` (a to the
///   field's maximum), or a comma-separated list of these; months `jan`..`dec`
///   and days `sun`..`sat` by name; day-of-week 0 and 7 are Sunday. When both
///   day fields are restricted (neither is exactly `*`), a day matching either
///   one is due, as in cron;
/// - `@yearly` `@annually` `@monthly` `@weekly` `@daily` `@midnight` `@hourly`;
/// - `@every <duration>`, e.g. `30s`, `5m`, `1h30m`, `2d` (whole seconds, at
///   least one, at most ten years): due at the Unix times that are multiples of the duration, so
///   every process computes the same times;
/// - an optional `TZ=UTC ` or `CRON_TZ=UTC ` prefix (no other time zone).
class CronSchedule {
public:
    using time_point = std::chrono::system_clock::time_point;

    /// Throws ConfigurationError quoting `expression` and naming the bad field.
    static CronSchedule parse(std::string_view expression);

    /// The first due time strictly after `t`.
    time_point next_after(time_point t) const;

    /// The expression as given.
    const std::string& text() const noexcept { return text_; }

private:
    std::string text_;
    std::chrono::seconds every_{0};  // > 0: an `@every` schedule
    std::bitset<60> minutes_;
    std::bitset<24> hours_;
    std::bitset<32> days_;     // 1..31
    std::bitset<13> months_;   // 1..12
    std::bitset<7> weekdays_;  // 0 = Sunday
    bool days_restricted_ = false;
    bool weekdays_restricted_ = false;

    bool day_matches(std::chrono::sys_days day) const;
};

}  // namespace retools::detail
