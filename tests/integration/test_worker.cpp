#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/queue.hpp>
#include <retools/worker.hpp>

#include "queue/keys.hpp"
#include "queue/test_hooks.hpp"
#include "redis_test.hpp"
#include "util/clock.hpp"
#include "system.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using retools::ExecutionMode;
using retools::Job;
using retools::QueueManager;
using retools::Worker;
using retools::WorkerOptions;
namespace rt = retools::test;
namespace keys = retools::detail::queue_keys;

namespace {

using rt::wait_until;

json records(const retools::Connection& conn, const std::string& key) {
    json out = json::array();
    for (const auto& r : conn.command("LRANGE", key, 0, -1).as_array()) out.push_back(r.as_string());
    return out;
}

// Records kwargs["tag"] in the list "out" (shared by many tests).
retools::JobFunction recorder(const retools::Connection& conn) {
    return [conn](const json& kw) -> json {
        conn.command("RPUSH", "out", kw.at("tag").get<std::string>());
        return kw.at("tag");
    };
}

class WorkerTest : public rt::RedisTest {
protected:
    WorkerOptions quiet(WorkerOptions o = {}) {
        o.connection = conn;
        o.handle_signals = false;
        o.log = retools::WorkerLog::none;
        return o;
    }
};

}  // namespace

// Registered at load time into JobRegistry::global(), like a job library.
RETOOLS_REGISTER_JOB("tests.static:double", [](const json& kw) -> json { return kw.at("x").get<int>() * 2; });
RETOOLS_REGISTER_POSTRUN("tests.static:keep", [](Job& job, const json& result) {
    retools::global_connection().command("RPUSH", "static", job.id() + "=" + result.dump());
});

// ---- configuration (no jobs run) ----

TEST_F(WorkerTest, RejectsBadQueueNamesAndConcurrency) {
    EXPECT_THROW(Worker({}, quiet()), retools::ConfigurationError);
    EXPECT_THROW(Worker({"main", ""}, quiet()), retools::ConfigurationError);
    EXPECT_THROW(Worker({"a:b"}, quiet()), retools::ConfigurationError);
    EXPECT_THROW(Worker({"a\nb"}, quiet()), retools::ConfigurationError);
    EXPECT_THROW(Worker({"a,b"}, quiet()), retools::ConfigurationError);
    EXPECT_THROW(Worker({"a\nb"}, quiet()), retools::ConfigurationError);
    EXPECT_THROW(Worker({"main"}, quiet({.concurrency = 0})), retools::ConfigurationError);
    Worker w{{"high", "main"}, quiet()};
    EXPECT_EQ(w.id(), fmt::format("{}:{}:high,main", rt::host_name(), ::getpid()));
    EXPECT_EQ(w.queue_names(), "high,main");
}

TEST_F(WorkerTest, RegistryRejectsEmptyNamesAndFunctions) {
    Worker w{{"main"}, quiet()};
    EXPECT_THROW(w.register_job("", [](const json&) -> json { return nullptr; }),
                 retools::ConfigurationError);
    EXPECT_THROW(w.register_job("a:b", nullptr), retools::ConfigurationError);
    EXPECT_THROW(w.register_prerun("", [](Job&) {}), retools::ConfigurationError);
}

// ---- running jobs ----

TEST_F(WorkerTest, RunsEnqueuedJobsAndCleansUp) {
    QueueManager qm{conn};
    std::string id = qm.enqueue("tests.jobs:record", {{"tag", "a"}});
    qm.enqueue("tests.jobs:record", {{"tag", "b"}});
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:record", recorder(conn));
    auto summary = w.work({.burst = true});
    EXPECT_EQ(summary.succeeded, 2u);
    EXPECT_EQ(summary.failed, 0u);
    EXPECT_EQ(records(conn, "out"), json({"a", "b"}));
    EXPECT_EQ(conn.command("LLEN", keys::queue("main", false)).as_integer(), 0);
    EXPECT_EQ(conn.command("EXISTS", keys::processing(w.id(), "", false)).as_integer(), 0);
    EXPECT_EQ(conn.command("LLEN", keys::failed).as_integer(), 0);
    // Clean shutdown: no registry keys left.
    EXPECT_EQ(conn.command("SCARD", keys::workers).as_integer(), 0);
    EXPECT_EQ(conn.command("EXISTS", keys::worker(w.id()), keys::worker_started(w.id()),
                           keys::worker_queues(w.id()))
                  .as_integer(),
              0);
}

TEST_F(WorkerTest, RunsAPayloadWrittenByPythonRetools) {
    // What Python's QueueManager.enqueue writes (json.dumps, default separators).
    std::string payload = R"({"job_id": "0f8fad5bd9cb469fa16570867728950e", "job": "tests.jobs:record", )"
                          R"("kwargs": {"tag": "caf\u00e9"}, "events": {}, "metadata": {}, "state": {}})";
    conn.command("RPUSH", keys::queue("main", false), payload);
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:record", recorder(conn));
    EXPECT_EQ(w.work({.burst = true}).succeeded, 1u);
    EXPECT_EQ(records(conn, "out"), json({"caf\xc3\xa9"}));
}

