#pragma once
// QueueManager: configures and enqueues jobs with the original's Redis layout,
// plus the failed-job list, scheduled jobs and job results.

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <retools/connection.hpp>
#include <retools/job.hpp>

namespace retools {

namespace detail {
struct QueueManagerAccess;
}  // namespace detail

/// When a unique job's claim is released (EnqueueOptions::unique_until).
enum class UniqueUntil {
    start,  ///< when a worker starts the job: another one may wait while it runs
    end,    ///< when the job ends (succeeded, failed for good or aborted; not while a retry waits)
};

/// Options of one enqueue. An aggregate: use designated initializers.
struct EnqueueOptions {
    /// Queue to put the job on. Empty (the default) means the queue chosen with
    /// QueueManager::set_queue_for_job for this job name, else the manager's
    /// default queue.
    std::string queue_name;
    /// Free-form metadata stored in the payload; must be a JSON object. Null
    /// (the default) means `{}`. See Job for the keys retools reads
    /// (`retries`, `retry_backoff`, `result_ttl`). Enqueues add
    /// `enqueued_at` (float Unix seconds) when it is absent.
    nlohmann::json metadata;
    /// A unique job's claim name (with unique_for). Empty (the default) means
    /// the job name, a space and the kwargs as canonical JSON (keys sorted),
    /// so the same call is the same job.
    std::string unique_key;
    /// Makes the job unique for this long: while its claim (on its queue)
    /// holds, enqueueing a job with the same unique key returns the id of the
    /// one that has it and enqueues nothing. The claim is released as
    /// unique_until says, and expires after this long in any case, so a lost
    /// job cannot block its key forever. Default 0: not unique (a plain
    /// enqueue, byte-identical to Python retools'). See docs/workflows.md.
    std::chrono::milliseconds unique_for{0};
    /// When the worker releases the claim: UniqueUntil::start (the default)
    /// or UniqueUntil::end. Only with unique_for.
    UniqueUntil unique_until = UniqueUntil::start;
};

/// A periodic job (QueueManager::schedule_periodic), as periodic_jobs() reads it.
struct PeriodicJob {
    /// Its id, chosen by the caller of schedule_periodic.
    std::string id;
    /// The cron expression or `@every` duration.
    std::string schedule;
    /// The job enqueued at each due time.
    std::string job_name;
    /// When it is due next (UTC). A time already past means a worker will
    /// enqueue it at its next look (within a second while one runs).
    std::chrono::system_clock::time_point next_run;
    /// Its keyword arguments.
    nlohmann::json kwargs;
    /// The queue it goes to.
    std::string queue;
    /// The metadata of its jobs (without `enqueued_at`).
    nlohmann::json metadata;
};

/// One entry of the failed-job list `retools:failed`.
struct FailedJob {
    /// The job's payload, byte-exact (it may be malformed: that may be why it failed).
    std::string payload;
    /// The queue it was taken from (short name).
    std::string queue;
    /// What went wrong (exception text, signal, "unknown job ...").
    std::string error;
    /// Id of the worker that ran it.
    std::string worker;
    /// Unix time of the failure, in seconds.
    double failed_at = 0;
    /// The entry's text as read from `retools:failed` (what retry_failed and
    /// remove_failed look for); empty for an entry built in code.
    std::string entry;

    /// The entry as stored: `{"payload": ..., "queue": ..., "error": ...,
    /// "worker": ..., "failed_at": ...}`. Never throws for odd text: a payload
    /// that is not valid UTF-8 (which JSON cannot hold) is written as a
    /// readable copy (U+FFFD for the bad bytes) plus `"payload_base64"`, its
    /// exact bytes; other fields get U+FFFD.
    std::string to_json() const;
    /// Parses a stored entry (the payload from `payload_base64` when present);
    /// throws QueueError when it is not one or nests deeper than 512 levels.
    static FailedJob from_json(std::string_view text);
};

/// One job of QueueManager::enqueue_batch.
struct JobSpec {
    /// The job's name, `"<module>:<function>"`; must not be empty.
    std::string job_name;
    /// Keyword arguments: a JSON object; null (the default) means `{}`.
    nlohmann::json kwargs;
    /// Queue and metadata, as for QueueManager::enqueue.
    EnqueueOptions options;
};

/// A job waiting in `retools:delayed` (scheduled, or waiting for a retry).
struct ScheduledJob {
    /// The job, with the queue it will go to.
    Job job;
    /// When it becomes due.
    std::chrono::system_clock::time_point due;
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
    /// Throws QueueError when `value` cannot be written as JSON (NaN, invalid UTF-8).
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
/// threads; the const members are then safe to call concurrently. Enqueues
/// reuse what they serialized for a job name (queue, events); configuring
/// again later (with no call running on another thread) applies to the jobs
/// enqueued after it.
class QueueManager {
public:
    /// Uses global_connection() and the queue `main`.
    QueueManager();
    /// Throws ConfigurationError for an invalid default queue name.
    explicit QueueManager(Connection conn, std::string default_queue_name = "main");

