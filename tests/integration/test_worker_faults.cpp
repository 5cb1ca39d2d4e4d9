// Worker against keys of the wrong type: the worker reports and retries, and
// no job is lost once the key is fixed.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/queue.hpp>
#include <retools/worker.hpp>

#include "expect.hpp"
#include "queue/keys.hpp"
#include "redis_server.hpp"
#include "redis_test.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using retools::QueueManager;
using retools::Worker;
using retools::WorkerOptions;
namespace rt = retools::test;
namespace keys = retools::detail::queue_keys;

namespace {

class WorkerFaultsTest : public rt::RedisTest {
protected:
    WorkerOptions quiet() {
        WorkerOptions o;
        o.connection = conn;
        o.handle_signals = false;
        o.log = retools::WorkerLog::none;
        return o;
    }
    long long llen(std::string_view key) { return conn.command("LLEN", key).as_integer(); }
};

}  // namespace

TEST_F(WorkerFaultsTest, RejectsANegativePrefetchWindowNamingIt) {
    WorkerOptions o = quiet();
    o.prefetch_window = -1ms;
    EXPECT_THROW_MSG((Worker{{"main"}, o}), retools::ConfigurationError, "prefetch_window");
}

TEST_F(WorkerFaultsTest, FailedJobIsKeptWhileTheFailedListIsNotAList) {
    conn.command("SET", keys::failed, "not a list");
    QueueManager{conn}.enqueue("tests.jobs:boom", {{"n", 1}});
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:boom", [](const json&) -> json { throw std::runtime_error("boom"); });
    std::thread t([&] { w.work({.interval = 50ms}); });
    ASSERT_TRUE(rt::wait_until([&] { return llen(keys::queue("main", false)) == 0; }));
    std::this_thread::sleep_for(300ms);  // the worker tries to file the failure meanwhile
    EXPECT_EQ(llen(keys::processing(w.id(), "", false)), 1)
        << "the failed job left the processing list unfiled";
    conn.command("DEL", keys::failed);  // an operator fixes the key
    EXPECT_TRUE(rt::wait_until([&] { return llen(keys::failed) == 1; }));
    w.stop();
    t.join();
    auto failed = QueueManager{conn}.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_NE(failed[0].error.find("boom"), std::string::npos);
}

TEST_F(WorkerFaultsTest, AQueueKeyThatIsNotAListStrandsNoJobAndTheWorkerResumesOnceFixed) {
    conn.command("HSET", keys::queue("low", false), "f", "v");
    QueueManager{conn}.enqueue("tests.jobs:record", {{"tag", "x"}});
    Worker w{{"main", "low"}, quiet()};
    w.register_job("tests.jobs:record", [this](const json& kw) -> json {
        conn.command("RPUSH", "out", kw.at("tag").get<std::string>());
        return nullptr;
    });
    std::thread t([&] { w.work({.interval = 50ms}); });
    std::this_thread::sleep_for(300ms);
    // Either it ran, or it is still waiting in its queue: not parked unseen in the processing list.
    EXPECT_EQ(llen(keys::processing(w.id(), "", false)), 0);
    EXPECT_EQ(llen("out") + llen(keys::queue("main", false)), 1);
    conn.command("DEL", keys::queue("low", false));  // an operator fixes the key
    EXPECT_TRUE(rt::wait_until([&] { return llen("out") == 1; }));
    w.stop();
    t.join();
}

TEST_F(WorkerFaultsTest, DueJobForAQueueKeyThatIsNotAListIsFiledIntact) {
    QueueManager qm{conn};
    conn.command("HSET", keys::queue("other", false), "f", "v");
    qm.enqueue_at(std::chrono::system_clock::now() - 1s, "tests.jobs:x", {{"a", 1}}, {.queue_name = "other"});
    std::string payload = qm.scheduled_jobs().at(0).job.payload();
    Worker w{{"main"}, quiet()};  // its fetch promotes due jobs of every queue
    w.work({.burst = true});
    auto failed = qm.failed_jobs();
    bool still_scheduled = qm.scheduled_jobs().size() == 1;
    bool filed = failed.size() == 1 && failed[0].payload == payload && failed[0].queue == "other";
    EXPECT_TRUE(still_scheduled || filed) << "the due job was lost";
}

