// The `retools` program against a Redis this test fills: queues, a live
// worker (a real retools::Worker thread), failed and scheduled jobs, worker
// counters and heartbeats (written here as the worker contract describes),
// and cache counters made by real cached calls.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/cache.hpp>
#include <retools/queue.hpp>
#include <retools/worker.hpp>

#include "queue/test_hooks.hpp"
#include "redis_test.hpp"
#include "run_program.hpp"
#include "system.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
namespace rt = retools::test;

namespace {

std::string utc(const char* format, double t) {
    std::time_t s = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&s, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, format, &tm);
    return buf;
}

std::string local_today() {
    std::time_t s = std::time(nullptr);
    std::tm tm{};
    localtime_r(&s, &tm);
    char buf[16];
    std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
    return buf;
}

// A payload written by hand, with spacing and a non-ASCII character no JSON
// writer of ours would produce: a retry must put back exactly these bytes.
const std::string odd_payload =
    R"({"job_id":"0123456789abcdef0123456789abcdef", "job": "tests.cli:resize",  "kwargs": {"image": "é.png"},)"
    R"( "events": {}, "metadata": {}, "state": {}})";

class Cli : public rt::RedisTest {
protected:
    void SetUp() override {
        rt::RedisTest::SetUp();
        now = rt::unix_now();
        // Queues: "high" with an enqueue time 30 s ago (latency), "main" with two
        // jobs, the first pushed as Python retools does (no enqueued_at: latency unknown).
        high_id = qm.enqueue("tests.cli:urgent", {{"n", 1}},
                             {.queue_name = "high", .metadata = {{"enqueued_at", now - 30}}});
        conn.command("RPUSH", "retools:queue:main",
                     retools::detail::make_payload(qm, "0123456789abcdef0123456789abcde0", "tests.cli:send",
                                                   {{"to", "a@example.com"}}));
        conn.command("SADD", "retools:queues", "main");
        qm.enqueue("tests.cli:send", {{"to", "b@example.com"}});
        // Failed: one with a hand-written payload, one more.
        qm.record_failure({odd_payload, "main", "ValueError: bad image", "host:1:main", now - 60});
        qm.record_failure({retools::detail::make_payload(qm, "feedfacefeedfacefeedfacefeedface",
                                                         "tests.cli:other", {{"x", 2}}),
                           "high", "TimeoutError", "host:1:high", now - 30});
        // Scheduled in an hour.
        scheduled_id = qm.enqueue_in(1h, "tests.cli:later", {{"n", 5}});
        // Worker counters (written by the worker: simulated here).
        conn.command("MSET", "retools:stat:processed", "42", "retools:stat:failed", "3",
                     "retools:stat:processed:" + utc("%Y-%m-%d", now), "7",
                     "retools:stat:failed:" + utc("%Y-%m-%d", now), "1");
        // Cache counters from real cached calls: bunny 10 = 1 miss + 2 hits, cat 1 = 1 miss.
        retools::CacheRegion::add_region("short_term", 60s);
        auto search = retools::cache_region(
            "short_term", "tests.search", [](const std::string& s, int n) { return s + std::to_string(n); });
        search("bunny", 10);
        search("bunny", 10);
        search("bunny", 10);
        search("cat", 1);
    }

    void TearDown() override { stop_worker(); }

    // A real worker thread, busy with one job until release().
    void start_worker() {
        worker = std::make_unique<retools::Worker>(
            std::vector<std::string>{"slow"},
            retools::WorkerOptions{.connection = conn, .handle_signals = false});
        worker->register_job("tests.cli:block", [this](const json&) -> json {
            while (!release) std::this_thread::sleep_for(5ms);
            return nullptr;
        });
        qm.enqueue("tests.cli:block", {{"seconds", 1}}, {.queue_name = "slow"});
        thread = std::thread([this] { worker->work({.interval = 100ms, .blocking = true}); });
        ASSERT_TRUE(rt::wait_until(
            [&] { return conn.command("EXISTS", "retools:worker:" + worker->id()).as_integer() == 1; }));
        // Its heartbeat, as the worker contract describes it.
        conn.command("SET", "retools:heartbeat:" + worker->id(),
                     json{{"id", worker->id()},
                          {"host", "testhost"},
                          {"pid", ::getpid()},
                          {"started", now - 100},
                          {"queues", {"slow"}},
                          {"busy", 1},
                          {"threads", 1},
                          {"mode", "thread"},
                          {"version", "0.2.0"},
                          {"beat", now - 2}}
                         .dump(),
                     "EX", 30);
    }
    void stop_worker() {
        release = true;
        if (worker) worker->stop();
        if (thread.joinable()) thread.join();
        worker.reset();
    }

