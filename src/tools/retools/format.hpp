#pragma once
// Text helpers shared by the CLI and the dashboard: times, ages, escaping.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace retools::tools {

/// `2026-12-01 08:17:55` (UTC) of Unix time `t`; "-" for null.
std::string format_time(const nlohmann::json& t);
/// A duration in seconds as `850ms`, `12s`, `3m04s`, `2h05m`, `3d04h`; "-" for null.
std::string format_age(const nlohmann::json& seconds);
/// Time until Unix time `due`: `in 5m00s` style `5m00s`, or `overdue 12s` once past.
std::string format_until(double due, double now);
/// A ratio as a percentage, `87.5%`.
std::string format_ratio(double ratio);
/// Text safe to print on a terminal: control characters (escape sequences
/// in attacker-controlled job names) become `\xNN`, invalid UTF-8 becomes U+FFFD.
/// Line feeds are kept when `newlines` is true.
std::string terminal_safe(std::string_view text, bool newlines = true);
/// `text` cut to `width` characters (UTF-8 aware) with an ellipsis.
std::string truncate(std::string_view text, std::size_t width);
/// `&`, `<`, `>`, `"`, `'` escaped for HTML text and attribute values.
std::string html_escape(std::string_view text);
/// A JSON value as short display text: strings unquoted, others compact JSON.
std::string display(const nlohmann::json& value);

}  // namespace retools::tools