TEST_F(WorkerTest, TakesQueuesInPriorityOrder) {
    QueueManager qm{conn};
    for (int i = 0; i < 3; ++i)
        qm.enqueue("tests.jobs:record", {{"tag", fmt::format("low{}", i)}}, {.queue_name = "low"});
    for (int i = 0; i < 2; ++i)
        qm.enqueue("tests.jobs:record", {{"tag", fmt::format("mid{}", i)}}, {.queue_name = "mid"});
    qm.enqueue("tests.jobs:record", {{"tag", "high0"}}, {.queue_name = "high"});
    for (auto window : {0ms, 10ms}) {  // one job per round trip, and batches
        conn.command("DEL", "out");
        if (window == 10ms) {
            for (int i = 0; i < 3; ++i)
                qm.enqueue("tests.jobs:record", {{"tag", fmt::format("low{}", i)}}, {.queue_name = "low"});
            for (int i = 0; i < 2; ++i)
                qm.enqueue("tests.jobs:record", {{"tag", fmt::format("mid{}", i)}}, {.queue_name = "mid"});
            qm.enqueue("tests.jobs:record", {{"tag", "high0"}}, {.queue_name = "high"});
        }
        Worker w{{"high", "mid", "low"}, quiet({.prefetch_window = window})};
        w.register_job("tests.jobs:record", recorder(conn));
        EXPECT_EQ(w.work({.burst = true}).succeeded, 6u);
        EXPECT_EQ(records(conn, "out"), json({"high0", "mid0", "mid1", "low0", "low1", "low2"}))
            << window.count();
    }
}

TEST_F(WorkerTest, BurstMakesFewRoundTrips) {
    QueueManager qm{conn};
    std::vector<json> args(200, json{{"n", 1}});
    qm.enqueue_many("tests.jobs:noop", args);
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:noop", [](const json&) -> json { return nullptr; });
    auto before = conn.round_trips();
    EXPECT_EQ(w.work({.burst = true}).succeeded, 200u);
    // Start-up and shut-down take a handful; the 200 jobs are taken and
    // finished in batches, not one round trip each. Finished jobs are
    // acknowledged at most 2 ms late, so a slow (sanitizer, loaded) build
    // sends more acknowledgements: the bound is one round trip per two jobs.
    EXPECT_LT(conn.round_trips() - before, 100u);
    EXPECT_EQ(conn.command("LLEN", keys::queue("main", false)).as_integer(), 0);
    EXPECT_EQ(conn.command("EXISTS", keys::processing(w.id(), "", false)).as_integer(), 0);
}

TEST_F(WorkerTest, BlockingModeWakesWithinMillisecondsAndHonoursPriority) {
    Worker w{{"high", "low"}, quiet({.prefetch_window = 0ms})};
    std::mutex m;
    std::vector<std::pair<std::string, double>> seen;
    w.register_job("tests.jobs:stamp", [&](const json& kw) -> json {
        std::lock_guard lock(m);
        seen.emplace_back(kw.at("tag").get<std::string>(), retools::detail::unix_now());
        return nullptr;
    });
    std::thread t([&] { w.work({.interval = 5s, .blocking = true}); });
    ASSERT_TRUE(wait_until([&] { return conn.command("SCARD", keys::workers).as_integer() == 1; }));
    std::this_thread::sleep_for(200ms);  // idle: blocked in the server, not polling

    QueueManager qm{conn};
    double t0 = retools::detail::unix_now();
    qm.enqueue("tests.jobs:stamp", {{"tag", "first"}}, {.queue_name = "low"});
    ASSERT_TRUE(wait_until([&] {
        std::lock_guard lock(m);
        return seen.size() == 1;
    }));
    double latency = seen[0].second - t0;
    EXPECT_LT(latency, 0.050) << "wake-up took " << latency * 1000 << " ms";

    // Idle again, then a low and a high job arrive together: high runs first.
    std::this_thread::sleep_for(100ms);
    retools::Pipeline p;
    p.command("RPUSH", keys::queue("low", false),
              retools::detail::make_payload(qm, "1", "tests.jobs:stamp", {{"tag", "low"}}));
    p.command("RPUSH", keys::queue("high", false),
              retools::detail::make_payload(qm, "2", "tests.jobs:stamp", {{"tag", "high"}}));
    conn.transaction(p);
    ASSERT_TRUE(wait_until([&] {
        std::lock_guard lock(m);
        return seen.size() == 3;
    }));
    EXPECT_EQ(seen[1].first, "high");
    EXPECT_EQ(seen[2].first, "low");

    auto t1 = std::chrono::steady_clock::now();
    w.stop();
    t.join();
    // Stopping does not wait out the 5 s server-side wait.
    EXPECT_LT(std::chrono::steady_clock::now() - t1, 1s);
    EXPECT_EQ(conn.command("SCARD", keys::workers).as_integer(), 0);
}

