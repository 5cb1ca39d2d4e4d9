// Unique and periodic jobs against a real Redis, with real worker processes:
// one job however many processes enqueue the same unique job at once; one
// run per due time of a periodic job however many workers promote it.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/queue.hpp>
#include <retools/worker.hpp>

#include "queue/keys.hpp"
#include "redis_test.hpp"
#include "util/clock.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using retools::QueueManager;
using retools::Worker;
namespace rt = retools::test;
namespace wf_keys = retools::detail::queue_keys;

namespace {

class Workflows : public rt::RedisTest {
protected:
    long long llen(const std::string& key) { return conn.command("LLEN", key).as_integer(); }
    retools::WorkerOptions quiet() {
        return {.connection = conn, .handle_signals = false, .log = retools::WorkerLog::none};
    }
    std::vector<json> queued(const std::string& queue = "main") {
        std::vector<json> out;
        for (const auto& r : conn.command("LRANGE", wf_keys::queue(queue, false), 0, -1).as_array())
            out.push_back(json::parse(r.view()));
        return out;
    }
};

double wf_unix(std::chrono::system_clock::time_point t) {
    return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// ---- unique jobs ----------------------------------------------------------------

TEST_F(Workflows, AUniqueJobEnqueuedAgainWhileItWaitsReturnsTheSameId) {
    QueueManager qm{conn};
    const std::string id = qm.enqueue("app:sync", {{"user", 42}}, {.unique_for = 10min});
    EXPECT_EQ(qm.enqueue("app:sync", {{"user", 42}}, {.unique_for = 10min}), id);
    EXPECT_EQ(llen("retools:queue:main"), 1);
    // The claim: the canonical key (job name, sorted kwargs), holding the id, with the TTL.
    const std::string claim = "retools:unique:main:app:sync {\"user\":42}";
    EXPECT_EQ(conn.command("GET", claim).as_optional_string(), id);
    const long long ttl = conn.command("PTTL", claim).as_integer();
    EXPECT_GT(ttl, 590000);
    EXPECT_LE(ttl, 600000);
    // Other kwargs are another job; kwargs in another order are the same one.
    const std::string other = qm.enqueue("app:sync", {{"user", 43}}, {.unique_for = 10min});
    EXPECT_NE(other, id);
    EXPECT_EQ(qm.enqueue("app:pair", {{"a", 1}, {"b", 2}}, {.unique_for = 1min}),
              qm.enqueue("app:pair", json::parse(R"({"b": 2, "a": 1})"), {.unique_for = 1min}));
    // An explicit key joins different kwargs.
    const std::string keyed = qm.enqueue("app:sync", {{"user", 42}, {"full", true}},
                                         {.unique_key = "sync-42", .unique_for = 10min});
    EXPECT_EQ(qm.enqueue("app:sync", {{"user", 42}}, {.unique_key = "sync-42", .unique_for = 10min}), keyed);
    EXPECT_EQ(llen("retools:queue:main"), 4);
    // The payload says which claim to release, and when.
    const json first = queued().front();
    EXPECT_EQ(first["job_id"], id);
    EXPECT_EQ(first["metadata"]["unique_claim"], claim);
    EXPECT_EQ(first["metadata"]["unique_until"], "start");
    // Plain enqueues of the same job are not affected.
    EXPECT_NE(qm.enqueue("app:sync", {{"user", 42}}), id);
}

TEST_F(Workflows, AQueueKeyOfTheWrongTypeLeavesNoClaim) {
    QueueManager qm{conn};
    conn.command("SET", "retools:queue:bad", "not a list");
    EXPECT_THROW(qm.enqueue("app:sync", {{"user", 1}}, {.queue_name = "bad", .unique_for = 1min}),
                 retools::ReplyError);
    const std::vector<json> two{{{"user", 1}}, {{"user", 2}}};
    EXPECT_THROW(qm.enqueue_many("app:sync", two, {.queue_name = "bad", .unique_for = 1min}),
                 retools::ReplyError);
    EXPECT_EQ(conn.command("KEYS", "retools:unique:*").as_array().size(), 0u);
}

TEST_F(Workflows, AUniqueClaimExpiresAfterUniqueFor) {
    QueueManager qm{conn};
    const std::string id = qm.enqueue("app:sync", {{"user", 1}}, {.unique_for = 150ms});
    EXPECT_EQ(qm.enqueue("app:sync", {{"user", 1}}, {.unique_for = 150ms}), id);
    std::this_thread::sleep_for(250ms);
    EXPECT_NE(qm.enqueue("app:sync", {{"user", 1}}, {.unique_for = 150ms}), id);
    EXPECT_EQ(llen("retools:queue:main"), 2);
}

TEST_F(Workflows, UniqueOptionsAreChecked) {
    QueueManager qm{conn};
    EXPECT_THROW(qm.enqueue("app:x", {}, {.unique_for = -1ms}), retools::ConfigurationError);
    EXPECT_THROW(qm.enqueue("app:x", {}, {.unique_key = "k"}), retools::ConfigurationError);
    EXPECT_THROW(qm.enqueue_in(1s, "app:x", {}, {.unique_for = 1s}), retools::ConfigurationError);
    std::vector<retools::JobSpec> specs{{"app:x", {}, {.unique_for = 1s}}};
    EXPECT_THROW(qm.enqueue_batch(specs), retools::ConfigurationError);
    EXPECT_EQ(llen("retools:queue:main"), 0);
}

TEST_F(Workflows, EnqueueManyGivesDuplicatesOneId) {
    QueueManager qm{conn};
    const std::vector<json> args{{{"n", 1}}, {{"n", 2}}, {{"n", 1}}, {{"n", 3}}, {{"n", 2}}};
    const auto ids = qm.enqueue_many("app:n", args, {.unique_for = 1min});
    ASSERT_EQ(ids.size(), 5u);
    EXPECT_EQ(ids[0], ids[2]);
    EXPECT_EQ(ids[1], ids[4]);
    EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 3u);
    EXPECT_EQ(llen("retools:queue:main"), 3);
    // Again: the same ids, nothing added; a new one joins.
    std::vector<json> more = args;
    more.push_back({{"n", 4}});
    const auto again = qm.enqueue_many("app:n", more, {.unique_for = 1min});
    EXPECT_EQ(std::vector<std::string>(again.begin(), again.begin() + 5), ids);
    EXPECT_EQ(llen("retools:queue:main"), 4);
    EXPECT_EQ(qm.enqueue("app:n", {{"n", 3}}, {.unique_for = 1min}), ids[3]);
}

TEST_F(Workflows, EightProcessesEnqueueingOneUniqueJobMakeOneJob) {
    constexpr int processes = 8, each = 1000;
    std::vector<rt::ChildProcess> children;
    for (int p = 0; p < processes; ++p)
        children.push_back(rt::ChildProcess::fork([] {
            retools::Connection c{rt::redis_url()};
            QueueManager qm{c};
            std::set<std::string> seen;
            for (int i = 0; i < each; ++i)
                seen.insert(qm.enqueue("app:sync", {{"user", 42}}, {.unique_for = 1min}));
            for (const auto& id : seen) c.command("SADD", "ids", id);
            return 0;
        }));
    for (auto& c : children) ASSERT_EQ(c.exit_code(std::chrono::seconds(60)), 0);
    EXPECT_EQ(llen("retools:queue:main"), 1);
    EXPECT_EQ(conn.command("SCARD", "ids").as_integer(), 1);
    // And it runs once.
    Worker w{{"main"}, quiet()};
    w.register_job("app:sync", [this](const json&) -> json {
        conn.command("INCR", "runs");
        return nullptr;
    });
    EXPECT_EQ(w.work({.burst = true}).succeeded, 1u);
    EXPECT_EQ(conn.command("GET", "runs").as_optional_string(), "1");
}

// A job that enqueues itself again while it runs, recording the id it got.
retools::JobFunction enqueue_self(const retools::Connection& conn, retools::UniqueUntil until) {
    return [conn, until](const json& kw) -> json {
        QueueManager qm{conn};
        std::string again = qm.enqueue("app:sync", kw, {.unique_for = 1min, .unique_until = until});
        conn.command("RPUSH", "inner", again);
        conn.command("RPUSH", "self", retools::current_job()->id());
        return nullptr;
    };
}

TEST_F(Workflows, UntilStartReleasesTheClaimWhenTheJobStarts) {
    QueueManager qm{conn};
    const std::string id = qm.enqueue("app:sync", {{"user", 7}}, {.unique_for = 1min});
    Worker w{{"main"}, quiet()};
    w.register_job("app:sync", enqueue_self(conn, retools::UniqueUntil::start));
    EXPECT_EQ(w.work({.max_jobs = 1}).succeeded, 1u);
    const std::string inner = conn.command("LINDEX", "inner", 0).as_string();
    EXPECT_NE(inner, id);  // running: a new one may wait
    EXPECT_EQ(llen("retools:queue:main"), 1);
    EXPECT_EQ(conn.command("GET", "retools:unique:main:app:sync {\"user\":7}").as_optional_string(), inner);
}

TEST_F(Workflows, UntilEndKeepsTheClaimWhileTheJobRuns) {
    QueueManager qm{conn};
    const auto end = retools::UniqueUntil::end;
    const std::string id = qm.enqueue("app:sync", {{"user", 7}}, {.unique_for = 1min, .unique_until = end});
    Worker w{{"main"}, quiet()};
    w.register_job("app:sync", enqueue_self(conn, end));
    EXPECT_EQ(w.work({.max_jobs = 1}).succeeded, 1u);
    EXPECT_EQ(conn.command("LINDEX", "inner", 0).as_string(), id);  // running: the same job
    EXPECT_EQ(llen("retools:queue:main"), 0);
    // Ended: released, so the next enqueue is a new job.
    const std::string claim = "retools:unique:main:app:sync {\"user\":7}";
    EXPECT_EQ(conn.command("EXISTS", claim).as_integer(), 0);
    EXPECT_NE(qm.enqueue("app:sync", {{"user", 7}}, {.unique_for = 1min, .unique_until = end}), id);
}

TEST_F(Workflows, AWorkerReleasesOnlyAClaimThatStillNamesItsJob) {
    QueueManager qm{conn};
    const std::string claim = "retools:unique:main:app:sync {\"user\":9}";
    qm.enqueue("app:sync", {{"user", 9}}, {.unique_for = 1min});
    conn.command("SET", claim, "another-job");  // expired and taken by a newer job meanwhile
    Worker w{{"main"}, quiet()};
    w.register_job("app:sync", [](const json&) -> json { return nullptr; });
    EXPECT_EQ(w.work({.burst = true}).succeeded, 1u);
    EXPECT_EQ(conn.command("GET", claim).as_optional_string(), "another-job");
}

// ---- periodic jobs --------------------------------------------------------------

TEST_F(Workflows, SchedulePeriodicIsAnUpsertById) {
    QueueManager qm{conn};
    EXPECT_TRUE(qm.schedule_periodic("nightly", "0 3 * * *", "app:report", {{"kind", "daily"}}));
    std::vector<retools::PeriodicJob> pj = qm.periodic_jobs();
    ASSERT_EQ(pj.size(), 1u);
    EXPECT_EQ(pj[0].id, "nightly");
    EXPECT_EQ(pj[0].schedule, "0 3 * * *");
    EXPECT_EQ(pj[0].job_name, "app:report");
    EXPECT_EQ(pj[0].queue, "main");
    EXPECT_EQ(pj[0].kwargs, (json{{"kind", "daily"}}));
    // Next 03:00 UTC, within a day.
    const auto next = pj[0].next_run;
    const double in = wf_unix(next) - retools::detail::unix_now();
    EXPECT_GT(in, 0);
    EXPECT_LE(in, 86400);
    EXPECT_EQ(static_cast<long long>(wf_unix(next)) % 86400, 3 * 3600);
    const std::string stored = conn.command("HGET", "retools:periodic", "nightly").as_string();

    // The same definition again, from any process: nothing changes.
    for (int i = 0; i < 3; ++i)
        EXPECT_FALSE(
            QueueManager{conn}.schedule_periodic("nightly", "0 3 * * *", "app:report", {{"kind", "daily"}}));
    EXPECT_EQ(conn.command("HGET", "retools:periodic", "nightly").as_string(), stored);
    EXPECT_EQ(qm.periodic_jobs()[0].next_run, next);
    // New kwargs, same schedule: redefined, next run kept.
    EXPECT_TRUE(qm.schedule_periodic("nightly", "0 3 * * *", "app:report", {{"kind", "full"}}));
    EXPECT_EQ(qm.periodic_jobs()[0].kwargs, (json{{"kind", "full"}}));
    EXPECT_EQ(qm.periodic_jobs()[0].next_run, next);
    // A new schedule takes effect at once.
    EXPECT_TRUE(qm.schedule_periodic("nightly", "30 4 * * *", "app:report", {{"kind", "full"}}));
    EXPECT_EQ(static_cast<long long>(wf_unix(qm.periodic_jobs()[0].next_run)) % 86400, 4 * 3600 + 1800);
    EXPECT_NE(qm.periodic_jobs()[0].next_run, next);
    EXPECT_EQ(conn.command("ZCARD", "retools:periodic:due").as_integer(), 1);
}

TEST_F(Workflows, BadPeriodicDefinitionsAreRefused) {
    QueueManager qm{conn};
    try {
        qm.schedule_periodic("bad", "0 25 * * *", "app:report");
        FAIL() << "no error";
    } catch (const retools::ConfigurationError& e) {
        EXPECT_NE(std::string(e.what()).find("'0 25 * * *': hour field '25'"), std::string::npos) << e.what();
    }
    EXPECT_THROW(qm.schedule_periodic("", "@hourly", "app:report"), retools::ConfigurationError);
    EXPECT_THROW(qm.schedule_periodic("u", "@hourly", "app:report", {}, {.unique_for = 1s}),
                 retools::ConfigurationError);
    EXPECT_THROW(qm.schedule_periodic("k", "@hourly", "app:report", json::array()), retools::QueueError);
    EXPECT_TRUE(qm.periodic_jobs().empty());
}

TEST_F(Workflows, RemovePeriodicForgetsTheJob) {
    QueueManager qm{conn};
    qm.schedule_periodic("a", "@hourly", "app:a");
    qm.schedule_periodic("b", "@daily", "app:b", {}, {.queue_name = "low"});
    ASSERT_EQ(qm.periodic_jobs().size(), 2u);
    EXPECT_EQ(qm.periodic_jobs()[0].id, "a");  // earliest first
    EXPECT_EQ(qm.periodic_jobs()[1].queue, "low");
    EXPECT_TRUE(qm.remove_periodic("a"));
    EXPECT_FALSE(qm.remove_periodic("a"));
    ASSERT_EQ(qm.periodic_jobs().size(), 1u);
    EXPECT_EQ(qm.periodic_jobs()[0].id, "b");
    EXPECT_TRUE(qm.remove_periodic("b"));
    EXPECT_EQ(conn.command("EXISTS", "retools:periodic", "retools:periodic:due").as_integer(), 0);
    // Removed: never enqueued again.
    EXPECT_EQ(qm.promote_periodic_jobs(std::chrono::system_clock::now() + 48h), 0u);
}

TEST_F(Workflows, EachDueTimeIsEnqueuedOnceAndMissedTimesOnce) {
    QueueManager qm{conn};
    qm.subscriber("job_failure", "app:on_failure");
    qm.schedule_periodic("tick", "@every 10s", "app:tick", {{"n", 1}}, {.metadata = {{"retries", 2}}});
    const auto due = qm.periodic_jobs().at(0).next_run;
    EXPECT_EQ(qm.promote_periodic_jobs(due - 1ms), 0u);
    EXPECT_EQ(llen("retools:queue:main"), 0);
    // Sixteen callers at once, at the due time: one job.
    std::vector<std::thread> threads;
    std::atomic<std::size_t> enqueued{0};
    for (int i = 0; i < 16; ++i)
        threads.emplace_back([&] { enqueued += QueueManager{conn}.promote_periodic_jobs(due + 2s); });
    for (auto& t : threads) t.join();
    EXPECT_EQ(enqueued.load(), 1u);
    EXPECT_EQ(llen("retools:queue:main"), 1);
    EXPECT_EQ(qm.periodic_jobs().at(0).next_run, due + 10s);
    // The job: a plain payload with the definition's parts and where it came from.
    const json job = queued().at(0);
    EXPECT_EQ(job["job"], "app:tick");
    EXPECT_EQ(job["kwargs"], (json{{"n", 1}}));
    EXPECT_EQ(job["events"], (json{{"job_failure", {"app:on_failure"}}}));
    EXPECT_EQ(job["metadata"]["retries"], 2);
    EXPECT_EQ(job["metadata"]["periodic_id"], "tick");
    EXPECT_EQ(job["metadata"]["periodic_due"].get<double>(), wf_unix(due));
    EXPECT_NO_THROW(
        retools::Job::from_payload(conn.command("LINDEX", "retools:queue:main", 0).view(), "main"));
    // A minute with no worker: one run, then the next due time after it.
    EXPECT_EQ(qm.promote_periodic_jobs(due + 75s), 1u);
    EXPECT_EQ(llen("retools:queue:main"), 2);
    EXPECT_EQ(qm.periodic_jobs().at(0).next_run, due + 80s);
}

// Runs two workers (threads) in a child process for `run_for`, recording
// each periodic run's due time in the hash "due" (due → runs).
rt::ChildProcess periodic_workers(std::chrono::milliseconds run_for) {
    return rt::ChildProcess::fork([run_for] {
        retools::Connection c{rt::redis_url()};
        auto tick = [c](const json&) -> json {
            const auto due = retools::current_job()->metadata().at("periodic_due").get<double>();
            c.command("HINCRBY", "due", fmt::format("{:.0f}", due), 1);
            return nullptr;
        };
        retools::WorkerOptions o{.connection = c, .handle_signals = false, .log = retools::WorkerLog::none};
        Worker a{{"main"}, o}, b{{"main", "other"}, o};
        a.register_job("app:tick", tick);
        b.register_job("app:tick", tick);
        std::thread ta([&] { a.work({.interval = 50ms, .blocking = true}); });
        std::thread tb([&] { b.work({.interval = 50ms, .blocking = true}); });
        std::this_thread::sleep_for(run_for);
        a.stop(true);
        b.stop(true);
        ta.join();
        tb.join();
        return 0;
    });
}

TEST_F(Workflows, SixWorkersInThreeProcessesRunAnEverySecondJobOncePerSecond) {
    QueueManager qm{conn};
    qm.schedule_periodic("tick", "@every 1s", "app:tick");
    const double start = retools::detail::unix_now();
    std::vector<rt::ChildProcess> children;
    for (int i = 0; i < 3; ++i) children.push_back(periodic_workers(8s));
    for (auto& c : children) ASSERT_EQ(c.exit_code(std::chrono::seconds(30)), 0);
    const double end = retools::detail::unix_now();
    std::map<long long, long long> runs;
    const auto h = conn.command("HGETALL", "due").as_array();
    for (std::size_t i = 0; i + 1 < h.size(); i += 2)
        runs[std::stoll(h[i].as_string())] = std::stoll(h[i + 1].as_string());
    for (const auto& [due, n] : runs) EXPECT_EQ(n, 1) << "due time " << due << " ran " << n << " times";
    // Every second of the ~8 s the workers ran, none missed (±1 at the edges).
    ASSERT_FALSE(runs.empty());
    EXPECT_GE(static_cast<double>(runs.size()), end - start - 2);
    EXPECT_LE(static_cast<double>(runs.size()), end - start + 1);
    long long previous = runs.begin()->first - 1;
    for (const auto& [due, n] : runs) EXPECT_EQ(due, ++previous) << "a due time was skipped";
    EXPECT_EQ(llen("retools:queue:main"), 0);
}

TEST_F(Workflows, APeriodicJobKeepsItsRhythmWhileWorkersAreKilled) {
    QueueManager qm{conn};
    qm.schedule_periodic("tick", "@every 1s", "app:tick");
    const double start = retools::detail::unix_now();
    std::vector<rt::ChildProcess> children;
    children.push_back(periodic_workers(7s));
    for (int round = 0; round < 3; ++round) {
        children.push_back(periodic_workers(7s));
        std::this_thread::sleep_for(1500ms);
        children.back().signal(SIGKILL);  // killed, in the middle of whatever it did
        EXPECT_EQ(children.back().exit_code(), -SIGKILL);
        std::this_thread::sleep_for(500ms);
    }
    for (auto& c : children) c.exit_code(std::chrono::seconds(30));
    const double end = retools::detail::unix_now();
    std::map<long long, long long> runs;
    const auto h = conn.command("HGETALL", "due").as_array();
    for (std::size_t i = 0; i + 1 < h.size(); i += 2)
        runs[std::stoll(h[i].as_string())] = std::stoll(h[i + 1].as_string());
    // Never twice for one due time (a killed worker's heartbeat outlives the
    // test, so nothing it held is recovered and run again meanwhile).
    for (const auto& [due, n] : runs) EXPECT_EQ(n, 1) << "due time " << due << " ran " << n << " times";
    EXPECT_GE(static_cast<double>(runs.size()), end - start - 3);
    EXPECT_EQ(conn.command("ZCARD", "retools:periodic:due").as_integer(), 1);
}

}  // namespace
