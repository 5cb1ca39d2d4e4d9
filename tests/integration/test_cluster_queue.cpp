// The job queue and the worker on a real 3-master Redis Cluster: the cluster
// key layout (a queue, its processing lists and its delayed set under the
// queue's hash tag), enqueues, scheduled jobs, retries, the failed list,
// results, priority order across queues in different slots, queues spread
// over every master, recovery of a SIGKILLed worker process, and a worker
// draining jobs while callers use the cache and slots move.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/retools.hpp>

#include "cache/keys.hpp"
#include "client/cluster.hpp"
#include "cluster_test.hpp"
#include "util/sha1.hpp"
#include "process.hpp"
#include "queue/keys.hpp"
#include "queue/test_hooks.hpp"
#include "redis_cluster.hpp"
#include "run_program.hpp"
#include "util/sha1.hpp"
#include "wait.hpp"
#include "worker/liveness.hpp"

namespace rt = retools::test;
using namespace std::chrono_literals;
using nlohmann::json;
using retools::Connection;
using retools::QueueManager;
using retools::Reply;
using retools::Worker;
using retools::WorkerOptions;
using retools::detail::key_slot;
namespace keys = retools::detail::queue_keys;
using rt::wait_until;

namespace {

class ClusterQueueTest : public rt::ClusterTestBase {
protected:
    WorkerOptions quiet(WorkerOptions o = {}) {
        o.connection = conn;
        o.handle_signals = false;
        o.log = std::getenv("CQ_LOG") ? retools::WorkerLog::failures : retools::WorkerLog::none;
        o.heartbeat_interval = 100ms;
        o.heartbeat_timeout = 600ms;
        return o;
    }
    long long llen(const std::string& key) { return conn.command("LLEN", key).as_integer(); }
    bool exists(const std::string& key) { return conn.command("EXISTS", key).as_integer() == 1; }
    // Keys of every master matching `pattern` (SCAN on a cluster sees one node).
    std::vector<std::string> keys_matching(const std::string& pattern) {
        std::vector<std::string> out;
        for (int port : cluster().master_ports())
            for (const Reply& k : rt::RedisCluster::direct(port).command("KEYS", pattern).as_array())
                out.push_back(k.as_string());
        return out;
    }
    // Records the order of runs in the list "ran" (its own slot).
    static retools::JobFunction record(const Connection& c) {
        return [c](const json& kw) -> json {
            c.command("RPUSH", "ran", kw.at("tag").get<std::string>());
            return nullptr;
        };
    }
    std::vector<std::string> ran() {
        std::vector<std::string> out;
        for (const Reply& r : conn.command("LRANGE", "ran", 0, -1).as_array()) out.push_back(r.as_string());
        return out;
    }
};

}  // namespace

TEST_F(ClusterQueueTest, KeyLayoutTagsTheQueueAndKeepsTheOriginalOnASingleNode) {
    EXPECT_EQ(keys::queue("main", false), "retools:queue:main");
    EXPECT_EQ(keys::queue("main", true), "retools:queue:{main}");
    EXPECT_EQ(keys::processing("h:1:main", "main", false), "retools:processing:h:1:main");
    EXPECT_EQ(keys::processing("h:1:main", "main", true), "retools:processing:{main}:h:1:main");
    EXPECT_EQ(keys::delayed("main", false), "retools:delayed");
    EXPECT_EQ(keys::delayed("main", true), "retools:delayed:{main}");
    const auto slot = key_slot(keys::queue("main", true));
    EXPECT_EQ(key_slot(keys::processing("h:1:main", "main", true)), slot);
    EXPECT_EQ(key_slot(keys::delayed("main", true)), slot);
}

TEST_F(ClusterQueueTest, EnqueueEnqueueManyAndBatchWriteTheClusterLayout) {
    QueueManager qm{conn};
    std::string id = qm.enqueue("tests.cq:record", {{"tag", "one"}});
    std::vector<json> many{{{"tag", "m1"}}, {{"tag", "m2"}}, {{"tag", "m3"}}};
    auto ids = qm.enqueue_many("tests.cq:record", many, {.queue_name = "bulk"});
    std::vector<retools::JobSpec> batch{{"tests.cq:record", {{"tag", "b1"}}, {.queue_name = "x"}},
                                        {"tests.cq:record", {{"tag", "b2"}}, {.queue_name = "y"}}};
    auto batch_ids = qm.enqueue_batch(batch);
    EXPECT_EQ(llen("retools:queue:{main}"), 1);
    EXPECT_EQ(llen("retools:queue:{bulk}"), 3);
    EXPECT_EQ(llen("retools:queue:{x}"), 1);
    EXPECT_EQ(llen("retools:queue:{y}"), 1);
    EXPECT_FALSE(exists("retools:queue:main"));
    EXPECT_EQ(qm.queue_length("bulk"), 3u);
    EXPECT_EQ(qm.queue_names(), (std::vector<std::string>{"bulk", "main", "x", "y"}));
    EXPECT_EQ(qm.get_job(id, "main").id(), id);
    auto jobs = qm.get_jobs("bulk");
    ASSERT_EQ(jobs.size(), 3u);
    EXPECT_EQ(jobs[2].id(), ids[2]);
    EXPECT_EQ(qm.peek_payloads("x", 5).size(), 1u);
    EXPECT_EQ(batch_ids.size(), 2u);
}

