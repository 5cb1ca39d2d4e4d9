#pragma once
// The region registry: settings of every region added in this process.

#include <memory>
#include <string>
#include <string_view>

#include <retools/cache.hpp>

namespace retools::detail {

struct RegionSettings {
    std::string name;
    CacheRegionOptions options;
    const Connection& connection() const {
        return options.connection ? *options.connection : global_connection();
    }
};

/// The settings of a region; nullptr when it was not added.
std::shared_ptr<const RegionSettings> lookup_region(std::string_view name);

}  // namespace retools::detail
