#pragma once
// QueueManager's private state: its configuration and the plans enqueues
// share per job name. Not installed.

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <retools/connection.hpp>
#include <retools/queue.hpp>

#include "queue/topology.hpp"

namespace retools {

struct QueueManager::Impl {
    // What every enqueue of one job name shares, serialized once: the queue
    // set_queue_for_job chose (or the default), its key, and the payload's
    // fixed parts. Payload = `{"job_id": "` id head kwargs events metadata
    // `, "state": {}}`.
    struct JobPlan {
        std::string queue;
        std::string queue_key;  // retools:queue:<queue> (topology_.queue_key)
        std::string head;       // `", "job": "<name>", "kwargs": `
        std::string events;     // `, "events": {...}, "metadata": `
    };

    Impl(Connection conn, std::string default_queue)
        : conn_(std::move(conn)),
          topology_(detail::queue::topology_of(conn_)),
          default_queue_(std::move(default_queue)) {}
    // A copy has the same configuration and an empty plan cache (plans are
    // rebuilt on first use; the mutex is never shared).
    Impl(const Impl& other)
        : conn_(other.conn_),
          topology_(other.topology_),
          default_queue_(other.default_queue_),
          job_queues_(other.job_queues_),
          global_events_(other.global_events_),
          job_events_(other.job_events_) {}
    Impl& operator=(const Impl&) = delete;

    std::string resolve_queue(std::string_view job_name, std::string_view requested) const;
    /// The payload's `events` object for `job_name`: global handlers, then the job's own.
    std::string events_json(std::string_view job_name) const;
    /// The payload of one job (a fresh id in `id`, its queue in `queue`).
    std::string build_payload(std::string_view job_name, const nlohmann::json& kwargs,
                              const EnqueueOptions& options, std::string& queue, std::string& id,
                              double enqueued_at) const;
    /// The cached plan of `job_name` (validated); when the cache is full, a
    /// fresh one built into `uncached`.
    const JobPlan& plan_for(std::string_view job_name, std::unique_ptr<const JobPlan>& uncached) const;
    /// Forgets every plan (the configuration changed).
    void clear_plans() { plans_.clear(); }

    Connection conn_;
    const detail::queue::Topology& topology_;  // single node or cluster, chosen from conn_ once
    std::string default_queue_;
    std::map<std::string, std::string, std::less<>> job_queues_;
    // event → handlers, global and per job name.
    std::map<std::string, std::vector<std::string>, std::less<>> global_events_;
    std::map<std::string, std::map<std::string, std::vector<std::string>, std::less<>>, std::less<>>
        job_events_;
    // Filled lazily by const members (hence the mutex), emptied by the
    // configuring members (which must not run concurrently with others, see
    // the class comment). Plans are never removed otherwise, so a reference
    // stays valid without holding the lock.
    mutable std::mutex plans_mutex_;
    mutable std::map<std::string, std::unique_ptr<const JobPlan>, std::less<>> plans_;
};

namespace detail {

/// The library's own access to a QueueManager's state (the test hooks).
struct QueueManagerAccess {
    static const QueueManager::Impl& impl(const QueueManager& qm) noexcept { return *qm.impl_; }
};

}  // namespace detail

}  // namespace retools