TEST_F(WorkerFaultsTest, OrphanedJobsWhoseQueueKeyIsNotAListAreFiledIntact) {
    const std::string orphan = keys::processing("gone-host:1:main", "", false);  // no such registered worker
    conn.command("HSET", keys::queue("bad", false), "f", "v");
    conn.command("RPUSH", orphan, "no newline: unreadable", "bad\n{\"job\": \"x\"}",
                 "main\n{\"job\": \"y\"}");
    try {
        (void)Worker::requeue_orphans(conn);
    } catch (const retools::Error&) {
        // an error is fine as long as every job is kept
    }
    EXPECT_EQ(llen(keys::queue("main", false)), 1);
    auto failed = QueueManager{conn}.failed_jobs();
    bool filed = failed.size() == 2 && failed[0].payload == "{\"job\": \"x\"}" && failed[0].queue == "bad";
    bool kept = llen(orphan) >= 1;
    EXPECT_TRUE(filed || kept) << "the job for queue 'bad' was lost";
    if (filed) {
        EXPECT_EQ(failed[1].payload, "no newline: unreadable");  // the garbage entry too, verbatim
        EXPECT_NE(failed[1].error.find("unreadable"), std::string::npos);
        EXPECT_NE(failed[0].error.find(keys::queue("bad", false)), std::string::npos) << failed[0].error;
    }
}

namespace {

std::chrono::microseconds cpu_time() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return std::chrono::seconds(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           std::chrono::microseconds(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

}  // namespace

// A worker facing a dead server (with a finished job to report) backs off
// instead of spinning, and still stops when asked.
TEST(WorkerDeadServer, BacksOffWithoutSpinning) {
    for (bool blocking : {false, true}) {
        SCOPED_TRACE(blocking ? "blocking" : "polling");
        rt::RedisServer server;
        auto options = server.options();
        options.connect_timeout = 100ms;
        options.command_timeout = 300ms;
        retools::Connection c{options};
        Worker w{{"main"}, {.connection = c, .handle_signals = false, .log = retools::WorkerLog::none}};
        std::atomic<bool> release{false};
        w.register_job("tests.jobs:wait", [&](const json&) -> json {
            while (!release) std::this_thread::sleep_for(5ms);
            return nullptr;
        });
        QueueManager{c}.enqueue("tests.jobs:wait");
        std::thread t([&] { w.work({.interval = 20ms, .blocking = blocking}); });
        ASSERT_TRUE(rt::wait_until(
            [&] { return c.command("LLEN", keys::processing(w.id(), "", false)).as_integer() == 1; }));
        server.kill();
        release = true;  // the job finishes while Redis is gone: its bookkeeping must wait
        auto before = cpu_time();
        std::this_thread::sleep_for(1500ms);
        auto used = cpu_time() - before;
        EXPECT_LT(used, 300ms) << "the worker spun against the dead server";
        w.stop();
        t.join();
    }
}

// ---- fork mode: parent death, fork failures, timeouts ----------------------------------

namespace {

// Gone: no such process, or a zombie nobody reaped yet (it runs nothing).
bool process_gone(pid_t pid) {
    if (::kill(pid, 0) != 0) return true;
    std::string stat = rt::read_file(fmt::format("/proc/{}/stat", pid));
    auto close = stat.rfind(')');
    return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z';
}

}  // namespace

TEST_F(WorkerFaultsTest, ForkedChildDiesWithItsSigkilledWorker) {
    QueueManager{conn}.enqueue("tests.faults:long");
    const std::string url = rt::redis_url();
    auto worker = rt::ChildProcess::fork([url] {
        retools::Connection c{url};
        Worker w{{"main"},
                 {.connection = c,
                  .mode = retools::ExecutionMode::fork,
                  .handle_signals = false,
                  .log = retools::WorkerLog::none}};
        w.register_job("tests.faults:long", [url](const json&) -> json {
            retools::Connection{url}.command("SET", "child-pid", ::getpid());
            std::this_thread::sleep_for(3s);
            retools::Connection{url}.command("SET", "finished", 1);
            return nullptr;
        });
        w.work({.interval = 20ms});
        return 0;
    });
    ASSERT_TRUE(rt::wait_until([&] { return !conn.command("GET", "child-pid").is_nil(); }));
    const pid_t child = static_cast<pid_t>(std::stol(conn.command("GET", "child-pid").as_string()));
    worker.signal(SIGKILL);
    EXPECT_EQ(worker.exit_code(2s), -SIGKILL);
    EXPECT_TRUE(rt::wait_until([&] { return process_gone(child); }, 1s))
        << "the job process outlived its worker";
    std::this_thread::sleep_for(200ms);
    EXPECT_TRUE(conn.command("GET", "finished").is_nil());
}

TEST_F(WorkerFaultsTest, ForkFailuresUnderAPidsLimitRequeueWithBackoffAndFailNothing) {
    QueueManager qm{conn};
    for (int i = 0; i < 20; ++i) qm.enqueue("tests.faults:quick");
    const std::string url = rt::redis_url();
    auto worker = rt::ChildProcess::fork([url] {
        retools::Connection c{url};
        c.command("PING");
        Worker w{{"main"},
                 {.connection = c,
                  .mode = retools::ExecutionMode::fork,
                  .handle_signals = false,
                  .log = retools::WorkerLog::none}};
        w.register_job("tests.faults:quick", [url](const json&) -> json {
            retools::Connection{url}.command("INCR", "done");
            return nullptr;
        });
        // Lifts the limit (as `prlimit --nproc` would) once the test says so;
        // started first: under the limit no thread can start either.
        std::thread lifter([url] {
            retools::Connection l{url};
            while (l.command("EXISTS", "lift").as_integer() == 0) std::this_thread::sleep_for(20ms);
            rlimit lim{};
            ::getrlimit(RLIMIT_NPROC, &lim);
            lim.rlim_cur = lim.rlim_max;
            ::setrlimit(RLIMIT_NPROC, &lim);
        });
        lifter.detach();
        // An unprivileged user (root ignores the limit) allowed no more tasks
        // than it has: every fork fails with EAGAIN.
        if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 3;
        rlimit one{};
        ::getrlimit(RLIMIT_NPROC, &one);
        one.rlim_cur = 1;
        if (::setrlimit(RLIMIT_NPROC, &one) != 0) return 4;
        w.work({.interval = 20ms});
        return 0;
    });
    std::this_thread::sleep_for(1500ms);
    ASSERT_TRUE(worker.running()) << "exit code " << worker.exit_code(1ms);
    EXPECT_EQ(qm.failed_count(), 0u);
    EXPECT_TRUE(conn.command("GET", "done").is_nil());
    const std::string wid = fmt::format(
        "{}:{}:main",
        [] {
            char buf[256] = {};
            ::gethostname(buf, sizeof buf - 1);
            return std::string(buf);
        }(),
        worker.pid());
    EXPECT_EQ(llen(keys::queue("main", false)) + llen(keys::processing(wid, "", false)), 20);
    EXPECT_TRUE(conn.command("GET", "retools:stat:processed").is_nil());
    // The limit lifted, the worker carries on by itself.
    conn.command("SET", "lift", 1);
    EXPECT_TRUE(rt::wait_until(
        [&] {
            auto r = conn.command("GET", "done");
            return !r.is_nil() && r.as_string() == "20";
        },
        10s));
    EXPECT_EQ(qm.failed_count(), 0u);
    worker.signal(SIGKILL);
}

TEST_F(WorkerFaultsTest, JobTimeoutKillsAForkedChildThatIgnoresTermAndFailsTheJob) {
    QueueManager qm{conn};
    qm.enqueue("tests.faults:stuck");
    qm.enqueue("tests.faults:ok");
    WorkerOptions o = quiet();
    o.mode = retools::ExecutionMode::fork;
    o.job_timeout = 300ms;
    Worker w{{"main"}, o};
    w.register_job("tests.faults:stuck", [](const json&) -> json {
        ::signal(SIGTERM, SIG_IGN);
        std::this_thread::sleep_for(30s);
        return nullptr;
    });
    w.register_job("tests.faults:ok", [](const json&) -> json { return nullptr; });
    auto start = std::chrono::steady_clock::now();
    auto summary = w.work({.burst = true});
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
    EXPECT_EQ(summary.failed, 1u);
    EXPECT_EQ(summary.succeeded, 1u);
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].error, "job timed out after 0.3 s");
}