    /// Copies the configuration (connection, default queue, set_queue_for_job
    /// choices, subscribers); the copy is then configured independently.
    /// What enqueues cached per job name is not copied: the copy rebuilds it.
    QueueManager(const QueueManager& other);
    QueueManager& operator=(const QueueManager& other);
    /// Moves leave `other` with no state: it may only be assigned to or destroyed.
    QueueManager(QueueManager&& other) noexcept;
    QueueManager& operator=(QueueManager&& other) noexcept;
    ~QueueManager();

    /// The connection every call uses.
    const Connection& connection() const noexcept;
    /// The queue jobs go to when neither enqueue() nor set_queue_for_job names one.
    const std::string& default_queue_name() const noexcept;

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
    /// valid payload (also one nesting deeper than 512 levels: never a crash).
    std::vector<Job> get_jobs(std::string_view queue_name = {}) const;
    /// Number of jobs waiting in `queue_name`.
    std::size_t queue_length(std::string_view queue_name = {}) const;
    /// Names in `retools:queues` (every queue ever enqueued to).
    std::vector<std::string> queue_names() const;
    /// The first `count` payloads waiting in `queue_name` (default queue when
    /// empty), head first, verbatim and unparsed (one LRANGE): for tools that
    /// show a queue, which must not fail on one malformed entry.
    std::vector<std::string> peek_payloads(std::string_view queue_name, std::size_t count) const;

    /// Enqueues jobs of any names, queues and options in one round trip;
    /// returns their ids in order. Each queue receives its jobs in order.
    /// Validates every job before sending anything.
    ///
    /// ```cpp
    /// std::vector<retools::JobSpec> jobs{{"myapp.jobs:a", {{"n", 1}}},
    ///                                    {"myapp.jobs:b", {}, {.queue_name = "high"}}};
    /// auto ids = qm.enqueue_batch(jobs);
    /// ```
    std::vector<std::string> enqueue_batch(std::span<const JobSpec> jobs) const;

    // ---- scheduled jobs -------------------------------------------------------

    /// Like enqueue(), but the job waits in `retools:delayed` until `when`;
    /// a worker (or promote_due_jobs) then moves it to the tail of its queue.
    /// One round trip (ZADD). Returns the id.
    ///
    /// ```cpp
    /// qm.enqueue_at(std::chrono::system_clock::now() + 1h, "myapp.jobs:remind", {{"user", 7}});
    /// ```
    std::string enqueue_at(std::chrono::system_clock::time_point when, std::string_view job_name,
                           const nlohmann::json& kwargs = nullptr, const EnqueueOptions& options = {}) const;
    /// enqueue_at(now + delay, ...).
    ///
    /// ```cpp
    /// qm.enqueue_in(30s, "myapp.jobs:cleanup");
    /// ```
    std::string enqueue_in(std::chrono::duration<double> delay, std::string_view job_name,
                           const nlohmann::json& kwargs = nullptr, const EnqueueOptions& options = {}) const;

    /// Moves up to `limit` jobs due at `now` from `retools:delayed` to the tail
    /// of their queues (and their names into `retools:queues`), earliest
    /// first, atomically (one Lua script): each job is moved exactly once
    /// however many workers call this at the same time. A malformed entry is
    /// moved to `retools:failed` rather than left or dropped. Returns the
    /// number of jobs moved. Workers call it before taking jobs.
    std::size_t promote_due_jobs(std::chrono::system_clock::time_point now = std::chrono::system_clock::now(),
                                 std::size_t limit = 1000) const;

    /// When the earliest job in `retools:delayed` is due; nullopt when none waits.
    std::optional<std::chrono::system_clock::time_point> next_due_time() const;

    /// Every job waiting in `retools:delayed`, earliest first. Entries that
    /// are not valid jobs are skipped (promote_due_jobs files them as failed).
    std::vector<ScheduledJob> scheduled_jobs() const;

    /// Removes the job `job_id` from `retools:delayed` before it is due (one
    /// Lua script, atomic with promotion). Returns false when it is not there
    /// (never scheduled, or already moved to its queue).
    bool cancel_scheduled(std::string_view job_id) const;

    /// Schedules `job` to run again after `delay`: counts the retry in
    /// `job.state()["retried"]` and adds the job, with its state, to
    /// `retools:delayed` (one round trip). The worker calls this when
    /// `job.next_retry_delay()` allows a retry. Returns the due time.
    std::chrono::system_clock::time_point retry_later(Job& job, std::chrono::duration<double> delay) const;

    // ---- periodic jobs ----------------------------------------------------------

