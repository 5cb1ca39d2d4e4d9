#pragma once
// The region registry: settings of every region added in this process.

#include <memory>
#include <string>
#include <string_view>

#include <retools/cache.hpp>

#include "cache/topology.hpp"
#include "cache/tracking.hpp"

namespace retools::detail {

struct RegionSettings {
    std::string name;
    CacheRegionOptions options;
    /// Set when options.local is on: where the region's near cache is found.
    std::shared_ptr<NearSlot> near{};
    const Connection& connection() const {
        return options.connection ? *options.connection : global_connection();
    }
    /// Where the region's keys live (one node or a cluster), from its connection.
    const CacheTopology& topology() const { return cache_topology(connection()); }
};

/// The settings of a region; nullptr when it was not added.
std::shared_ptr<const RegionSettings> lookup_region(std::string_view name);

}  // namespace retools::detail
