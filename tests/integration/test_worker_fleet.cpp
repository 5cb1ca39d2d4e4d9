// Workers across hosts and containers: heartbeats, recovery by liveness (never
// by host name or registry membership), poison quarantine, hostile payloads,
// counters, prompt acknowledgement. Real redis-server, real processes, real SIGKILL.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/queue.hpp>
#include <retools/worker.hpp>

#include "expect.hpp"
#include "queue/keys.hpp"
#include "queue/test_hooks.hpp"
#include "redis_test.hpp"
#include "util/clock.hpp"
#include "worker/liveness.hpp"
#include "system.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using retools::ExecutionMode;
using retools::QueueManager;
using retools::Worker;
using retools::WorkerOptions;
namespace rt = retools::test;
namespace keys = retools::detail::queue_keys;
using rt::wait_until;

namespace {

class WorkerFleetTest : public rt::RedisTest {
protected:
    // Short heartbeats so that deaths are noticed within a test's time.
    WorkerOptions fast(WorkerOptions o = {}) {
        o.connection = conn;
        o.handle_signals = false;
        o.log = retools::WorkerLog::none;
        o.heartbeat_interval = 100ms;
        o.heartbeat_timeout = 600ms;
        return o;
    }
    long long llen(std::string_view key) { return conn.command("LLEN", key).as_integer(); }
    bool exists(std::string_view key) { return conn.command("EXISTS", key).as_integer() == 1; }
    // A registered worker of another process, with jobs in its processing list.
    void fake_worker(const std::string& id, const std::vector<std::string>& payloads) {
        conn.command("SADD", keys::workers, id);
        conn.command("SET", keys::worker_started(id), "1.5");
        conn.command("SET", keys::worker_queues(id), "main");
        for (const auto& p : payloads) conn.command("RPUSH", keys::processing(id, "", false), "main\n" + p);
    }
    // A heartbeat of a live process elsewhere (another host or container).
    void live_heartbeat(const std::string& id, const std::string& host_name, long pid,
                        const std::string& space) {
        conn.command("SET", keys::heartbeat(id),
                     json{{"id", id},
                          {"host", host_name},
                          {"pid", pid},
                          {"instance", "elsewhere"},
                          {"pid_space", space},
                          {"queues", {"main"}},
                          {"busy", 1}}
                         .dump(),
                     "PX", 60000);
    }
    std::string payload(const std::string& tag) {
        return retools::detail::make_payload(QueueManager{conn}, tag, "tests.fleet:record", {{"tag", tag}});
    }
    // Counts runs per tag in the hash "runs".
    static retools::JobFunction record(const retools::Connection& conn) {
        return [conn](const json& kw) -> json {
            conn.command("HINCRBY", "runs", kw.at("tag").get<std::string>(), 1);
            return nullptr;
        };
    }
    long long runs(const std::string& tag) {
        auto r = conn.command("HGET", "runs", tag);
        return r.is_nil() ? 0 : std::stoll(r.as_string());
    }
};

}  // namespace

// ---- recovery by liveness ------------------------------------------------------

TEST_F(WorkerFleetTest, OtherHostsWorkerWithoutHeartbeatHasItsJobsRecovered) {
    fake_worker("otherhost:1:main", {payload("a"), payload("b")});
    Worker w{{"main"}, fast()};
    w.register_job("tests.fleet:record", record(conn));
    auto start = std::chrono::steady_clock::now();
    std::thread t([&] { w.work({.interval = 20ms}); });
    bool ran = wait_until([&] { return runs("a") == 1 && runs("b") == 1; }, 3s);
    auto took = std::chrono::steady_clock::now() - start;
    w.stop();
    t.join();
    ASSERT_TRUE(ran);
    EXPECT_LT(took, 600ms);  // within heartbeat_timeout
    EXPECT_FALSE(exists(keys::processing("otherhost:1:main", "", false)));
}

