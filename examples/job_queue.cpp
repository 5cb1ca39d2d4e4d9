// A job queue in one program: enqueue jobs, run them with a Worker in burst
// mode, read their results, and look at (and clean up) the failed ones.
// Run it against any Redis: REDIS_URL=redis://127.0.0.1:6379/0. It uses the
// queues examples_high and examples_low and deletes what it wrote at the end.
//
// In a real deployment the enqueuing service and the worker are separate
// processes (see job_library.cpp and job_client.cpp); the Redis side is the same.
//
// Exit status: 0 when every check passed, 1 otherwise.
#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <retools/errors.hpp>
#include <retools/queue.hpp>
#include <retools/worker.hpp>

using nlohmann::json;

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

        // 1. Enqueue. Job names are "<module>:<function>", what a Python retools
        //    worker would import; a C++ worker looks them up in its registry.
        //    `result_ttl` asks the worker to keep each job's outcome for 60 s.
        retools::QueueManager qm{conn, "examples_low"};  // default queue: examples_low
        qm.subscriber("job_failure", "examples.jobs:divide",
                      "examples.jobs:log_failure");  // divide jobs only
        const retools::EnqueueOptions keep_result{.metadata = {{"result_ttl", 60}}};

        std::string add_id = qm.enqueue("examples.jobs:add", {{"a", 2}, {"b", 3}}, keep_result);
        std::string urgent_id = qm.enqueue("examples.jobs:add", {{"a", 40}, {"b", 2}},
                                           {.queue_name = "examples_high", .metadata = {{"result_ttl", 60}}});
        std::string divide_id = qm.enqueue("examples.jobs:divide", {{"a", 1}, {"b", 0}}, keep_result);
        qm.enqueue("examples.jobs:not_registered", {{"x", 1}});  // no worker knows this job
        check(qm.queue_length("examples_low") == 3 && qm.queue_length("examples_high") == 1,
              "3 jobs wait on examples_low, 1 on examples_high");

        // 2. A worker for both queues, highest priority first. Burst mode:
        //    work() returns once the queues are empty. In a service you would
        //    call work({.blocking = true}) and stop it with a signal or stop().
        retools::Worker worker{{"examples_high", "examples_low"},
                               {.handle_signals = false, .log = retools::WorkerLog::none}};
        std::vector<std::string> order;  // one pool thread (concurrency 1): no lock needed
        worker.register_job("examples.jobs:add", [&](const json& kw) -> json {
            order.push_back(retools::current_job()->queue());
            return kw.at("a").get<int>() + kw.at("b").get<int>();
        });
        worker.register_job("examples.jobs:divide", [](const json& kw) -> json {
            int b = kw.at("b").get<int>();
            if (b == 0) throw std::invalid_argument("division by zero");  // throwing fails the job
            return kw.at("a").get<int>() / b;
        });
        std::atomic<int> failure_events{0};
        worker.register_failure("examples.jobs:log_failure", [&](retools::Job& job, std::exception_ptr) {
            fmt::print("  job_failure handler: {} failed\n", job.name());
            ++failure_events;
        });

        retools::WorkSummary summary = worker.work({.burst = true});
        fmt::print("worker: {} succeeded, {} failed\n", summary.succeeded, summary.failed);
        check(summary.succeeded == 2 && summary.failed == 2, "2 jobs succeeded, 2 failed");
        check(order == std::vector<std::string>{"examples_high", "examples_low"},
              "examples_high was served first");
        check(failure_events == 1, "the job_failure handler ran for the divide job");

        // 3. Results (stored because of result_ttl). wait_for_result blocks
        //    until the outcome is stored; get_result only looks.
        auto add = qm.wait_for_result(add_id, std::chrono::seconds(5));
        check(add && add->ok && add->value == 5, "result of add(2, 3) is 5");
        auto urgent = qm.get_result(urgent_id);
        check(urgent && urgent->ok && urgent->value == 42, "result of add(40, 2) is 42");
        auto divide = qm.get_result(divide_id);
        check(divide && !divide->ok && divide->error.find("division by zero") != std::string::npos,
              fmt::format("divide(1, 0) failed: {}", divide ? divide->error : "no result"));

        // 4. Failed jobs are never dropped: they wait in retools:failed with
        //    their payload, to be retried (qm.retry_failed) or removed.
        int ours = 0;
        for (const retools::FailedJob& failed : qm.failed_jobs()) {
            if (failed.worker != worker.id()) continue;  // another worker's failure: leave it
            fmt::print("  failed on {}: {}\n", failed.queue, failed.error);
            ++ours;
            qm.remove_failed(failed);
        }
        check(ours == 2, "both failures are in the failed-job list");

        // Clean up: results, and the queue names (the queue lists are empty, so already gone).
        for (const auto& id : {add_id, urgent_id, divide_id}) conn.command("DEL", "retools:result:" + id);
        conn.command("SREM", "retools:queues", "examples_high", "examples_low");
    } catch (const retools::Error& e) {
        fmt::print(stderr, "job_queue: {}\n", e.what());
        return 1;
    }
    if (failures) {
        fmt::print("job_queue: {} check(s) failed\n", failures);
        return 1;
    }
    fmt::print("job_queue: all checks passed\n");
    return 0;
}