TEST_F(WorkerFaultsTest, JobTimeoutInThreadModeFailsAJobThatReturnsLate) {
    QueueManager qm{conn};
    qm.enqueue("tests.faults:late");
    qm.enqueue("tests.faults:late", {}, {.metadata = {{"retries", 1}, {"retry_backoff", 3600}}});
    WorkerOptions o = quiet();
    o.job_timeout = 100ms;
    Worker w{{"main"}, o};
    w.register_job("tests.faults:late", [](const json&) -> json {
        std::this_thread::sleep_for(300ms);
        return nullptr;
    });
    auto summary = w.work({.burst = true});
    EXPECT_EQ(summary.failed, 2u);
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].error, "job timed out after 0.1 s");
    EXPECT_EQ(qm.scheduled_jobs().size(), 1u);  // the one with retries left is retried
}

TEST_F(WorkerFaultsTest, RejectsHeartbeatAndTimeoutOptionsThatCannotWork) {
    WorkerOptions o = quiet();
    o.heartbeat_interval = 30s;
    EXPECT_THROW_MSG(Worker({"main"}, o), retools::ConfigurationError, "heartbeat_interval");
    o = quiet();
    o.job_timeout = 0ms;
    EXPECT_THROW_MSG(Worker({"main"}, o), retools::ConfigurationError, "job_timeout");
}
