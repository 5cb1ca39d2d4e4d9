// redis-sentinel://[user[:password]@]host:port[,host:port...][/db]?master=NAME[&sentinel_password=...]
//
// The user-info part ends at the last '@' of the URL (query values write '@'
// as %40), so a password may hold any character, '/' and ':' included. No
// message quotes any of it, nor numbers, hosts or odd-looking names: a
// mistyped URL may have put part of a password anywhere.

#include <fmt/format.h>

#include <retools/errors.hpp>

#include "client/sentinel.hpp"
#include "client/url.hpp"

namespace retools::detail {
namespace {

constexpr std::string_view kKind = "Redis Sentinel";

}  // namespace

ConnectionOptions parse_sentinel_url(std::string_view url) {
    constexpr std::string_view scheme = "redis-sentinel://";
    if (!url.starts_with(scheme)) url::bad(kKind, "expected redis-sentinel://");
    std::string_view rest = url.substr(scheme.size());
    ConnectionOptions options;
    SentinelOptions sentinel;
    url::take_userinfo(kKind, rest, options);

    std::string_view query = url::take_query(rest);
    std::string_view hosts = rest.substr(0, rest.find('/'));
    if (hosts.size() < rest.size()) {
        std::string_view db = rest.substr(hosts.size() + 1);
        if (!db.empty()) options.db = url::parse_number(kKind, db, "database", 0, 1 << 20);
    }
    if (hosts.empty()) url::bad(kKind, "no sentinels (expected host:port[,host:port...])");
    sentinel.sentinels = url::parse_host_list(kKind, hosts, "sentinel");

    constexpr std::string_view supported = "supported: master, sentinel_password, sentinel_username, db";
    url::for_each_query_pair(query, [&](std::string_view name, std::string_view value) {
        if (name == "master")
            sentinel.master = url::percent_decode(kKind, value, "master name");
        else if (name == "sentinel_password")
            sentinel.password = url::percent_decode(kKind, value, "sentinel_password");
        else if (name == "sentinel_username")
            sentinel.username = url::percent_decode(kKind, value, "sentinel_username");
        else if (name == "db")
            options.db = url::parse_number(kKind, value, "database", 0, 1 << 20);
        else if (url::plausible_name(name))
            url::bad(kKind, fmt::format("unknown query parameter {:?} ({})", name, supported));
        else
            url::bad(kKind, fmt::format("unknown query parameter ({})", supported));
    });
    if (sentinel.master.empty()) url::bad(kKind, "missing master=NAME (the name the sentinels monitor)");
    options.sentinel = std::move(sentinel);
    return options;
}

}  // namespace retools::detail
