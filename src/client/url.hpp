#pragma once
// Pieces shared by the URL parsers (redis://, redis-sentinel://,
// redis-cluster://). No message quotes the user info, and numbers, hosts and
// names are quoted only where a mistyped URL cannot have put a password.

#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>

namespace retools::detail::url {

/// ConfigurationError `invalid <kind> URL: <what>` (kind: "Redis", "Redis Sentinel" ...).
[[noreturn]] void bad(std::string_view kind, std::string_view what);
/// A decimal number from `min` to `max`; the message names `what`, not the text.
int parse_number(std::string_view kind, std::string_view text, std::string_view what, int min, int max);
/// %XX escapes decoded; the message names `what`, never the text.
std::string percent_decode(std::string_view kind, std::string_view text, std::string_view what);
/// Short and made of name characters: safe to quote in a message.
bool plausible_name(std::string_view name);
/// yes/true/1/on or no/false/0/off.
bool parse_flag(std::string_view kind, std::string_view value, std::string_view name);
/// Takes `[user[:password]@]` off the front of `rest` (up to its last '@')
/// into options.user / options.password.
void take_userinfo(std::string_view kind, std::string_view& rest, ConnectionOptions& options);
/// `host:port[,host:port...]` (IPv6 in brackets); entry n is named "<item> n of the list".
std::vector<Endpoint> parse_host_list(std::string_view kind, std::string_view hosts, std::string_view item);

/// Takes `?query` off the end of `rest`; returns the query (empty when none).
inline std::string_view take_query(std::string_view& rest) {
    auto q = rest.find('?');
    if (q == std::string_view::npos) return {};
    std::string_view query = rest.substr(q + 1);
    rest = rest.substr(0, q);
    return query;
}

/// Calls `fn(name, value)` for each `name[=value]` pair of a query string,
/// in order (empty pairs skipped; values still percent-encoded).
template <class Fn>
void for_each_query_pair(std::string_view query, Fn&& fn) {
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (pair.empty()) continue;
        auto eq = pair.find('=');
        fn(pair.substr(0, eq), eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
    }
}

}  // namespace retools::detail::url
