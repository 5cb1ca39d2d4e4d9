#pragma once
// Worker: takes jobs from queues in priority order and runs them, with the
// original's events, signals and registry keys, reliably (a job is never lost).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <retools/connection.hpp>
#include <retools/errors.hpp>
#include <retools/queue.hpp>

namespace retools {

/// A job: called with the job's kwargs, returns a JSON result (stored only
/// when the job asked for it, see the Queue guide). Throw to fail the job.
using JobFunction = std::function<nlohmann::json(const nlohmann::json& kwargs)>;
/// `job_prerun(job)`: before the job. Throwing AbortJob skips the job quietly
/// (no failure events, not a failure).
using PrerunHandler = std::function<void(Job& job)>;
/// `job_postrun(job, result)`: after the job succeeded.
using PostrunHandler = std::function<void(Job& job, const nlohmann::json& result)>;
/// `job_failure(job, error)`: after the job (or a prerun/wrapper/postrun handler) threw.
using FailureHandler = std::function<void(Job& job, std::exception_ptr error)>;
/// What a wrapper calls to run the rest of the chain (inner wrappers, then the job).
using WrapperNext = std::function<nlohmann::json()>;
/// `job_wrapper(job, next)`: around the job, like the original's context
/// managers; wrappers nest in the order they are listed (the first is outermost).
using WrapperHandler = std::function<nlohmann::json(Job& job, const WrapperNext& next)>;

/// Jobs and event handlers by name (`"<module>:<function>"`, the names that
/// travel inside payloads). Every Worker looks names up in its own registry
/// first, then in JobRegistry::global(), which the RETOOLS_REGISTER_* macros
/// fill at load time (also from a `dlopen`ed job library). Thread-safe.
///
/// ```cpp
/// retools::JobRegistry::global().register_job("myapp.jobs:add",
///     [](const nlohmann::json& kw) -> nlohmann::json { return kw["a"].get<int>() + kw["b"].get<int>(); });
/// ```
class JobRegistry {
public:
    /// An empty registry (each Worker has one; shared code uses global()).
    JobRegistry();
    ~JobRegistry();
    JobRegistry(const JobRegistry&) = delete;
    JobRegistry& operator=(const JobRegistry&) = delete;

    /// The process-wide registry.
    static JobRegistry& global();

    /// Registers (or replaces) a job. An empty name or function throws ConfigurationError.
    void register_job(std::string name, JobFunction fn);
    /// Registers (or replaces) an event handler under `name` for one event
    /// (`job_prerun`, `job_postrun`, `job_failure`, `job_wrapper`); one name
    /// may have a handler for each event.
    void register_prerun(std::string name, PrerunHandler fn);
    void register_postrun(std::string name, PostrunHandler fn);
    void register_failure(std::string name, FailureHandler fn);
    void register_wrapper(std::string name, WrapperHandler fn);

    /// The registered function, or nullptr. The pointer stays valid until the
    /// name is registered again.
    std::shared_ptr<const JobFunction> find_job(std::string_view name) const;
    std::shared_ptr<const PrerunHandler> find_prerun(std::string_view name) const;
    std::shared_ptr<const PostrunHandler> find_postrun(std::string_view name) const;
    std::shared_ptr<const FailureHandler> find_failure(std::string_view name) const;
    std::shared_ptr<const WrapperHandler> find_wrapper(std::string_view name) const;