TEST_F(WorkerTest, PollingModeFindsJobsEnqueuedWhileIdle) {
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:record", recorder(conn));
    std::thread t([&] { w.work({.interval = 20ms}); });
    ASSERT_TRUE(wait_until([&] { return conn.command("SCARD", keys::workers).as_integer() == 1; }));
    QueueManager{conn}.enqueue("tests.jobs:record", {{"tag", "x"}});
    EXPECT_TRUE(wait_until([&] { return records(conn, "out").size() == 1; }, 1s));
    w.stop();
    t.join();
}

TEST_F(WorkerTest, FiresEventsInOrderWithTheirArguments) {
    QueueManager qm{conn};
    qm.subscriber("job_prerun", "tests.ev:pre");
    qm.subscriber("job_wrapper", "tests.ev:outer");
    qm.subscriber("job_wrapper", "tests.ev:inner");
    qm.subscriber("job_postrun", "tests.jobs:add", "tests.ev:post");
    qm.subscriber("job_failure", "tests.ev:fail");
    std::string ok_id = qm.enqueue("tests.jobs:add", {{"a", 2}, {"b", 3}});
    std::string bad_id = qm.enqueue("tests.jobs:boom", json::object());

    std::vector<std::string> log;
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:add", [&](const json& kw) -> json {
        log.push_back("job");
        EXPECT_NE(retools::current_job(), nullptr);
        return kw.at("a").get<int>() + kw.at("b").get<int>();
    });
    w.register_job("tests.jobs:boom", [&](const json&) -> json {
        log.push_back("job");
        throw std::runtime_error("boom");
    });
    w.register_prerun("tests.ev:pre", [&](Job& job) { log.push_back("pre " + job.id()); });
    w.register_wrapper("tests.ev:outer", [&](Job& job, const retools::WrapperNext& next) {
        log.push_back("outer in " + job.name());
        json r = next();
        log.push_back("outer out " + r.dump());
        return r;
    });
    w.register_wrapper("tests.ev:inner", [&](Job&, const retools::WrapperNext& next) {
        log.push_back("inner in");
        json r = next();
        log.push_back("inner out");
        return r;
    });
    w.register_postrun("tests.ev:post", [&](Job& job, const json& result) {
        log.push_back(fmt::format("post {} {}", job.id(), result.dump()));
    });
    w.register_failure("tests.ev:fail", [&](Job& job, std::exception_ptr e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::runtime_error& x) {
            log.push_back(fmt::format("fail {} {}", job.id(), x.what()));
        }
    });
    auto summary = w.work({.burst = true});
    EXPECT_EQ(summary.succeeded, 1u);
    EXPECT_EQ(summary.failed, 1u);
    std::vector<std::string> expected = {"pre " + ok_id,
                                         "outer in tests.jobs:add",
                                         "inner in",
                                         "job",
                                         "inner out",
                                         "outer out 5",
                                         "post " + ok_id + " 5",
                                         "pre " + bad_id,
                                         "outer in tests.jobs:boom",
                                         "inner in",
                                         "job",
                                         "fail " + bad_id + " boom"};
    EXPECT_EQ(log, expected);
    EXPECT_EQ(retools::current_job(), nullptr);
}

TEST_F(WorkerTest, AbortJobFromPrerunSkipsQuietly) {
    QueueManager qm{conn};
    qm.subscriber("job_prerun", "tests.ev:gate");
    qm.subscriber("job_failure", "tests.ev:fail");
    qm.enqueue("tests.jobs:record", {{"tag", "skipped"}});
    qm.enqueue("tests.jobs:record", {{"tag", "kept"}});
    int failures = 0;
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:record", recorder(conn));
    w.register_prerun("tests.ev:gate", [](Job& job) {
        if (job.kwargs().at("tag") == "skipped") throw retools::AbortJob();
    });
    w.register_failure("tests.ev:fail", [&](Job&, std::exception_ptr) { ++failures; });
    auto summary = w.work({.burst = true});
    EXPECT_EQ(summary.aborted, 1u);
    EXPECT_EQ(summary.succeeded, 1u);
    EXPECT_EQ(summary.failed, 0u);
    EXPECT_EQ(failures, 0);
    EXPECT_EQ(records(conn, "out"), json({"kept"}));
    EXPECT_EQ(conn.command("LLEN", keys::failed).as_integer(), 0);
    EXPECT_EQ(conn.command("EXISTS", keys::processing(w.id(), "", false)).as_integer(), 0);
}

