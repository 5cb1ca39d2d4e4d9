#pragma once
// Executors run taken jobs (threads or forked children) and report outcomes.

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <retools/connection.hpp>
#include <retools/worker.hpp>

#include "worker/outcome.hpp"
#include "worker/taken_job.hpp"

namespace retools::detail {

/// Where executors report finished jobs.
class CompletionSink {
public:
    virtual void complete(FinishedJob done) = 0;
    /// Several at once (one lock); `done` is left empty.
    virtual void complete_many(std::vector<FinishedJob>& done) = 0;
    /// Fork mode: `job` could not be started (fork or pipe failed); it was not
    /// run and goes back to the head of its queue after a pause.
    virtual void not_started(TakenJob job, std::string why) = 0;

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
    /// Fork mode: kills children past their deadline (TERM, then KILL after
    /// a grace period); returns when the next check is due.
    virtual std::chrono::steady_clock::time_point enforce_timeouts() {
        return std::chrono::steady_clock::time_point::max();
    }
    /// Waits for every running job to report (the sink must keep accepting).
    virtual void drain() = 0;
};

/// What executors need besides the registry.
struct ExecutorConfig {
    PerformLimits limits;
    /// Fork mode: kill a child that runs longer.
    std::optional<std::chrono::milliseconds> job_timeout;
};

std::unique_ptr<Executor> make_thread_executor(std::size_t threads, const JobRegistry& registry,
                                               const Connection& conn, CompletionSink& sink,
                                               const ExecutorConfig& config);
std::unique_ptr<Executor> make_fork_executor(const JobRegistry& registry, const Connection& conn,
                                             CompletionSink& sink, const ExecutorConfig& config);

}  // namespace retools::detail