TEST_F(ClusterQueueTest, ScheduledJobsLiveBesideTheirQueueAndArePromotedWhenDue) {
    QueueManager qm{conn};
    auto now = std::chrono::system_clock::now();
    std::string later = qm.enqueue_at(now + 1h, "tests.cq:record", {{"tag", "later"}}, {.queue_name = "a"});
    std::string due = qm.enqueue_at(now - 1s, "tests.cq:record", {{"tag", "due"}}, {.queue_name = "b"});
    std::string gone = qm.enqueue_in(30min, "tests.cq:record", {{"tag", "gone"}}, {.queue_name = "b"});
    EXPECT_EQ(conn.command("ZCARD", "retools:delayed:{a}").as_integer(), 1);
    EXPECT_EQ(conn.command("ZCARD", "retools:delayed:{b}").as_integer(), 2);
    EXPECT_EQ(qm.scheduled_jobs().size(), 3u);
    EXPECT_EQ(qm.scheduled_jobs().front().job.id(), due);  // earliest first, across queues
    ASSERT_TRUE(qm.next_due_time().has_value());
    EXPECT_LT(*qm.next_due_time(), now);
    EXPECT_TRUE(qm.cancel_scheduled(gone));
    EXPECT_FALSE(qm.cancel_scheduled(gone));

    // A member that cannot be read is filed byte-exact, not lost nor stuck.
    conn.command("ZADD", "retools:delayed:{b}", 1, "not json");
    EXPECT_EQ(qm.promote_due_jobs(), 1u);
    EXPECT_EQ(qm.get_jobs("b").at(0).id(), due);
    EXPECT_EQ(qm.queue_length("a"), 0u);
    EXPECT_EQ(conn.command("ZCARD", "retools:delayed:{b}").as_integer(), 0);
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].payload, "not json");
    EXPECT_EQ(failed[0].queue, "b");
    EXPECT_EQ(qm.scheduled_jobs().at(0).job.id(), later);

    // A retry goes to the delayed set of the job's queue, and comes back from there.
    retools::Job job = qm.get_jobs("b").at(0);
    qm.retry_later(job, 0s);
    EXPECT_EQ(conn.command("ZCARD", "retools:delayed:{b}").as_integer(), 1);
    EXPECT_FALSE(exists("retools:delayed"));
    EXPECT_EQ(qm.promote_due_jobs(), 1u);
    auto b = qm.get_jobs("b");
    ASSERT_EQ(b.size(), 2u);
    EXPECT_EQ(b[1].id(), due);
    EXPECT_EQ(b[1].state().value("retried", 0), 1);
}

TEST_F(ClusterQueueTest, UniqueJobsClaimBesideTheirQueue) {
    QueueManager qm{conn};
    const std::string id =
        qm.enqueue("tests.cq:record", {{"tag", "u"}}, {.queue_name = "uq", .unique_for = 1min});
    EXPECT_EQ(qm.enqueue("tests.cq:record", {{"tag", "u"}}, {.queue_name = "uq", .unique_for = 1min}), id);
    const std::string claim = "retools:unique:{uq}:tests.cq:record {\"tag\":\"u\"}";
    EXPECT_EQ(key_slot(claim), key_slot(keys::queue("uq", true)));
    EXPECT_EQ(conn.command("GET", claim).as_optional_string(), id);
    std::vector<json> many{{{"tag", "u"}}, {{"tag", "v"}}, {{"tag", "v"}}};
    const auto ids = qm.enqueue_many("tests.cq:record", many, {.queue_name = "uq", .unique_for = 1min});
    EXPECT_EQ(ids[0], id);
    EXPECT_EQ(ids[1], ids[2]);
    EXPECT_EQ(llen("retools:queue:{uq}"), 2);
    // The worker releases the claim when the job starts.
    Worker w{{"uq"}, quiet()};
    w.register_job("tests.cq:record", record(conn));
    EXPECT_EQ(w.work({.burst = true}).succeeded, 2u);
    EXPECT_FALSE(exists(claim));
    EXPECT_NE(qm.enqueue("tests.cq:record", {{"tag", "u"}}, {.queue_name = "uq", .unique_for = 1min}), id);
}

