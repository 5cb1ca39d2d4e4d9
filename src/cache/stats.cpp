// Reading the hit/miss counters the cache writes.
#include <algorithm>
#include <charconv>

#include <retools/cache.hpp>

#include "cache/keys.hpp"
#include "cache/registry.hpp"
#include "cache/topology.hpp"
#include "client/errors.hpp"

namespace retools {
namespace {

Connection connection_of(std::string_view region) {
    if (!CacheRegion::has_region(region)) return global_connection();
    return detail::find_region(region)->connection();
}

std::int64_t count_of(const Reply& reply) {
    if (reply.is_nil() || reply.is_error()) return 0;  // GET of a key of another type (MGET: nil)
    std::string_view text = reply.view();
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc{} && end == text.data() + text.size() ? value : 0;
}

std::string day_or_today(std::string_view day) {
    return day.empty() ? detail::today() : std::string(day);
}

struct Wanted {
    std::string ns;
    std::string key;
};

// The hit and miss counters of every (ns, key): one MGET on one node, on a
// cluster (the counters are in many slots) one GET each in a split pipeline.
std::vector<CacheStats> read_counters(const Connection& conn, std::string_view day, std::string_view region,
                                      const std::vector<Wanted>& wanted) {
    std::vector<CacheStats> out(wanted.size());
    if (wanted.empty()) return out;
    const detail::CacheTopology& topology = detail::cache_topology(conn);
    std::vector<std::string> keys;
    keys.reserve(wanted.size() * 2);
    for (const Wanted& w : wanted) {
        keys.push_back(topology.hits(day, region, w.ns, w.key));
        keys.push_back(topology.misses(day, region, w.ns, w.key));
    }
    const std::vector<Reply> values = topology.values(conn, keys);
    for (std::size_t i = 0; i < wanted.size(); ++i) {
        out[i].hits = count_of(values[2 * i]);
        out[i].misses = count_of(values[2 * i + 1]);
    }
    return out;
}

std::vector<std::string> members_of(const Reply& reply) {
    std::vector<std::string> out;
    for (const Reply& r : reply.as_array()) out.push_back(r.as_string());
    return out;
}

}  // namespace

CacheStats cache_stats(std::string_view region, std::string_view ns, std::string_view key,
                       std::string_view day) {
    return read_counters(connection_of(region), day_or_today(day), region,
                         {Wanted{std::string(ns), std::string(key)}})
        .front();
}

NamespaceStats namespace_stats(std::string_view region, std::string_view ns, std::string_view day) {
    const Connection conn = connection_of(region);
    std::vector<Wanted> wanted;
    for (std::string& key : members_of(conn.command("SMEMBERS", detail::cache_keys::keyset(region, ns))))
        wanted.push_back({std::string(ns), std::move(key)});
    std::vector<CacheStats> counts = read_counters(conn, day_or_today(day), region, wanted);
    NamespaceStats out;
    for (std::size_t i = 0; i < wanted.size(); ++i) {
        out.keys[wanted[i].key] = counts[i];
        out.total += counts[i];
    }
    return out;
}

RegionStats region_stats(std::string_view region, std::string_view day) {
    const Connection conn = connection_of(region);
    std::vector<std::string> namespaces =
        members_of(conn.command("SMEMBERS", detail::cache_keys::namespaces(region)));
    RegionStats out;
    if (namespaces.empty()) return out;
    Pipeline p;
    for (const std::string& ns : namespaces) p.command("SMEMBERS", detail::cache_keys::keyset(region, ns));
    std::vector<Reply> keysets = conn.execute(p);
    detail::check_replies(keysets, p);  // names a key set of the wrong type
    std::vector<Wanted> wanted;
    for (std::size_t i = 0; i < namespaces.size(); ++i) {
        out.namespaces[namespaces[i]];  // a namespace with no keys still shows up
        for (std::string& key : members_of(keysets[i])) wanted.push_back({namespaces[i], std::move(key)});
    }
    std::vector<CacheStats> counts = read_counters(conn, day_or_today(day), region, wanted);
    for (std::size_t i = 0; i < wanted.size(); ++i) {
        NamespaceStats& ns = out.namespaces[wanted[i].ns];
        ns.keys[wanted[i].key] = counts[i];
        ns.total += counts[i];
        out.total += counts[i];
    }
    return out;
}

std::vector<std::string> stored_regions(const Connection& conn) {
    std::vector<std::string> out = members_of(conn.command("SMEMBERS", detail::cache_keys::regions));
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace retools
