// redis-cluster://[user[:password]@]host:port[,host:port...][?read_from_replicas=yes]
//
// The same rules as redis-sentinel:// (client/url.hpp): the user info ends at
// the last '@' and is never quoted.

#include <fmt/format.h>

#include <retools/errors.hpp>

#include "client/cluster.hpp"
#include "client/url.hpp"

namespace retools::detail {
namespace {

constexpr std::string_view kKind = "Redis Cluster";

}  // namespace

ConnectionOptions parse_cluster_url(std::string_view text) {
    constexpr std::string_view scheme = "redis-cluster://";
    if (!text.starts_with(scheme)) url::bad(kKind, "expected redis-cluster://");
    std::string_view rest = text.substr(scheme.size());
    ConnectionOptions options;
    ClusterOptions cluster;
    url::take_userinfo(kKind, rest, options);

    std::string_view query = url::take_query(rest);
    std::string_view hosts = rest.substr(0, rest.find('/'));
    if (hosts.size() < rest.size()) {
        std::string_view db = rest.substr(hosts.size() + 1);
        if (!db.empty() && db != "0") url::bad(kKind, "a cluster has only database 0");
    }
    if (hosts.empty()) url::bad(kKind, "no nodes (expected host:port[,host:port...])");
    cluster.seeds = url::parse_host_list(kKind, hosts, "node");

    constexpr std::string_view supported = "supported: read_from_replicas";
    url::for_each_query_pair(query, [&](std::string_view name, std::string_view value) {
        if (name == "read_from_replicas")
            cluster.read_from_replicas = url::parse_flag(kKind, value, name);
        else if (url::plausible_name(name))
            url::bad(kKind, fmt::format("unknown query parameter {:?} ({})", name, supported));
        else
            url::bad(kKind, fmt::format("unknown query parameter ({})", supported));
    });
    options.cluster = std::move(cluster);
    return options;
}

}  // namespace retools::detail