TEST_F(WorkerFleetTest, OtherHostsWorkerWithALiveHeartbeatIsNeverTouched) {
    fake_worker("otherhost:1:main", {payload("a"), payload("b")});
    live_heartbeat("otherhost:1:main", "otherhost", 1, "boot/1");
    Worker w{{"main"}, fast()};
    w.register_job("tests.fleet:record", record(conn));
    std::thread t([&] { w.work({.interval = 20ms}); });
    std::this_thread::sleep_for(1500ms);  // several beats and timeouts of ours
    w.stop();
    t.join();
    EXPECT_EQ(llen(keys::processing("otherhost:1:main", "", false)), 2);
    EXPECT_EQ(runs("a"), 0);
    EXPECT_EQ(conn.command("SISMEMBER", keys::workers, "otherhost:1:main").as_integer(), 1);
    EXPECT_EQ(Worker::requeue_orphans(conn), 0u);
    EXPECT_EQ(llen(keys::processing("otherhost:1:main", "", false)), 2);
}

TEST_F(WorkerFleetTest, WorkersWithTheSameHostAndPidButOtherHeartbeatsNeverRequeueEachOther) {
    // Two containers of one pod: our host name, pid 1 each, other pid namespaces.
    const std::string a = rt::host_name() + ":1:main";
    const std::string b = rt::host_name() + ":1:main,low";
    fake_worker(a, {payload("a")});
    fake_worker(b, {payload("b")});
    live_heartbeat(a, rt::host_name(), 1, "other-boot/111");
    live_heartbeat(b, rt::host_name(), 1, "other-boot/222");
    EXPECT_EQ(Worker::requeue_orphans(conn), 0u);
    Worker w{{"main"}, fast()};
    EXPECT_EQ(w.prune_dead_workers(), 0u);
    w.register_job("tests.fleet:record", record(conn));
    std::thread t([&] { w.work({.interval = 20ms}); });
    std::this_thread::sleep_for(1000ms);
    w.stop();
    t.join();
    EXPECT_EQ(llen(keys::processing(a, "", false)), 1);
    EXPECT_EQ(llen(keys::processing(b, "", false)), 1);
    EXPECT_EQ(conn.command("SCARD", keys::workers).as_integer(), 2);
    EXPECT_EQ(runs("a") + runs("b"), 0);
}

TEST_F(WorkerFleetTest, ATwinHoldingOurIdMakesUsWorkUnderAnotherIdAndIsLeftAlone) {
    // A live process elsewhere with our host name, our pid and our queues.
    Worker w{{"main"}, fast()};
    const std::string ours = w.id();
    fake_worker(ours, {payload("twin")});
    live_heartbeat(ours, rt::host_name(), ::getpid(), "other-boot/333");
    QueueManager{conn}.enqueue("tests.fleet:record", {{"tag", "mine"}});
    w.register_job("tests.fleet:record", record(conn));
    std::string seen;
    std::thread t([&] { w.work({.interval = 20ms}); });
    ASSERT_TRUE(wait_until([&] { return runs("mine") == 1; }));
    seen = w.id();
    w.stop();
    t.join();
    EXPECT_NE(seen, ours);
    EXPECT_EQ(seen, fmt::format("{}~{}:{}:main", rt::host_name(), seen.substr(rt::host_name().size() + 1, 8), ::getpid()));
    EXPECT_EQ(std::count(seen.begin(), seen.end(), ':'), 2) << "Python splits ids into three fields";
    EXPECT_EQ(llen(keys::processing(ours, "", false)), 1);
    EXPECT_EQ(runs("twin"), 0);
    EXPECT_EQ(w.id(), ours);  // back to the usual id once work() returned
}

TEST_F(WorkerFleetTest, APreviousProcessWithOurPidIsDeadItsJobsRunAtOnceAndItsIdIsOurs) {
    // Same host, boot and pid namespace, our pid, another run: a process that
    // had our pid before us (a restarted container keeps pid 1).
    Worker w{{"main"}, fast({.heartbeat_timeout = 30s})};
    const std::string ours = w.id();
    fake_worker(ours, {payload("old")});
    live_heartbeat(ours, rt::host_name(), ::getpid(), retools::detail::pid_space());
    w.register_job("tests.fleet:record", record(conn));
    std::string seen;
    std::thread t([&] { w.work({.interval = 20ms}); });
    EXPECT_TRUE(wait_until([&] { return runs("old") == 1; }, 2s));  // long before its heartbeat expires
    seen = w.id();
    w.stop();
    t.join();
    EXPECT_EQ(seen, ours);
}

