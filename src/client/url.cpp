#include "client/url.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>

#include <retools/errors.hpp>

namespace retools::detail::url {

void bad(std::string_view kind, std::string_view what) {
    throw ConfigurationError(fmt::format("invalid {} URL: {}", kind, what));
}

int parse_number(std::string_view kind, std::string_view text, std::string_view what, int min, int max) {
    int value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value < min || value > max)
        bad(kind, fmt::format("the {} is not a number from {} to {}", what, min, max));
    return value;
}

std::string percent_decode(std::string_view kind, std::string_view text, std::string_view what) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '%') {
            out += text[i];
            continue;
        }
        int byte = 0;
        const bool room = i + 2 < text.size();
        auto [end, ec] = room ? std::from_chars(text.data() + i + 1, text.data() + i + 3, byte, 16)
                              : std::from_chars_result{text.data(), std::errc::invalid_argument};
        if (!room || ec != std::errc{} || end != text.data() + i + 3)
            bad(kind, fmt::format("bad %-escape in the {}", what));
        out += static_cast<char>(byte);
        i += 2;
    }
    return out;
}

bool plausible_name(std::string_view name) {
    return name.size() <= 32 && std::all_of(name.begin(), name.end(), [](char c) {
               return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '+' || c == '-' ||
                      c == '.';
           });
}

bool parse_flag(std::string_view kind, std::string_view value, std::string_view name) {
    if (value == "yes" || value == "true" || value == "1" || value == "on") return true;
    if (value == "no" || value == "false" || value == "0" || value == "off") return false;
    bad(kind, fmt::format("query parameter {:?} must be yes or no", name));
}

void take_userinfo(std::string_view kind, std::string_view& rest, ConnectionOptions& options) {
    auto at = rest.rfind('@');
    if (at == std::string_view::npos) return;
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    auto colon = userinfo.find(':');
    options.user = percent_decode(kind, userinfo.substr(0, colon), "user name");
    if (colon != std::string_view::npos)
        options.password = percent_decode(kind, userinfo.substr(colon + 1), "password");
}

namespace {

// Entry `n` (from 1) of the host list, named in messages by its place, not its text.
Endpoint parse_endpoint(std::string_view kind, std::string_view entry, std::string_view item, std::size_t n) {
    if (entry.empty())
        bad(kind, fmt::format("{} {} of the list is empty (expected host:port[,host:port...])", item, n));
    std::string_view host, port;
    if (entry.front() == '[') {  // [::1]:26379
        auto close = entry.find(']');
        if (close == std::string_view::npos)
            bad(kind, fmt::format("{} {} of the list has an unterminated '['", item, n));
        host = entry.substr(1, close - 1);
        std::string_view after = entry.substr(close + 1);
        if (after.empty() || after.front() != ':')
            bad(kind, fmt::format("{} {} of the list has no port", item, n));
        port = after.substr(1);
    } else {
        auto colon = entry.rfind(':');
        if (colon == std::string_view::npos) bad(kind, fmt::format("{} {} of the list has no port", item, n));
        host = entry.substr(0, colon);
        port = entry.substr(colon + 1);
    }
    if (host.empty()) bad(kind, fmt::format("{} {} of the list has no host", item, n));
    return Endpoint{std::string(host),
                    parse_number(kind, port, fmt::format("port of {} {} of the list", item, n), 1, 65535)};
}

}  // namespace

std::vector<Endpoint> parse_host_list(std::string_view kind, std::string_view hosts, std::string_view item) {
    std::vector<Endpoint> out;
    while (true) {
        auto comma = hosts.find(',');
        out.push_back(parse_endpoint(kind, hosts.substr(0, comma), item, out.size() + 1));
        if (comma == std::string_view::npos) break;
        hosts = hosts.substr(comma + 1);
    }
    return out;
}

}  // namespace retools::detail::url