    /// Names of the registered jobs, sorted.
    std::vector<std::string> job_names() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// How a Worker runs jobs.
enum class ExecutionMode {
    /// In-process pool of `concurrency` threads: no fork per job, shared
    /// caches and connections, the fastest; a job that crashes the process
    /// takes the worker (and its other running jobs) down with it — they are
    /// requeued at the next start-up, never lost.
    threads,
    /// The original's isolation: every job runs in a forked child process
    /// (`concurrency` children at once). A crash, leak or `abort()` in a job
    /// only fails that job; costs a fork per job.
    fork,
};

/// How much a Worker logs (through the log handler, <retools/log.hpp>; stderr by default).
enum class WorkerLog {
    none,      ///< nothing
    failures,  ///< failed jobs and Redis errors (default)
    jobs,      ///< also one line per job: id, name, queue, duration, outcome
};

/// Worker settings. An aggregate: use designated initializers.
///
/// ```cpp
/// retools::Worker worker{{"high", "main"}, {.concurrency = 8}};
/// ```
/// How much of `retools:failed` is kept (WorkerOptions::failed_retention).
/// Every worker trims it at start-up and every heartbeat interval: the
/// newest `max_entries` entries stay, and entries older than `max_age` (by
/// their `failed_at`) go. What is removed is counted in
/// `retools:stat:failed_trimmed`.
struct FailedRetention {
    /// Most entries kept. Default 10,000 (as Sidekiq's dead set); 0: no limit.
    std::size_t max_entries = 10000;
    /// Entries older than this go. Default 180 days; 0: no limit.
    std::chrono::seconds max_age = std::chrono::days{180};
};

struct WorkerOptions {
    /// Connection to use; nullopt (default) means global_connection(). The
    /// worker opens one extra connection per queue for blocking waits.
    std::optional<Connection> connection;
    /// ExecutionMode::threads (default) or ExecutionMode::fork.
    ExecutionMode mode = ExecutionMode::threads;
    /// Jobs run at once: threads in the pool, or children in fork mode.
    /// Default 1; 0 is a ConfigurationError.
    std::size_t concurrency = 1;
    /// Thread mode: jobs taken ahead of idle threads, in one round trip, so
    /// short jobs do not pay a round trip each. The worker keeps roughly this
    /// much queued work at hand, measured with the average job duration, so
    /// slow jobs are never hoarded. Default 10 ms; 0 takes jobs only for idle
    /// threads; negative is a ConfigurationError. Fork mode never takes ahead.
    std::chrono::milliseconds prefetch_window{10};
    /// Most jobs taken ahead of idle threads at once. Default 256; 0 means no limit but the window.
    std::size_t max_prefetch = 256;
    /// Install handlers for TERM, INT, QUIT, USR1, USR2 and CONT while work()
    /// runs (previous handlers are restored afterwards). Default true; false
    /// leaves signals alone (use stop(), pause(), resume()).
    bool handle_signals = true;
    /// What to log (warnings for failures, info for each job); default WorkerLog::failures.
    WorkerLog log = WorkerLog::failures;
    /// How often a working worker refreshes its heartbeat
    /// (`retools:heartbeat:<id>`) and looks for dead workers whose jobs to
    /// recover. Default 5 s; must be positive and shorter than heartbeat_timeout
    /// (else ConfigurationError).
    std::chrono::milliseconds heartbeat_interval{5000};
    /// The heartbeat's TTL: a worker silent this long is dead, and any worker
    /// (on any host) puts the jobs it held back at the head of their queues.
    /// A job held by a worker that died runs again within
    /// heartbeat_timeout + heartbeat_interval. Default 30 s.
    std::chrono::milliseconds heartbeat_timeout{30000};
    /// Poison quarantine: a job whose worker died this many times while
    /// running it goes to `retools:failed` ("worker died N times while running
    /// this job") instead of back to its queue. Default 3; 0 never quarantines.
    std::size_t max_recoveries = 3;
    /// The bound of the failed list, trimmed by every worker (see
    /// FailedRetention). Default: 10,000 entries, 180 days.
    FailedRetention failed_retention{};
    /// Payloads larger than this are not parsed: the job fails (kept
    /// byte-exact in `retools:failed`). Default 16 MiB; 0 means no limit.
    std::size_t max_payload_bytes = std::size_t{16} << 20;
    /// Longest a job may run. Fork mode: the child is sent SIGTERM, then
    /// SIGKILL 5 s later (or after the timeout, if shorter), and the job fails
    /// (or is retried) with "job timed out after N s". Thread mode: threads
    /// cannot be killed, so a job that returns late is failed the same way
    /// and logged. Default: none.
    std::optional<std::chrono::milliseconds> job_timeout;
    /// Periodic jobs (QueueManager::schedule_periodic): the worker enqueues
    /// those that are due, waking at the earliest next run and looking at
    /// least this often (for definitions added meanwhile). Any number of
    /// workers may do so: each due time is enqueued once. Default 1 s; 0 means
    /// this worker never enqueues periodic jobs.
    std::chrono::milliseconds periodic_poll{1000};
};

/// Arguments of Worker::work(). An aggregate: use designated initializers.
struct WorkOptions {
    /// Polling mode: sleep between rounds when every queue is empty. Blocking
    /// mode: longest single server-side wait (an enqueue still wakes the
    /// worker at once). Also how often jobs due in the delayed set are moved
    /// to their queues. Default 5 s; 0 means 1 ms.
    std::chrono::milliseconds interval{5000};
    /// Wait for jobs server-side instead of polling: an enqueue wakes the
    /// worker within milliseconds, priority order still honoured. Default false.
    bool blocking = false;
    /// Return as soon as every queue is empty and no job is running. Default false.
    bool burst = false;
    /// Return after taking this many jobs (and finishing them). Default 0: no limit.
    std::size_t max_jobs = 0;
};

/// What a call to Worker::work() did.
struct WorkSummary {
    std::size_t succeeded = 0;  ///< jobs that returned
    std::size_t failed = 0;     ///< jobs that went to the failed list (or were scheduled for a retry)
    std::size_t aborted = 0;    ///< jobs skipped by AbortJob
    std::size_t requeued = 0;   ///< jobs put back at the head of their queue by a stop
    std::size_t total() const noexcept { return succeeded + failed + aborted; }
};

/// Runs jobs from queues given in priority order.
///
/// Reliable fetch: a job is moved atomically from its queue to this worker's
/// list `retools:processing:<id>` and removed from it only once finished, so
/// a worker killed at any instant loses nothing. A working worker refreshes
/// its heartbeat (`retools:heartbeat:<id>`) every heartbeat_interval; once a
/// worker's heartbeat has expired, any worker on any host puts the jobs it
/// held back at the head of their queues: a job held by a worker that died
/// runs again within heartbeat_timeout + heartbeat_interval (see
/// docs/worker-fleet.md). A job that throws, crashes its forked child, names
/// an unknown job or handler, or whose payload is not valid JSON (or nests
/// deeper than 512 levels, or exceeds max_payload_bytes) lands in
/// `retools:failed` with its payload byte-exact; the worker logs it and
/// carries on. A job whose worker died max_recoveries times while running it
/// lands there too.
///
/// ```cpp
/// retools::Worker worker{{"high", "main"}};
/// worker.register_job("myapp.jobs:important",
///     [](const nlohmann::json& kwargs) -> nlohmann::json { return kwargs["somearg"]; });
/// worker.register_failure("myapp.jobs:save_error",
///     [](retools::Job& job, std::exception_ptr) { log_failure(job.id()); });
/// worker.work({.interval = 5s, .blocking = true});   // until SIGTERM/SIGQUIT or stop()
/// ```
///
/// Signals while work() runs (as the original): TERM/INT stop now (forked
/// children are killed and their jobs requeued), QUIT finishes the running
/// jobs then stops, USR1 kills the running children (their jobs fail), USR2
/// pauses taking jobs, CONT resumes.
class Worker {
public:
    /// `queues` in priority order (names without `retools:queue:`). An empty
    /// list, an empty name or one containing `:`, `,` or a newline throws
    /// ConfigurationError.
    explicit Worker(std::vector<std::string> queues, WorkerOptions options = {});
    /// Must not run while work() does (stop() it and let work() return first).
    ~Worker();
    /// Movable while not working; a moved-from Worker may only be destroyed or assigned to.
    Worker(Worker&&) noexcept;
    Worker& operator=(Worker&&) noexcept;

