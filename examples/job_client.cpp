// The enqueuing side of job_library.cpp: puts jobs on the queue examples_lib
// and waits for a worker to run them. Start a worker first (any number of
// them, on any machine that reaches the Redis), then this program:
//
//   export REDIS_URL=redis://127.0.0.1:6379/0
//   build/dev/src/tools/retools-worker -b --load build/dev/examples/libjob_library.so examples_lib &
//   build/dev/examples/job_client
//
// It deletes what it wrote at the end.
//
// Exit status: 0 when every check passed, 1 otherwise (e.g. no worker ran the
// jobs within 10 s).
#include <algorithm>
#include <chrono>
#include <string>

#include <fmt/format.h>

#include <retools/errors.hpp>
#include <retools/queue.hpp>

using namespace std::chrono_literals;

namespace {

int failures = 0;

// Prints one check and remembers failures for the exit status.
void check(bool ok, std::string_view what) {
    fmt::print("{} {}\n", ok ? "ok  " : "FAIL", what);
    if (!ok) ++failures;
}

}  // namespace

int main() {
    try {
        const retools::Connection& conn = retools::global_connection();  // reads REDIS_URL
        retools::QueueManager qm{conn, "examples_lib"};
        qm.subscriber("job_postrun", "examples.jobs:count_done");  // a handler from the library
        conn.command("DEL", "examples:jobs_done");

        // result_ttl: the worker keeps each outcome for 60 s, for wait_for_result.
        const retools::EnqueueOptions keep_result{.metadata = {{"result_ttl", 60}}};
        std::string count_id =
            qm.enqueue("examples.jobs:word_count", {{"text", "the quick brown fox"}}, keep_result);
        std::string reject_id = qm.enqueue("examples.jobs:reject", {{"reason", "demo"}}, keep_result);

        // Blocks in Redis until the worker stores the outcome (no polling); 10 s for both.
        auto deadline = std::chrono::steady_clock::now() + 10s;
        auto left = [&] {
            return std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                         std::chrono::steady_clock::now());
        };
        auto count = qm.wait_for_result(count_id, left());
        check(count && count->ok && count->value == 4,
              fmt::format("word_count(\"the quick brown fox\") -> {}",
                          count ? count->value.dump() : "no result"));
        auto rejected = qm.wait_for_result(reject_id, std::max(left(), std::chrono::milliseconds(0)));
        if (!count || !rejected) {
            fmt::print(
                "no result within 10 s: is a worker running? "
                "retools-worker --load <path>/libjob_library.so examples_lib\n");
            conn.command("DEL", "retools:queue:examples_lib");  // our jobs, not run: do not leave them behind
        }
        check(rejected && !rejected->ok && rejected->error.find("rejected: demo") != std::string::npos,
              fmt::format("reject failed with: {}", rejected ? rejected->error : "no result"));
        auto done = conn.command("GET", "examples:jobs_done");
        check(!done.is_nil() && done.as_string() == "1",
              "the job_postrun handler ran once (after word_count)");

        // The failed job also waits in retools:failed; remove ours.
        for (const retools::FailedJob& failed : qm.failed_jobs())
            if (failed.payload.find(reject_id) != std::string::npos) qm.remove_failed(failed);

        conn.command("DEL", "examples:jobs_done", "retools:result:" + count_id,
                     "retools:result:" + reject_id);
        conn.command("SREM", "retools:queues", "examples_lib");
    } catch (const retools::Error& e) {
        fmt::print(stderr, "job_client: {}\n", e.what());
        return 1;
    }
    if (failures) {
        fmt::print("job_client: {} check(s) failed\n", failures);
        return 1;
    }
    fmt::print("job_client: all checks passed\n");
    return 0;
}