TEST_F(WorkerFleetTest, PrunedLiveWorkerRegistersAgainAndItsJobRunsExactlyOnce) {
    QueueManager{conn}.enqueue("tests.fleet:slow", {{"tag", "slow"}});
    auto options = fast();
    auto url = rt::redis_url();
    auto worker = [url, options](const char* tag) {
        return rt::ChildProcess::fork([url, options, tag] {
            retools::Connection c{url};
            retools::global_connection() = c;
            auto o = options;
            o.connection = c;
            o.handle_signals = true;  // TERM stops it cleanly
            Worker w{{"main"}, o};
            w.register_job("tests.fleet:slow", [c, tag](const json& kw) -> json {
                c.command("HINCRBY", "runs", kw.at("tag").get<std::string>(), 1);
                c.command("SET", "ran-by", tag);
                std::this_thread::sleep_for(1500ms);
                return nullptr;
            });
            w.work({.interval = 20ms});
            return 0;
        });
    };
    auto first = worker("first");
    const std::string first_id = fmt::format("{}:{}:main", rt::host_name(), first.pid());
    ASSERT_TRUE(wait_until([&] { return runs("slow") == 1; }));
    // A Python worker's pruning (its process name lacks 'retools:').
    conn.command("SREM", keys::workers, first_id);
    auto second = worker("second");
    // Back in the registry within one beat (plus scheduling slack).
    EXPECT_TRUE(wait_until(
        [&] { return conn.command("SISMEMBER", keys::workers, first_id).as_integer() == 1; }, 400ms));
    ASSERT_TRUE(wait_until([&] { return llen(keys::processing(first_id, "", false)) == 0; }, 4s));
    std::this_thread::sleep_for(800ms);  // the second worker had every chance to run it again
    EXPECT_EQ(runs("slow"), 1);
    EXPECT_EQ(conn.command("GET", "ran-by").as_string(), "first");
    first.signal(SIGTERM);
    second.signal(SIGTERM);
    EXPECT_EQ(first.exit_code(5s), 0);
    EXPECT_EQ(second.exit_code(5s), 0);
}

TEST_F(WorkerFleetTest, HeartbeatCarriesTheContractFieldsWithTheTimeoutAsTtl) {
    Worker w{{"high", "main"}, fast({.concurrency = 3})};
    w.register_job("tests.fleet:record", record(conn));
    std::thread t([&] { w.work({.interval = 20ms}); });
    ASSERT_TRUE(wait_until([&] { return exists(keys::heartbeat(w.id())); }));
    std::this_thread::sleep_for(250ms);  // at least one beat from the loop
    json hb = json::parse(conn.command("GET", keys::heartbeat(w.id())).as_string());
    long long ttl = conn.command("PTTL", keys::heartbeat(w.id())).as_integer();
    w.stop();
    t.join();
    EXPECT_EQ(hb.at("id"), w.id());
    EXPECT_EQ(hb.at("host"), rt::host_name());
    EXPECT_EQ(hb.at("pid"), ::getpid());
    EXPECT_EQ(hb.at("queues"), json({"high", "main"}));
    EXPECT_EQ(hb.at("threads"), 3);
    EXPECT_EQ(hb.at("mode"), "thread");
    EXPECT_TRUE(hb.at("busy").is_number_integer());
    EXPECT_TRUE(hb.at("started").is_number_float());
    EXPECT_TRUE(hb.at("beat").is_number_float());
    EXPECT_TRUE(hb.at("version").is_string());
    EXPECT_GT(ttl, 0);
    EXPECT_LE(ttl, 600);
    EXPECT_FALSE(exists(keys::heartbeat(w.id())));  // gone with the worker
}

