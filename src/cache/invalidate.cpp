// Invalidation: values are not deleted, their `created` is moved back so
// the next call regenerates them (as the original does). Eviction deletes
// them, for data that must never be served again.
#include <algorithm>
#include <exception>
#include <span>
#include <string>

#include <retools/cache.hpp>
#include <retools/script.hpp>

#include "cache/keys.hpp"
#include "cache/near_cache.hpp"
#include "cache/registry.hpp"
#include "client/connection_access.hpp"
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

// Backdates the value hashes `value_keys` on a cluster; with `set`, drops
// from it the members (`members[i]` names `value_keys[i]`) whose hash is gone
// (as prune_script does).
void backdate_values_on_cluster(const Connection& conn, std::span<const std::string> value_keys,
                                double created, const std::string* set,
                                std::span<const std::string> members) {
    for (std::size_t start = 0; start < value_keys.size(); start += chunk) {
        const std::size_t end = std::min(value_keys.size(), start + chunk);
        Pipeline p;
        for (std::size_t i = start; i < end; ++i)
            p.command("EVAL", backdate_one_script().source(), 1, value_keys[i], created);
        std::vector<Reply> types = conn.execute(p);
        check_replies(types, p);
        if (!set) continue;
        std::vector<std::string> gone;
        for (std::size_t i = start; i < end; ++i)
            if (types[i - start].view() == "none") gone.push_back(members[i]);
        if (!gone.empty()) conn.command("SREM", *set, gone);
    }
}

// backdate_values_on_cluster for keys of one namespace, `keys` members of `keyset`.
void backdate_on_cluster(const Connection& conn, std::string_view region, std::string_view ns,
                         std::span<const std::string> keys, double created, const std::string* keyset) {
    std::vector<std::string> value_keys;
    value_keys.reserve(keys.size());
    for (const std::string& key : keys) value_keys.push_back(cache_keys::value(region, ns, key, true));
    backdate_values_on_cluster(conn, value_keys, created, keyset, keys);
}

// Backdates on one node the value hashes `value_keys`, members `members` of
// `set` (dropping those whose hash is gone), one script call per chunk.
void prune_set(const Connection& conn, const std::string& set, std::span<const std::string> value_keys,
               std::span<const std::string> members, double created) {
    for (std::size_t start = 0; start < value_keys.size(); start += chunk) {
        const std::size_t end = std::min(value_keys.size(), start + chunk);
        std::vector<std::string> script_keys{set};
        script_keys.insert(script_keys.end(), value_keys.begin() + static_cast<std::ptrdiff_t>(start),
                           value_keys.begin() + static_cast<std::ptrdiff_t>(end));
        prune_script().run(conn, script_keys, created, members.subspan(start, end - start));
    }
}

// A `created` old enough for every region added here: stale whatever region reads it.
double far_enough_back() {
    std::chrono::milliseconds longest{0};
    for (const std::string& name : CacheRegion::region_names())
        if (auto options = CacheRegion::region(name)) longest = std::max(longest, options->expires);
    return unix_now() - to_seconds(longest) - 3600;
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

    const double created = far_enough_back();
    for (const std::string& ns : namespaces) {
        const std::string keyset = cache_keys::keyset(region, ns);
        std::vector<std::string> keys = keys_with_empty(conn, region, ns);
        if (cache_topology(conn).per_call_slots()) {
            backdate_on_cluster(conn, region, ns, keys, created, &keyset);
            continue;
        }
        std::vector<std::string> value_keys;
        value_keys.reserve(keys.size());
        for (const std::string& key : keys) value_keys.push_back(cache_keys::value(region, ns, key, false));
        prune_set(conn, keyset, value_keys, keys, created);
    }
    if (CacheRegion::has_region(region)) {
        auto settings = find_region(region);
        if (NearCache* near = near_cache(*settings, settings->connection())) near->clear();
    }
}

}  // namespace retools

namespace retools {

// A tag's set holds the value keys stored with it (src/cache/lua/tag.lua):
// they are backdated as invalidate_function backdates one, and members whose
// value is gone leave the set. Nothing is read on a hit.
void invalidate_tag(std::string_view tag, const Connection& conn) {
    using namespace detail;
    const std::string set = cache_keys::tag(tag);
    const std::vector<std::string> values = members(conn, set);
    if (values.empty()) return;
    const double created = far_enough_back();
    if (cache_topology(conn).per_call_slots())
        backdate_values_on_cluster(conn, values, created, &set, values);
    else
        prune_set(conn, set, values, values, created);
    // The tracking connections will tell too, a little later; the next call
    // of this process must not wait for that.
    for (const std::string& name : CacheRegion::region_names()) {
        auto settings = lookup_region(name);
        if (!settings || !settings->options.local.enabled()) continue;
        if (NearCache* near = near_cache(*settings, settings->connection()))
            for (const std::string& value_key : values) near->invalidate(value_key);
    }
}

void invalidate_tag(std::string_view tag) {
    using namespace detail;
    // The Redis of every region added here, each once (global_connection()
    // when none was added): a tag may span regions.
    std::vector<Connection> servers;
    std::vector<const void*> seen;
    for (const std::string& name : CacheRegion::region_names()) {
        auto settings = lookup_region(name);
        if (!settings) continue;
        const Connection& conn = settings->connection();
        const void* pool = &ConnectionAccess::impl(conn);
        if (std::find(seen.begin(), seen.end(), pool) != seen.end()) continue;
        seen.push_back(pool);
        servers.push_back(conn);
    }
    if (servers.empty()) servers.push_back(global_connection());
    // One unreachable Redis does not keep the tag's values on the others
    // valid: every one is tried, then the first failure is thrown.
    std::exception_ptr failure;
    for (const Connection& conn : servers) {
        try {
            invalidate_tag(tag, conn);
        } catch (const ConnectionError&) {
            if (!failure) failure = std::current_exception();
        }
    }
    if (failure) std::rethrow_exception(failure);
}

}  // namespace retools
