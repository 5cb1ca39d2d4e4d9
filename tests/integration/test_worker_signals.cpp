// Real signals to real worker processes (forked from the test).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/queue.hpp>
#include <retools/worker.hpp>

#include "queue/keys.hpp"
#include "redis_test.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using retools::QueueManager;
using retools::Worker;
namespace rt = retools::test;
namespace keys = retools::detail::queue_keys;

namespace {

using rt::wait_until;

// A worker process on queue "main" running "sig.jobs:slow": RPUSH started <tag>,
// sleep kwargs["ms"], RPUSH done <tag>.
rt::ChildProcess start_worker(retools::ExecutionMode mode, bool blocking = true, bool own_group = false) {
    return rt::ChildProcess::fork([=] {
        if (own_group) ::setpgid(0, 0);  // like a worker started from a shell
        retools::global_connection() = retools::Connection{rt::redis_url()};
        Worker w{
            {"main"},
            {.mode = mode, .prefetch_window = std::chrono::milliseconds(0), .log = retools::WorkerLog::none}};
        w.register_job("sig.jobs:slow", [](const json& kw) -> json {
            auto c = retools::global_connection();
            c.command("RPUSH", "started", kw.at("tag").get<std::string>());
            std::this_thread::sleep_for(std::chrono::milliseconds(kw.at("ms").get<int>()));
            c.command("RPUSH", "done", kw.at("tag").get<std::string>());
            return nullptr;
        });
        w.work({.interval = 5s, .blocking = blocking});
        return 0;
    });
}

class WorkerSignals : public rt::RedisTest {
protected:
    long long len(std::string_view key) { return conn.command("LLEN", key).as_integer(); }
    bool registered() { return conn.command("SCARD", keys::workers).as_integer() == 1; }
    void expect_clean_shutdown(rt::ChildProcess& worker) {
        EXPECT_EQ(worker.exit_code(3s), 0);
        EXPECT_EQ(conn.command("SCARD", keys::workers).as_integer(), 0);
        std::string id = fmt::format("{}:{}:main", host(), worker.pid());
        EXPECT_EQ(conn.command("EXISTS", keys::worker(id), keys::worker_started(id), keys::worker_queues(id),
                               keys::processing(id, "", false))
                      .as_integer(),
                  0);
    }
    static std::string host() {
        char buf[256] = {};
        ::gethostname(buf, sizeof buf - 1);
        return buf;
    }
    QueueManager qm{conn};
};

}  // namespace

TEST_F(WorkerSignals, QuitFinishesTheRunningJobThenStops) {
    qm.enqueue("sig.jobs:slow", {{"tag", "a"}, {"ms", 300}});
    qm.enqueue("sig.jobs:slow", {{"tag", "b"}, {"ms", 300}});
    auto worker = start_worker(retools::ExecutionMode::threads);
    ASSERT_TRUE(wait_until([&] { return len("started") == 1; }));
    worker.signal(SIGQUIT);
    expect_clean_shutdown(worker);
    EXPECT_EQ(len("done"), 1);                      // "a" finished
    EXPECT_EQ(len("started"), 1);                   // "b" never started
    EXPECT_EQ(len(keys::queue("main", false)), 1);  // and is still queued
}

TEST_F(WorkerSignals, TermKillsTheForkedChildAndRequeuesItsJob) {
    std::string id = qm.enqueue("sig.jobs:slow", {{"tag", "long"}, {"ms", 10000}});
    qm.enqueue("sig.jobs:slow", {{"tag", "next"}, {"ms", 1}});
    auto worker = start_worker(retools::ExecutionMode::fork);
    ASSERT_TRUE(wait_until([&] { return len("started") == 1; }));
    auto t0 = std::chrono::steady_clock::now();
    worker.signal(SIGTERM);
    expect_clean_shutdown(worker);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
    EXPECT_EQ(len("done"), 0);
    EXPECT_EQ(len(keys::failed), 0);
    // Interrupted, not failed: back at the head of its queue.
    auto q = conn.command("LRANGE", keys::queue("main", false), 0, -1).as_array();
    ASSERT_EQ(q.size(), 2u);
    EXPECT_NE(q[0].as_string().find(id), std::string::npos);
}

