// Invalidation: values are not deleted, their `created` is moved back so
// the next call regenerates them (as the original does). Eviction deletes
// them, for data that must never be served again.
#include <algorithm>
#include <span>
#include <string>

#include <retools/cache.hpp>
#include <retools/script.hpp>

#include "cache/keys.hpp"
#include "cache/near_cache.hpp"
#include "cache/registry.hpp"
#include "client/errors.hpp"
#include "generated/lua_scripts.hpp"
#include "util/clock.hpp"

namespace retools::detail {
namespace {

// Backdates `created` of each existing value hash (never creates one, skips
// keys of other types). KEYS, ARGV and the reply: src/cache/lua/backdate.lua.
const Script& backdate_script() {
    static const Script script{std::string(lua::cache_backdate)};
    return script;
}

// backdate_script for a namespace, dropping key set members whose hash is
// gone. KEYS, ARGV and the reply: src/cache/lua/prune.lua.
const Script& prune_script() {
    static const Script script{std::string(lua::cache_prune)};
    return script;
}

// On a cluster the value hashes are in many slots: one call each, sent as
// one split pipeline per chunk; returns the key's type.
// KEYS, ARGV and the reply: src/cache/lua/backdate_one.lua.
const Script& backdate_one_script() {
    static const Script script{std::string(lua::cache_backdate_one)};
    return script;
}

constexpr std::size_t chunk = 512;  // keys per script call (per pipeline on a cluster)

// Backdates the value hashes of `keys` on a cluster; with `keyset`, drops
// from it the members whose hash is gone (as prune_script does).
void backdate_on_cluster(const Connection& conn, std::string_view region, std::string_view ns,
                         std::span<const std::string> keys, double created, const std::string* keyset) {
    for (std::size_t start = 0; start < keys.size(); start += chunk) {
        const std::size_t end = std::min(keys.size(), start + chunk);
        Pipeline p;
        for (std::size_t i = start; i < end; ++i)
            p.command("EVAL", backdate_one_script().source(), 1, cache_keys::value(region, ns, keys[i], true),
                      created);
        std::vector<Reply> types = conn.execute(p);
        check_replies(types, p);
        if (!keyset) continue;
        std::vector<std::string> gone;
        for (std::size_t i = start; i < end; ++i)
            if (types[i - start].view() == "none") gone.push_back(keys[i]);
        if (!gone.empty()) conn.command("SREM", *keyset, gone);
    }
}

// The region's connection when it was added here, else the global one.
Connection connection_of(std::string_view region) {
    if (!CacheRegion::has_region(region)) return global_connection();
    return find_region(region)->connection();
}

std::vector<std::string> members(const Connection& conn, const std::string& set) {
    std::vector<std::string> out;
    for (const Reply& r : conn.command("SMEMBERS", set).as_array()) out.push_back(r.as_string());
    return out;
}

// The key set's members plus "" (the key of a call without arguments), once each.
std::vector<std::string> keys_with_empty(const Connection& conn, std::string_view region,
                                         std::string_view ns) {
    std::vector<std::string> keys = members(conn, cache_keys::keyset(region, ns));
    if (std::find(keys.begin(), keys.end(), "") == keys.end()) keys.emplace_back();
    return keys;
}

void backdate(const Connection& conn, std::string_view region, std::string_view ns,
              std::span<const std::string> keys, double created) {
    if (cache_topology(conn).per_call_slots())
        return backdate_on_cluster(conn, region, ns, keys, created, nullptr);
    for (std::size_t start = 0; start < keys.size(); start += chunk) {
        std::vector<std::string> value_keys;
        for (std::size_t i = start; i < std::min(keys.size(), start + chunk); ++i)
            value_keys.push_back(cache_keys::value(region, ns, keys[i], false));
        backdate_script().run(conn, value_keys, created);
    }
}

}  // namespace

void invalidate_key(std::string_view region, std::string_view ns, std::string_view key) {
    auto settings = find_region(region);
    const double created = unix_now() - to_seconds(settings->options.expires) - 3600;
    std::string one[] = {std::string(key)};
    backdate(settings->connection(), region, ns, one, created);
    // The tracking connection will tell too, a little later; the next call
    // of this process must not wait for that.
    if (NearCache* near = near_cache(*settings, settings->connection()))
        near->invalidate(settings->topology().value(region, ns, key));
}

void invalidate_namespace(std::string_view region, std::string_view ns) {
    auto settings = find_region(region);
    const Connection& conn = settings->connection();
    const double created = unix_now() - to_seconds(settings->options.expires) - 3600;
    backdate(conn, region, ns, keys_with_empty(conn, region, ns), created);
    if (NearCache* near = near_cache(*settings, conn)) near->clear();
}

void evict_key(std::string_view region, std::string_view ns, std::string_view key) {
    auto settings = find_region(region);
    const Connection& conn = settings->connection();
    const std::string value_key = settings->topology().value(region, ns, key);
    conn.command("DEL", value_key);
    conn.command("SREM", cache_keys::keyset(region, ns), key);  // another slot on a Cluster
    if (NearCache* near = near_cache(*settings, conn)) near->invalidate(value_key);
}

void evict_namespace(std::string_view region, std::string_view ns) {
    auto settings = find_region(region);
    const Connection& conn = settings->connection();
    const std::vector<std::string> keys = keys_with_empty(conn, region, ns);
    // One DEL per value: on a Cluster they are in many slots (the pipeline
    // is split per node); on one node it is still one round trip per chunk.
    for (std::size_t start = 0; start < keys.size(); start += chunk) {
        Pipeline p;
        for (std::size_t i = start; i < std::min(keys.size(), start + chunk); ++i)
            p.command("DEL", settings->topology().value(region, ns, keys[i]));
        check_replies(conn.execute(p), p);
    }
    conn.command("DEL", cache_keys::keyset(region, ns));
    if (NearCache* near = near_cache(*settings, conn)) near->clear();
}

}  // namespace retools::detail

namespace retools {

void invalidate_region(std::string_view region) {
    using namespace detail;
    const Connection conn = connection_of(region);
    std::vector<std::string> namespaces = members(conn, cache_keys::namespaces(region));
    if (namespaces.empty()) return;

    // Far enough back for every region, so it is stale whatever region reads it.
    std::chrono::milliseconds longest{0};
    for (const std::string& name : CacheRegion::region_names())
        if (auto options = CacheRegion::region(name)) longest = std::max(longest, options->expires);
    const double created = unix_now() - to_seconds(longest) - 3600;

    for (const std::string& ns : namespaces) {
        const std::string keyset = cache_keys::keyset(region, ns);
        std::vector<std::string> keys = keys_with_empty(conn, region, ns);
        if (cache_topology(conn).per_call_slots()) {
            backdate_on_cluster(conn, region, ns, keys, created, &keyset);
            continue;
        }
        for (std::size_t start = 0; start < keys.size(); start += chunk) {
            const std::size_t end = std::min(keys.size(), start + chunk);
            std::vector<std::string> script_keys{keyset};
            for (std::size_t i = start; i < end; ++i)
                script_keys.push_back(cache_keys::value(region, ns, keys[i], false));
            prune_script().run(conn, script_keys, created,
                               std::span<const std::string>(keys.data() + start, end - start));
        }
    }
    if (CacheRegion::has_region(region)) {
        auto settings = find_region(region);
        if (NearCache* near = near_cache(*settings, settings->connection())) near->clear();
    }
}

}  // namespace retools
