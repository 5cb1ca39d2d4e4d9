// Worker: wall time to drain no-op jobs (thread mode with 1, 4 and 16
// threads, fork mode), peak RSS, and RSS after 20k vs 100k jobs. Each drain
// runs in a forked child so its memory figures are its own.

#include <string>
#include <vector>

#include <fmt/format.h>

#include <retools/worker.hpp>

#include "raw.hpp"
#include "rows.hpp"

namespace bench {
namespace {

// Fills retools:queue:main with `count` no-op payloads, 1,000 per round trip.
void fill_queue(const Env& env, std::size_t count) {
    RawConnection raw(env);
    std::vector<std::string> payloads;
    std::vector<std::string_view> argv;
    for (std::size_t done = 0; done < count;) {
        std::size_t n = std::min<std::size_t>(1000, count - done);
        payloads.resize(n);
        argv.assign({"RPUSH", "retools:queue:main"});
        for (std::size_t i = 0; i < n; ++i) {
            noop_payload(payloads[i]);
            argv.push_back(payloads[i]);
        }
        raw.append(argv);
        raw.cmd("SADD", "retools:queues", "main");
        raw.read(2);
        done += n;
    }
}

std::size_t queue_length(const Env& env) {
    return static_cast<std::size_t>(env.conn.command("LLEN", "retools:queue:main").as_integer());
}

using namespace std::chrono_literals;

retools::WorkSummary drain_queue(const Env& env, std::size_t threads, bool fork) {
    retools::Worker worker{{"main"},
                           {.connection = env.conn,
                            .mode = fork ? retools::ExecutionMode::fork : retools::ExecutionMode::threads,
                            .concurrency = threads,
                            .handle_signals = false,
                            .log = retools::WorkerLog::failures}};
    worker.register_job(std::string(kNoopJob),
                        [](const nlohmann::json&) -> nlohmann::json { return nullptr; });
    return worker.work({.interval = 100ms, .burst = true});
}

void check_drained(const Env& env, const retools::WorkSummary& summary, std::size_t expected) {
    if (summary.succeeded != expected || queue_length(env) != 0)
        throw std::runtime_error(fmt::format("worker ran {} of {} jobs ({} failed), {} left in the queue",
                                             summary.succeeded, expected, summary.failed, queue_length(env)));
}

// Fills the queue (untimed), then a forked child times the drain, so peak RSS
// is the worker's own.
RunFn drain(std::size_t threads, bool fork) {
    return [threads, fork](const Env& env, std::size_t count) {
        fill_queue(env, count);
        return in_child(
            [&] {
                retools::WorkSummary summary;
                Run run{time_it([&] { summary = drain_queue(env, threads, fork); }), {}};
                check_drained(env, summary, count);
                run.metrics.emplace_back("peak RSS MB", peak_rss_mb());
                return run;
            },
            std::chrono::seconds(900));
    };
}

// RSS after `jobs` jobs, then after `rss_jobs` jobs in all, in one worker process.
Run rss_growth(const Env& env, std::size_t total) {
    const std::size_t first = env.counts.jobs;
    return in_child(
        [&] {
            fill_queue(env, first);
            retools::WorkSummary summary;
            Run run{time_it([&] { summary = drain_queue(env, 16, false); }), {}};
            check_drained(env, summary, first);
            double after_first = rss_mb();
            fill_queue(env, total - first);
            run.seconds += time_it([&] { summary = drain_queue(env, 16, false); });
            check_drained(env, summary, total - first);
            double after_all = rss_mb();
            run.metrics = {{fmt::format("RSS MB after {}", first), after_first},
                           {fmt::format("RSS MB after {}", total), after_all},
                           {"RSS growth %", (after_all - after_first) / after_first * 100}};
            return run;
        },
        std::chrono::seconds(900));
}

}  // namespace

void add_worker_rows(const Env& env, std::vector<Row>& rows) {
    for (std::size_t threads : {1, 4, 16})
        rows.push_back({.id = fmt::format("worker_thread_{}", threads),
                        .label = fmt::format("Worker: drain no-op jobs, thread mode, {} thread{}", threads,
                                             threads > 1 ? "s" : ""),
                        .unit = "jobs/s",
                        .count = env.counts.jobs,
                        .retools = drain(threads, false)});
    rows.push_back({.id = "worker_fork",
                    .label = "Worker: drain no-op jobs, fork per job",
                    .unit = "jobs/s",
                    .count = env.counts.fork_jobs,
                    .retools = drain(1, true)});
    rows.push_back({.id = "worker_rss",
                    .label = fmt::format("Worker: {} jobs, 16 threads (RSS check)", env.counts.rss_jobs),
                    .unit = "jobs/s",
                    .count = env.counts.rss_jobs,
                    .retools = rss_growth,
                    .once = true});
}

}  // namespace bench