TEST_F(WorkerTest, FailuresLandInTheFailedListVerbatimAndTheWorkerCarriesOn) {
    QueueManager qm{conn};
    std::vector<std::string> payloads = {
        "this is not json",
        R"({"job_id": "x1", "kwargs": {}})",  // lacks "job"
        retools::detail::make_payload(qm, "id-unknown", "tests.jobs:nobody", json::object()),
        retools::detail::make_payload(qm, "id-throws", "tests.jobs:boom", json::object()),
    };
    for (const auto& p : payloads) conn.command("RPUSH", keys::queue("main", false), p);
    qm.subscriber("job_prerun", "tests.ev:missing");
    qm.enqueue("tests.jobs:record", {{"tag", "no handler"}});
    qm = QueueManager{conn};
    qm.enqueue("tests.jobs:record", {{"tag", "survivor"}});

    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:record", recorder(conn));
    w.register_job("tests.jobs:boom", [](const json&) -> json { throw std::runtime_error("kaboom"); });
    double before = retools::detail::unix_now();
    auto summary = w.work({.burst = true});
    EXPECT_EQ(summary.failed, 5u);
    EXPECT_EQ(summary.succeeded, 1u);
    EXPECT_EQ(records(conn, "out"), json({"survivor"}));

    auto failed = conn.command("LRANGE", keys::failed, 0, -1).as_array();
    ASSERT_EQ(failed.size(), 5u);
    std::vector<std::string> errors;
    for (std::size_t i = 0; i < failed.size(); ++i) {
        auto entry = json::parse(failed[i].as_string());
        if (i < payloads.size()) {
            EXPECT_EQ(entry.at("payload"), payloads[i]);  // verbatim
        }
        EXPECT_EQ(entry.at("queue"), "main");
        EXPECT_EQ(entry.at("worker"), w.id());
        EXPECT_GE(entry.at("failed_at").get<double>(), before);
        errors.push_back(entry.at("error").get<std::string>());
        auto parsed = retools::FailedJob::from_json(failed[i].as_string());
        EXPECT_EQ(parsed.worker, w.id());
    }
    EXPECT_NE(errors[0].find("malformed payload"), std::string::npos) << errors[0];
    EXPECT_NE(errors[1].find("malformed payload"), std::string::npos) << errors[1];
    EXPECT_NE(errors[2].find("unknown job 'tests.jobs:nobody'"), std::string::npos) << errors[2];
    EXPECT_NE(errors[3].find("kaboom"), std::string::npos) << errors[3];
    EXPECT_NE(errors[3].find("runtime_error"), std::string::npos) << errors[3];
    EXPECT_NE(errors[4].find("unknown job_prerun handler 'tests.ev:missing'"), std::string::npos)
        << errors[4];
    EXPECT_EQ(conn.command("EXISTS", keys::processing(w.id(), "", false)).as_integer(), 0);
}

TEST_F(WorkerTest, TheFailedListKeepsTheNewestEntriesAndNoneOlderThanMaxAge) {
    const double now = retools::detail::unix_now();
    auto entry = [](int i, double failed_at) {
        return retools::FailedJob{.payload = fmt::format("p{}", i),
                                  .queue = "main",
                                  .error = "e",
                                  .worker = "w",
                                  .failed_at = failed_at}
            .to_json();
    };
    retools::Pipeline fill;
    for (int i = 0; i < 10005; ++i) fill.command("RPUSH", keys::failed, entry(i, now - 10));
    conn.execute(fill);
    Worker w{{"main"}, quiet()};  // the default bound: 10,000 entries, 180 days
    (void)w.work({.burst = true});
    EXPECT_EQ(conn.command("LLEN", keys::failed).as_integer(), 10000);
    EXPECT_EQ(retools::FailedJob::from_json(conn.command("LINDEX", keys::failed, 0).as_string()).payload,
              "p5");
    EXPECT_EQ(conn.command("GET", "retools:stat:failed_trimmed").as_string(), "5");

    conn.command("DEL", keys::failed);
    for (int i = 0; i < 3; ++i) conn.command("RPUSH", keys::failed, entry(i, now - 200 * 86400.0));
    for (int i = 3; i < 5; ++i) conn.command("RPUSH", keys::failed, entry(i, now - 10));
    Worker unbounded{{"main"}, quiet({.failed_retention = {.max_entries = 0, .max_age = 0s}})};
    (void)unbounded.work({.burst = true});
    EXPECT_EQ(conn.command("LLEN", keys::failed).as_integer(), 5);  // no bound: nothing trimmed
    (void)w.work({.burst = true});
    EXPECT_EQ(conn.command("LLEN", keys::failed).as_integer(), 2);  // the three older than 180 days went
    EXPECT_EQ(conn.command("GET", "retools:stat:failed_trimmed").as_string(), "8");
}

TEST_F(WorkerTest, JobsThatFailTogetherRetryAtSpreadTimesWithinTheCap) {
    QueueManager qm{conn};
    std::vector<json> kwargs(100, json::object());
    qm.enqueue_many("tests.jobs:boom", kwargs, {.metadata = {{"retries", 1}, {"retry_backoff", 100}}});
    qm.enqueue("tests.jobs:boom", json::object(),
               {.metadata = {{"retries", 1}, {"retry_backoff", 10000}, {"retry_max_delay", 60}}});
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:boom", [](const json&) -> json { throw std::runtime_error("backend down"); });
    const double before = retools::detail::unix_now();
    EXPECT_EQ(w.work({.burst = true}).failed, 101u);
    const double after = retools::detail::unix_now();
    std::vector<double> spread, capped;
    for (const auto& s : qm.scheduled_jobs())
        (s.job.metadata().contains("retry_max_delay") ? capped : spread)
            .push_back(s.job.metadata().at("enqueued_at").get<double>());
    ASSERT_EQ(spread.size(), 100u);
    ASSERT_EQ(capped.size(), 1u);
    EXPECT_GE(capped[0], before + 30);  // capped at 60 s: between 30 and 60 s
    EXPECT_LE(capped[0], after + 60);
    std::sort(spread.begin(), spread.end());  // backoff 100 s: between 50 and 100 s
    EXPECT_GE(spread.front(), before + 50);
    EXPECT_LE(spread.back(), after + 100);
    EXPECT_GT(spread.back() - spread.front(), 20);  // not together
}

