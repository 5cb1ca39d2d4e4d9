// Worker: wall time to drain no-op jobs (thread mode with 1, 4 and 16
// threads, fork mode), peak RSS, and RSS after 20k vs 100k jobs. Each drain
// runs in a forked child so its memory figures are its own.

#include <string>
#include <vector>

#include <fmt/format.h>

#include "raw.hpp"
#include "rows.hpp"

#if __has_include(<retools/worker.hpp>)
#include <retools/worker.hpp>
#define RETOOLS_BENCH_HAVE_WORKER 1
#endif

namespace bench {
namespace {

// Fills retools:queue:main with `count` no-op payloads, 1,000 per round trip.
void fill_queue(const Env& env, std::size_t count, std::uint64_t first_id = 0) {
    RawConnection raw(env);
    std::vector<std::string> payloads;
    std::vector<std::string_view> argv;
    for (std::size_t done = 0; done < count;) {
        std::size_t n = std::min<std::size_t>(1000, count - done);
        payloads.resize(n);
        argv.assign({"RPUSH", "retools:queue:main"});
        for (std::size_t i = 0; i < n; ++i) {
            noop_payload(payloads[i], first_id + done + i);
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

#ifdef RETOOLS_BENCH_HAVE_WORKER
#else
RunFn drain(std::size_t, bool) { return {}; }
#define RETOOLS_BENCH_NO_RSS 1
#endif

}  // namespace

void add_worker_rows(const Env& env, std::vector<Row>& rows) {
    for (std::size_t threads : {1, 4, 16})
        rows.push_back({.id = fmt::format("worker_thread_{}", threads),
                        .label = fmt::format("Worker: drain no-op jobs, thread mode, {} thread{}", threads,
                                             threads > 1 ? "s" : ""),
                        .unit = "jobs/s", .count = env.counts.jobs, .retools = drain(threads, false)});
    rows.push_back({.id = "worker_fork", .label = "Worker: drain no-op jobs, fork per job", .unit = "jobs/s",
                    .count = env.counts.fork_jobs, .retools = drain(1, true)});
#ifndef RETOOLS_BENCH_NO_RSS
    rows.push_back({.id = "worker_rss", .label = fmt::format("Worker: {} jobs, 16 threads (RSS check)",
                                                             env.counts.rss_jobs),
                    .unit = "jobs/s", .count = env.counts.rss_jobs, .retools = rss_growth, .once = true});
#else
    rows.push_back({.id = "worker_rss", .label = fmt::format("Worker: {} jobs, 16 threads (RSS check)",
                                                             env.counts.rss_jobs),
                    .unit = "jobs/s", .count = env.counts.rss_jobs, .once = true});
#endif
    (void)fill_queue;
    (void)queue_length;
}

}  // namespace bench