TEST_F(ClusterQueueTest, PeriodicJobsLiveBesideTheirQueueAndRunOncePerDueTime) {
    QueueManager qm{conn};
    EXPECT_TRUE(qm.schedule_periodic("tick", "@every 1s", "tests.cq:record", {{"tag", "tick"}},
                                     {.queue_name = "pa"}));
    EXPECT_FALSE(qm.schedule_periodic("tick", "@every 1s", "tests.cq:record", {{"tag", "tick"}},
                                      {.queue_name = "pa"}));
    EXPECT_EQ(key_slot("retools:periodic:due:{pa}"), key_slot(keys::queue("pa", true)));
    EXPECT_EQ(conn.command("ZCARD", "retools:periodic:due:{pa}").as_integer(), 1);
    // Moved to another queue: it leaves the old one.
    EXPECT_TRUE(qm.schedule_periodic("tick", "@every 1s", "tests.cq:record", {{"tag", "tick"}},
                                     {.queue_name = "pb"}));
    EXPECT_EQ(conn.command("ZCARD", "retools:periodic:due:{pa}").as_integer(), 0);
    ASSERT_EQ(qm.periodic_jobs().size(), 1u);
    EXPECT_EQ(qm.periodic_jobs()[0].queue, "pb");
    const auto due = qm.periodic_jobs()[0].next_run;
    std::atomic<std::size_t> enqueued{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i)
        threads.emplace_back([&] { enqueued += QueueManager{conn}.promote_periodic_jobs(due + 500ms); });
    for (auto& t : threads) t.join();
    EXPECT_EQ(enqueued.load(), 1u);
    EXPECT_EQ(llen("retools:queue:{pb}"), 1);
    // Three workers for ~3 s: one run per second, never two for one due time.
    std::vector<std::unique_ptr<Worker>> workers;
    std::vector<std::thread> running;
    for (const char* other : {"x1", "x2", "x3"}) {
        workers.push_back(std::make_unique<Worker>(std::vector<std::string>{"pb", other}, quiet()));
        workers.back()->register_job("tests.cq:record", [c = conn](const json&) -> json {
            const double d = retools::current_job()->metadata().at("periodic_due").get<double>();
            c.command("HINCRBY", "due", fmt::format("{:.0f}", d), 1);
            return nullptr;
        });
    }
    for (auto& w : workers) running.emplace_back([&w] { w->work({.interval = 50ms, .blocking = true}); });
    std::this_thread::sleep_for(3200ms);
    for (auto& w : workers) w->stop(true);
    for (auto& t : running) t.join();
    const auto h = conn.command("HGETALL", "due").as_array();
    EXPECT_GE(h.size() / 2, 3u);
    EXPECT_LE(h.size() / 2, 5u);
    for (std::size_t i = 0; i + 1 < h.size(); i += 2)
        EXPECT_EQ(h[i + 1].as_string(), "1") << h[i].as_string();
    EXPECT_TRUE(qm.remove_periodic("tick"));
    EXPECT_TRUE(qm.periodic_jobs().empty());
}

