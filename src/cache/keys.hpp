#pragma once
// Redis key names of the cache: the original's layout, or on a Redis Cluster
// the same names with the call's part `{<region>:<ns>:<key>}` as a hash tag.

#include <initializer_list>
#include <string>
#include <string_view>

namespace retools::detail {

/// Today's local date `YYYY-MM-DD` (Python's `str(date.today())`), computed at
/// most once per second per thread.
std::string today();

namespace cache_keys {

inline std::string join(std::initializer_list<std::string_view> parts) {
    std::size_t size = 0;
    for (auto part : parts) size += part.size() + 1;
    std::string out;
    out.reserve(size);
    for (auto part : parts) {
        if (!out.empty()) out += ':';
        out.append(part);
    }
    return out;
}

/// Set of every region that stored a value.
inline constexpr std::string_view regions = "retools:regions";

/// The part that names one cached call: `<region>:<ns>:<key>` in the
/// original's layout; on a cluster (`cluster`) `{<region>:<ns>:<key>}`, so the
/// value, its lock and its counters (one transaction or script touches them
/// together) share a hash slot while different calls spread over the nodes.
/// The prefixes before it hold no `{`, so the tag starts at the one inserted
/// here and every key of the call gets the same tag even when `key` holds a
/// `}`. This is the only place where the two layouts differ.
inline std::string call(std::string_view prefix, std::string_view region, std::string_view ns,
                        std::string_view key, bool cluster) {
    if (!cluster) return join({prefix, region, ns, key});
    std::string out(prefix);
    out += ":{";
    out += join({region, ns, key});
    out += '}';
    return out;
}

/// Hash `created`, `value`: `retools:<region>:<ns>:<key>`.
inline std::string value(std::string_view region, std::string_view ns, std::string_view key, bool cluster) {
    return call("retools", region, ns, key, cluster);
}
/// Dogpile lock: `retools:lock:<region>:<ns>:<key>`.
inline std::string lock(std::string_view region, std::string_view ns, std::string_view key, bool cluster) {
    return call("retools:lock", region, ns, key, cluster);
}
/// Hits counted on `day`: `retools:hits:<day>:<region>:<ns>:<key>`.
inline std::string hits(std::string_view day, std::string_view region, std::string_view ns,
                        std::string_view key, bool cluster) {
    return call(join({"retools:hits", day}), region, ns, key, cluster);
}
/// Misses counted on `day`: `retools:misses:<day>:<region>:<ns>:<key>`.
inline std::string misses(std::string_view day, std::string_view region, std::string_view ns,
                          std::string_view key, bool cluster) {
    return call(join({"retools:misses", day}), region, ns, key, cluster);
}
/// Tracking sets below (regions, namespaces, key sets) keep their names on a
/// cluster; they are written with commands of their own there.
/// Set of the namespaces of a region: `retools:<region>:namespaces`.
inline std::string namespaces(std::string_view region) {
    return join({"retools", region, "namespaces"});
}
/// Set of the keys of a namespace: `retools:<region>:<ns>:keys`.
inline std::string keyset(std::string_view region, std::string_view ns) {
    return join({"retools", region, ns, "keys"});
}
/// Set of the value keys of the calls tagged `tag` (CachedFunction::with_tags):
/// `retools:tag:<tag>`, the same name on a cluster (one set, in its own slot).
inline std::string tag(std::string_view tag) {
    return join({"retools:tag", tag});
}

}  // namespace cache_keys
}  // namespace retools::detail