TEST_F(WorkerSignals, IntStopsAnIdleBlockedWorkerAtOnce) {
    auto worker = start_worker(retools::ExecutionMode::threads);
    ASSERT_TRUE(wait_until([&] { return registered(); }));
    std::this_thread::sleep_for(100ms);  // blocked in the server for up to 5 s
    auto t0 = std::chrono::steady_clock::now();
    worker.signal(SIGINT);
    expect_clean_shutdown(worker);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

TEST_F(WorkerSignals, Usr1KillsTheChildAndTheWorkerCarriesOn) {
    std::string id = qm.enqueue("sig.jobs:slow", {{"tag", "victim"}, {"ms", 10000}});
    auto worker = start_worker(retools::ExecutionMode::fork);
    ASSERT_TRUE(wait_until([&] { return len("started") == 1; }));
    worker.signal(SIGUSR1);
    ASSERT_TRUE(wait_until([&] { return len(keys::failed) == 1; }));
    auto failed = retools::FailedJob::from_json(conn.command("LINDEX", keys::failed, 0).as_string());
    EXPECT_NE(failed.payload.find(id), std::string::npos);
    EXPECT_NE(failed.error.find("signal 15"), std::string::npos) << failed.error;
    // Still working.
    qm.enqueue("sig.jobs:slow", {{"tag", "after"}, {"ms", 1}});
    EXPECT_TRUE(wait_until([&] { return len("done") == 1; }));
    worker.signal(SIGQUIT);
    expect_clean_shutdown(worker);
}

TEST_F(WorkerSignals, Usr2PausesAndContResumes) {
    auto worker = start_worker(retools::ExecutionMode::threads);
    ASSERT_TRUE(wait_until([&] { return registered(); }));
    worker.signal(SIGUSR2);
    std::this_thread::sleep_for(100ms);
    qm.enqueue("sig.jobs:slow", {{"tag", "waits"}, {"ms", 1}});
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(len("started"), 0);  // paused: not taken
    EXPECT_EQ(len(keys::queue("main", false)), 1);
    worker.signal(SIGCONT);
    EXPECT_TRUE(wait_until([&] { return len("done") == 1; }, 1s));
    worker.signal(SIGTERM);
    expect_clean_shutdown(worker);
}

TEST_F(WorkerSignals, SigkillingOneOfSeveralWorkersLosesNoJob) {
    constexpr int jobs = 1500;
    std::vector<json> args;
    for (int i = 0; i < jobs; ++i) args.push_back({{"n", i}});
    qm.enqueue_many("sig.jobs:count", args);
    auto start = [] {
        return rt::ChildProcess::fork([] {
            retools::global_connection() = retools::Connection{rt::redis_url()};
            Worker w{{"main"}, {.concurrency = 2, .log = retools::WorkerLog::none}};
            w.register_job("sig.jobs:count", [](const json& kw) -> json {
                retools::global_connection().command("HINCRBY", "runs", kw.at("n").get<int>(), 1);
                std::this_thread::sleep_for(std::chrono::microseconds(500));
                return nullptr;
            });
            w.work({.burst = true});
            return 0;
        });
    };
    auto a = start();
    auto b = start();
    ASSERT_TRUE(wait_until([&] { return conn.command("HLEN", "runs").as_integer() > 200; }));
    a.signal(SIGKILL);
    EXPECT_EQ(a.exit_code(), -SIGKILL);
    EXPECT_EQ(b.exit_code(10s), 0);
    auto c = start();  // its start-up requeues what the killed worker held
    EXPECT_EQ(c.exit_code(10s), 0);
    EXPECT_EQ(conn.command("HLEN", "runs").as_integer(), jobs);
    long long total = 0;
    for (const auto& v : conn.command("HVALS", "runs").as_array()) total += std::stoll(v.as_string());
    // At least once: only jobs the killed worker held can have run twice.
    EXPECT_GE(total, jobs);
    EXPECT_LT(total, jobs + 300);
    EXPECT_EQ(len(keys::queue("main", false)), 0);
    EXPECT_EQ(conn.command("SCARD", keys::workers).as_integer(), 0);
}

TEST_F(WorkerSignals, CtrlCToTheWholeProcessGroupRequeuesForkedJobs) {
    std::string id = qm.enqueue("sig.jobs:slow", {{"tag", "long"}, {"ms", 10000}});
    auto worker = start_worker(retools::ExecutionMode::fork, true, true);
    ASSERT_TRUE(wait_until([&] { return len("started") == 1; }));
    ASSERT_TRUE(wait_until([&] { return ::getpgid(worker.pid()) == worker.pid(); }));
    ::kill(-worker.pid(), SIGINT);  // what a terminal's Ctrl-C does: the worker and its job process
    expect_clean_shutdown(worker);
    EXPECT_EQ(len(keys::failed), 0);
    auto q = conn.command("LRANGE", keys::queue("main", false), 0, -1).as_array();
    ASSERT_EQ(q.size(), 1u);
    EXPECT_NE(q[0].as_string().find(id), std::string::npos);
}
