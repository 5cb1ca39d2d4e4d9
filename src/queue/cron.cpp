// Cron expressions and `@every` durations (see cron.hpp).
#include "queue/cron.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include <retools/errors.hpp>

namespace retools::detail {

namespace {

using namespace std::chrono;

constexpr std::array<std::string_view, 12> month_names{"jan", "feb", "mar", "apr", "may", "jun",
                                                       "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr std::array<std::string_view, 7> weekday_names{"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

struct FieldSpec {
    std::string_view name;
    int min, max;
    const std::string_view* names = nullptr;  // names[i] is value names_base + i
    std::size_t name_count = 0;
    int names_base = 0;
};

constexpr FieldSpec field_specs[5] = {
    {"minute", 0, 59},
    {"hour", 0, 23},
    {"day-of-month", 1, 31},
    {"month", 1, 12, month_names.data(), month_names.size(), 1},
    {"day-of-week", 0, 7, weekday_names.data(), weekday_names.size(), 0},
};

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    std::size_t at = 0;
    for (;;) {
        const std::size_t next = s.find(sep, at);
        out.push_back(s.substr(at, next == std::string_view::npos ? std::string_view::npos : next - at));
        if (next == std::string_view::npos) return out;
        at = next + 1;
    }
}

std::vector<std::string_view> words(std::string_view s) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
        std::size_t start = i;
        while (i < s.size() && s[i] != ' ' && s[i] != '\t') ++i;
        if (i > start) out.push_back(s.substr(start, i - start));
    }
    return out;
}

// Reports a problem with one field of `expression`.
struct FieldError {
    std::string_view expression;
    std::string_view field;
    std::string_view text;

    [[noreturn]] void operator()(std::string_view why) const {
        throw ConfigurationError(
            fmt::format("invalid schedule '{}': {} field '{}': {}", expression, field, text, why));
    }
};

std::optional<int> number(std::string_view s) {
    int value = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (s.empty() || ec != std::errc{} || ptr != s.data() + s.size()) return std::nullopt;
    return value;
}

int value_of(std::string_view token, const FieldSpec& spec, const FieldError& fail) {
    if (auto n = number(token)) {
        if (*n < spec.min || *n > spec.max)
            fail(fmt::format("{} is out of range {}-{}", *n, spec.min, spec.max));
        return *n;
    }
    const std::string name = lower(token);
    for (std::size_t i = 0; i < spec.name_count; ++i)
        if (spec.names[i] == name) return spec.names_base + static_cast<int>(i);
    fail(fmt::format("'{}' is not a number{}", token, spec.name_count ? " or a name" : ""));
}

// The values one field selects, as bits (bit v = value v).
std::uint64_t parse_field(std::string_view text, const FieldSpec& spec, std::string_view expression) {
    const FieldError fail{expression, spec.name, text};
    std::uint64_t bits = 0;
    for (std::string_view item : split(text, ',')) {
        if (item.empty()) fail("empty list item");
        const auto slash = item.find('/');
        std::string_view range = item.substr(0, slash);
        int step = 1;
        if (slash != std::string_view::npos) {
            auto s = number(item.substr(slash + 1));
            if (!s || *s < 1) fail(fmt::format("step '{}' is not a positive number", item.substr(slash + 1)));
            step = *s;
        }
        int first = spec.min, last = spec.max;
        if (range != "*" && range != "?") {
            const auto dash = range.find('-');
            if (range.empty() || dash == 0) fail("missing value");
            first = value_of(range.substr(0, dash), spec, fail);
            if (dash != std::string_view::npos)
                last = value_of(range.substr(dash + 1), spec, fail);
            else if (slash == std::string_view::npos)
                last = first;
            if (first > last) fail(fmt::format("range {}-{} runs backwards", first, last));
        }
        for (int v = first; v <= last; v += step) bits |= std::uint64_t{1} << v;
    }
    return bits;
}

// `@every` durations: `<n><unit>`... with units d, h, m, s.
seconds parse_every(std::string_view text, std::string_view expression) {
    auto fail = [&](std::string_view why) -> seconds {
        throw ConfigurationError(
            fmt::format("invalid schedule '{}': @every duration '{}': {}", expression, text, why));
    };
    if (text.empty()) return fail("missing (e.g. @every 30s, @every 1h30m)");
    long long total = 0;
    std::size_t i = 0;
    while (i < text.size()) {
        std::size_t start = i;
        while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
        if (i == start || i == text.size()) return fail("expected <number><unit> parts, units d, h, m, s");
        auto n = number(text.substr(start, i - start));
        if (!n) return fail("number too large");
        long long unit = 0;
        switch (std::tolower(static_cast<unsigned char>(text[i]))) {
            case 'd':
                unit = 86400;
                break;
            case 'h':
                unit = 3600;
                break;
            case 'm':
                unit = 60;
                break;
            case 's':
                unit = 1;
                break;
            default:
                return fail(fmt::format("unknown unit '{}' (d, h, m, s)", text[i]));
        }
        ++i;
        total += *n * unit;
        if (total > 366LL * 86400 * 10) return fail("longer than ten years");
    }
    if (total < 1) return fail("must be at least one second");
    return seconds{total};
}

constexpr std::string_view macros[][2] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
    {"@daily", "0 0 * * *"},  {"@midnight", "0 0 * * *"}, {"@hourly", "0 * * * *"},
};

unsigned days_in_month(unsigned month) {
    constexpr unsigned most[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return most[month];
}

}  // namespace