    /// Defines (or redefines) the periodic job `id`: at each due time of
    /// `schedule`, one job `job_name` with `kwargs` goes to the queue the
    /// options name (else the one set_queue_for_job chose, else the default
    /// queue), with the options' metadata and this manager's subscribers.
    /// `schedule`: a cron expression (`"0 3 * * *"`, five fields, UTC) or a
    /// name (`"@daily"`, `"@hourly"`...) or `"@every 30s"`; see
    /// docs/workflows.md. Workers (any number, on any host) enqueue each due
    /// time exactly once; a time missed while no worker ran is run once.
    /// Calling it again with the same definition changes nothing (so every
    /// process may call it at start-up); a changed schedule takes effect at
    /// once. Returns true when the definition was added or changed. Throws
    /// ConfigurationError for an empty id, an invalid schedule (the message
    /// names the field) or unique options; QueueError for bad kwargs or metadata.
    ///
    /// ```cpp
    /// qm.schedule_periodic("nightly", "0 3 * * *", "app:report", {{"kind", "daily"}});
    /// qm.schedule_periodic("poll", "@every 30s", "app:poll", {}, {.queue_name = "high"});
    /// ```
    bool schedule_periodic(std::string_view id, std::string_view schedule, std::string_view job_name,
                           const nlohmann::json& kwargs = nullptr, const EnqueueOptions& options = {}) const;
    /// Removes the periodic job `id`; false when there was none. Jobs it
    /// already enqueued stay.
    bool remove_periodic(std::string_view id) const;
    /// Every periodic job, earliest next run first.
    std::vector<PeriodicJob> periodic_jobs() const;
    /// Enqueues the periodic jobs due at `now` (what workers do about once a
    /// second): one job per due periodic job, whatever number of callers do
    /// the same at once. Returns how many this call enqueued.
    std::size_t promote_periodic_jobs(
        std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) const;

    // ---- failed jobs ----------------------------------------------------------

    /// Entries of `retools:failed`, oldest first. Entries that are not valid
    /// failed-job JSON are returned with the raw text as `payload` and `entry`
    /// and an error saying so, never skipped.
    std::vector<FailedJob> failed_jobs() const;
    /// Number of entries in `retools:failed`.
    std::size_t failed_count() const;
    /// Puts a failed job's payload, verbatim, back at the tail of its queue and
    /// removes the entry, atomically. Returns false when the entry is no
    /// longer in the list (already retried or removed). Throws
    /// ConfigurationError when the entry's queue name is invalid.
    ///
    /// ```cpp
    /// for (const auto& failed : qm.failed_jobs())
    ///     if (failed.error.find("timeout") != std::string::npos) qm.retry_failed(failed);
    /// ```
    bool retry_failed(const FailedJob& failed) const;
    /// Retries every failed job whose entry is valid (one Lua script); returns
    /// how many were re-enqueued.
    std::size_t retry_all_failed() const;
    /// Removes one entry; false when it was not there.
    bool remove_failed(const FailedJob& failed) const;
    /// Deletes `retools:failed`; returns the number of entries it held.
    std::size_t clear_failed() const;
    /// Appends an entry to `retools:failed` (what the worker does for a job
    /// that failed for good); `failed.failed_at` 0 means now.
    void record_failure(FailedJob failed) const;

    // ---- results ----------------------------------------------------------------

    /// Stores a job's outcome under `retools:result:<job id>` for `ttl`
    /// (replacing an earlier one) and wakes every wait_for_result() caller;
    /// one MULTI/EXEC round trip. The worker calls this for jobs whose
    /// metadata has `result_ttl`.
    void store_result(std::string_view job_id, const JobResult& result, std::chrono::seconds ttl) const;
    /// The stored outcome of a job, or nullopt when none is stored (yet, or any
    /// more). Reads the documented one-element list, or a plain string.
    std::optional<JobResult> get_result(std::string_view job_id) const;
    /// Waits up to `timeout` for the job's outcome to be stored; nullopt when
    /// it was not in time. Blocks server-side (BLMOVE on the result list), so
    /// it returns within milliseconds of store_result without polling; any
    /// number of callers may wait for the same job. (A result written as a
    /// plain string by another writer is also found, within a second.) A zero
    /// timeout just looks.
    ///
    /// ```cpp
    /// auto id = qm.enqueue("myapp.jobs:add", {{"a", 1}, {"b", 2}}, {.metadata = {{"result_ttl", 60}}});
    /// if (auto r = qm.wait_for_result(id, 5s); r && r->ok) std::cout << r->value << "\n";
    /// ```
    std::optional<JobResult> wait_for_result(std::string_view job_id,
                                             std::chrono::milliseconds timeout) const;

private:
    friend struct detail::QueueManagerAccess;  // the library's test hooks (src/queue/test_hooks.hpp)
    struct Impl;  // configuration and plan cache (src/queue/queue_manager_impl.hpp)
    std::unique_ptr<Impl> impl_;
};

}  // namespace retools
