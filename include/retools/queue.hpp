#pragma once
// QueueManager: configures and enqueues jobs with the original's Redis layout,
// plus the failed-job list, scheduled jobs and job results.

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <retools/connection.hpp>
#include <retools/job.hpp>

namespace retools {

/// Options of one enqueue. An aggregate: use designated initializers.
struct EnqueueOptions {
    /// Queue to put the job on. Empty (the default) means the queue chosen with
    /// QueueManager::set_queue_for_job for this job name, else the manager's
    /// default queue.
    std::string queue_name;
    /// Free-form metadata stored in the payload; must be a JSON object. Null
    /// (the default) means `{}`. See Job for the keys retools reads
    /// (`retries`, `retry_backoff`, `result_ttl`).
    nlohmann::json metadata;
};

/// One entry of the failed-job list `retools:failed`.
struct FailedJob {
    /// The job's payload, verbatim (it may be malformed: that may be why it failed).
    std::string payload;
    /// The queue it was taken from (short name).
    std::string queue;
    /// What went wrong (exception text, signal, "unknown job ...").
    std::string error;
    /// Id of the worker that ran it.
    std::string worker;
    /// Unix time of the failure, in seconds.
    double failed_at = 0;

    /// The entry as stored: `{"payload": ..., "queue": ..., "error": ...,
    /// "worker": ..., "failed_at": ...}`.
    std::string to_json() const;
    /// Parses a stored entry; throws QueueError when it is not one.
    static FailedJob from_json(std::string_view text);
};

/// The outcome of a job whose result was stored (metadata `result_ttl`).
struct JobResult {
    /// True when the job returned, false when it failed.
    bool ok = false;
    /// What the job function returned (null when it failed).
    nlohmann::json value;
    /// The failure's text (empty when ok).
    std::string error;

    /// Stored text: `{"status": "ok", "result": ...}` or `{"status": "failed", "error": ...}`.
    std::string to_json() const;
    /// Parses a stored result; throws QueueError when it is not one.
    static JobResult from_json(std::string_view text);
};

/// Configures and enqueues jobs, like the original's `QueueManager`: payloads
/// go to the list `retools:queue:<name>` and the queue name to the set
/// `retools:queues`, so a Python retools worker can run them and vice versa.
///
/// ```cpp
/// retools::QueueManager qm;                               // global connection, queue "main"
/// qm.subscriber("job_failure", "myapp.jobs:save_error");  // every job
/// qm.subscriber("job_postrun", "myapp.jobs:important", "myapp.jobs:notify");
/// qm.set_queue_for_job("myapp.jobs:report", "low");
/// std::string id = qm.enqueue("myapp.jobs:important", {{"somearg", "fred"}});
/// qm.enqueue("myapp.jobs:important", {{"somearg", "x"}}, {.queue_name = "high"});
/// ```
///
/// Configure it (subscriber, set_queue_for_job) before sharing it between
/// threads; the const members are then safe to call concurrently.
class QueueManager {
public:
    /// Uses global_connection() and the queue `main`.
    QueueManager();
    /// Throws ConfigurationError for an invalid default queue name.
    explicit QueueManager(Connection conn, std::string default_queue_name = "main");

    const Connection& connection() const noexcept { return conn_; }
    const std::string& default_queue_name() const noexcept { return default_queue_; }

    /// Jobs named `job_name` go to `queue_name` when enqueue() is not given a
    /// queue (the original accepted this but never applied it).
    void set_queue_for_job(std::string job_name, std::string queue_name);

    /// Subscribes `handler` (a handler name the worker resolves, e.g.
    /// `"myapp.jobs:save_error"`) to `event` for every job enqueued from now on.
    /// Events: `job_prerun`, `job_wrapper`, `job_postrun`, `job_failure`;
    /// another name, or an empty handler, throws ConfigurationError.
    void subscriber(std::string event, std::string handler);
    /// Same, for jobs named `job_name` only (merged after the global handlers).
    void subscriber(std::string event, std::string job_name, std::string handler);

    /// Enqueues a job and returns its id (uuid4 hex): one pipeline
    /// `RPUSH retools:queue:<queue> <payload>`, `SADD retools:queues <queue>`.
    /// `kwargs` must be a JSON object (null counts as `{}`), as must
    /// `options.metadata`; else QueueError. An empty job name or a bad queue
    /// name throws ConfigurationError.
    ///
    /// ```cpp
    /// std::string id = qm.enqueue("myapp.jobs:resize", {{"image", "a.png"}, {"width", 200}},
    ///                             {.queue_name = "images", .metadata = {{"retries", 3}}});
    /// ```
    std::string enqueue(std::string_view job_name, const nlohmann::json& kwargs = nullptr,
                        const EnqueueOptions& options = {}) const;

    /// Enqueues one job per element of `kwargs_list`, all named `job_name`
    /// with the same options, in one round trip (payloads in order at the tail
    /// of the queue). Returns the ids in the same order. The parts the jobs
    /// share (name, events, metadata) are serialized once.
    ///
    /// ```cpp
    /// std::vector<nlohmann::json> args;
    /// for (int i = 0; i < 1000; ++i) args.push_back({{"n", i}});
    /// auto ids = qm.enqueue_many("myapp.jobs:square", args);
    /// ```
    std::vector<std::string> enqueue_many(std::string_view job_name,
                                          std::span<const nlohmann::json> kwargs_list,
                                          const EnqueueOptions& options = {}) const;

    /// The job `job_id` waiting in `queue_name` (default queue when empty),
    /// read without removing it. Throws QueueError when no such job is there.
    Job get_job(std::string_view job_id, std::string_view queue_name = {}) const;
    /// Every job waiting in `queue_name`, head first, read without removing
    /// them (one LRANGE). Throws QueueError naming the entry when one is not a
    /// valid payload.
    std::vector<Job> get_jobs(std::string_view queue_name = {}) const;
    /// Number of jobs waiting in `queue_name`.
    std::size_t queue_length(std::string_view queue_name = {}) const;
    /// Names in `retools:queues` (every queue ever enqueued to).
    std::vector<std::string> queue_names() const;

    /// The payload text enqueue() would write (no Redis access); for tests
    /// and tools that write payloads themselves.
    std::string make_payload(std::string_view job_id, std::string_view job_name,
                             const nlohmann::json& kwargs,
                             const nlohmann::json& metadata = nullptr) const;

private:
    std::string resolve_queue(std::string_view job_name, std::string_view requested) const;
    std::string events_json(std::string_view job_name) const;

    Connection conn_;
    std::string default_queue_;
    std::map<std::string, std::string, std::less<>> job_queues_;
    // event → handlers, global and per job name.
    std::map<std::string, std::vector<std::string>, std::less<>> global_events_;
    std::map<std::string, std::map<std::string, std::vector<std::string>, std::less<>>, std::less<>>
        job_events_;
};

}  // namespace retools
