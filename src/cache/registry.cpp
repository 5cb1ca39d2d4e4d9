// The region registry: add_region() validates and stores settings; lookups
// are shared-locked reads of one map.
#include "cache/registry.hpp"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include <fmt/format.h>

#include "cache/keys.hpp"
#include "cache/near_cache.hpp"

namespace retools {
namespace detail {
namespace {

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

struct Registry {
    std::shared_mutex mutex;
    std::unordered_map<std::string, std::shared_ptr<const RegionSettings>, StringHash, std::equal_to<>>
        regions;
};

Registry& registry() {
    static Registry instance;
    return instance;
}

}  // namespace

std::shared_ptr<const RegionSettings> lookup_region(std::string_view name) {
    Registry& r = registry();
    std::shared_lock lock(r.mutex);
    auto it = r.regions.find(name);
    return it == r.regions.end() ? nullptr : it->second;
}

std::shared_ptr<const RegionSettings> find_region(std::string_view name) {
    auto region = lookup_region(name);
    if (!region) throw CacheConfigurationError(fmt::format("Cache region not configured: {}", name));
    return region;
}

ValueFormat value_format(const RegionSettings& region) noexcept {
    return region.options.value_format;
}

}  // namespace detail

CacheKey::CacheKey(std::string_view region, std::string_view ns, std::string_view key, std::string_view today)
    : lock_key(detail::cache_keys::lock(region, ns, key, false)),
      redis_key(detail::cache_keys::value(region, ns, key, false)),
      redis_keyset(detail::cache_keys::keyset(region, ns)) {
    const std::string day = today.empty() ? detail::today() : std::string(today);
    redis_hit_key = detail::cache_keys::hits(day, region, ns, key, false);
    redis_miss_key = detail::cache_keys::misses(day, region, ns, key, false);
}

void CacheRegion::add_region(std::string name, std::chrono::milliseconds expires,
                             std::chrono::seconds redis_expiration) {
    add_region(std::move(name), CacheRegionOptions{.expires = expires, .redis_expiration = redis_expiration});
}

void CacheRegion::add_region(std::string name, CacheRegionOptions options) {
    if (name.empty()) throw CacheConfigurationError("cache region name must not be empty");
    if (options.expires.count() < 0)
        throw CacheConfigurationError(fmt::format("cache region {}: expires must not be negative", name));
    if (options.redis_expiration.count() < 1)
        throw CacheConfigurationError(
            fmt::format("cache region {}: redis_expiration must be at least 1 s", name));
    if (options.first_value_wait.count() < 0)
        throw CacheConfigurationError(
            fmt::format("cache region {}: first_value_wait must not be negative", name));
    if (options.stats_retention.count() < 0)
        throw CacheConfigurationError(
            fmt::format("cache region {}: stats_retention must not be negative", name));
    if (options.fail_safe_max_age.count() < 0)
        throw CacheConfigurationError(
            fmt::format("cache region {}: fail_safe_max_age must not be negative", name));
    if (options.soft_timeout.count() < 0)
        throw CacheConfigurationError(
            fmt::format("cache region {}: soft_timeout must not be negative", name));
    if (!(std::isfinite(options.early_refresh_beta) && options.early_refresh_beta >= 0))
        throw CacheConfigurationError(
            fmt::format("cache region {}: early_refresh_beta must be a finite number >= 0, got {}", name,
                        options.early_refresh_beta));
    if (options.local.enabled()) {
        // Such a region's prefix would match the hit and miss counters, which change on every call.
        for (std::string_view counters : {"hits", "misses"})
            if (name == counters || name.starts_with(std::string(counters) + ":"))
                throw CacheConfigurationError(fmt::format(
                    "cache region {}: a near cache (local) is not possible for a region named {}: its "
                    "keys share the prefix of the statistics counters",
                    name, counters));
    }
    detail::near_region_changed(name, options.local);
    std::shared_ptr<detail::NearSlot> near;
    if (options.local.enabled()) near = std::make_shared<detail::NearSlot>();
    auto settings = std::make_shared<const detail::RegionSettings>(
        detail::RegionSettings{name, std::move(options), std::move(near)});
    auto& r = detail::registry();
    std::unique_lock lock(r.mutex);
    r.regions.insert_or_assign(std::move(name), std::move(settings));
}

bool CacheRegion::has_region(std::string_view name) {
    return detail::lookup_region(name) != nullptr;
}

std::optional<CacheRegionOptions> CacheRegion::region(std::string_view name) {
    auto settings = detail::lookup_region(name);
    if (!settings) return std::nullopt;
    return settings->options;
}

std::vector<std::string> CacheRegion::region_names() {
    std::vector<std::string> names;
    {
        auto& r = detail::registry();
        std::shared_lock lock(r.mutex);
        for (const auto& [name, settings] : r.regions) names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
}

}  // namespace retools
