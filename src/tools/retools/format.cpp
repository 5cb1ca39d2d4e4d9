#include "format.hpp"

#include <cmath>
#include <ctime>

#include <fmt/format.h>

#include "views.hpp"

namespace retools::tools {

std::string format_time(const nlohmann::json& t) {
    if (!t.is_number()) return "-";
    double v = t.get<double>();
    if (!std::isfinite(v) || v < 0) return "-";
    std::time_t s = static_cast<std::time_t>(v);
    std::tm tm{};
    gmtime_r(&s, &tm);
    return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string format_age(const nlohmann::json& seconds) {
    if (!seconds.is_number()) return "-";
    double s = seconds.get<double>();
    if (!std::isfinite(s)) return "-";
    if (s < 0) s = 0;
    if (s == 0) return "0s";
    if (s < 1) return fmt::format("{}ms", static_cast<long long>(s * 1000));
    auto n = static_cast<long long>(s);
    if (n < 60) return fmt::format("{}s", n);
    if (n < 3600) return fmt::format("{}m{:02}s", n / 60, n % 60);
    if (n < 86400) return fmt::format("{}h{:02}m", n / 3600, n % 3600 / 60);
    return fmt::format("{}d{:02}h", n / 86400, n % 86400 / 3600);
}

std::string format_until(double due, double now) {
    return due >= now ? format_age(due - now) : "overdue " + format_age(now - due);
}

std::string format_ratio(double ratio) {
    return fmt::format("{:.1f}%", ratio * 100.0);
}

std::string terminal_safe(std::string_view text, bool newlines) {
    // Round-trip through the JSON writer's UTF-8 check to replace invalid bytes.
    std::string valid =
        nlohmann::json(std::string(text)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    valid = nlohmann::json::parse(valid).get<std::string>();
    std::string out;
    out.reserve(valid.size());
    for (std::size_t i = 0; i < valid.size(); ++i) {
        auto c = static_cast<unsigned char>(valid[i]);
        if (c == '\n' && newlines) {
            out.push_back('\n');
        } else if (c < 0x20 || c == 0x7f) {
            out += fmt::format("\\x{:02x}", c);
        } else if (c == 0xc2 && i + 1 < valid.size() && static_cast<unsigned char>(valid[i + 1]) < 0xa0) {
            out += fmt::format("\\u{:04x}", static_cast<unsigned char>(valid[i + 1]));  // C1 controls
            ++i;
        } else {
            out.push_back(valid[i]);
        }
    }
    return out;
}

std::string truncate(std::string_view text, std::size_t width) {
    std::size_t chars = 0, i = 0, cut = std::string_view::npos;
    for (; i < text.size(); ++i) {
        if ((static_cast<unsigned char>(text[i]) & 0xc0) == 0x80) continue;
        if (chars == width - 1) cut = i;
        if (++chars > width) return std::string(text.substr(0, cut)) + "…";
    }
    return std::string(text);
}

std::string html_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            case '\'':
                out += "&#39;";
                break;
            default:
                out.push_back(c);
        }
    }
    return out;
}

std::string display(const nlohmann::json& value) {
    if (value.is_null()) return "-";
    if (value.is_string()) return value.get<std::string>();
    return dump(value);
}

}  // namespace retools::tools
