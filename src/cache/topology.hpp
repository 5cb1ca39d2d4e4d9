#pragma once
// Where the cache's keys live and how its steps over several calls run: on
// one node (the original's layout; one transaction or script covers many
// calls) or on a Redis Cluster (each call's keys hash-tagged into a slot of
// their own; steps over several calls are split per call, and the tracking
// sets are written apart). Chosen once from the connection, so the cache's
// code does not branch on the topology. The key names themselves are defined
// in cache/keys.hpp only. Not installed.

#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>

namespace retools::detail {

class CacheTopology {
public:
    virtual ~CacheTopology() = default;

    // --- key layout (cache/keys.hpp) -------------------------------------------
    virtual std::string value(std::string_view region, std::string_view ns, std::string_view key) const = 0;
    virtual std::string lock(std::string_view region, std::string_view ns, std::string_view key) const = 0;
    virtual std::string hits(std::string_view day, std::string_view region, std::string_view ns,
                             std::string_view key) const = 0;
    virtual std::string misses(std::string_view day, std::string_view region, std::string_view ns,
                               std::string_view key) const = 0;

    // --- steps ------------------------------------------------------------------
    /// True when the keys of different calls are in different slots, so a
    /// step over several calls runs per call (the cache loader's store).
    virtual bool per_call_slots() const = 0;
    /// Where a store's tracking-set SADDs go: into its `transaction` on one
    /// node; on a cluster (other slots) into `apart`, sent on its own.
    virtual Pipeline& tracking(Pipeline& transaction, Pipeline& apart) const = 0;
    /// The values of the string `keys`, one reply each (nil when missing or
    /// of another type): one MGET on one node, split GETs on a cluster.
    virtual std::vector<Reply> values(const Connection& conn, const std::vector<std::string>& keys) const = 0;
    /// Whether a near cache can follow `conn` with client tracking (not
    /// through Sentinel failovers, nor a cluster's slot moves).
    virtual bool near_cache_possible(const Connection& conn) const = 0;
};

/// The topology `conn` connects to; the only place the cache asks.
const CacheTopology& cache_topology(const Connection& conn);

}  // namespace retools::detail
