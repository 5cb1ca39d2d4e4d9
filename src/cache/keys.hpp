#pragma once
// Redis key names of the cache, exactly the original's layout.

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

/// Hash `created`, `value`: `retools:<region>:<ns>:<key>`.
inline std::string value(std::string_view region, std::string_view ns, std::string_view key) {
    return join({"retools", region, ns, key});
}
/// Dogpile lock: `retools:lock:<region>:<ns>:<key>`.
inline std::string lock(std::string_view region, std::string_view ns, std::string_view key) {
    return join({"retools:lock", region, ns, key});
}
/// Hits counted on `day`: `retools:hits:<day>:<region>:<ns>:<key>`.
inline std::string hits(std::string_view day, std::string_view region, std::string_view ns,
                        std::string_view key) {
    return join({"retools:hits", day, region, ns, key});
}
/// Misses counted on `day`: `retools:misses:<day>:<region>:<ns>:<key>`.
inline std::string misses(std::string_view day, std::string_view region, std::string_view ns,
                          std::string_view key) {
    return join({"retools:misses", day, region, ns, key});
}
/// Set of the namespaces of a region: `retools:<region>:namespaces`.
inline std::string namespaces(std::string_view region) {
    return join({"retools", region, "namespaces"});
}
/// Set of the keys of a namespace: `retools:<region>:<ns>:keys`.
inline std::string keyset(std::string_view region, std::string_view ns) {
    return join({"retools", region, ns, "keys"});
}

}  // namespace cache_keys
}  // namespace retools::detail