TEST_F(WorkerTest, RetriesWithBackoffThroughTheDelayedSet) {
    QueueManager qm{conn};
    std::string id = qm.enqueue("tests.jobs:flaky", json::object(),
                                {.metadata = {{"retries", 2}, {"retry_backoff", 0.05}}});
    std::vector<json> states;
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:flaky", [&](const json&) -> json {
        states.push_back(retools::current_job()->state());
        if (states.size() < 3) throw std::runtime_error("not yet");
        return "finally";
    });
    auto summary = w.work({.interval = 10ms, .max_jobs = 3});
    EXPECT_EQ(summary.failed, 2u);
    EXPECT_EQ(summary.succeeded, 1u);
    ASSERT_EQ(states.size(), 3u);
    EXPECT_EQ(states[0].value("retried", 0), 0);
    EXPECT_EQ(states[1].value("retried", 0), 1);
    EXPECT_EQ(states[2].value("retried", 0), 2);
    EXPECT_EQ(conn.command("LLEN", keys::failed).as_integer(), 0);
    EXPECT_EQ(conn.command("ZCARD", keys::delayed_all).as_integer(), 0);
}

TEST_F(WorkerTest, RetriesExhaustedGoToTheFailedList) {
    QueueManager qm{conn};
    qm.enqueue("tests.jobs:boom", json::object(), {.metadata = {{"retries", 1}, {"retry_backoff", 0.01}}});
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:boom", [](const json&) -> json { throw std::runtime_error("always"); });
    auto summary = w.work({.interval = 10ms, .max_jobs = 2});
    EXPECT_EQ(summary.failed, 2u);
    EXPECT_EQ(conn.command("LLEN", keys::failed).as_integer(), 1);
    EXPECT_EQ(conn.command("ZCARD", keys::delayed_all).as_integer(), 0);
}

TEST_F(WorkerTest, StoresResultsWhenAsked) {
    QueueManager qm{conn};
    std::string ok = qm.enqueue("tests.jobs:add", {{"a", 1}, {"b", 2}}, {.metadata = {{"result_ttl", 60}}});
    std::string bad = qm.enqueue("tests.jobs:boom", json::object(), {.metadata = {{"result_ttl", 60}}});
    std::string none = qm.enqueue("tests.jobs:add", {{"a", 1}, {"b", 1}});
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:add",
                   [](const json& kw) -> json { return kw["a"].get<int>() + kw["b"].get<int>(); });
    w.register_job("tests.jobs:boom", [](const json&) -> json { throw std::runtime_error("nope"); });
    w.work({.burst = true});
    // What QueueManager reads back.
    auto waited = qm.wait_for_result(ok, 1s);
    ASSERT_TRUE(waited.has_value());
    EXPECT_TRUE(waited->ok);
    EXPECT_EQ(waited->value, 3);
    auto r = *qm.get_result(ok);
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(r.value, 3);
    auto ttl = conn.command("TTL", keys::result(ok)).as_integer();
    EXPECT_GT(ttl, 50);
    EXPECT_LE(ttl, 60);
    auto f = *qm.get_result(bad);
    EXPECT_FALSE(f.ok);
    EXPECT_NE(f.error.find("nope"), std::string::npos);
    EXPECT_EQ(conn.command("EXISTS", keys::result(none)).as_integer(), 0);
}

TEST_F(WorkerTest, ThreadModeRunsJobsConcurrently) {
    QueueManager qm{conn};
    std::vector<json> args(4, json::object());
    qm.enqueue_many("tests.jobs:nap", args);
    std::atomic<int> running{0}, peak{0};
    Worker w{{"main"}, quiet({.concurrency = 4, .prefetch_window = 0ms})};
    w.register_job("tests.jobs:nap", [&](const json&) -> json {
        int now = ++running;
        int p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {}
        std::this_thread::sleep_for(200ms);
        --running;
        return nullptr;
    });
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(w.work({.burst = true}).succeeded, 4u);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 700ms);
    EXPECT_EQ(peak.load(), 4);
}

