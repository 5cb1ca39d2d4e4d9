#pragma once
// The type-erased load path behind CachedFunction (src/cache/load.cpp): the
// template decodes and produces values, the library does the Redis steps.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <retools/codec.hpp>

namespace retools::detail {

/// A region's settings (defined in src/cache/registry.hpp).
struct RegionSettings;

/// The settings of a region; throws CacheConfigurationError naming it when unknown.
std::shared_ptr<const RegionSettings> find_region(std::string_view name);
/// The region's value_format.
ValueFormat value_format(const RegionSettings& region) noexcept;

enum class Regenerate {
    never,         ///< the original's regenerate=False: serve any stored value, else nothing
    when_missing,  ///< serve any stored value, else generate
    when_stale,    ///< the original's regenerate=True
};

/// What the type-erased load works on: decoding a stored value and producing a new one.
class LoadTarget {
public:
    /// Decodes stored bytes into the caller's result; false when they are not a
    /// value of the caller's type (then they count as missing).
    virtual bool accept(std::string_view stored) = 0;
    /// Calls the function and keeps its result; true with the bytes to store,
    /// or false with the reason it cannot be stored (the result is still returned).
    virtual bool produce(std::string& bytes, std::string& why) = 0;
    /// A self-contained producer for an early refresh on another thread (own
    /// copies of the function and the arguments), or empty when there is none.
    virtual std::function<bool(std::string& bytes, std::string& why)> refresher() const { return {}; }
    /// The tags of the value produced (CachedFunction::with_tags); none by default.
    virtual std::vector<std::string> tags() const { return {}; }

protected:
    ~LoadTarget() = default;
};

enum class LoadOutcome {
    stored,        ///< a stored value was accepted
    produced,      ///< the function was called (and its value stored when it could be)
    none,          ///< nothing stored, regeneration not asked for
    lock_timeout,  ///< nothing stored and another caller held the lock too long
};

LoadOutcome cache_load(const RegionSettings& region, std::string_view ns, std::string_view key,
                       Regenerate mode, bool statistics, LoadTarget& target);

/// cache_load for many keys of one namespace: one round trip reads them all
/// (statistics included), the missing and stale ones are locked in one round
/// trip, produced (in order, or on up to `threads` threads) and stored, their
/// locks released, in one round trip. One outcome per key.
std::vector<LoadOutcome> cache_load_many(const RegionSettings& region, std::string_view ns,
                                         const std::vector<std::string>& keys, Regenerate mode,
                                         bool statistics, const std::vector<LoadTarget*>& targets,
                                         std::size_t threads = 1);

void invalidate_key(std::string_view region, std::string_view ns, std::string_view key);
void invalidate_namespace(std::string_view region, std::string_view ns);
void evict_key(std::string_view region, std::string_view ns, std::string_view key);
void evict_namespace(std::string_view region, std::string_view ns);

[[noreturn]] void throw_first_value_timeout(std::string_view region, std::string_view ns,
                                            std::string_view key);

}  // namespace retools::detail