TEST_F(ClusterQueueTest, WorkerRetriesFailsAndStoresResults) {
    QueueManager qm{conn};
    std::string flaky =
        qm.enqueue("tests.cq:flaky", json::object(),
                   {.metadata = {{"retries", 2}, {"retry_backoff", 0.02}, {"result_ttl", 60}}});
    std::string boom = qm.enqueue("tests.cq:boom", json::object(), {.queue_name = "other"});
    std::string add = qm.enqueue("tests.cq:add", {{"a", 2}, {"b", 3}}, {.metadata = {{"result_ttl", 60}}});
    std::atomic<int> flaky_runs{0};
    Worker w{{"main", "other"}, quiet()};
    w.register_job("tests.cq:flaky", [&](const json&) -> json {
        if (++flaky_runs < 3) throw std::runtime_error("not yet");
        return "finally";
    });
    w.register_job("tests.cq:boom", [](const json&) -> json { throw std::runtime_error("always"); });
    w.register_job("tests.cq:add",
                   [](const json& kw) -> json { return kw["a"].get<int>() + kw["b"].get<int>(); });
    std::thread t([&] { w.work({.interval = 10ms}); });
    auto result = qm.wait_for_result(flaky, 4s);
    auto sum = qm.wait_for_result(add, 2s);
    const bool failed_one = wait_until([&] { return qm.failed_count() == 1; });
    w.stop();
    t.join();
    ASSERT_TRUE(failed_one);
    ASSERT_TRUE(result.has_value());
    EXPECT_TRUE(result->ok);
    EXPECT_EQ(result->value, "finally");
    ASSERT_TRUE(sum.has_value());
    EXPECT_EQ(sum->value, 5);
    EXPECT_EQ(flaky_runs.load(), 3);
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].queue, "other");
    EXPECT_NE(failed[0].error.find("always"), std::string::npos);
    EXPECT_EQ(conn.command("GET", "retools:stat:processed").as_string(), "5");  // 2 retries, 3 finished
    EXPECT_EQ(conn.command("GET", "retools:stat:failed").as_string(), "1");
    EXPECT_TRUE(keys_matching("retools:processing:*").empty());
    EXPECT_EQ(conn.command("ZCARD", "retools:delayed:{main}").as_integer(), 0);
    EXPECT_FALSE(exists(keys::heartbeat(w.id())));

    // Retrying moves the entry back to its queue (its own slot).
    EXPECT_TRUE(qm.retry_failed(failed[0]));
    EXPECT_FALSE(qm.retry_failed(failed[0]));  // gone: nothing pushed twice
    EXPECT_EQ(qm.queue_length("other"), 1u);
    EXPECT_EQ(qm.failed_count(), 0u);
    qm.record_failure({.payload = "raw", .queue = "other", .error = "e", .worker = "w", .failed_at = 1});
    qm.record_failure({.payload = "raw2", .queue = "third", .error = "e", .worker = "w", .failed_at = 1});
    EXPECT_EQ(qm.retry_all_failed(), 2u);
    EXPECT_EQ(qm.queue_length("other"), 2u);
    EXPECT_EQ(qm.queue_length("third"), 1u);
    EXPECT_EQ(qm.failed_count(), 0u);
}

TEST_F(ClusterQueueTest, AWorkerDrainsThreeQueuesInPriorityOrder) {
    QueueManager qm{conn};
    for (int i = 0; i < 5; ++i) {
        qm.enqueue("tests.cq:record", {{"tag", fmt::format("low{}", i)}}, {.queue_name = "low"});
        qm.enqueue("tests.cq:record", {{"tag", fmt::format("mid{}", i)}}, {.queue_name = "mid"});
        qm.enqueue("tests.cq:record", {{"tag", fmt::format("high{}", i)}}, {.queue_name = "high"});
    }
    ASSERT_NE(cluster().master_of(key_slot(keys::queue("high", true))),
              cluster().master_of(key_slot(keys::queue("low", true))));  // the point: several nodes
    Worker w{{"high", "mid", "low"}, quiet({.concurrency = 1, .prefetch_window = 0ms})};
    w.register_job("tests.cq:record", record(conn));
    auto summary = w.work({.burst = true});
    EXPECT_EQ(summary.succeeded, 15u);
    std::vector<std::string> want;
    for (const char* q : {"high", "mid", "low"})
        for (int i = 0; i < 5; ++i) want.push_back(fmt::format("{}{}", q, i));
    EXPECT_EQ(ran(), want);
    EXPECT_TRUE(keys_matching("retools:processing:*").empty());
    EXPECT_TRUE(keys_matching("retools:queue:*").empty());
}

TEST_F(ClusterQueueTest, ABlockingWorkerStartsAJobOnAnyQueueAtOnce) {
    Worker w{{"high", "mid", "low"}, quiet()};
    w.register_job("tests.cq:record", record(conn));
    std::thread t([&] { w.work({.interval = 1s, .blocking = true}); });
    std::this_thread::sleep_for(300ms);  // idle, waiting
    QueueManager qm{conn};
    const auto start = std::chrono::steady_clock::now();
    qm.enqueue("tests.cq:record", {{"tag", "late"}}, {.queue_name = "low"});
    const bool ran_it = wait_until([&] { return ran().size() == 1; }, 2s);
    const auto took = std::chrono::steady_clock::now() - start;
    w.stop();
    t.join();
    ASSERT_TRUE(ran_it);
    EXPECT_LT(took, 500ms);
}