// Threads are woken by the expected drain time of the backlog; after many
// quick jobs, a slow one must still not hold up the jobs queued behind it
// while other threads sleep.
TEST_F(WorkerTest, ThreadModeJobsBehindASlowOneDoNotWaitForIt) {
    QueueManager qm{conn};
    Worker w{{"main"}, quiet({.concurrency = 4})};
    std::atomic<int> quick_done{0}, after_during_slow{0};
    std::atomic<bool> slow_running{false};
    w.register_job("tests.jobs:quick", [&](const json&) -> json {
        ++quick_done;
        return nullptr;
    });
    w.register_job("tests.jobs:slow", [&](const json&) -> json {
        slow_running = true;
        std::this_thread::sleep_for(600ms);
        slow_running = false;
        return nullptr;
    });
    w.register_job("tests.jobs:after", [&](const json&) -> json {
        // Taken together with the slow job, an "after" job may start a moment
        // before the slow one's first line runs: wait for it (briefly). One
        // stuck behind the slow job starts after it ended and never sees it.
        if (wait_until([&] { return slow_running.load(); }, 300ms)) ++after_during_slow;
        return nullptr;
    });
    qm.enqueue_many("tests.jobs:quick", std::vector<json>(300, json::object()));
    std::thread t([&] { w.work({.interval = 50ms}); });
    // Quick jobs first, so the worker knows jobs as quick; then the slow one and
    // those behind it, taken together while the worker is paused.
    EXPECT_TRUE(wait_until([&] { return quick_done == 300; }, 3s));
    w.pause();
    qm.enqueue("tests.jobs:slow", json::object());
    qm.enqueue_many("tests.jobs:after", std::vector<json>(3, json::object()));
    w.resume();
    EXPECT_TRUE(wait_until([&] { return conn.command("LLEN", "retools:queue:main").as_integer() == 0; }, 3s));
    std::this_thread::sleep_for(700ms);
    w.stop();
    t.join();
    EXPECT_EQ(after_during_slow.load(), 3);
}

TEST_F(WorkerTest, ForkModeRunsEachJobInAChildAndSurvivesCrashes) {
    QueueManager qm{conn};
    qm.enqueue("tests.jobs:pid", json::object());
    std::string crash = qm.enqueue("tests.jobs:crash", json::object());
    std::string quit = qm.enqueue("tests.jobs:exit", json::object());
    qm.enqueue("tests.jobs:pid", json::object());
    Worker w{{"main"}, quiet({.mode = ExecutionMode::fork})};
    w.register_job("tests.jobs:pid", [](const json&) -> json {
        retools::global_connection().command("RPUSH", "pids", static_cast<long long>(::getpid()));
        return nullptr;
    });
    w.register_job("tests.jobs:crash", [](const json&) -> json {
        ::signal(SIGSEGV, SIG_DFL);
        ::raise(SIGSEGV);
        return nullptr;
    });
    w.register_job("tests.jobs:exit", [](const json&) -> json { ::_exit(3); });
    auto summary = w.work({.burst = true});
    EXPECT_EQ(summary.succeeded, 2u);
    EXPECT_EQ(summary.failed, 2u);
    auto pids = conn.command("LRANGE", "pids", 0, -1).as_array();
    ASSERT_EQ(pids.size(), 2u);
    EXPECT_NE(std::stoll(pids[0].as_string()), ::getpid());
    EXPECT_NE(pids[0].as_string(), pids[1].as_string());
    auto failed = conn.command("LRANGE", keys::failed, 0, -1).as_array();
    ASSERT_EQ(failed.size(), 2u);
    auto f0 = retools::FailedJob::from_json(failed[0].as_string());
    auto f1 = retools::FailedJob::from_json(failed[1].as_string());
    EXPECT_NE(f0.payload.find(crash), std::string::npos);
    EXPECT_NE(f0.error.find("signal 11"), std::string::npos) << f0.error;
    EXPECT_NE(f1.payload.find(quit), std::string::npos);
    EXPECT_NE(f1.error.find("status 3"), std::string::npos) << f1.error;
}

TEST_F(WorkerTest, RegistryKeysWhileWorking) {
    QueueManager qm{conn};
    std::string id = qm.enqueue("tests.jobs:hold", json::object(), {.queue_name = "b"});
    std::atomic<bool> release{false}, inside{false};
    Worker w{{"a", "b"}, quiet()};
    w.register_job("tests.jobs:hold", [&](const json&) -> json {
        inside = true;
        while (!release) std::this_thread::sleep_for(1ms);
        return nullptr;
    });
    std::thread t([&] { w.work({.interval = 50ms}); });
    ASSERT_TRUE(wait_until([&] { return inside.load(); }));
    EXPECT_EQ(Worker::get_worker_ids(conn), std::vector<std::string>{w.id()});
    EXPECT_EQ(conn.command("GET", keys::worker_queues(w.id())).as_string(), "a,b");
    double started = conn.command("GET", keys::worker_started(w.id())).as_double();
    EXPECT_NEAR(started, retools::detail::unix_now(), 5.0);
    auto working = json::parse(conn.command("GET", keys::worker(w.id())).as_string());
    EXPECT_EQ(working.at("queue"), "retools:queue:b");
    EXPECT_EQ(working.at("payload").at("job_id"), id);
    EXPECT_NEAR(working.at("run_at").get<double>(), retools::detail::unix_now(), 5.0);
    // The job sits in the processing list while it runs.
    EXPECT_EQ(conn.command("LLEN", keys::processing(w.id(), "", false)).as_integer(), 1);

    auto workers = Worker::get_workers(conn);
    ASSERT_EQ(workers.size(), 1u);
    EXPECT_EQ(workers[0].id(), w.id());
    EXPECT_EQ(workers[0].queues(), (std::vector<std::string>{"a", "b"}));
    EXPECT_THROW(Worker::from_id("nobody:1:main", conn), retools::QueueError);

    // A second worker with the same id in this process is refused.
    Worker twin{{"a", "b"}, quiet()};
    EXPECT_THROW(twin.work({.burst = true}), retools::ConfigurationError);

    release = true;
    ASSERT_TRUE(wait_until([&] { return conn.command("EXISTS", keys::worker(w.id())).as_integer() == 0; }));
    w.stop();
    t.join();
    EXPECT_EQ(conn.command("SCARD", keys::workers).as_integer(), 0);
    EXPECT_EQ(conn.command("EXISTS", keys::worker_started(w.id()), keys::worker_queues(w.id())).as_integer(),
              0);
}