// ---- poison quarantine -----------------------------------------------------------

TEST_F(WorkerFleetTest, AJobThatAbortsItsWorkerIsQuarantinedAfterMaxRecoveries) {
    QueueManager qm{conn};
    qm.enqueue("tests.fleet:abort", {{"tag", "poison"}});
    for (int i = 0; i < 3; ++i) qm.enqueue("tests.fleet:record", {{"tag", fmt::format("n{}", i)}});
    auto url = rt::redis_url();
    auto options = fast();
    int restarts = 0;
    for (; restarts < 8; ++restarts) {
        auto child = rt::ChildProcess::fork([url, options] {
            retools::Connection c{url};
            auto o = options;
            o.connection = c;
            o.max_recoveries = 3;
            Worker w{{"main"}, o};
            w.register_job("tests.fleet:abort", [](const json&) -> json { std::abort(); });
            w.register_job("tests.fleet:record", record(c));
            w.work({.burst = true});
            return 0;
        });
        int code = child.exit_code(10s);
        if (code == 0) break;
        ASSERT_EQ(code, -SIGABRT);
    }
    EXPECT_EQ(restarts, 3);  // died three times, then drained the queue
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].error, "worker died 3 times while running this job");
    EXPECT_NE(failed[0].payload.find("poison"), std::string::npos);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(runs(fmt::format("n{}", i)), 1);
    EXPECT_EQ(llen(keys::queue("main", false)), 0);
    EXPECT_EQ(conn.command("KEYS", "retools:processing:*").size(), 0u);
    EXPECT_EQ(conn.command("GET", "retools:stat:failed").as_string(), "1");
}

// ---- hostile payloads ---------------------------------------------------------------

namespace {
std::string deep_payload() {
    std::string s = R"({"job_id": "deep", "job": "tests.fleet:record", "kwargs": {"a": )";
    s.append(200000, '[');
    s.append(200000, ']');
    s.append(R"(}, "events": {}, "state": {}})");
    return s;
}
}  // namespace

class HostilePayload : public WorkerFleetTest, public ::testing::WithParamInterface<ExecutionMode> {};

TEST_P(HostilePayload, A200000DeepPayloadIsFiledByteExactAndItsNeighboursRun) {
    QueueManager qm{conn};
    qm.enqueue("tests.fleet:record", {{"tag", "before"}});
    const std::string deep = deep_payload();
    conn.command("RPUSH", keys::queue("main", false), deep);
    qm.enqueue("tests.fleet:record", {{"tag", "after"}});
    EXPECT_THROW_MSG(qm.get_jobs("main"), retools::QueueError, "nests deeper than 512 levels");
    EXPECT_THROW_MSG(qm.get_job("deep", "main"), retools::QueueError, "no job 'deep'");

    Worker w{{"main"}, fast({.mode = GetParam()})};
    w.register_job("tests.fleet:record", record(conn));
    auto summary = w.work({.burst = true});
    EXPECT_EQ(summary.succeeded, 2u);
    EXPECT_EQ(summary.failed, 1u);
    EXPECT_EQ(runs("before"), 1);
    EXPECT_EQ(runs("after"), 1);
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_TRUE(failed[0].payload == deep) << "payload not byte-exact";
    EXPECT_NE(failed[0].error.find("nests deeper than 512 levels"), std::string::npos) << failed[0].error;
}

INSTANTIATE_TEST_SUITE_P(Modes, HostilePayload,
                         ::testing::Values(ExecutionMode::threads, ExecutionMode::fork),
                         [](const auto& p) { return p.param == ExecutionMode::fork ? "fork" : "threads"; });

