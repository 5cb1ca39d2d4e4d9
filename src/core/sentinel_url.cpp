// redis-sentinel://[user[:password]@]host:port[,host:port...][/db]?master=NAME[&sentinel_password=...]
//
// The user-info part ends at the last '@' of the URL (query values write '@'
// as %40), so a password may hold any character, '/' and ':' included. No
// message quotes any of it, nor numbers, hosts or odd-looking names: a
// mistyped URL may have put part of a password anywhere.

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>

#include <retools/errors.hpp>

#include "core/sentinel.hpp"

namespace retools::detail {
namespace {

[[noreturn]] void bad_url(std::string_view what) {
    throw ConfigurationError(fmt::format("invalid Redis Sentinel URL: {}", what));
}

int parse_number(std::string_view text, std::string_view what, int min, int max) {
    int value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value < min || value > max)
        bad_url(fmt::format("the {} is not a number from {} to {}", what, min, max));
    return value;
}

bool plausible_name(std::string_view name) {
    return name.size() <= 32 && std::all_of(name.begin(), name.end(), [](char c) {
               return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
           });
}

// %XX escapes. Messages never quote `text`.
std::string percent_decode(std::string_view text, std::string_view what) {
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
            bad_url(fmt::format("bad %-escape in the {}", what));
        out += static_cast<char>(byte);
        i += 2;
    }
    return out;
}

// Entry `n` (from 1) of the host list, named in messages by its place, not its text.
Endpoint parse_endpoint(std::string_view item, std::size_t n) {
    if (item.empty())
        bad_url(fmt::format("sentinel {} of the list is empty (expected host:port[,host:port...])", n));
    std::string_view host, port;
    if (item.front() == '[') {  // [::1]:26379
        auto close = item.find(']');
        if (close == std::string_view::npos)
            bad_url(fmt::format("sentinel {} of the list has an unterminated '['", n));
        host = item.substr(1, close - 1);
        std::string_view after = item.substr(close + 1);
        if (after.empty() || after.front() != ':')
            bad_url(fmt::format("sentinel {} of the list has no port", n));
        port = after.substr(1);
    } else {
        auto colon = item.rfind(':');
        if (colon == std::string_view::npos) bad_url(fmt::format("sentinel {} of the list has no port", n));
        host = item.substr(0, colon);
        port = item.substr(colon + 1);
    }
    if (host.empty()) bad_url(fmt::format("sentinel {} of the list has no host", n));
    return Endpoint{std::string(host),
                    parse_number(port, fmt::format("port of sentinel {} of the list", n), 1, 65535)};
}

}  // namespace

ConnectionOptions parse_sentinel_url(std::string_view url) {
    constexpr std::string_view scheme = "redis-sentinel://";
    if (!url.starts_with(scheme)) bad_url("expected redis-sentinel://");
    std::string_view rest = url.substr(scheme.size());
    ConnectionOptions options;
    SentinelOptions sentinel;

    if (auto at = rest.rfind('@'); at != std::string_view::npos) {
        std::string_view userinfo = rest.substr(0, at);
        rest = rest.substr(at + 1);
        auto colon = userinfo.find(':');
        options.user = percent_decode(userinfo.substr(0, colon), "user name");
        if (colon != std::string_view::npos)
            options.password = percent_decode(userinfo.substr(colon + 1), "password");
    }

    std::string_view query;
    if (auto q = rest.find('?'); q != std::string_view::npos) {
        query = rest.substr(q + 1);
        rest = rest.substr(0, q);
    }
    std::string_view hosts = rest.substr(0, rest.find('/'));
    if (hosts.size() < rest.size()) {
        std::string_view db = rest.substr(hosts.size() + 1);
        if (!db.empty()) options.db = parse_number(db, "database", 0, 1 << 20);
    }
    if (hosts.empty()) bad_url("no sentinels (expected host:port[,host:port...])");
    while (true) {
        auto comma = hosts.find(',');
        sentinel.sentinels.push_back(parse_endpoint(hosts.substr(0, comma), sentinel.sentinels.size() + 1));
        if (comma == std::string_view::npos) break;
        hosts = hosts.substr(comma + 1);
    }

    constexpr std::string_view supported = "supported: master, sentinel_password, sentinel_username, db";
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (pair.empty()) continue;
        auto eq = pair.find('=');
        std::string_view name = pair.substr(0, eq);
        std::string_view value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
        if (name == "master")
            sentinel.master = percent_decode(value, "master name");
        else if (name == "sentinel_password")
            sentinel.password = percent_decode(value, "sentinel_password");
        else if (name == "sentinel_username")
            sentinel.username = percent_decode(value, "sentinel_username");
        else if (name == "db")
            options.db = parse_number(value, "database", 0, 1 << 20);
        else if (plausible_name(name))
            bad_url(fmt::format("unknown query parameter {:?} ({})", name, supported));
        else
            bad_url(fmt::format("unknown query parameter ({})", supported));
    }
    if (sentinel.master.empty()) bad_url("missing master=NAME (the name the sentinels monitor)");
    options.sentinel = std::move(sentinel);
    return options;
}

}  // namespace retools::detail
