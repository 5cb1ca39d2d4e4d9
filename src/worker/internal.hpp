#pragma once
// Internals of the worker, shared by src/worker*.cpp, job_registry.cpp,
// reliable_fetch.cpp and the executors. Not installed.

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <retools/connection.hpp>
#include <retools/script.hpp>
#include <retools/worker.hpp>

namespace retools::detail {

/// One job taken by a worker, exactly as it sits in `retools:processing:<id>`:
/// `"<queue name>\n<payload>"`. The queue name rides along so a dead worker's
/// jobs can be put back where they came from; the payload stays verbatim.
struct TakenJob {
    std::string entry;
    std::size_t split = 0;  // index of the '\n'

    static TakenJob from_entry(std::string entry);
    std::string_view queue() const noexcept { return std::string_view(entry).substr(0, split); }
    std::string_view payload() const noexcept { return std::string_view(entry).substr(split + 1); }
};

enum class JobStatus : unsigned char { succeeded, failed, retry, aborted, requeue };

/// What happened to one job, and the bookkeeping it asks for.
struct JobOutcome {
    JobStatus status = JobStatus::failed;
    std::string job_id;  // empty when the payload could not be read
    std::string job_name;
    std::string error;         // failed / retry
    std::string result;        // JobResult text to store ("" = nothing to store)
    long long result_ttl = 0;  // seconds
    std::string retry_member;  // delayed-set member for a retry
    double retry_at = 0;
    double seconds = 0;  // time spent running
    int killed_by = 0;   // fork mode: the signal that ended the child, 0 if none
};

struct FinishedJob {
    TakenJob job;
    JobOutcome outcome;
};

/// Runs one job: parses the payload, looks up the job and its handlers (in
/// `own`, then the global registry), fires the events and calls it. Never
/// throws: every problem becomes a failed outcome.
JobOutcome perform_job(const TakenJob& taken, const JobRegistry& own, const Connection& conn);

/// `"<ExceptionType>: <what>"` for the exception in `error`.
std::string describe_exception(std::exception_ptr error);

// ---- reliable fetch --------------------------------------------------------------

/// The finish bookkeeping of finished jobs, encoded as script arguments; sent
/// with the next fetch so finishing costs no round trip of its own.
class FinishBatch {
public:
    /// Records a finished job (removal from the processing list, failed-list
    /// entry, retry, stored result).
    void add(FinishedJob&& done, std::string_view worker_id, double now);
    /// Puts a job that was taken but not run back at the head of its queue.
    void requeue(const TakenJob& job);
    bool empty() const noexcept { return args_.empty(); }
    void clear() noexcept { args_.clear(); }
    const std::vector<std::string>& args() const noexcept { return args_; }

private:
    std::vector<std::string> args_;
};

/// Moves jobs from the queues (in priority order) to the processing list and
/// applies finish bookkeeping, atomically, in one round trip.
class ReliableFetch {
public:
    ReliableFetch(Connection conn, std::string worker_id, const std::vector<std::string>& queues);

    /// Applies `finished`, promotes due delayed jobs, then takes up to `count`
    /// jobs into `out`. `idle`: nothing will be running after this call, so
    /// the `retools:worker:<id>` key is deleted when nothing is taken.
    void exchange(const FinishBatch& finished, std::size_t count, bool idle, std::vector<TakenJob>& out);

private:
    Connection conn_;
    std::string worker_id_;
    std::vector<std::string> keys_;
};

/// Waits, without taking anything, until one of the queues holds a job: one
/// thread and connection per queue blocked in `BLMOVE q q LEFT LEFT` (moves
/// the head onto itself: the list is unchanged, so a worker killed while
/// waiting loses nothing). Woken waits are cancelled with CLIENT UNBLOCK.
class QueueWaiter {
public:
    QueueWaiter(const Connection& conn, const std::vector<std::string>& queues,
                std::chrono::milliseconds block, std::function<void()> on_ready);
    ~QueueWaiter();
    QueueWaiter(const QueueWaiter&) = delete;
    QueueWaiter& operator=(const QueueWaiter&) = delete;

    /// Starts (or keeps) waiting; on_ready is called once a queue holds a job.
    void arm();

private:
    struct Slot;
    void run(Slot& slot);

    Connection control_;
    std::chrono::milliseconds block_;
    std::function<void()> on_ready_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::uint64_t generation_ = 0;
    bool stop_ = false;
    std::vector<std::unique_ptr<Slot>> slots_;
};

// ---- worker registry ---------------------------------------------------------------

/// This machine's host name (as Python's socket.gethostname()).
std::string hostname();
/// Puts every job of `worker_id`'s processing list back at the head of its
/// queue; with `unregister`, also removes the worker's registry keys. Atomic.
std::size_t requeue_processing(const Connection& conn, std::string_view worker_id, bool unregister);
/// Unregisters this host's workers whose process is gone (or that had this
/// process's pid but are not working in it), requeueing their jobs.
std::size_t prune_dead_workers(const Connection& conn);
/// Ids of the workers working in this process: two workers with one id
/// would share a processing list.
bool claim_worker_id(const std::string& id);
void release_worker_id(const std::string& id);
std::vector<std::string> split_queue_names(std::string_view text);

// ---- signals -----------------------------------------------------------------------

/// Delivers TERM, INT, QUIT, USR1, USR2 and CONT to `on_signal`, on a thread of
/// its own: the handlers only write the signal number to a pipe.
class SignalWatcher {
public:
    explicit SignalWatcher(std::function<void(int)> on_signal);
    ~SignalWatcher();
    SignalWatcher(const SignalWatcher&) = delete;
    SignalWatcher& operator=(const SignalWatcher&) = delete;

private:
    std::function<void(int)> on_signal_;
    int fds_[2] = {-1, -1};
    int slot_ = -1;
    std::thread thread_;
};

/// In a forked job process: TERM and CONT default, INT, QUIT, USR1 and USR2
/// ignored (they are the worker's to act on).
void reset_worker_signals() noexcept;

// ---- executors ---------------------------------------------------------------------

/// Where executors report finished jobs.
class CompletionSink {
public:
    virtual void complete(FinishedJob done) = 0;
    /// Several at once (one lock); `done` is left empty.
    virtual void complete_many(std::vector<FinishedJob>& done) = 0;

protected:
    ~CompletionSink() = default;
};

/// Runs taken jobs; reports each through the sink.
class Executor {
public:
    virtual ~Executor() = default;
    virtual void submit(TakenJob job) = 0;
    /// Several at once, oldest first; `jobs` is left moved-from.
    virtual void submit_many(std::vector<TakenJob>& jobs) {
        for (auto& job : jobs) submit(std::move(job));
    }
    /// Jobs submitted but not started (thread mode), oldest first.
    virtual std::vector<TakenJob> take_backlog() = 0;
    /// Fork mode: sends `sig` to every running child.
    virtual void signal_running(int sig) = 0;
    /// Waits for every running job to report (the sink must keep accepting).
    virtual void drain() = 0;
};

std::unique_ptr<Executor> make_thread_executor(std::size_t threads, const JobRegistry& registry,
                                               const Connection& conn, CompletionSink& sink);
std::unique_ptr<Executor> make_fork_executor(const JobRegistry& registry, const Connection& conn,
                                             CompletionSink& sink);

}  // namespace retools::detail