TEST_F(WorkerFleetTest, InvalidUtf8PayloadIsKeptAndRetriedByteExact) {
    const std::string bad(
        "{\"job_id\": \"u\", \"job\": \"x:y\xff\", \"kwargs\": {}, \"events\": {}, \"state\": {}}\xfe", 72);
    conn.command("RPUSH", keys::queue("main", false), bad);
    Worker w{{"main"}, fast()};
    EXPECT_EQ(w.work({.burst = true}).failed, 1u);
    QueueManager qm{conn};
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_TRUE(failed[0].payload == bad);
    json entry = json::parse(conn.command("LINDEX", keys::failed, 0).as_string());
    EXPECT_TRUE(entry.contains("payload_base64"));
    EXPECT_TRUE(entry.at("payload").is_string());  // a readable copy
    ASSERT_TRUE(qm.retry_failed(failed[0]));
    EXPECT_TRUE(conn.command("LINDEX", keys::queue("main", false), 0).as_string() == bad);

    // The same through the Lua paths: quarantined by recovery, retried by retry_all_failed.
    conn.command("DEL", keys::queue("main", false));
    conn.command("RPUSH", keys::processing("gone:7:main", "", false), "main\n" + bad);
    auto r =
        retools::detail::recover_worker(conn, "gone:7:main", retools::detail::RecoverMode::dead, 1, true);
    EXPECT_EQ(r.quarantined, 1u);
    failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].error, "worker died 1 times while running this job");
    EXPECT_TRUE(failed[0].payload == bad);
    EXPECT_EQ(qm.retry_all_failed(), 1u);
    EXPECT_TRUE(conn.command("LINDEX", keys::queue("main", false), 0).as_string() == bad);
}

TEST_F(WorkerFleetTest, PayloadLargerThanTheLimitIsFiledUnread) {
    QueueManager qm{conn};
    qm.enqueue("tests.fleet:record", {{"tag", std::string(3000, 'x')}});
    Worker w{{"main"}, fast({.max_payload_bytes = 1024})};
    w.register_job("tests.fleet:record", record(conn));
    EXPECT_EQ(w.work({.burst = true}).failed, 1u);
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_NE(failed[0].error.find("max_payload_bytes"), std::string::npos) << failed[0].error;
    EXPECT_GT(failed[0].payload.size(), 3000u);
}

// ---- counters, enqueue time, prompt acknowledgement, wrong-typed keys --------------------