    /// `<hostname>:<pid>:<queues joined by ",">`, as the original. While
    /// work() runs it is the id in use: `<hostname>~<token>:<pid>:<queues>`
    /// when another live process (a container with the same host name and
    /// pid) already works under the usual one.
    const std::string& id() const noexcept;
    /// The queue names, in priority order.
    const std::vector<std::string>& queues() const noexcept;
    /// The queue names joined by `,`.
    std::string queue_names() const;
    /// The connection jobs are taken with (WorkerOptions::connection or global_connection()).
    const Connection& connection() const noexcept;

    /// This worker's registry (looked up before JobRegistry::global()).
    JobRegistry& registry() noexcept;
    /// Shortcuts for registry().register_*.
    void register_job(std::string name, JobFunction fn);
    void register_prerun(std::string name, PrerunHandler fn);
    void register_postrun(std::string name, PostrunHandler fn);
    void register_failure(std::string name, FailureHandler fn);
    void register_wrapper(std::string name, WrapperHandler fn);

    /// Claims its id's heartbeat, recovers the jobs of dead workers (on any
    /// host, by liveness) and registers, then takes and runs jobs until
    /// stopped (signal, stop(), burst or max_jobs), beating and recovering as
    /// it goes, and unregisters. Redis errors while working are logged and
    /// retried; at start-up they throw (ConnectionError...). Throws
    /// ConfigurationError if a worker with the same id is already working in
    /// this process. Not to be called from two threads at once.
    WorkSummary work(WorkOptions options = {});