CronSchedule CronSchedule::parse(std::string_view expression) {
    CronSchedule s;
    s.text_ = std::string(expression);
    std::vector<std::string_view> parts = words(expression);
    if (!parts.empty()) {
        const std::string first = lower(parts.front());
        if (first.starts_with("tz=") || first.starts_with("cron_tz=")) {
            if (first != "tz=utc" && first != "cron_tz=utc")
                throw ConfigurationError(
                    fmt::format("invalid schedule '{}': time zone '{}': only UTC is supported", expression,
                                parts.front()));
            parts.erase(parts.begin());
        }
    }
    if (parts.empty()) throw ConfigurationError(fmt::format("invalid schedule '{}': empty", expression));
    std::string_view body[5];
    if (parts.front().starts_with('@')) {
        const std::string macro = lower(parts.front());
        if (macro == "@every") {
            if (parts.size() != 2)
                throw ConfigurationError(fmt::format(
                    "invalid schedule '{}': @every takes one duration (e.g. @every 30s, @every 1h30m)",
                    expression));
            s.every_ = parse_every(parts[1], expression);
            return s;
        }
        auto it =
            std::find_if(std::begin(macros), std::end(macros), [&](const auto& m) { return m[0] == macro; });
        if (it == std::end(macros) || parts.size() != 1)
            throw ConfigurationError(fmt::format(
                "invalid schedule '{}': unknown macro '{}' (@yearly, @annually, @monthly, @weekly, @daily, "
                "@midnight, @hourly, @every <duration>)",
                expression, parts.front()));
        std::vector<std::string_view> expanded = words((*it)[1]);
        std::copy(expanded.begin(), expanded.end(), body);
    } else {
        if (parts.size() != 5)
            throw ConfigurationError(
                fmt::format("invalid schedule '{}': expected 5 fields (minute hour day-of-month month "
                            "day-of-week), got {}",
                            expression, parts.size()));
        std::copy(parts.begin(), parts.end(), body);
    }
    std::uint64_t bits[5];
    for (int i = 0; i < 5; ++i) bits[i] = parse_field(body[i], field_specs[i], expression);
    s.minutes_ = std::bitset<60>(bits[0]);
    s.hours_ = std::bitset<24>(bits[1]);
    s.days_ = std::bitset<32>(bits[2]);
    s.months_ = std::bitset<13>(bits[3]);
    s.weekdays_ = std::bitset<7>((bits[4] | (bits[4] >> 7)) & 0x7f);  // 7 is Sunday too
    s.days_restricted_ = body[2] != "*" && body[2] != "?";
    s.weekdays_restricted_ = body[4] != "*" && body[4] != "?";
    if (s.days_restricted_ && !s.weekdays_restricted_) {
        // Only days of month count: one of them must exist in a chosen month.
        bool possible = false;
        for (unsigned m = 1; m <= 12 && !possible; ++m)
            for (unsigned d = 1; d <= days_in_month(m) && !possible; ++d)
                possible = s.months_[m] && s.days_[d];
        if (!possible)
            throw ConfigurationError(
                fmt::format("invalid schedule '{}': day-of-month field '{}': no such day in the months of "
                            "the month field "
                            "'{}'",
                            expression, body[2], body[3]));
    }
    return s;
}

bool CronSchedule::day_matches(sys_days day) const {
    const year_month_day ymd{day};
    const bool dom = days_[static_cast<unsigned>(ymd.day())];
    const bool dow = weekdays_[weekday{day}.c_encoding()];
    if (days_restricted_ && weekdays_restricted_) return dom || dow;
    return dom && dow;  // an unrestricted field has every bit set
}

CronSchedule::time_point CronSchedule::next_after(time_point t) const {
    if (every_.count() > 0) {
        // Floor division, also before 1970.
        auto since = t.time_since_epoch();
        auto n = since / every_;
        if (since < since.zero() && n * every_ != since) --n;
        // The clock ends in 2262: past that, no due time can be written.
        const auto last = duration_cast<seconds>(time_point::duration::max());
        if (n + 1 > last / every_)
            throw ConfigurationError(
                fmt::format("schedule '{}' has no due time before the year 2262", text_));
        return time_point{} + duration_cast<time_point::duration>((n + 1) * every_);
    }
    const auto start = floor<minutes>(t) + minutes{1};
    sys_days day = floor<days>(start);
    int minute_of_day = static_cast<int>((start - day) / minutes{1});
    // A Feb 29 schedule may wait 8 years (2096 to 2104); nothing waits longer.
    for (int i = 0; i < 366 * 9; ++i, day += days{1}, minute_of_day = 0) {
        const year_month_day ymd{day};
        if (!months_[static_cast<unsigned>(ymd.month())]) {
            // Skip to the last day of this month; the loop steps to the next one.
            day = sys_days{year_month_day_last{ymd.year(), month_day_last{ymd.month()}}};
            continue;
        }
        if (!day_matches(day)) continue;
        for (int h = minute_of_day / 60; h < 24; ++h) {
            if (!hours_[static_cast<std::size_t>(h)]) continue;
            for (int m = h == minute_of_day / 60 ? minute_of_day % 60 : 0; m < 60; ++m)
                if (minutes_[static_cast<std::size_t>(m)]) return day + hours{h} + minutes{m};
        }
    }
    throw ConfigurationError(fmt::format("schedule '{}' has no due time in the next nine years", text_));
}

}  // namespace retools::detail