    rt::ProgramResult run(std::vector<std::string> args) {
        args.insert(args.begin(), {RETOOLS_TOOL_PROGRAM, "--url", rt::redis_url()});
        return rt::run_program(args);
    }
    json run_json(std::vector<std::string> args) {
        args.push_back("--json");
        auto r = run(args);
        EXPECT_EQ(r.code, 0) << r.err;
        json j = json::parse(r.out, nullptr, false);
        EXPECT_FALSE(j.is_discarded()) << r.out;
        return j;
    }
    std::vector<std::string> list(const std::string& key) {
        std::vector<std::string> out;
        for (const auto& r : conn.command("LRANGE", key, 0, -1).as_array()) out.push_back(r.as_string());
        return out;
    }

    retools::QueueManager qm{conn};
    double now = 0;
    std::string high_id, scheduled_id;
    std::unique_ptr<retools::Worker> worker;
    std::thread thread;
    std::atomic<bool> release{false};
};

bool has_line(const std::string& text, const std::vector<std::string>& words) {
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
        std::size_t pos = 0;
        bool all = true;
        for (const auto& w : words) {
            pos = line.find(w, pos);
            if (pos == std::string::npos) {
                all = false;
                break;
            }
            pos += w.size();
        }
        if (all) return true;
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return false;
}

}  // namespace

TEST_F(Cli, InfoShowsQueuesWorkersCountersAndCounts) {
    start_worker();
    auto r = run({"info"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has_line(r.out, {"Redis", conn.options().describe()})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"42 processed, 3 failed (today: 7 processed, 1 failed)"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"Failed", "2 in the failed list"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"Scheduled", "1 waiting"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"Workers", "1 live, 1 busy"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"QUEUE", "LENGTH", "LATENCY", "NEXT JOB"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"high", "1", "3", "s", "tests.cli:urgent"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"main", "2", "-", "tests.cli:send"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {worker->id(), "testhost", std::to_string(::getpid()), "slow",
                                 "tests.cli:block (slow)", "ago"}))
        << r.out;

    json j = run_json({"info"});
    EXPECT_EQ(j["server"], conn.options().describe());
    EXPECT_EQ(j["counters"],
              (json{{"processed", 42}, {"failed", 3}, {"processed_today", 7}, {"failed_today", 1}}));
    EXPECT_EQ(j["failed_count"], 2);
    EXPECT_EQ(j["scheduled_count"], 1);
    EXPECT_EQ(j["busy_workers"], 1);
    ASSERT_EQ(j["queues"].size(), 3u);  // high, main, slow (now empty)
    EXPECT_EQ(j["queues"][0]["name"], "high");
    EXPECT_EQ(j["queues"][0]["length"], 1);
    EXPECT_EQ(j["queues"][1]["name"], "main");
    EXPECT_EQ(j["queues"][1]["length"], 2);
    EXPECT_TRUE(j["queues"][1]["latency"].is_null());  // no enqueue time in its head
    EXPECT_EQ(j["queues"][2]["name"], "slow");
    EXPECT_EQ(j["queues"][2]["latency"], 0.0);  // empty
    ASSERT_EQ(j["workers"].size(), 1u);
    EXPECT_EQ(j["workers"][0]["id"], worker->id());
    EXPECT_EQ(j["workers"][0]["current"]["job"], "tests.cli:block");
}