    /// Asks work() to stop, from any thread (also just before it starts): `graceful` finishes
    /// running jobs (QUIT), otherwise forked children are killed and their
    /// jobs requeued (TERM). Jobs taken ahead and not started are requeued at
    /// the head of their queue either way.
    void stop(bool graceful = true);
    /// Stops taking jobs until resume() (USR2 / CONT).
    void pause();
    void resume();

    /// Registers this worker's keys (SADD retools:workers, `:started`,
    /// `:queues`, `:threads`) and writes its heartbeat.
    void register_worker() const;
    /// Removes a worker's keys and heartbeat (this one's when `worker_id` is empty).
    void unregister_worker(std::string_view worker_id = {}) const;
    /// Unregisters every worker of this host whose process is gone and that
    /// has no live heartbeat (the original's rule, guarded for containers),
    /// putting the jobs it held back at the head of their queues; returns how
    /// many jobs were requeued. Other hosts' entries are left alone.
    std::size_t prune_dead_workers() const;

    /// Ids in `retools:workers`.
    static std::vector<std::string> get_worker_ids(const Connection& conn = global_connection());
    /// A Worker (not working) for each registered worker, with its queues.
    static std::vector<Worker> get_workers(const Connection& conn = global_connection());
    /// The registered worker `worker_id`, with the queues it registered;
    /// QueueError if it is not registered.
    static Worker from_id(std::string_view worker_id, const Connection& conn = global_connection());
    /// Puts back the jobs of workers that are dead, by liveness: every
    /// `retools:processing:<id>` list whose heartbeat has expired (on any
    /// host), or names a gone process of this machine; never because a
    /// worker is missing from `retools:workers`. Jobs return to the head of
    /// their queue in their original order (poison jobs, held by
    /// WorkerOptions{}.max_recoveries dead workers, go to `retools:failed`).
    /// Returns how many jobs were requeued.
    static std::size_t requeue_orphans(const Connection& conn = global_connection());

private:
    struct State;
    std::unique_ptr<State> state_;
};

/// The job the calling thread is running inside a Worker (nullptr outside a
/// job), like the original's `current_job` global.
Job* current_job() noexcept;

namespace detail {
/// Runs a registration at static-initialization time (RETOOLS_REGISTER_*).
struct Registrar {
    template <class F>
    Registrar(F&& f) {
        std::forward<F>(f)();
    }
};
}  // namespace detail

}  // namespace retools

#define RETOOLS_DETAIL_CAT2(a, b) a##b
#define RETOOLS_DETAIL_CAT(a, b) RETOOLS_DETAIL_CAT2(a, b)
#define RETOOLS_DETAIL_REGISTER(method, name, ...)                                                    \
    [[maybe_unused]] static const ::retools::detail::Registrar RETOOLS_DETAIL_CAT(retools_registrar_, \
                                                                                  __COUNTER__) {      \
        [] { ::retools::JobRegistry::global().method(name, __VA_ARGS__); }                            \
    }

/// Registers a job in JobRegistry::global() when the program or shared library
/// is loaded, at namespace scope:
///
/// ```cpp
/// RETOOLS_REGISTER_JOB("myapp.jobs:resize", [](const nlohmann::json& kw) -> nlohmann::json {
///     return resize(kw.at("path").get<std::string>());
/// });
/// ```
#define RETOOLS_REGISTER_JOB(name, ...) RETOOLS_DETAIL_REGISTER(register_job, name, __VA_ARGS__)
/// Same for event handlers (`job_prerun`, `job_postrun`, `job_failure`, `job_wrapper`).
#define RETOOLS_REGISTER_PRERUN(name, ...) RETOOLS_DETAIL_REGISTER(register_prerun, name, __VA_ARGS__)
#define RETOOLS_REGISTER_POSTRUN(name, ...) RETOOLS_DETAIL_REGISTER(register_postrun, name, __VA_ARGS__)
#define RETOOLS_REGISTER_FAILURE(name, ...) RETOOLS_DETAIL_REGISTER(register_failure, name, __VA_ARGS__)
#define RETOOLS_REGISTER_WRAPPER(name, ...) RETOOLS_DETAIL_REGISTER(register_wrapper, name, __VA_ARGS__)