TEST_F(ClusterQueueTest, EightQueuesLandOnAllThreeMasters) {
    QueueManager qm{conn};
    std::set<int> masters;
    for (int i = 0; i < 8; ++i) {
        const std::string name = fmt::format("q{}", i);
        qm.enqueue("tests.cq:record", {{"tag", name}}, {.queue_name = name});
        const int port = cluster().master_of(key_slot(keys::queue(name, true)));
        EXPECT_EQ(rt::RedisCluster::direct(port).command("LLEN", keys::queue(name, true)).as_integer(), 1);
        masters.insert(port);
    }
    EXPECT_EQ(masters.size(), 3u);
    std::vector<std::string> names;
    for (int i = 0; i < 8; ++i) names.push_back(fmt::format("q{}", i));
    Worker w{names, quiet()};
    w.register_job("tests.cq:record", record(conn));
    EXPECT_EQ(w.work({.burst = true}).succeeded, 8u);
}

TEST_F(ClusterQueueTest, ASigkilledWorkerProcessesJobsAreRecoveredByAnother) {
    QueueManager qm{conn};
    for (int i = 0; i < 3; ++i) {
        qm.enqueue("tests.cq:slow", {{"tag", fmt::format("a{}", i)}}, {.queue_name = "a"});
        qm.enqueue("tests.cq:slow", {{"tag", fmt::format("b{}", i)}}, {.queue_name = "b"});
    }
    const std::string url = cluster().url();
    auto options = quiet();
    auto child = rt::ChildProcess::fork([url, options] {
        Connection c{url};
        auto o = options;
        o.connection = c;
        o.concurrency = 4;  // with the prefetch it takes all six
        Worker w{{"a", "b"}, o};
        w.register_job("tests.cq:slow", [](const json&) -> json {
            std::this_thread::sleep_for(60s);
            return nullptr;
        });
        w.work({.interval = 20ms});
        return 0;
    });
    const std::string dead = fmt::format("{}:{}:a,b", retools::detail::hostname(), child.pid());
    ASSERT_TRUE(wait_until([&] {
        return llen(keys::processing(dead, "a", true)) + llen(keys::processing(dead, "b", true)) == 6;
    })) << keys_matching("retools:processing:*").size();
    child.signal(SIGKILL);
    ASSERT_EQ(child.exit_code(5s), -SIGKILL);

    Worker w{{"a", "b"}, quiet()};
    w.register_job("tests.cq:slow", record(conn));
    std::thread t([&] { w.work({.interval = 20ms}); });
    const bool all = wait_until([&] { return ran().size() == 6; }, 5s);
    w.stop();
    t.join();
    ASSERT_TRUE(all) << ran().size();
    const auto runs = ran();
    EXPECT_EQ(std::set<std::string>(runs.begin(), runs.end()).size(), 6u);  // each once
    EXPECT_TRUE(keys_matching("retools:processing:*").empty());
    EXPECT_EQ(conn.command("SISMEMBER", keys::workers, dead).as_integer(), 0);
    EXPECT_FALSE(exists(keys::worker_queues(dead)));
}

TEST_F(ClusterQueueTest, ADeadWorkerOfAnotherHostHasEachQueuesListRecoveredAndItsPoisonFiled) {
    QueueManager qm{conn};
    const std::string id = "otherhost:1:a,b";
    auto payload = [&](const std::string& tag) {
        return retools::detail::make_payload(qm, tag, "tests.cq:record", {{"tag", tag}});
    };
    conn.command("SADD", keys::workers, id);
    conn.command("SET", keys::worker_queues(id), "a,b");
    conn.command("SET", keys::worker_threads(id), "1");
    conn.command("ZADD", keys::heartbeats, 1, id);
    const std::string poison = "a\n" + payload("poison");
    conn.command("RPUSH", keys::processing(id, "a", true), poison, "a\n" + payload("a2"));
    conn.command("RPUSH", keys::processing(id, "b", true), "b\n" + payload("b1"), "b\n" + payload("b2"));
    conn.command("HSET", keys::recoveries, retools::detail::sha1_hex(poison), 2);  // died twice holding it
    qm.enqueue("tests.cq:record", {{"tag", "newer"}}, {.queue_name = "b"});

    EXPECT_EQ(Worker::requeue_orphans(conn), 3u);
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].error, "worker died 3 times while running this job");
    EXPECT_EQ(failed[0].queue, "a");
    EXPECT_EQ(failed[0].payload, poison.substr(2));
    ASSERT_EQ(qm.queue_length("a"), 1u);
    auto b = qm.get_jobs("b");
    ASSERT_EQ(b.size(), 3u);
    // Back at the head, in order, before what was enqueued since.
    EXPECT_EQ(b[0].kwargs().at("tag"), "b1");
    EXPECT_EQ(b[1].kwargs().at("tag"), "b2");
    EXPECT_EQ(b[2].kwargs().at("tag"), "newer");
    EXPECT_TRUE(keys_matching("retools:processing:*").empty());
    EXPECT_EQ(conn.command("SISMEMBER", keys::workers, id).as_integer(), 0);
    EXPECT_EQ(conn.command("ZSCORE", keys::heartbeats, id).is_nil(), true);
    EXPECT_EQ(conn.command("HLEN", keys::recoveries).as_integer(), 1);  // b1, the oldest of b, counted once
    EXPECT_EQ(conn.command("GET", "retools:stat:failed").as_string(), "1");
}