TEST_F(WorkerTest, PrunesDeadWorkersOfThisHostAndRequeuesTheirJobs) {
    // A worker process that died without cleaning up.
    auto dead = rt::ChildProcess::fork([] { return 0; });
    ASSERT_EQ(dead.exit_code(), 0);
    std::string dead_id = fmt::format("{}:{}:main", rt::host_name(), dead.pid());
    std::string other_host = "some-other-host:1:main";
    QueueManager qm{conn};
    std::string p1 = retools::detail::make_payload(qm, "j1", "tests.jobs:record", {{"tag", "orphan1"}});
    std::string p2 = retools::detail::make_payload(qm, "j2", "tests.jobs:record", {{"tag", "orphan2"}});
    for (const auto& id : {dead_id, other_host}) {
        conn.command("SADD", keys::workers, id);
        conn.command("SET", keys::worker_started(id), "1.5");
        conn.command("SET", keys::worker_queues(id), "main");
    }
    conn.command("RPUSH", keys::processing(dead_id, "", false), "main\n" + p1, "main\n" + p2);
    qm.enqueue("tests.jobs:record", {{"tag", "queued"}});

    Worker w{{"main"}, quiet()};
    EXPECT_EQ(w.prune_dead_workers(), 2u);
    EXPECT_EQ(Worker::get_worker_ids(conn),
              std::vector<std::string>{other_host});  // other hosts are left alone
    EXPECT_EQ(conn.command("EXISTS", keys::worker_started(dead_id), keys::processing(dead_id, "", false))
                  .as_integer(),
              0);
    // Back at the head, in their original order.
    auto q = conn.command("LRANGE", keys::queue("main", false), 0, -1).as_array();
    ASSERT_EQ(q.size(), 3u);
    EXPECT_EQ(q[0].as_string(), p1);
    EXPECT_EQ(q[1].as_string(), p2);

    // A processing list whose worker is not registered at all.
    conn.command("RPUSH", keys::processing("gone:42:main", "", false), "main\n" + p1);
    EXPECT_EQ(Worker::requeue_orphans(conn), 1u);
    EXPECT_EQ(conn.command("LLEN", keys::queue("main", false)).as_integer(), 4);

    // Start-up does the same.
    conn.command("RPUSH", keys::processing("gone:43:main", "", false), "main\n" + p2);
    w.register_job("tests.jobs:record", recorder(conn));
    EXPECT_EQ(w.work({.burst = true}).succeeded, 5u);
    EXPECT_EQ(records(conn, "out"), json({"orphan2", "orphan1", "orphan1", "orphan2", "queued"}));
}

TEST_F(WorkerTest, SigkilledWorkerLosesNothing) {
    QueueManager qm{conn};
    std::string id = qm.enqueue("tests.jobs:slow", json::object());
    qm.enqueue("tests.jobs:slow", json::object());
    auto job = [](const json&) -> json {
        auto c = retools::global_connection();
        c.command("INCR", "runs");
        std::this_thread::sleep_for(300ms);
        c.command("INCR", "completed");
        return nullptr;
    };
    auto child = rt::ChildProcess::fork([&] {
        retools::global_connection() = retools::Connection{rt::redis_url()};
        Worker w{{"main"}, {.handle_signals = false, .log = retools::WorkerLog::none}};
        w.register_job("tests.jobs:slow", job);
        w.work({.blocking = true});
        return 0;
    });
    ASSERT_TRUE(wait_until([&] { return conn.command("GET", "runs").as_optional_string() == "1"; }));
    child.signal(SIGKILL);
    EXPECT_EQ(child.exit_code(), -SIGKILL);
    EXPECT_EQ(
        conn.command("LLEN", keys::queue("main", false)).as_integer() +
            conn.command("LLEN", keys::processing(fmt::format("{}:{}:main", rt::host_name(), child.pid()), "", false))
                .as_integer(),
        2);

    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:slow", job);
    EXPECT_EQ(w.work({.burst = true}).succeeded, 2u);
    EXPECT_EQ(conn.command("GET", "runs").as_string(), "3");       // the killed run, then once more each
    EXPECT_EQ(conn.command("GET", "completed").as_string(), "2");  // each job completed exactly once
    EXPECT_EQ(conn.command("SCARD", keys::workers).as_integer(), 0);
    EXPECT_EQ(conn.command("LLEN", keys::failed).as_integer(), 0);
}