TEST_F(WorkerFleetTest, CountersAreBumpedWithTheAcknowledgement) {
    QueueManager qm{conn};
    for (int i = 0; i < 3; ++i) qm.enqueue("tests.fleet:record", {{"tag", fmt::format("ok{}", i)}});
    qm.enqueue("tests.fleet:boom");
    qm.enqueue("tests.fleet:boom", {}, {.metadata = {{"retries", 1}, {"retry_backoff", 3600}}});
    Worker w{{"main"}, fast()};
    w.register_job("tests.fleet:record", record(conn));
    w.register_job("tests.fleet:boom", [](const json&) -> json { throw std::runtime_error("boom"); });
    w.work({.burst = true});
    // ok×3, boom failed, boom retry scheduled: 5 processed, 1 failed.
    EXPECT_EQ(conn.command("GET", "retools:stat:processed").as_string(), "5");
    EXPECT_EQ(conn.command("GET", "retools:stat:failed").as_string(), "1");
    auto now = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    std::string day = fmt::format("{:04}-{:02}-{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    std::string hour = fmt::format("{}T{:02}", day, tm.tm_hour);
    EXPECT_EQ(conn.command("GET", "retools:stat:processed:" + day).as_string(), "5");
    EXPECT_EQ(conn.command("GET", "retools:stat:failed:" + hour).as_string(), "1");
    long long day_ttl = conn.command("TTL", "retools:stat:processed:" + day).as_integer();
    long long hour_ttl = conn.command("TTL", "retools:stat:failed:" + hour).as_integer();
    EXPECT_GT(day_ttl, 179 * 86400);
    EXPECT_LE(day_ttl, 180 * 86400);
    EXPECT_GT(hour_ttl, 47 * 3600);
    EXPECT_LE(hour_ttl, 48 * 3600);
    EXPECT_EQ(conn.command("TTL", "retools:stat:processed").as_integer(), -1);
}

TEST_F(WorkerFleetTest, EnqueueSetsEnqueuedAtWhenAbsentAndKeepsAGivenOne) {
    QueueManager qm{conn};
    const double before = retools::detail::unix_now();
    std::string id = qm.enqueue("tests.fleet:record", {{"tag", "t"}});
    qm.enqueue("tests.fleet:record", {{"tag", "t"}}, {.metadata = {{"enqueued_at", 12.5}, {"retries", 1}}});
    std::vector<json> many{{{"tag", "m"}}};
    qm.enqueue_many("tests.fleet:record", many, {.metadata = {{"result_ttl", 5}}});
    auto jobs = qm.get_jobs("main");
    ASSERT_EQ(jobs.size(), 3u);
    double at = jobs[0].metadata().at("enqueued_at").get<double>();
    EXPECT_GE(at, before - 0.01);
    EXPECT_LE(at, retools::detail::unix_now() + 0.01);
    EXPECT_EQ(jobs[1].metadata().at("enqueued_at"), 12.5);
    EXPECT_EQ(jobs[1].metadata().at("retries"), 1);
    EXPECT_TRUE(jobs[2].metadata().at("enqueued_at").is_number_float());
    EXPECT_EQ(jobs[2].metadata().at("result_ttl"), 5);
    // Scheduled jobs are enqueued when due.
    auto due = std::chrono::system_clock::now() + 1h;
    qm.enqueue_at(due, "tests.fleet:record", {{"tag", "later"}});
    double due_s = std::chrono::duration<double>(due.time_since_epoch()).count();
    EXPECT_NEAR(qm.scheduled_jobs().at(0).job.metadata().at("enqueued_at").get<double>(), due_s, 0.01);
}

TEST_F(WorkerFleetTest, AFastJobIsAcknowledgedWhileASlowOneStillRuns) {
    QueueManager qm{conn};
    std::atomic<bool> release{false};
    qm.enqueue("tests.fleet:slow");
    Worker w{{"main"}, fast({.concurrency = 2})};
    w.register_job("tests.fleet:slow", [&](const json&) -> json {
        while (!release) std::this_thread::sleep_for(2ms);
        return nullptr;
    });
    w.register_job("tests.fleet:fast", [](const json&) -> json { return 42; });
    std::thread t([&] { w.work({.interval = 20ms}); });
    ASSERT_TRUE(wait_until([&] { return llen(keys::processing(w.id(), "", false)) == 1; }));
    for (int i = 0; i < 20; ++i) {
        auto start = std::chrono::steady_clock::now();
        std::string id = qm.enqueue("tests.fleet:fast", {}, {.metadata = {{"result_ttl", 60}}});
        auto r = qm.wait_for_result(id, 2s);
        ASSERT_TRUE(r && r->ok);
        EXPECT_LT(std::chrono::steady_clock::now() - start, 150ms);
        EXPECT_TRUE(wait_until([&] { return llen(keys::processing(w.id(), "", false)) == 1; }, 50ms));
    }
    release = true;
    w.stop();
    t.join();
}

TEST_F(WorkerFleetTest, AWrongTypedQueueStallsOnlyItselfAndBadDelayedOrFailedNeverStopFetching) {
    QueueManager qm{conn};
    conn.command("HSET", keys::queue("bad", false), "f", "v");
    conn.command("SET", keys::delayed_all, "not a zset");
    conn.command("SET", keys::failed, "not a list");
    for (int i = 0; i < 3; ++i) qm.enqueue("tests.fleet:record", {{"tag", fmt::format("j{}", i)}});
    Worker w{{"bad", "main"}, fast()};
    w.register_job("tests.fleet:record", record(conn));
    std::thread t([&] { w.work({.interval = 20ms}); });
    bool ran = wait_until([&] { return runs("j0") + runs("j1") + runs("j2") == 3; });
    w.stop();
    t.join();
    EXPECT_TRUE(ran);
    EXPECT_EQ(conn.command("TYPE", keys::queue("bad", false)).as_string(), "hash");
}