// Slots move while a worker drains 5,000 jobs and four threads make cached
// calls: the slots of the three queues and of one cached call go to another
// master, key by key. No job is lost or left in a processing list, and no
// error or wrong value reaches a caller.
TEST_F(ClusterQueueTest, AWorkerDrains5000JobsAndCallersUseTheCacheWhileSlotsMove) {
    QueueManager qm{conn};
    const std::vector<std::string> names{"r0", "r1", "r2"};
    std::vector<json> kwargs;
    for (int i = 0; i < 5000; ++i) kwargs.push_back({{"tag", i}});
    for (std::size_t q = 0; q < names.size(); ++q) {
        std::vector<json> part;
        for (std::size_t i = q; i < kwargs.size(); i += names.size()) part.push_back(kwargs[i]);
        qm.enqueue_many("tests.cq:count", part, {.queue_name = names[q]});
    }
    Worker w{names, quiet({.concurrency = 4})};
    w.register_job("tests.cq:count", [c = conn](const json& kw) -> json {
        c.command("SADD", "done", kw.at("tag").get<int>());
        return nullptr;
    });
    std::thread t([&] { w.work({.interval = 10ms}); });

    retools::CacheRegion::add_region("cq_reshard", {.expires = 60s, .connection = conn});
    auto cached = retools::cache_region("cq_reshard", "tests.cq:twice", [](int x) { return 2 * x; });
    std::atomic<bool> stop_callers{false};
    std::atomic<long> calls{0}, call_errors{0}, wrong{0};
    std::string last_error;
    std::mutex error_mutex;
    std::vector<std::thread> callers;
    for (int c = 0; c < 4; ++c)
        callers.emplace_back([&, c] {
            for (int i = 0; !stop_callers; ++i) {
                const int x = (i * 4 + c) % 40;
                try {
                    if (cached(x) != 2 * x) ++wrong;
                    ++calls;
                } catch (const std::exception& e) {
                    ++call_errors;
                    std::lock_guard lock(error_mutex);
                    last_error = e.what();
                }
            }
        });
    ASSERT_TRUE(wait_until([&] { return calls > 100; }, 10s));

    // The slot of each queue (with its processing lists), then that of one
    // cached call (its value, lock and counters), each to another master.
    std::vector<std::uint16_t> slots;
    for (const auto& q : names) slots.push_back(key_slot(keys::queue(q, true)));
    slots.push_back(key_slot(retools::detail::cache_keys::value("cq_reshard", "tests.cq:twice", "7", true)));
    for (std::uint16_t slot : slots) {
        const int from = cluster().master_of(slot);
        int to = 0;
        for (int p : cluster().master_ports())
            if (p != from) to = p;
        const long before = calls;
        cluster().move_slot(slot, to, 10, [] { std::this_thread::sleep_for(5ms); });
        EXPECT_EQ(cluster().master_of(slot), to) << slot;
        EXPECT_TRUE(wait_until([&] { return calls > before + 20; }, 10s));
    }
    // A second or two in a plain build; the bound leaves room for sanitizer builds.
    const bool drained = wait_until([&] { return conn.command("SCARD", "done").as_integer() == 5000; }, 60s);
    stop_callers = true;
    for (auto& c : callers) c.join();
    w.stop();
    t.join();
    EXPECT_TRUE(drained) << conn.command("SCARD", "done").as_integer();
    for (const auto& q : names) EXPECT_EQ(qm.queue_length(q), 0u) << q;
    EXPECT_TRUE(keys_matching("retools:processing:*").empty());
    EXPECT_EQ(qm.failed_count(), 0u);
    EXPECT_EQ(call_errors, 0) << last_error;
    EXPECT_EQ(wrong, 0);
}

