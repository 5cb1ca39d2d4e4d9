// The retools-worker program with a dlopen'ed job library (tests/jobs/sample_jobs.cpp).
#include <signal.h>

#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/queue.hpp>

#include "queue/keys.hpp"
#include "redis_test.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
namespace rt = retools::test;
namespace keys = retools::detail::queue_keys;

namespace {

using rt::wait_until;

class WorkerCli : public rt::RedisTest {
protected:
    rt::ChildProcess start(std::vector<std::string> args) {
        args.insert(args.begin(),
                    {RETOOLS_WORKER_PROGRAM, "--url", rt::redis_url(), "--load", RETOOLS_SAMPLE_JOBS});
        return rt::ChildProcess::spawn(args, {}, log_file);
    }
    std::vector<std::string> list(const std::string& key) {
        std::vector<std::string> out;
        for (const auto& r : conn.command("LRANGE", key, 0, -1).as_array()) out.push_back(r.as_string());
        return out;
    }
    std::string log_file = fmt::format("{}/worker-cli-{}.log", RETOOLS_BINARY_DIR,
                                       ::testing::UnitTest::GetInstance()->random_seed());
    retools::QueueManager qm{conn};
};

}  // namespace

TEST_F(WorkerCli, RunsJobsFromALoadedLibraryAndLogsEachOne) {
    qm.subscriber("job_postrun", "sample.jobs:after");
    std::string id1 =
        qm.enqueue("sample.jobs:record", {{"out", "results"}, {"tag", "one"}}, {.queue_name = "low"});
    auto worker = start({"-b", "--interval", "5", "high,low"});
    ASSERT_TRUE(wait_until([&] { return list("results").size() == 1; })) << rt::read_file(log_file);
    // Registered while running, with the original's keys.
    auto ids = conn.command("SMEMBERS", keys::workers).as_array();
    ASSERT_EQ(ids.size(), 1u);
    std::string wid = ids[0].as_string();
    EXPECT_NE(wid.find(fmt::format(":{}:high,low", worker.pid())), std::string::npos) << wid;
    EXPECT_EQ(conn.command("GET", keys::worker_queues(wid)).as_string(), "high,low");

    std::string id2 =
        qm.enqueue("sample.jobs:record", {{"out", "results"}, {"tag", "two"}}, {.queue_name = "high"});
    qm.enqueue("sample.jobs:missing", json::object(), {.queue_name = "low"});
    ASSERT_TRUE(wait_until([&] {
        return list("results").size() == 2 && conn.command("LLEN", keys::failed).as_integer() == 1;
    })) << rt::read_file(log_file);
    EXPECT_EQ(list("results"), (std::vector<std::string>{"one", "two"}));
    EXPECT_EQ(list("sample:postrun"), (std::vector<std::string>{id1 + " \"one\"", id2 + " \"two\""}));

    worker.signal(SIGTERM);
    EXPECT_EQ(worker.exit_code(3s), 0) << rt::read_file(log_file);
    EXPECT_EQ(conn.command("SCARD", keys::workers).as_integer(), 0);
    std::string log = rt::read_file(log_file);
    EXPECT_NE(log.find(fmt::format("job {} sample.jobs:record queue=low", id1)), std::string::npos) << log;
    EXPECT_NE(log.find(fmt::format("job {} sample.jobs:record queue=high", id2)), std::string::npos) << log;
    EXPECT_NE(log.find("ms ok"), std::string::npos) << log;
    EXPECT_NE(log.find("failed: unknown job 'sample.jobs:missing'"), std::string::npos) << log;
}

TEST_F(WorkerCli, ForkModeBurstDrainsTheQueueInChildProcesses) {
    for (int i = 0; i < 3; ++i) qm.enqueue("sample.jobs:pid", {{"out", "pids"}});
    auto worker = start({"--fork", "--burst", "main"});
    EXPECT_EQ(worker.exit_code(5s), 0) << rt::read_file(log_file);
    auto pids = list("pids");
    ASSERT_EQ(pids.size(), 3u);
    for (const auto& p : pids) EXPECT_NE(p, std::to_string(worker.pid()));
    EXPECT_NE(pids[0], pids[1]);
    EXPECT_EQ(conn.command("LLEN", keys::queue("main", false)).as_integer(), 0);
}

TEST_F(WorkerCli, ThreadPoolRunsJobsConcurrently) {
    std::vector<json> args(4, json{{"ms", 300}, {"out", "done"}});
    qm.enqueue_many("sample.jobs:sleep", args);
    auto t0 = std::chrono::steady_clock::now();
    auto worker = start({"--concurrency", "4", "--burst", "--quiet", "main"});
    EXPECT_EQ(worker.exit_code(5s), 0) << rt::read_file(log_file);
    EXPECT_EQ(list("done").size(), 4u);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1100ms);
}

TEST_F(WorkerCli, RejectsBadArguments) {
    auto no_queues = rt::ChildProcess::spawn({RETOOLS_WORKER_PROGRAM}, {}, log_file);
    EXPECT_EQ(no_queues.exit_code(3s), 2);
    EXPECT_NE(rt::read_file(log_file).find("no queues"), std::string::npos);
    auto bad_lib = rt::ChildProcess::spawn(
        {RETOOLS_WORKER_PROGRAM, "--load", "/nonexistent/libjobs.so", "main"}, {}, log_file);
    EXPECT_EQ(bad_lib.exit_code(3s), 2);
    EXPECT_NE(rt::read_file(log_file).find("cannot load /nonexistent/libjobs.so"), std::string::npos);
    auto bad_queue =
        rt::ChildProcess::spawn({RETOOLS_WORKER_PROGRAM, "--url", rt::redis_url(), "a:b"}, {}, log_file);
    EXPECT_EQ(bad_queue.exit_code(3s), 2);
    auto bad_number =
        rt::ChildProcess::spawn({RETOOLS_WORKER_PROGRAM, "--concurrency", "many", "main"}, {}, log_file);
    EXPECT_EQ(bad_number.exit_code(3s), 2);
}
