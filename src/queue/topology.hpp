#pragma once
// Where the job queue's keys live and how its multi-key steps run: on one
// node (one delayed set and one processing list per worker; a step is one
// script) or on a Redis Cluster (hash-tagged keys per queue; a step spanning
// slots is an ordered series of commands that duplicates a job rather than
// losing it). Chosen once from the connection, so QueueManager, Job and the
// worker never branch on the topology. The key names themselves are defined
// in queue/keys.hpp only. Not installed.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <retools/connection.hpp>
#include <retools/queue.hpp>

namespace retools::detail::queue {

class Topology {
public:
    virtual ~Topology() = default;

    // --- key layout (queue/keys.hpp) -----------------------------------------
    /// The list of `name`'s payloads.
    virtual std::string queue_key(std::string_view name) const = 0;
    /// The sorted set holding `queue`'s scheduled jobs.
    virtual std::string delayed_key(std::string_view queue) const = 0;
    /// The list of entries `worker_id` took from `queue` and has not finished.
    virtual std::string processing_key(std::string_view worker_id, std::string_view queue) const = 0;

    /// The hash of periodic job definitions of `queue` (one for all queues on a single node).
    virtual std::string periodic_key(std::string_view queue) const = 0;
    /// The sorted set of next runs beside it.
    virtual std::string periodic_due_key(std::string_view queue) const = 0;
    /// The queues whose periodic sets to read: {""} on a single node (one
    /// pair of keys), every name in retools:queues on a cluster.
    virtual std::vector<std::string> periodic_queues(const Connection& conn) const = 0;
    /// The claim key of a unique job on `queue`.
    virtual std::string unique_key(std::string_view queue, std::string_view key) const = 0;

    // --- steps ----------------------------------------------------------------
    /// Appends to `p` the scheduling of `member` (see delayed_member) on
    /// `queue` at `due` (Unix seconds); on a cluster also the queue's name to
    /// retools:queues, where promoters find the per-queue sets.
    virtual void add_delayed(Pipeline& p, std::string_view queue, double due,
                             const std::string& member) const = 0;
    /// QueueManager::promote_due_jobs at `now` (Unix seconds); `limit` > 0.
    virtual std::size_t promote_due(const Connection& conn, double now, std::size_t limit) const = 0;
    /// The due time (Unix seconds) of the earliest scheduled job, if any.
    virtual std::optional<double> next_due(const Connection& conn) const = 0;
    /// Every scheduled-job set as `ZRANGE 0 -1 WITHSCORES` replies (a
    /// cluster's error replies included, for the caller to skip).
    virtual std::vector<Reply> scheduled_sets(const Connection& conn) const = 0;
    /// Removes the scheduled job `job_id`; true when it was there.
    virtual bool cancel_scheduled(const Connection& conn, std::string_view job_id) const = 0;
    /// Moves the failed-list `entry` of `failed` back onto its queue; false
    /// when the entry was not there (another caller retried it).
    virtual bool retry_failed(const Connection& conn, const FailedJob& failed,
                              const std::string& entry) const = 0;
    /// QueueManager::retry_all_failed of `qm`, connected through `conn`.
    virtual std::size_t retry_all_failed(const QueueManager& qm, const Connection& conn) const = 0;
};

/// The topology `conn` connects to; the only place the job queue asks.
const Topology& topology_of(const Connection& conn);
/// The two topologies, for components that choose theirs (the worker).
const Topology& single_node_topology();
const Topology& cluster_topology();

}  // namespace retools::detail::queue