TEST_F(WorkerTest, MaxJobsAndPauseResume) {
    QueueManager qm{conn};
    for (int i = 0; i < 5; ++i) qm.enqueue("tests.jobs:record", {{"tag", std::to_string(i)}});
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:record", recorder(conn));
    EXPECT_EQ(w.work({.max_jobs = 2}).succeeded, 2u);
    EXPECT_EQ(conn.command("LLEN", keys::queue("main", false)).as_integer(), 3);
    EXPECT_EQ(records(conn, "out"), json({"0", "1"}));

    w.pause();
    std::thread t([&] { w.work({.interval = 10ms}); });
    std::this_thread::sleep_for(150ms);
    EXPECT_EQ(records(conn, "out").size(), 2u);  // paused: nothing taken
    w.resume();
    EXPECT_TRUE(wait_until([&] { return records(conn, "out").size() == 5; }));
    w.stop();
    t.join();
}

TEST_F(WorkerTest, RunsScheduledJobsWhenDue) {
    QueueManager qm{conn};
    auto t0 = std::chrono::steady_clock::now();
    qm.enqueue_in(150ms, "tests.jobs:record", {{"tag", "later"}});
    qm.enqueue("tests.jobs:record", {{"tag", "now"}});
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:record", recorder(conn));
    EXPECT_EQ(w.work({.interval = 20ms, .max_jobs = 2}).succeeded, 2u);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 150ms);
    EXPECT_EQ(records(conn, "out"), json({"now", "later"}));
    EXPECT_EQ(conn.command("ZCARD", keys::delayed_all).as_integer(), 0);
}

TEST_F(WorkerTest, FailedJobsCanBeRetriedThroughTheQueueManager) {
    QueueManager qm{conn};
    qm.enqueue("tests.jobs:flaky", {{"tag", "x"}});
    bool fail = true;
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:flaky", [&](const json& kw) -> json {
        if (fail) throw std::runtime_error("first time");
        conn.command("RPUSH", "out", kw.at("tag").get<std::string>());
        return nullptr;
    });
    EXPECT_EQ(w.work({.burst = true}).failed, 1u);
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_TRUE(qm.retry_failed(failed[0]));
    fail = false;
    EXPECT_EQ(w.work({.burst = true}).succeeded, 1u);
    EXPECT_EQ(records(conn, "out"), json({"x"}));
    EXPECT_EQ(qm.failed_count(), 0u);
}

TEST(WorkerOutage, SurvivesARedisRestartAndCarriesOn) {
    rt::RedisServer server;
    auto options = server.options();
    options.connect_timeout = 200ms;
    options.command_timeout = 500ms;
    retools::Connection c{options};
    Worker w{{"main"}, {.connection = c, .handle_signals = false, .log = retools::WorkerLog::none}};
    w.register_job("tests.jobs:record", recorder(c));
    std::thread t([&] { w.work({.interval = 200ms, .blocking = true}); });
    ASSERT_TRUE(wait_until([&] { return c.command("SCARD", keys::workers).as_integer() == 1; }));
    server.kill();
    std::this_thread::sleep_for(400ms);  // the worker's waits and fetches fail meanwhile
    server.start();
    rt::once_served([&] { return QueueManager{c}.enqueue("tests.jobs:record", {{"tag", "after restart"}}); });
    EXPECT_TRUE(wait_until([&] { return records(c, "out").size() == 1; }, 4s));
    w.stop();
    t.join();
}

TEST_F(WorkerTest, RunsJobsRegisteredStatically) {
    EXPECT_NE(retools::JobRegistry::global().find_job("tests.static:double"), nullptr);
    QueueManager qm{conn};
    qm.subscriber("job_postrun", "tests.static:keep");
    std::string id = qm.enqueue("tests.static:double", {{"x", 21}});
    Worker w{{"main"}, quiet()};  // nothing registered on the worker itself
    EXPECT_EQ(w.work({.burst = true}).succeeded, 1u);
    EXPECT_EQ(records(conn, "static"), json({id + "=42"}));
}

TEST_F(WorkerTest, BinaryGarbageInAQueueIsFiledNotFatal) {
    conn.command("RPUSH", keys::queue("main", false), std::string("\xff\xfe\x00garbage", 10));
    conn.command("RPUSH", keys::queue("main", false), "");
    QueueManager{conn}.enqueue("tests.jobs:record", {{"tag", "fine"}});
    Worker w{{"main"}, quiet()};
    w.register_job("tests.jobs:record", recorder(conn));
    auto summary = w.work({.burst = true});
    EXPECT_EQ(summary.failed, 2u);
    EXPECT_EQ(summary.succeeded, 1u);
    EXPECT_EQ(conn.command("LLEN", keys::failed).as_integer(), 2);
    auto second = retools::FailedJob::from_json(conn.command("LINDEX", keys::failed, 1).as_string());
    EXPECT_EQ(second.payload, "");
    EXPECT_EQ(conn.command("EXISTS", keys::processing(w.id(), "", false)).as_integer(), 0);
}