// Slots move slowly: one key per MIGRATE with a pause between keys, so each
// slot stays mid-migration (ASK; TRYAGAIN for the worker's multi-key
// scripts) for a while, then its owners disagree for a moment (the new owner
// knows, the old one and the third master not yet). Meanwhile a worker
// drains jobs, a thread enqueues more, callers make cached calls and two
// threads take a lock whose slot moves. No call, lock, enqueue or worker step
// fails, no job is lost or left held, no value is wrong.
TEST_F(ClusterQueueTest, SlotsMovingKeyByKeyStayMidMigrationWhileEveryCallerCarriesOn) {
    QueueManager qm{conn};
    const std::vector<std::string> names{"m0", "m1", "m2"};
    constexpr int initial = 1500;
    for (std::size_t q = 0; q < names.size(); ++q) {
        std::vector<json> part;
        for (int i = static_cast<int>(q); i < initial; i += static_cast<int>(names.size()))
            part.push_back({{"tag", i}});
        qm.enqueue_many("tests.cq:count", part, {.queue_name = names[q]});
    }
    // The keys whose slots move: the queues (with their processing lists and
    // delayed sets), one cached call (its value, lock and counters), a lock.
    const std::string lock_key = "cq-slow-lock";
    std::vector<std::string> moving_keys;
    for (const auto& q : names) moving_keys.push_back(keys::queue(q, true));
    moving_keys.push_back(retools::detail::cache_keys::value("cq_slow", "tests.cq:thrice", "7", true));
    moving_keys.push_back(lock_key);
    std::vector<std::uint16_t> slots;
    for (const auto& k : moving_keys) {
        slots.push_back(key_slot(k));
        // Keys nobody uses, so that each slot takes a while to empty.
        for (int i = 0; i < 8; ++i)
            conn.command("SET", retools::detail::same_slot_key(k, fmt::format(":filler:{}", i)), i);
    }

    std::atomic<long> problems{0};
    std::string first_problem;
    std::mutex problem_mutex;
    auto problem = [&](const std::string& what) {
        std::lock_guard lock(problem_mutex);
        if (problems++ == 0) first_problem = what;
    };

    testing::internal::CaptureStderr();  // the worker logs every Redis error of its steps
    Worker w{names, quiet({.concurrency = 4, .log = retools::WorkerLog::failures})};
    w.register_job("tests.cq:count", [c = conn](const json& kw) -> json {
        c.command("SADD", "done", kw.at("tag").get<int>());
        return nullptr;
    });
    std::thread worker([&] { w.work({.interval = 10ms}); });

    std::atomic<bool> stop{false};
    std::atomic<long> calls{0}, locks{0}, enqueued{0};
    std::vector<std::thread> threads;
    retools::CacheRegion::add_region("cq_slow", {.expires = 60s, .connection = conn});
    auto cached = retools::cache_region("cq_slow", "tests.cq:thrice", [](int x) { return 3 * x; });
    for (int c = 0; c < 2; ++c)
        threads.emplace_back([&, c] {
            for (int i = 0; !stop; ++i) {
                const int x = (i * 2 + c) % 20;
                try {
                    if (const int got = cached(x); got != 3 * x)
                        problem(fmt::format("cached({}) = {}", x, got));
                    ++calls;
                } catch (const std::exception& e) {
                    problem(fmt::format("cached call: {}", e.what()));
                }
            }
        });
    for (int c = 0; c < 2; ++c)
        threads.emplace_back([&] {
            const std::string inside = retools::detail::same_slot_key(lock_key, ":inside");
            while (!stop) {
                try {
                    retools::Lock lock{lock_key, {.expires = 10s, .timeout = 10s, .connection = conn,
                                                  .max_retry_delay = 5ms}};
                    if (conn.command("INCR", inside).as_integer() != 1) problem("two holders of the lock");
                    conn.command("DECR", inside);
                    ++locks;
                } catch (const std::exception& e) {
                    problem(fmt::format("lock: {}", e.what()));
                }
            }
        });
    threads.emplace_back([&] {
        for (int i = initial; !stop; ++i) {
            try {
                qm.enqueue("tests.cq:count", {{"tag", i}},
                           {.queue_name = names[static_cast<std::size_t>(i) % 3]});
                ++enqueued;
            } catch (const std::exception& e) {
                problem(fmt::format("enqueue: {}", e.what()));
                break;  // its tag may be queued: the count below would not know
            }
            std::this_thread::sleep_for(2ms);
        }
    });
    const bool warm = wait_until([&] { return calls > 50 && locks > 10 && enqueued > 10; }, 10s);

    // Each slot to another master, key by key: about 10 keys at 20 ms, then
    // 100 ms between the SETSLOT NODE of each master.
    const auto started = std::chrono::steady_clock::now();
    for (std::uint16_t slot : slots) {
        const int from = cluster().master_of(slot);
        int to = 0;
        for (int p : cluster().master_ports())
            if (p != from) to = p;
        const long before_calls = calls, before_locks = locks;
        cluster().move_slot_slowly(slot, to, 20ms, 100ms);
        EXPECT_EQ(cluster().master_of(slot), to) << slot;
        EXPECT_TRUE(wait_until([&] { return calls > before_calls + 10 && locks > before_locks + 5; }, 10s))
            << slot;
    }
    const auto moving = std::chrono::steady_clock::now() - started;
    stop = true;
    for (auto& t : threads) t.join();
    const long total = initial + enqueued;
    const bool drained = wait_until([&] { return conn.command("SCARD", "done").as_integer() == total; }, 60s);
    w.stop();
    worker.join();
    const std::string worker_log = testing::internal::GetCapturedStderr();

    ASSERT_TRUE(warm) << calls << " " << locks << " " << enqueued << " " << first_problem;
    EXPECT_EQ(problems, 0) << first_problem;
    EXPECT_TRUE(drained) << conn.command("SCARD", "done").as_integer() << " of " << total;
    for (const auto& q : names) EXPECT_EQ(qm.queue_length(q), 0u) << q;
    EXPECT_TRUE(keys_matching("retools:processing:*").empty());
    EXPECT_EQ(qm.failed_count(), 0u);
    EXPECT_EQ(worker_log.find("retools-worker"), std::string::npos) << worker_log.substr(0, 2000);
    // The slots really were mid-migration for a while: about 12 pauses each.
    EXPECT_GE(moving, slots.size() * 10 * 20ms);
}