TEST_F(Cli, QueuesTableAndJson) {
    auto r = run({"queues"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has_line(r.out, {"QUEUE", "LENGTH", "LATENCY", "NEXT JOB"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"high", "1", "s", "tests.cli:urgent"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"main", "2", "-", "tests.cli:send"})) << r.out;

    json j = run_json({"queues"});
    ASSERT_EQ(j.size(), 2u);
    EXPECT_EQ(j[0]["name"], "high");
    EXPECT_EQ(j[0]["length"], 1);
    double latency = j[0]["latency"].get<double>();
    EXPECT_GE(latency, 30.0);
    EXPECT_LT(latency, 60.0);
    ASSERT_EQ(j[0]["jobs"].size(), 1u);
    EXPECT_EQ(j[0]["jobs"][0]["job_id"], high_id);
    EXPECT_EQ(j[0]["jobs"][0]["job"], "tests.cli:urgent");
    EXPECT_EQ(j[0]["jobs"][0]["kwargs"], (json{{"n", 1}}));
    EXPECT_EQ(j[1]["name"], "main");
    EXPECT_EQ(j[1]["length"], 2);
    EXPECT_TRUE(j[1]["latency"].is_null());
    EXPECT_EQ(j[1]["jobs"][0]["kwargs"], (json{{"to", "a@example.com"}}));
}

TEST_F(Cli, WorkersTableAndJson) {
    start_worker();
    conn.command("SADD", "retools:workers", "pyhost:77:main");  // a Python worker: registered, no heartbeat
    conn.command("SET", "retools:worker:pyhost:77:main:started", "1700000000.5");
    auto r = run({"workers"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(
        has_line(r.out, {"WORKER", "HOST", "PID", "STARTED", "QUEUES", "CURRENT JOB", "FOR", "HEARTBEAT"}))
        << r.out;
    EXPECT_TRUE(has_line(r.out, {worker->id(), "testhost", std::to_string(::getpid()), "slow",
                                 "tests.cli:block (slow)", "s ago"}))
        << r.out;
    EXPECT_TRUE(
        has_line(r.out, {"pyhost:77:main", "pyhost", "77", "2023-11-14 22:13:20", "main", "-", "-", "-"}))
        << r.out;

    json j = run_json({"workers"});
    ASSERT_EQ(j.size(), 2u);
    const json& py = j[0]["id"] == "pyhost:77:main" ? j[0] : j[1];
    const json& w = j[0]["id"] == "pyhost:77:main" ? j[1] : j[0];
    EXPECT_EQ(w["id"], worker->id());
    EXPECT_EQ(w["kind"], "retools");
    EXPECT_EQ(w["host"], "testhost");
    EXPECT_EQ(w["pid"], ::getpid());
    EXPECT_EQ(w["queues"], (json{"slow"}));
    EXPECT_DOUBLE_EQ(w["started"].get<double>(), now - 100);
    EXPECT_GE(w["heartbeat_age"].get<double>(), 2.0);
    EXPECT_LT(w["heartbeat_age"].get<double>(), 30.0);
    EXPECT_EQ(w["busy"], 1);
    EXPECT_EQ(w["threads"], 1);
    EXPECT_EQ(w["mode"], "thread");
    EXPECT_EQ(w["version"], "0.2.0");
    EXPECT_EQ(w["processing"], 1);
    EXPECT_EQ(w["current"]["queue"], "slow");
    EXPECT_EQ(w["current"]["job"], "tests.cli:block");
    EXPECT_EQ(w["current"]["kwargs"], (json{{"seconds", 1}}));
    EXPECT_GE(w["current"]["running_for"].get<double>(), 0.0);
    EXPECT_EQ(py["kind"], "registered");
    EXPECT_EQ(py["host"], "pyhost");
    EXPECT_EQ(py["pid"], 77);
    EXPECT_EQ(py["queues"], (json{"main"}));
    EXPECT_EQ(py["started"], 1700000000.5);
    EXPECT_TRUE(py["heartbeat_age"].is_null());
    EXPECT_TRUE(py["current"].is_null());
    EXPECT_EQ(py["busy"], 0);
}

TEST_F(Cli, FailedListAndShow) {
    auto r = run({"failed"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has_line(r.out, {"#", "FAILED AT", "QUEUE", "JOB", "JOB ID", "ERROR"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"0", utc("%Y-%m-%d %H:%M:%S", now - 60), "main", "tests.cli:resize",
                                 "0123456789abcdef0123456789abcdef", "ValueError: bad image"}))
        << r.out;
    EXPECT_TRUE(has_line(r.out, {"1", "high", "tests.cli:other", "feedface", "TimeoutError"})) << r.out;
    EXPECT_EQ(run({"failed", "list"}).out, r.out);

    json j = run_json({"failed", "list"});
    ASSERT_EQ(j.size(), 2u);
    EXPECT_EQ(j[0]["index"], 0);
    EXPECT_EQ(j[0]["job"], "tests.cli:resize");
    EXPECT_EQ(j[0]["job_id"], "0123456789abcdef0123456789abcdef");
    EXPECT_EQ(j[0]["queue"], "main");
    EXPECT_EQ(j[0]["error"], "ValueError: bad image");
    EXPECT_EQ(j[0]["worker"], "host:1:main");
    EXPECT_DOUBLE_EQ(j[0]["failed_at"].get<double>(), now - 60);
    EXPECT_EQ(j[0]["payload"], odd_payload);
    EXPECT_EQ(j[1]["job"], "tests.cli:other");

    auto show = run({"failed", "show", "0"});
    ASSERT_EQ(show.code, 0) << show.err;
    EXPECT_TRUE(has_line(show.out, {"error", "ValueError: bad image"})) << show.out;
    EXPECT_TRUE(has_line(show.out, {"worker", "host:1:main"})) << show.out;
    EXPECT_TRUE(has_line(show.out, {"\"image\": \"é.png\""})) << show.out;
    json one = run_json({"failed", "show", "1"});
    EXPECT_EQ(one["job"], "tests.cli:other");
    EXPECT_EQ(one["error"], "TimeoutError");

    auto missing = run({"failed", "show", "5"});
    EXPECT_EQ(missing.code, 1);
    EXPECT_NE(missing.err.find("no failed job 5 (the failed list holds 2)"), std::string::npos)
        << missing.err;
}

TEST_F(Cli, FailedRetryMovesTheExactPayloadBack) {
    conn.command("DEL", "retools:queue:main");
    auto r = run({"failed", "retry", "0"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has_line(r.out, {"Retried tests.cli:resize 0123456789abcdef0123456789abcdef on queue main"}))
        << r.out;
    EXPECT_EQ(list("retools:queue:main"), std::vector<std::string>{odd_payload});
    ASSERT_EQ(qm.failed_count(), 1u);
    EXPECT_EQ(qm.failed_jobs()[0].error, "TimeoutError");

    json j = run_json({"failed", "retry", "0"});
    EXPECT_EQ(j["retried"], true);
    EXPECT_EQ(j["job"], "tests.cli:other");
    EXPECT_EQ(j["queue"], "high");
    EXPECT_EQ(qm.failed_count(), 0u);
    EXPECT_EQ(qm.queue_length("high"), 2u);

    auto gone = run({"failed", "retry", "0"});
    EXPECT_EQ(gone.code, 1);
    EXPECT_NE(gone.err.find("no failed job 0"), std::string::npos) << gone.err;
}

TEST_F(Cli, DestructiveFailedCommandsNeedYesWithoutATerminal) {
    for (auto args : std::vector<std::vector<std::string>>{
             {"failed", "remove", "0"}, {"failed", "clear"}, {"failed", "retry-all"}}) {
        auto r = run(args);
        EXPECT_EQ(r.code, 2) << args[1];
        EXPECT_NE(r.err.find("without --yes (stdin is not a terminal)"), std::string::npos) << r.err;
    }
    EXPECT_EQ(qm.failed_count(), 2u);  // nothing changed

    auto removed = run({"failed", "remove", "1", "--yes"});
    ASSERT_EQ(removed.code, 0) << removed.err;
    EXPECT_TRUE(has_line(removed.out, {"Removed tests.cli:other feedfacefeedfacefeedfacefeedface"}))
        << removed.out;
    ASSERT_EQ(qm.failed_count(), 1u);
    EXPECT_EQ(qm.failed_jobs()[0].payload, odd_payload);

    qm.record_failure({retools::detail::make_payload(qm, "aa", "tests.cli:x", {}), "main", "e", "w", 0});
    json all = run_json({"failed", "retry-all", "--yes"});
    EXPECT_EQ(all["retried"], 2);
    EXPECT_EQ(qm.failed_count(), 0u);
    qm.record_failure({retools::detail::make_payload(qm, "bb", "tests.cli:x", {}), "main", "e", "w", 0});
    auto cleared = run({"failed", "clear", "--yes"});
    ASSERT_EQ(cleared.code, 0) << cleared.err;
    EXPECT_TRUE(has_line(cleared.out, {"Removed 1 failed jobs"})) << cleared.out;
    EXPECT_EQ(conn.command("EXISTS", "retools:failed").as_integer(), 0);
}

TEST_F(Cli, DestructiveCommandsAskOnATerminal) {
    if (::access("/usr/bin/script", X_OK) != 0) GTEST_SKIP() << "/usr/bin/script (util-linux) is missing";
    // script(1) runs the command on a pseudo-terminal fed from this pipe.
    auto on_tty = [&](const std::string& answer, const std::string& args) {
        return rt::run_program(
            {"/bin/sh", "-c",
             fmt::format("printf '{}\\n' | /usr/bin/script -qec '{} --url {} {}' /dev/null", answer,
                         RETOOLS_TOOL_PROGRAM, rt::redis_url(), args)});
    };
    auto no = on_tty("n", "failed clear");
    EXPECT_EQ(no.code, 1) << no.out << no.err;
    EXPECT_NE(no.out.find("Delete all 2 failed jobs? [y/N]"), std::string::npos) << no.out;
    EXPECT_NE(no.out.find("cancelled"), std::string::npos) << no.out;
    EXPECT_EQ(qm.failed_count(), 2u);
    auto yes = on_tty("y", "failed remove 1");
    EXPECT_EQ(yes.code, 0) << yes.out << yes.err;
    EXPECT_NE(yes.out.find("Remove failed job 1 (tests.cli:other)? [y/N]"), std::string::npos) << yes.out;
    EXPECT_EQ(qm.failed_count(), 1u);
}

TEST_F(Cli, PeriodicListsSchedulesWithTheirNextRun) {
    auto none = run({"periodic"});
    ASSERT_EQ(none.code, 0) << none.err;
    EXPECT_NE(none.out.find("(no periodic jobs)"), std::string::npos) << none.out;
    qm.schedule_periodic("nightly", "0 3 * * *", "tests.cli:report", {{"kind", "daily"}});
    qm.schedule_periodic("poll", "@every 1h", "tests.cli:poll", {}, {.queue_name = "high"});
    auto next_of = [&](const std::string& id) {
        for (const auto& p : qm.periodic_jobs())
            if (p.id == id) return std::chrono::duration<double>(p.next_run.time_since_epoch()).count();
        return 0.0;
    };
    const double nightly = next_of("nightly"), poll = next_of("poll");
    auto r = run({"periodic"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has_line(r.out, {"ID", "SCHEDULE", "JOB", "QUEUE", "NEXT RUN", "IN", "KWARGS"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"nightly", "0 3 * * *", "tests.cli:report", "main",
                                 utc("%Y-%m-%d 03:00", nightly), R"({"kind":"daily"})"}))
        << r.out;
    EXPECT_TRUE(has_line(r.out, {"poll", "@every 1h", "tests.cli:poll", "high", utc("%Y-%m-%d %H:00", poll)}))
        << r.out;
    json j = run_json({"periodic", "list"});
    ASSERT_EQ(j.size(), 2u);
    const json& n = j[0]["id"] == "nightly" ? j[0] : j[1];  // earliest first: 03:00 may be the next hour
    EXPECT_EQ(n["id"], "nightly");
    EXPECT_EQ(n["schedule"], "0 3 * * *");
    EXPECT_EQ(n["job"], "tests.cli:report");
    EXPECT_EQ(n["queue"], "main");
    EXPECT_EQ(n["kwargs"], (json{{"kind", "daily"}}));
    EXPECT_EQ(n["next_run"].get<double>(), nightly);
    EXPECT_LE(j[0]["next_run"].get<double>(), j[1]["next_run"].get<double>());
    EXPECT_EQ(run({"periodic", "remove"}).code, 2);
}

TEST_F(Cli, ScheduledListAndCancel) {
    auto r = run({"scheduled"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has_line(r.out, {"JOB ID", "JOB", "QUEUE", "DUE", "IN", "KWARGS"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {scheduled_id, "tests.cli:later", "main", utc("%Y-%m-%d %H:", now + 3600),
                                 "59m", R"({"n":5})"}))
        << r.out;
    json j = run_json({"scheduled", "list"});
    ASSERT_EQ(j.size(), 1u);
    EXPECT_EQ(j[0]["job_id"], scheduled_id);
    EXPECT_EQ(j[0]["job"], "tests.cli:later");
    EXPECT_EQ(j[0]["queue"], "main");
    EXPECT_EQ(j[0]["kwargs"], (json{{"n", 5}}));
    EXPECT_NEAR(j[0]["due"].get<double>(), now + 3600, 5);

    EXPECT_EQ(run({"scheduled", "cancel", scheduled_id}).code, 2);  // no --yes, no terminal
    EXPECT_EQ(qm.scheduled_jobs().size(), 1u);
    json c = run_json({"scheduled", "cancel", scheduled_id, "--yes"});
    EXPECT_EQ(c, (json{{"job_id", scheduled_id}, {"cancelled", true}}));
    EXPECT_TRUE(qm.scheduled_jobs().empty());
    auto again = run({"scheduled", "cancel", scheduled_id, "--yes"});
    EXPECT_EQ(again.code, 1);
    EXPECT_NE(again.err.find("no scheduled job " + scheduled_id), std::string::npos) << again.err;
}

TEST_F(Cli, EnqueuePutsTheJobOnItsQueue) {
    auto r = run(
        {"enqueue", "tests.cli:report", "--kwargs", R"({"month": 11, "name": "x"})", "--queue", "reports"});
    ASSERT_EQ(r.code, 0) << r.err;
    std::string id = r.out.substr(0, r.out.find('\n'));
    EXPECT_EQ(id.size(), 32u) << r.out;
    auto jobs = qm.get_jobs("reports");
    ASSERT_EQ(jobs.size(), 1u);
    EXPECT_EQ(jobs[0].id(), id);
    EXPECT_EQ(jobs[0].name(), "tests.cli:report");
    EXPECT_EQ(jobs[0].kwargs(), (json{{"month", 11}, {"name", "x"}}));

    json j = run_json({"enqueue", "tests.cli:ping"});
    EXPECT_EQ(j["job"], "tests.cli:ping");
    EXPECT_EQ(j["queue"], "main");
    EXPECT_EQ(qm.get_job(j["job_id"].get<std::string>(), "main").kwargs(), json::object());

    for (auto bad : {"[1, 2]", "{nope", "3"}) {
        auto b = run({"enqueue", "tests.cli:x", "--kwargs", bad});
        EXPECT_EQ(b.code, 2) << bad;
        EXPECT_NE(b.err.find("--kwargs must be a JSON object"), std::string::npos) << b.err;
    }
    auto q = run({"enqueue", "tests.cli:x", "--queue", "a:b"});
    EXPECT_EQ(q.code, 1);
    EXPECT_NE(q.err.find(R"(queue name "a:b")"), std::string::npos) << q.err;
}

TEST_F(Cli, StatsAndRegionsFromRealCachedCalls) {
    retools::CacheStats bunny = retools::cache_stats("short_term", "tests.search", "bunny 10");
    ASSERT_EQ(bunny.hits, 2);
    ASSERT_EQ(bunny.misses, 1);
    auto r = run({"stats", "short_term"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has_line(r.out, {"Region short_term,", local_today()})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"Total 2 hits, 2 misses, hit ratio 50.0%"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"NAMESPACE", "KEY", "HITS", "MISSES", "CALLS", "HIT RATIO"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"tests.search", "bunny 10", "2", "1", "3", "66.7%"})) << r.out;
    EXPECT_TRUE(has_line(r.out, {"tests.search", "cat 1", "0", "1", "1", "0.0%"})) << r.out;
    EXPECT_LT(r.out.find("bunny 10"), r.out.find("cat 1"));  // most calls first

    json j = run_json({"stats", "short_term", "tests.search", "--days", "3"});
    EXPECT_EQ(j["region"], "short_term");
    ASSERT_EQ(j["dates"].size(), 3u);
    EXPECT_EQ(j["dates"][0], local_today());
    EXPECT_EQ(j["hits"], 2);
    EXPECT_EQ(j["misses"], 2);
    EXPECT_EQ(j["calls"], 4);
    EXPECT_DOUBLE_EQ(j["hit_ratio"].get<double>(), 0.5);
    ASSERT_EQ(j["namespaces"].size(), 1u);
    const json& ns = j["namespaces"][0];
    EXPECT_EQ(ns["namespace"], "tests.search");
    ASSERT_EQ(ns["keys"].size(), 2u);
    EXPECT_EQ(
        ns["keys"][0],
        (json{{"key", "bunny 10"}, {"hits", 2}, {"misses", 1}, {"calls", 3}, {"hit_ratio", 2.0 / 3.0}}));
    EXPECT_EQ(ns["keys"][1]["key"], "cat 1");

    json old = run_json({"stats", "short_term", "--date", "2001-02-03"});
    EXPECT_EQ(old["dates"], (json{"2001-02-03"}));
    EXPECT_EQ(old["calls"], 0);

    auto reg = run({"regions"});
    ASSERT_EQ(reg.code, 0) << reg.err;
    EXPECT_TRUE(has_line(reg.out, {"REGION", "NAMESPACES", "HITS TODAY", "MISSES TODAY", "HIT RATIO"}))
        << reg.out;
    EXPECT_TRUE(has_line(reg.out, {"short_term", "1", "2", "2", "50.0%"})) << reg.out;
    json regions = run_json({"regions"});
    EXPECT_EQ(regions, (json{{{"region", "short_term"},
                              {"namespaces", 1},
                              {"hits", 2},
                              {"misses", 2},
                              {"calls", 4},
                              {"hit_ratio", 0.5}}}));
}

TEST_F(Cli, BadArgumentsPrintUsageAndExit2) {
    std::vector<std::vector<std::string>> cases = {
        {},
        {"frobnicate"},
        {"info", "extra"},
        {"queues", "--bogus"},
        {"failed", "show"},
        {"failed", "show", "x"},
        {"failed", "explode"},
        {"scheduled", "cancel"},
        {"enqueue"},
        {"enqueue", "a:b", "--kwargs"},
        {"stats"},
        {"stats", "r", "--date", "2024-13-01"},
        {"stats", "r", "--days", "0"},
        {"info", "--kwargs", "{}"},
        {"web", "--listen", "nope"},
        {"web", "--listen", "0.0.0.0:9181"},  // not loopback, no token
    };
    for (const auto& args : cases) {
        auto r = run(args);
        EXPECT_EQ(r.code, 2) << fmt::format("{}", fmt::join(args, " ")) << "\n" << r.err;
        EXPECT_NE(r.err.find("usage: retools"), std::string::npos) << r.err;
        EXPECT_EQ(r.out, "");
    }
    auto help = run({"--help"});
    EXPECT_EQ(help.code, 0);
    EXPECT_NE(help.out.find("usage: retools"), std::string::npos);
}

TEST_F(Cli, RuntimeErrorsExit1WithoutThePassword) {
    int port = rt::free_port();
    auto r = rt::run_program(
        {RETOOLS_TOOL_PROGRAM, "--url", fmt::format("redis://:s3cr3t-pw@127.0.0.1:{}/0", port), "info"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find(fmt::format("127.0.0.1:{}", port)), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("s3cr3t-pw"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("usage:"), std::string::npos) << r.err;
    // REDIS_URL is used when --url is not given.
    auto env = rt::run_program({RETOOLS_TOOL_PROGRAM, "queues", "--json"}, {{"REDIS_URL", rt::redis_url()}});
    EXPECT_EQ(env.code, 0) << env.err;
    EXPECT_EQ(json::parse(env.out).size(), 2u);
}

TEST_F(Cli, ControlCharactersInJobNamesDoNotReachTheTerminal) {
    qm.enqueue("evil\x1b]0;owned\x07:job", {}, {.queue_name = "evil"});
    auto r = run({"queues"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
    EXPECT_TRUE(has_line(r.out, {"evil", "1", "evil\\x1b]0;owned\\x07:job"})) << r.out;
}

TEST_F(Cli, PeekPayloadsAndStoredRegions) {
    // The library functions the tool reads with.
    EXPECT_EQ(qm.peek_payloads("main", 1).size(), 1u);
    EXPECT_EQ(qm.peek_payloads("main", 5), list("retools:queue:main"));
    EXPECT_TRUE(qm.peek_payloads("main", 0).empty());
    EXPECT_TRUE(qm.peek_payloads("nothing", 3).empty());
    conn.command("SADD", "retools:regions", "a_region");
    EXPECT_EQ(retools::stored_regions(conn), (std::vector<std::string>{"a_region", "short_term"}));
}
