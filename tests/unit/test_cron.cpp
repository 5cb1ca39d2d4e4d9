// The periodic jobs' schedules: cron expressions and @every durations against
// a table of next due times, and the errors of invalid expressions. No server.
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include <retools/errors.hpp>

#include "queue/cron.hpp"

using retools::detail::CronSchedule;

namespace {

using cron_clock = std::chrono::system_clock;

cron_clock::time_point cron_utc(int y, unsigned mo, unsigned d, int h = 0, int mi = 0, double s = 0) {
    using namespace std::chrono;
    return sys_days{year{y} / month{mo} / day{d}} + hours{h} + minutes{mi} +
           duration_cast<cron_clock::duration>(duration<double>(s));
}

struct CronCase {
    const char* expression;
    cron_clock::time_point after;
    cron_clock::time_point expected;
};

// 2024-01-15 is a Monday.
const CronCase cron_table[] = {
    {"* * * * *", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 1, 15, 10, 31)},
    {"* * * * *", cron_utc(2024, 1, 15, 10, 30, 59.5), cron_utc(2024, 1, 15, 10, 31)},
    {"*/15 * * * *", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 1, 15, 10, 45)},
    {"*/15 * * * *", cron_utc(2024, 1, 15, 10, 45), cron_utc(2024, 1, 15, 11, 0)},
    {"0 3 * * *", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 1, 16, 3, 0)},
    {"0 3 * * *", cron_utc(2024, 1, 15, 2, 59, 59), cron_utc(2024, 1, 15, 3, 0)},
    {"TZ=UTC 0 3 * * *", cron_utc(2024, 1, 15, 2, 59, 59), cron_utc(2024, 1, 15, 3, 0)},
    {"1-30/5 * * * *", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 1, 15, 11, 1)},
    {"5/20 * * * *", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 1, 15, 10, 45)},
    {"0,30 8-9 * * *", cron_utc(2024, 1, 15, 9, 30), cron_utc(2024, 1, 16, 8, 0)},
    {"@yearly", cron_utc(2024, 1, 15, 10, 30), cron_utc(2025, 1, 1)},
    {"@annually", cron_utc(2024, 1, 15, 10, 30), cron_utc(2025, 1, 1)},
    {"@monthly", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 2, 1)},
    {"@weekly", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 1, 21)},
    {"@daily", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 1, 16)},
    {"@midnight", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 1, 16)},
    {"@HOURLY", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 1, 15, 11)},
    {"0 9 * * mon-fri", cron_utc(2024, 1, 19, 10), cron_utc(2024, 1, 22, 9)},
    {"0 12 * * sun,SAT", cron_utc(2024, 1, 15), cron_utc(2024, 1, 20, 12)},
    {"0 0 * * 7", cron_utc(2024, 1, 15), cron_utc(2024, 1, 21)},
    {"0 0 29 2 *", cron_utc(2024, 3, 1), cron_utc(2028, 2, 29)},
    {"0 0 31 * *", cron_utc(2024, 1, 31), cron_utc(2024, 3, 31)},
    {"0 0 13 * *", cron_utc(2024, 1, 15), cron_utc(2024, 2, 13)},
    // Both day fields restricted: either one matches (Friday the 19th comes first).
    {"0 0 13 * 5", cron_utc(2024, 1, 15), cron_utc(2024, 1, 19)},
    {"0 0 1 * 1", cron_utc(2024, 1, 16), cron_utc(2024, 1, 22)},
    {"0 0 1 * 1", cron_utc(2024, 1, 30), cron_utc(2024, 2, 1)},
    // Only the day of month restricted: the day of week is ignored.
    {"0 0 1 * *", cron_utc(2024, 1, 30), cron_utc(2024, 2, 1)},
    {"30 12 * jan,JUL *", cron_utc(2024, 1, 31, 12, 30), cron_utc(2024, 7, 1, 12, 30)},
    {"0 0 1 */3 *", cron_utc(2024, 1, 15), cron_utc(2024, 4, 1)},
    {"59 23 31 12 *", cron_utc(2024, 12, 31, 23, 59), cron_utc(2025, 12, 31, 23, 59)},
    // @every: multiples of the duration since the Unix epoch.
    {"@every 30s", cron_utc(2024, 1, 15, 10, 30, 10), cron_utc(2024, 1, 15, 10, 30, 30)},
    {"@every 30s", cron_utc(2024, 1, 15, 10, 30, 30), cron_utc(2024, 1, 15, 10, 31)},
    {"@every 5m", cron_utc(2024, 1, 15, 10, 32), cron_utc(2024, 1, 15, 10, 35)},
    {"@every 1h30m", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 1, 15, 12, 0)},
    {"@every 1s", cron_utc(2024, 1, 15, 10, 30, 0.25), cron_utc(2024, 1, 15, 10, 30, 1)},
    {"@every 2d", cron_utc(2024, 1, 15, 10, 30), cron_utc(2024, 1, 16)},
};