#ifdef RETOOLS_TOOL_PROGRAM
// The `retools` program reads the cluster layout: scheduled jobs in every
// queue's own set, workers from the beat index (SCAN sees one node), and the
// jobs a worker holds in its per-queue processing lists.
TEST_F(ClusterQueueTest, TheRetoolsProgramCountsScheduledAndHeldJobsOnACluster) {
    QueueManager qm{conn};
    const auto now = std::chrono::system_clock::now();
    for (const char* q : {"a", "b", "c", "d"})
        qm.enqueue_at(now + 1h, "tests.cq:record", {{"tag", q}}, {.queue_name = q});
    std::atomic<bool> release{false}, started{false};
    Worker w{{"slow", "other"}, quiet({.concurrency = 1})};
    w.register_job("tests.cq:hold", [&](const json&) -> json {
        started = true;
        wait_until([&] { return release.load(); }, 10s);
        return nullptr;
    });
    qm.enqueue("tests.cq:hold", json::object(), {.queue_name = "slow"});
    std::thread t([&] { w.work({.interval = 50ms, .blocking = true}); });
    const bool running = wait_until([&] { return started.load(); }, 5s);
    rt::ProgramResult r;
    if (running) r = rt::run_program({RETOOLS_TOOL_PROGRAM, "--url", cluster().url(), "info", "--json"});
    release = true;
    w.stop();
    t.join();
    ASSERT_TRUE(running);
    ASSERT_EQ(r.code, 0) << r.err;
    json info = json::parse(r.out, nullptr, false);
    ASSERT_FALSE(info.is_discarded()) << r.out;
    EXPECT_EQ(info["scheduled_count"], 4) << r.out;
    ASSERT_EQ(info["workers"].size(), 1u) << r.out;
    EXPECT_EQ(info["workers"][0]["processing"], 1) << r.out;
    // Every read-only command runs on a cluster URL (none sends a cross-slot command).
    retools::CacheRegion::add_region("cq_region", 60s);
    auto square = retools::cache_region("cq_region", "cq.square", [](int x) { return x * x; });
    EXPECT_EQ(square(3), 9);
    for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
             {"queues"}, {"workers"}, {"failed"}, {"scheduled"}, {"regions"}, {"stats", "cq_region"}}) {
        args.insert(args.begin(), {RETOOLS_TOOL_PROGRAM, "--url", cluster().url()});
        args.push_back("--json");
        rt::ProgramResult out = rt::run_program(args);
        EXPECT_EQ(out.code, 0) << args[3] << ": " << out.err;
        EXPECT_FALSE(json::parse(out.out, nullptr, false).is_discarded()) << args[3] << ": " << out.out;
    }
}
#endif
