#pragma once
// Where a worker's keys live: one node (one processing list per worker, and
// multi-key transactions) or a Redis Cluster (one processing list per queue,
// keys in many slots). Chosen once, from the connection's options, so the
// worker's own code has no branch on the topology.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>

namespace retools::detail {

class QueueTopology {
public:
    virtual ~QueueTopology() = default;
    /// Sends `pipeline` and returns its replies: as one transaction on a
    /// single node; on a cluster (keys in many slots) as a split pipeline.
    virtual std::vector<Reply> apply(const Connection& conn, const Pipeline& pipeline) const = 0;
    /// How many processing lists of `worker_id` exist: non-zero while it holds jobs.
    virtual long long processing_lists(const Connection& conn, std::string_view worker_id,
                                       const std::vector<std::string>& queues) const = 0;
};

/// The topology `conn` connects to (Connection::is_cluster()).
std::unique_ptr<QueueTopology> make_queue_topology(const Connection& conn);

}  // namespace retools::detail