TEST(Cron, NextRunTimesMatchTheTable) {
    for (const CronCase& c : cron_table) {
        const auto next = CronSchedule::parse(c.expression).next_after(c.after);
        EXPECT_EQ(next, c.expected) << c.expression;
    }
}

TEST(Cron, SuccessiveRunsOfAStepScheduleAreItsTimes) {
    const auto s = CronSchedule::parse("*/20 9-10 * * *");
    auto t = cron_utc(2024, 1, 15);
    std::vector<cron_clock::time_point> got;
    for (int i = 0; i < 7; ++i) got.push_back(t = s.next_after(t));
    const std::vector<cron_clock::time_point> want{
        cron_utc(2024, 1, 15, 9, 0),  cron_utc(2024, 1, 15, 9, 20),  cron_utc(2024, 1, 15, 9, 40),
        cron_utc(2024, 1, 15, 10, 0), cron_utc(2024, 1, 15, 10, 20), cron_utc(2024, 1, 15, 10, 40),
        cron_utc(2024, 1, 16, 9, 0)};
    EXPECT_EQ(got, want);
}

std::string cron_error(const char* expression) {
    try {
        CronSchedule::parse(expression);
    } catch (const retools::ConfigurationError& e) {
        return e.what();
    }
    return "no error";
}

TEST(Cron, InvalidExpressionsNameTheExpressionAndTheField) {
    const std::pair<const char*, const char*> cases[] = {
        {"60 * * * *", "invalid schedule '60 * * * *': minute field '60': 60 is out of range 0-59"},
        {"* 24 * * *", "hour field '24'"},
        {"* * 0 * *", "day-of-month field '0'"},
        {"* * * 13 *", "month field '13'"},
        {"* * * foo *", "month field 'foo': 'foo' is not a number or a name"},
        {"* * * * 8", "day-of-week field '8'"},
        {"* * * * mon-", "day-of-week field 'mon-'"},
        {"*/0 * * * *", "minute field '*/0': step '0' is not a positive number"},
        {"5-1 * * * *", "minute field '5-1': range 5-1 runs backwards"},
        {"1,,2 * * * *", "minute field '1,,2': empty list item"},
        {"* * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 3"},
        {"* * * * * *", "got 6"},
        {"0 0 30 2 *", "day-of-month field '30': no such day"},
        {"", "invalid schedule '': empty"},
        {"@often", "unknown macro '@often'"},
        {"@every", "@every takes one duration"},
        {"@every 0s", "must be at least one second"},
        {"@every 5x", "unknown unit 'x'"},
        {"@every 5", "expected <number><unit>"},
        {"@every 4000d", "longer than ten years"},
        {"TZ=Europe/Paris 0 3 * * *", "time zone 'TZ=Europe/Paris': only UTC is supported"},
    };
    for (const auto& [expression, message] : cases)
        EXPECT_NE(cron_error(expression).find(message), std::string::npos)
            << expression << " → " << cron_error(expression);
}

TEST(Cron, KeepsTheTextAsGiven) {
    EXPECT_EQ(CronSchedule::parse("0 3 * * *").text(), "0 3 * * *");
    EXPECT_EQ(CronSchedule::parse("@every 1h30m").text(), "@every 1h30m");
}

}  // namespace
