#include <algorithm>
#include <iterator>

#include <fmt/format.h>

#include <retools/connection.hpp>
#include <retools/errors.hpp>

#include "client/cluster.hpp"
#include "client/sentinel.hpp"
#include "client/url.hpp"

namespace retools {
namespace {

constexpr std::string_view kKind = "Redis";

[[noreturn]] void bad_url(std::string_view what) {
    detail::url::bad(kKind, what);
}

// Numbers are not quoted: a mistyped URL may have put part of a password here.
int parse_number(std::string_view text, std::string_view what, int min, int max) {
    return detail::url::parse_number(kKind, text, what, min, max);
}

std::string percent_decode(std::string_view text, std::string_view what) {
    return detail::url::percent_decode(kKind, text, what);
}

bool plausible_name(std::string_view name) {
    return detail::url::plausible_name(name);
}

bool parse_flag(std::string_view value, std::string_view name) {
    return detail::url::parse_flag(kKind, value, name);
}

void parse_query(std::string_view query, ConnectionOptions& options) {
    static constexpr std::string_view kTlsNames[] = {"ca_file",  "ca_path",     "cert_file",
                                                     "key_file", "server_name", "verify"};
    detail::url::for_each_query_pair(query, [&](std::string_view name, std::string_view raw) {
        if (name == "db") {
            options.db = parse_number(raw, "database", 0, 1 << 20);
            return;
        }
        if (!plausible_name(name))
            bad_url(
                "unknown query parameter (supported: db, ca_file, ca_path, cert_file, key_file, "
                "server_name, verify)");
        if (std::find(std::begin(kTlsNames), std::end(kTlsNames), name) == std::end(kTlsNames))
            bad_url(
                fmt::format("unknown query parameter {:?} (supported: db, ca_file, ca_path, cert_file, "
                            "key_file, server_name, verify)",
                            name));
        if (!options.tls) bad_url(fmt::format("query parameter {:?} needs a rediss:// (TLS) URL", name));
        std::string value = percent_decode(raw, fmt::format("query parameter {:?}", name));
        TlsOptions& tls = *options.tls;
        if (name == "verify")
            tls.verify = parse_flag(value, name);
        else if (value.empty())
            bad_url(fmt::format("query parameter {:?} is empty", name));
        else if (name == "ca_file")
            tls.ca_file = value;
        else if (name == "ca_path")
            tls.ca_path = value;
        else if (name == "cert_file")
            tls.cert_file = value;
        else if (name == "key_file")
            tls.key_file = value;
        else
            tls.server_name = value;
    });
}

}  // namespace

ConnectionOptions ConnectionOptions::from_url(std::string_view url) {
    if (url.starts_with("redis-sentinel://")) return detail::parse_sentinel_url(url);
    if (url.starts_with("redis-cluster://")) return detail::parse_cluster_url(url);
    ConnectionOptions options;
    auto scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos)
        bad_url("missing scheme (expected redis://host:port/db, rediss://host:port/db or unix:///path)");
    std::string_view scheme = url.substr(0, scheme_end);
    std::string_view rest = url.substr(scheme_end + 3);

    if (scheme == "unix") {
        std::string_view query = detail::url::take_query(rest);
        if (rest.empty() || rest.front() != '/')
            bad_url("unix socket path must be absolute (unix:///path/to/sock)");
        options.path = std::string(rest);
        parse_query(query, options);
        return options;
    }
    if (scheme != "redis" && scheme != "rediss") {
        // Quoted only when it looks like a scheme: a mangled URL could carry a password here.
        if (plausible_name(scheme))
            bad_url(fmt::format(
                "unsupported scheme {:?} (supported: redis, rediss, unix, redis-sentinel, redis-cluster)",
                scheme));
        bad_url("unsupported scheme (supported: redis, rediss, unix, redis-sentinel, redis-cluster)");
    }
    if (scheme == "rediss") options.tls = TlsOptions{};

    // The user-info part first: up to the last '@', whatever it holds (a
    // password may contain '/', '?' or ':'). Nothing of it is ever quoted.
    // Query values spell '@' as %40.
    detail::url::take_userinfo(kKind, rest, options);

    std::string_view query = detail::url::take_query(rest);
    std::string_view authority = rest.substr(0, rest.find('/'));
    std::string_view path =
        authority.size() < rest.size() ? rest.substr(authority.size() + 1) : std::string_view{};

    std::string_view host = authority;
    std::string_view port;
    if (!authority.empty() && authority.front() == '[') {  // [::1]:6379
        auto close = authority.find(']');
        if (close == std::string_view::npos) bad_url("unterminated '[' in the host");
        host = authority.substr(1, close - 1);
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') bad_url("expected ':' after the bracketed host");
            port = after.substr(1);
            if (port.empty()) bad_url("empty port");
        }
    } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
        host = authority.substr(0, colon);
        port = authority.substr(colon + 1);
        if (port.empty()) bad_url("empty port");
        if (host.find(':') != std::string_view::npos)
            bad_url("an IPv6 host must be in brackets ([::1]:6379)");
    }
    if (host.empty()) bad_url("missing host");
    options.host = std::string(host);
    if (!port.empty()) options.port = parse_number(port, "port", 1, 65535);
    if (!path.empty()) options.db = parse_number(path, "database", 0, 1 << 20);
    parse_query(query, options);
    return options;
}

std::string ConnectionOptions::describe() const {
    if (sentinel) return detail::describe_sentinel(*this);
    if (cluster) return detail::describe_cluster(*this);
    if (!path.empty()) return fmt::format("unix:{}/{}", path, db);
    if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}/{}", host, port, db);
    return fmt::format("{}:{}/{}", host, port, db);
}

}  // namespace retools
