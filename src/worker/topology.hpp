#pragma once
// Where a worker's keys live and how its multi-key steps run: one node (one
// processing list per worker; a step is one script or transaction) or a Redis
// Cluster (one processing list per queue, keys in many slots; a step is an
// ordered series of calls that duplicates a job rather than losing it).
// Chosen once, from the connection, so the worker's own code has no branch on
// the topology.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>

#include "queue/topology.hpp"
#include "worker/fetch.hpp"
#include "worker/liveness.hpp"

namespace retools::detail {

class WorkerTopology {
public:
    virtual ~WorkerTopology() = default;
    /// The job queue's key layout on this topology.
    virtual const queue::Topology& keys() const = 0;
    /// Sends `pipeline` and returns its replies: as one transaction on a
    /// single node; on a cluster (keys in many slots) as a split pipeline.
    virtual std::vector<Reply> apply(const Connection& conn, const Pipeline& pipeline) const = 0;
    /// How many processing lists of `worker_id` exist: non-zero while it holds jobs.
    virtual long long processing_lists(const Connection& conn, std::string_view worker_id,
                                       const std::vector<std::string>& queues) const = 0;
    /// recover_worker (see liveness.hpp).
    virtual Recovered recover(const Connection& conn, std::string_view worker_id, RecoverMode mode,
                              std::size_t max_recoveries, bool unregister,
                              std::string_view expected_heartbeat) const = 0;
    /// Calls `visit` with every worker id that may hold jobs, for
    /// recover_dead_workers' full scan.
    virtual void for_each_holder(const Connection& conn,
                                 const std::function<void(std::string_view)>& visit) const = 0;
    /// The reliable fetch of `worker_id` from `queues` (in priority order).
    virtual std::unique_ptr<ReliableFetch> make_fetch(Connection conn, std::string worker_id,
                                                      const std::vector<std::string>& queues) const = 0;
    /// How long one blocking wait of a QueueWaiter lasts, `requested` at most.
    virtual std::chrono::milliseconds wait_block(std::chrono::milliseconds requested) const = 0;
};

/// The topology `conn` connects to; the only place the worker asks.
const WorkerTopology& worker_topology(const Connection& conn);

}  // namespace retools::detail
