// QueueManager against a real Redis: payloads, keys, batches, failed jobs,
// scheduled jobs and results.
#include <chrono>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include <retools/detail/python_repr.hpp>
#include <retools/errors.hpp>
#include <retools/queue.hpp>

#include "expect.hpp"
#include "queue/keys.hpp"
#include "queue/payloads.hpp"
#include "redis_test.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using retools::Job;
using retools::QueueManager;
namespace rt = retools::test;
namespace keys = retools::detail::queue_keys;

namespace {

class Queue : public rt::RedisTest {
protected:
    std::vector<std::string> list(const std::string& key) {
        std::vector<std::string> out;
        for (const auto& r : conn.command("LRANGE", key, 0, -1).as_array()) out.push_back(r.as_string());
        return out;
    }
    std::set<std::string> set(const std::string& key) {
        std::set<std::string> out;
        for (const auto& r : conn.command("SMEMBERS", key).as_array()) out.insert(r.as_string());
        return out;
    }
};

bool is_uuid4_hex(const std::string& id) {
    return id.size() == 32 && id.find_first_not_of("0123456789abcdef") == std::string::npos && id[12] == '4';
}

}  // namespace

TEST_F(Queue, EnqueueWritesTheOriginalsPayloadAndKeys) {
    QueueManager qm;
    qm.subscriber("job_failure", "myapp.jobs:save_error");
    qm.subscriber("job_postrun", "myapp.jobs:important", "myapp.jobs:notify");
    auto before = conn.round_trips();
    std::string id =
        qm.enqueue("myapp.jobs:important", {{"somearg", "fred"}}, {.metadata = {{"created", 1732492345.5}}});
    EXPECT_EQ(conn.round_trips() - before, 1u);  // RPUSH + SADD in one pipeline
    EXPECT_TRUE(is_uuid4_hex(id)) << id;

    auto entries = list("retools:queue:main");
    ASSERT_EQ(entries.size(), 1u);
    // Exactly the text Python's json.dumps writes for the same job (with the
    // enqueue time retools adds to metadata).
    const std::string at =
        retools::detail::python_repr(json::parse(entries[0])["metadata"]["enqueued_at"].get<double>());
    EXPECT_EQ(
        entries[0],
        R"({"job_id": ")" + id +
            R"(", "job": "myapp.jobs:important", "kwargs": {"somearg": "fred"}, )"
            R"("events": {"job_failure": ["myapp.jobs:save_error"], "job_postrun": ["myapp.jobs:notify"]}, )"
            R"("metadata": {"created": 1732492345.5, "enqueued_at": )" +
            at + R"(}, "state": {}})");
    // Every field, with the types a Python worker expects.
    json payload = json::parse(entries[0]);
    std::set<std::string> fields;
    for (const auto& [k, v] : payload.items()) fields.insert(k);
    EXPECT_EQ(fields, (std::set<std::string>{"job_id", "job", "kwargs", "events", "metadata", "state"}));
    EXPECT_EQ(payload["job_id"], id);
    EXPECT_EQ(payload["job"], "myapp.jobs:important");
    EXPECT_EQ(payload["kwargs"], (json{{"somearg", "fred"}}));
    EXPECT_TRUE(payload["events"]["job_failure"].is_array());
    EXPECT_EQ(payload["metadata"]["created"], 1732492345.5);
    EXPECT_EQ(payload["state"], json::object());
    EXPECT_EQ(set("retools:queues"), std::set<std::string>{"main"});
    // Other job names do not get the per-job handler.
    qm.enqueue("myapp.jobs:other");
    json other = json::parse(list("retools:queue:main")[1]);
    EXPECT_EQ(other["events"], (json{{"job_failure", {"myapp.jobs:save_error"}}}));
    EXPECT_EQ(other["kwargs"], json::object());
    EXPECT_EQ(other["metadata"].size(), 1u);
    EXPECT_TRUE(other["metadata"]["enqueued_at"].is_number_float());
}

TEST_F(Queue, ReadsAPayloadWrittenByPython) {
    // What Python retools 0.4 pushes for qm.enqueue('myapp.jobs:important', somearg='fred').
    const std::string python =
        R"({"job_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "job": "myapp.jobs:important", )"
        R"("kwargs": {"somearg": "fred"}, "events": {}, "metadata": {}, "state": {}})";
    conn.command("RPUSH", "retools:queue:main", python);
    conn.command("SADD", "retools:queues", "main");
    QueueManager qm;
    Job job = qm.get_job("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
    EXPECT_EQ(job.name(), "myapp.jobs:important");
    EXPECT_EQ(job.kwargs()["somearg"], "fred");
    EXPECT_EQ(job.payload(), python);
    EXPECT_EQ(job.to_json(), python);
    EXPECT_EQ(qm.get_jobs().size(), 1u);
    EXPECT_EQ(qm.queue_length(), 1u);
}

TEST_F(Queue, QueueSelection) {
    QueueManager qm{conn, "default"};
    qm.set_queue_for_job("myapp.jobs:report", "low");
    qm.enqueue("myapp.jobs:report");                              // configured queue
    qm.enqueue("myapp.jobs:report", {}, {.queue_name = "high"});  // explicit wins
    qm.enqueue("myapp.jobs:other");                               // manager's default
    EXPECT_EQ(list("retools:queue:low").size(), 1u);
    EXPECT_EQ(list("retools:queue:high").size(), 1u);
    EXPECT_EQ(list("retools:queue:default").size(), 1u);
    EXPECT_EQ(qm.queue_names(), (std::vector<std::string>{"default", "high", "low"}));
}

TEST_F(Queue, RejectsBadInputBeforeWritingAnything) {
    QueueManager qm;
    EXPECT_THROW(qm.enqueue("", {}), retools::ConfigurationError);
    EXPECT_THROW(qm.enqueue("m:f", {}, {.queue_name = "a:b"}), retools::ConfigurationError);
    EXPECT_THROW(qm.enqueue("m:f", {}, {.queue_name = "a,b"}), retools::ConfigurationError);
    // Refused as a Worker refuses it: a job there would never run.
    EXPECT_THROW(qm.enqueue("m:f", {}, {.queue_name = "a\nb"}), retools::ConfigurationError);
    EXPECT_THROW(qm.enqueue("m:f", json::array({1, 2})), retools::QueueError);
    EXPECT_THROW(qm.enqueue("m:f", json("text")), retools::QueueError);
    EXPECT_THROW(qm.enqueue("m:f", {}, {.metadata = json::array()}), retools::QueueError);
    EXPECT_THROW(qm.enqueue("m:f", {{"x", std::nan("")}}), retools::QueueError);
    EXPECT_THROW(qm.enqueue("m:f", {{"x", std::string("\xc3")}}), retools::QueueError);
    EXPECT_THROW(qm.subscriber("job_typo", "m:h"), retools::ConfigurationError);
    EXPECT_THROW(qm.subscriber("job_prerun", ""), retools::ConfigurationError);
    EXPECT_THROW(qm.set_queue_for_job("m:f", "x:y"), retools::ConfigurationError);
    std::vector<json> batch{{{"a", 1}}, json::array()};
    EXPECT_THROW(qm.enqueue_many("m:f", batch), retools::QueueError);
    EXPECT_EQ(conn.command("DBSIZE").as_integer(), 0);
}

TEST_F(Queue, GetJobReadsWithoutRemovingAndThrowsForUnknownIds) {
    QueueManager qm;
    std::string a = qm.enqueue("m:a", {{"n", 1}});
    std::string b = qm.enqueue("m:b", {{"n", 2}}, {.queue_name = "other"});
    conn.command("RPUSH", "retools:queue:main", "garbage that is not JSON");
    Job job = qm.get_job(a);
    EXPECT_EQ(job.id(), a);
    EXPECT_EQ(job.name(), "m:a");
    EXPECT_EQ(job.queue(), "main");
    EXPECT_EQ(qm.get_job(b, "other").kwargs()["n"], 2);
    EXPECT_EQ(list("retools:queue:main").size(), 2u);  // nothing removed
    try {
        qm.get_job(b);  // wrong queue
        FAIL() << "expected QueueError";
    } catch (const retools::QueueError& e) {
        EXPECT_NE(std::string(e.what()).find(b), std::string::npos);
    }
    EXPECT_THROW(qm.get_job("nope"), retools::QueueError);
    // get_jobs names the malformed entry.
    ASSERT_THROW_MSG(qm.get_jobs(), retools::QueueError, "entry 1");
    auto others = qm.get_jobs("other");
    ASSERT_EQ(others.size(), 1u);
    EXPECT_EQ(others[0].id(), b);
}

TEST_F(Queue, JobEnqueueSavesItsState) {
    QueueManager qm;
    std::string id = qm.enqueue("m:f", {{"n", 1}}, {.metadata = {{"retries", 2}}});
    Job job = qm.get_job(id);
    job.state()["progress"] = 50;
    conn.command("DEL", "retools:queue:main", "retools:queues");
    auto before = conn.round_trips();
    EXPECT_EQ(job.enqueue(), id);
    EXPECT_EQ(conn.round_trips() - before, 1u);
    Job back = qm.get_job(id);
    EXPECT_EQ(back.state()["progress"], 50);
    EXPECT_EQ(back.metadata()["retries"], 2);
    EXPECT_EQ(back.kwargs()["n"], 1);
    EXPECT_EQ(set("retools:queues"), std::set<std::string>{"main"});
}

TEST_F(Queue, BatchEnqueueIsOneRoundTripInOrder) {
    QueueManager qm;
    qm.subscriber("job_failure", "m:save_error");
    std::vector<json> args;
    for (int i = 0; i < 25000; ++i) args.push_back({{"n", i}});  // more than one RPUSH chunk
    auto before = conn.round_trips();
    auto ids = qm.enqueue_many("m:square", args, {.queue_name = "batch", .metadata = {{"tag", "x"}}});
    EXPECT_EQ(conn.round_trips() - before, 1u);
    ASSERT_EQ(ids.size(), args.size());
    EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size());
    auto entries = list("retools:queue:batch");
    ASSERT_EQ(entries.size(), args.size());
    for (std::size_t i : {std::size_t{0}, std::size_t{9999}, std::size_t{10000}, std::size_t{24999}}) {
        Job job = Job::from_payload(entries[i], "batch");
        EXPECT_EQ(job.id(), ids[i]);
        EXPECT_EQ(job.kwargs()["n"], static_cast<int>(i));
        EXPECT_EQ(job.metadata()["tag"], "x");
        EXPECT_EQ(job.handlers("job_failure"), std::vector<std::string>{"m:save_error"});
        EXPECT_EQ(entries[i], job.to_json());  // same bytes as a single enqueue writes
    }
    EXPECT_EQ(set("retools:queues"), std::set<std::string>{"batch"});
    EXPECT_TRUE(qm.enqueue_many("m:square", std::span<const json>{}).empty());
}

TEST_F(Queue, BatchEnqueueIsFast) {
    QueueManager qm;
    std::vector<json> args;
    for (int i = 0; i < 100000; ++i) args.push_back({{"n", i}, {"name", "user"}});
    auto start = std::chrono::steady_clock::now();
    auto ids = qm.enqueue_many("m:f", args);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(qm.queue_length(), args.size());
    RecordProperty("jobs_per_second", static_cast<int>(args.size() / seconds));
    std::printf("enqueue_many: %.0f jobs/s\n", args.size() / seconds);
    // Generous bound for a shared, possibly sanitized build; the release build does far better.
    EXPECT_LT(seconds, 10.0);
}

TEST_F(Queue, MixedBatchIsOneRoundTripAndKeepsOrderPerQueue) {
    QueueManager qm;
    qm.subscriber("job_prerun", "m:a", "m:before_a");
    std::vector<retools::JobSpec> jobs{{"m:a", {{"n", 0}}},
                                       {"m:a", {{"n", 1}}},
                                       {"m:b", {{"n", 2}}, {.queue_name = "high"}},
                                       {"m:b", {{"n", 3}}, {.metadata = {{"retries", 1}}}},
                                       {"m:a", {{"n", 4}}, {.queue_name = "high"}}};
    auto before = conn.round_trips();
    auto ids = qm.enqueue_batch(jobs);
    EXPECT_EQ(conn.round_trips() - before, 1u);
    ASSERT_EQ(ids.size(), 5u);
    auto main_jobs = qm.get_jobs("main");
    auto high_jobs = qm.get_jobs("high");
    ASSERT_EQ(main_jobs.size(), 3u);
    ASSERT_EQ(high_jobs.size(), 2u);
    EXPECT_EQ(main_jobs[0].id(), ids[0]);
    EXPECT_EQ(main_jobs[1].id(), ids[1]);
    EXPECT_EQ(main_jobs[2].id(), ids[3]);
    EXPECT_EQ(main_jobs[2].metadata()["retries"], 1);
    EXPECT_EQ(high_jobs[0].id(), ids[2]);
    EXPECT_EQ(high_jobs[1].id(), ids[4]);
    EXPECT_EQ(high_jobs[1].handlers("job_prerun"), std::vector<std::string>{"m:before_a"});
    EXPECT_TRUE(high_jobs[0].handlers("job_prerun").empty());
    EXPECT_EQ(set("retools:queues"), (std::set<std::string>{"high", "main"}));

    // One bad job: nothing is sent, and the error names it.
    std::vector<retools::JobSpec> bad{{"m:a"}, {"m:a", {}, {.queue_name = "x:y"}}};
    conn.command("FLUSHDB");
    ASSERT_THROW_MSG(qm.enqueue_batch(bad), retools::ConfigurationError, "#1");
    std::vector<retools::JobSpec> nan{{"m:a"}, {"m:a"}, {"m:a", {{"x", std::nan("")}}}};
    ASSERT_THROW_MSG(qm.enqueue_batch(nan), retools::QueueError, "#2");
    EXPECT_EQ(conn.command("DBSIZE").as_integer(), 0);
}

// ---- scheduled jobs ----

TEST_F(Queue, ScheduledJobsWaitInTheDelayedSetUntilDue) {
    QueueManager qm;
    auto now = std::chrono::system_clock::now();
    std::string later = qm.enqueue_at(now + 1h, "m:later", {{"n", 1}}, {.queue_name = "high"});
    std::string soon = qm.enqueue_in(200ms, "m:soon", {{"n", 2}});
    EXPECT_EQ(qm.queue_length(), 0u);
    // Raw layout: member {"queue", "payload"}, score = due Unix time.
    auto raw = conn.command("ZRANGE", "retools:delayed", 0, -1, "WITHSCORES").as_array();
    ASSERT_EQ(raw.size(), 4u);
    json first = json::parse(raw[0].as_string());
    EXPECT_EQ(first["queue"], "main");
    Job soon_job = Job::from_payload(first["payload"].get<std::string>(), "main");
    EXPECT_EQ(soon_job.id(), soon);
    EXPECT_EQ(raw[0].as_string(), R"({"queue": "main", "payload": )" + json(soon_job.to_json()).dump() + "}");
    double due = raw[1].as_double();
    EXPECT_NEAR(due, std::chrono::duration<double>((now + 200ms).time_since_epoch()).count(), 1.0);
    EXPECT_EQ(json::parse(raw[2].as_string())["queue"], "high");

    auto scheduled = qm.scheduled_jobs();
    ASSERT_EQ(scheduled.size(), 2u);
    EXPECT_EQ(scheduled[0].job.id(), soon);
    EXPECT_EQ(scheduled[1].job.id(), later);
    EXPECT_EQ(scheduled[1].job.queue(), "high");
    ASSERT_TRUE(qm.next_due_time());
    EXPECT_LT(*qm.next_due_time(), now + 1s);

    EXPECT_EQ(qm.promote_due_jobs(now), 0u);  // nothing due yet
    EXPECT_EQ(qm.promote_due_jobs(now + 2s), 1u);
    EXPECT_EQ(qm.get_job(soon).kwargs()["n"], 2);
    EXPECT_EQ(qm.queue_length("high"), 0u);
    EXPECT_EQ(set("retools:queues"), std::set<std::string>{"main"});
    EXPECT_EQ(qm.promote_due_jobs(now + 2h), 1u);
    EXPECT_EQ(qm.get_job(later, "high").name(), "m:later");
    EXPECT_FALSE(qm.next_due_time());
}

TEST_F(Queue, ScheduledJobsCanBeCancelled) {
    QueueManager qm;
    std::string keep = qm.enqueue_in(1h, "m:f", {{"n", 1}});
    std::string drop = qm.enqueue_in(1h, "m:f", {{"n", 2}});
    conn.command("ZADD", "retools:delayed", 5, "not json");
    EXPECT_TRUE(qm.cancel_scheduled(drop));
    EXPECT_FALSE(qm.cancel_scheduled(drop));
    EXPECT_FALSE(qm.cancel_scheduled("unknown"));
    auto left = qm.scheduled_jobs();
    ASSERT_EQ(left.size(), 1u);
    EXPECT_EQ(left[0].job.id(), keep);
    EXPECT_EQ(conn.command("ZCARD", "retools:delayed").as_integer(), 2);
}

TEST_F(Queue, PromotionMovesEachJobOnceAcrossProcesses) {
    QueueManager qm;
    auto past = std::chrono::system_clock::now() - 1s;
    for (int i = 0; i < 300; ++i) qm.enqueue_at(past, "m:f", {{"n", i}});
    std::vector<rt::ChildProcess> children;
    for (int c = 0; c < 3; ++c)
        children.push_back(rt::ChildProcess::fork([] {
            QueueManager child{retools::Connection{rt::redis_url()}};
            for (int k = 0; k < 50; ++k) child.promote_due_jobs(std::chrono::system_clock::now(), 7);
            return 0;
        }));
    for (auto& c : children) EXPECT_EQ(c.exit_code(5s), 0);
    qm.promote_due_jobs();
    auto jobs = qm.get_jobs();
    ASSERT_EQ(jobs.size(), 300u);
    std::set<int> seen;
    for (const auto& j : jobs) seen.insert(j.kwargs()["n"].get<int>());
    EXPECT_EQ(seen.size(), 300u);
    EXPECT_EQ(conn.command("ZCARD", "retools:delayed").as_integer(), 0);
}

TEST_F(Queue, MalformedDelayedEntryGoesToTheFailedList) {
    QueueManager qm;
    conn.command("ZADD", "retools:delayed", 1, "not json");
    conn.command("ZADD", "retools:delayed", 2, R"({"queue": "a:b", "payload": "x"})");
    EXPECT_EQ(qm.promote_due_jobs(), 0u);
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 2u);
    EXPECT_EQ(failed[0].payload, "not json");
    EXPECT_NE(failed[0].error.find("retools:delayed"), std::string::npos);
    EXPECT_EQ(failed[1].payload, R"({"queue": "a:b", "payload": "x"})");
    EXPECT_EQ(conn.command("ZCARD", "retools:delayed").as_integer(), 0);
}

TEST_F(Queue, RetryLaterCountsRetriesAndKeepsState) {
    QueueManager qm;
    std::string id =
        qm.enqueue("m:flaky", {{"n", 1}}, {.metadata = {{"retries", 2}, {"retry_backoff", 0.1}}});
    Job job = qm.get_job(id);
    conn.command("DEL", "retools:queue:main");  // as if a worker had taken it
    job.state()["note"] = "kept";
    auto delay = job.next_retry_delay();
    ASSERT_TRUE(delay);
    auto due = qm.retry_later(job, *delay);
    EXPECT_EQ(job.retries_done(), 1);
    auto scheduled = qm.scheduled_jobs();
    ASSERT_EQ(scheduled.size(), 1u);
    EXPECT_EQ(scheduled[0].job.id(), id);
    EXPECT_EQ(scheduled[0].job.retries_done(), 1);
    EXPECT_EQ(scheduled[0].job.state()["note"], "kept");
    EXPECT_NEAR(std::chrono::duration<double>(scheduled[0].due - due).count(), 0.0, 0.001);
    EXPECT_DOUBLE_EQ(scheduled[0].job.next_retry_delay()->count(), 0.2);
    EXPECT_EQ(qm.promote_due_jobs(due + 1ms), 1u);
    Job again = qm.get_job(id);
    qm.retry_later(again, *again.next_retry_delay());
    EXPECT_EQ(again.retries_done(), 2);
    EXPECT_FALSE(again.next_retry_delay());  // retries exhausted
    EXPECT_THROW(qm.retry_later(again, std::chrono::duration<double>(-1)), retools::ConfigurationError);
}

// ---- failed jobs ----

TEST_F(Queue, FailedJobsCanBeListedRetriedAndCleared) {
    QueueManager qm;
    const std::string bad_payload = "{not a payload";
    std::string id = qm.enqueue("m:f", {{"n", 1}});
    std::string payload = list("retools:queue:main")[0];
    conn.command("DEL", "retools:queue:main");
    qm.record_failure(
        {.payload = payload, .queue = "main", .error = "ValueError: boom", .worker = "h:1:main"});
    qm.record_failure({.payload = bad_payload,
                       .queue = "high",
                       .error = "payload is not JSON",
                       .worker = "h:1:main",
                       .failed_at = 1732492345.25});
    EXPECT_EQ(qm.failed_count(), 2u);

    // Raw layout of an entry.
    json raw = json::parse(list("retools:failed")[1]);
    EXPECT_EQ(raw["payload"], bad_payload);
    EXPECT_EQ(raw["queue"], "high");
    EXPECT_EQ(raw["error"], "payload is not JSON");
    EXPECT_EQ(raw["worker"], "h:1:main");
    EXPECT_EQ(raw["failed_at"], 1732492345.25);

    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 2u);
    EXPECT_EQ(failed[0].payload, payload);
    EXPECT_EQ(failed[0].error, "ValueError: boom");
    EXPECT_GT(failed[0].failed_at, 1.7e9);

    // Retry puts the payload back verbatim, once.
    EXPECT_TRUE(qm.retry_failed(failed[0]));
    EXPECT_FALSE(qm.retry_failed(failed[0]));
    EXPECT_EQ(list("retools:queue:main"), std::vector<std::string>{payload});
    EXPECT_EQ(qm.get_job(id).kwargs()["n"], 1);
    EXPECT_EQ(qm.failed_count(), 1u);

    // retry_all keeps entries it cannot read.
    conn.command("RPUSH", "retools:failed", "garbage");
    auto listed = qm.failed_jobs();
    ASSERT_EQ(listed.size(), 2u);
    EXPECT_EQ(listed[1].payload, "garbage");
    EXPECT_NE(listed[1].error.find("unreadable"), std::string::npos);
    EXPECT_EQ(qm.retry_all_failed(), 1u);
    EXPECT_EQ(list("retools:queue:high"), std::vector<std::string>{bad_payload});
    EXPECT_EQ(list("retools:failed"), std::vector<std::string>{"garbage"});
    EXPECT_TRUE(qm.remove_failed(qm.failed_jobs()[0]));
    EXPECT_EQ(qm.failed_count(), 0u);

    qm.record_failure({.payload = "p", .queue = "main", .error = "e", .worker = "w"});
    qm.record_failure({.payload = "p", .queue = "main", .error = "e", .worker = "w"});
    EXPECT_EQ(qm.clear_failed(), 2u);
    EXPECT_EQ(qm.failed_count(), 0u);
}

TEST_F(Queue, FailedEntriesKeepNonAsciiPayloadsVerbatim) {
    QueueManager qm;
    std::string id = qm.enqueue("m:f", {{"name", "Zo\u00eb \U0001F600"}});
    std::string payload = list("retools:queue:main")[0];
    conn.command("DEL", "retools:queue:main");
    // A payload written by another producer, with raw UTF-8 and odd spacing.
    const std::string foreign =
        "{\"job_id\":\"x1\",\"job\":\"m:f\",\"kwargs\":{\"s\":\"\xc3\xa9\"},\"events\":{},\"state\":{}}";
    qm.record_failure({.payload = payload, .queue = "main", .error = "e", .worker = "w"});
    qm.record_failure({.payload = foreign, .queue = "main", .error = "e", .worker = "w"});
    EXPECT_EQ(qm.retry_all_failed(), 2u);
    EXPECT_EQ(list("retools:queue:main"), (std::vector<std::string>{payload, foreign}));
    EXPECT_EQ(qm.get_job(id).kwargs()["name"], "Zo\u00eb \U0001F600");
}

// ---- results ----

TEST_F(Queue, StoredResultsAreReadAndExpire) {
    QueueManager qm;
    EXPECT_FALSE(qm.get_result("abc"));
    EXPECT_FALSE(qm.wait_for_result("abc", 0ms));
    auto before = conn.round_trips();
    qm.store_result("abc", {.ok = true, .value = {{"sum", 3}}}, 60s);
    EXPECT_EQ(conn.round_trips() - before, 1u);
    auto r = qm.get_result("abc");
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->ok);
    EXPECT_EQ(r->value, (json{{"sum", 3}}));
    EXPECT_EQ(conn.command("LINDEX", "retools:result:abc", 0).as_string(),
              R"({"status": "ok", "result": {"sum": 3}})");
    EXPECT_GT(conn.command("TTL", "retools:result:abc").as_integer(), 50);
    qm.store_result("abc", {.ok = false, .error = "boom"}, 1s);  // replaces
    EXPECT_EQ(conn.command("LLEN", "retools:result:abc").as_integer(), 1);
    r = qm.wait_for_result("abc", 100ms);
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->ok);
    EXPECT_EQ(r->error, "boom");
    EXPECT_THROW(qm.store_result("abc", {.ok = true}, 0s), retools::ConfigurationError);
}

TEST_F(Queue, WaitForResultWakesEveryWaiterPromptlyWithoutPolling) {
    QueueManager qm;
    std::string id = qm.enqueue("m:add", {{"a", 1}}, {.metadata = {{"result_ttl", 30}}});
    ASSERT_EQ(qm.get_job(id).result_ttl(), std::chrono::seconds(30));

    conn.command("CONFIG", "RESETSTAT");
    std::atomic<int> got{0};
    std::vector<std::thread> waiters;
    std::vector<double> latencies(3);
    std::atomic<std::int64_t> stored_at{0};
    for (int i = 0; i < 3; ++i)
        waiters.emplace_back([&, i] {
            QueueManager w{retools::Connection{rt::redis_url()}};
            auto r = w.wait_for_result(id, 3s);
            auto now = std::chrono::steady_clock::now().time_since_epoch().count();
            latencies[i] = static_cast<double>(now - stored_at.load()) / 1e9;
            if (r && r->ok && r->value == 2) ++got;
        });
    std::this_thread::sleep_for(200ms);  // all three block server-side meanwhile
    // Another connection stores the result, as a worker would.
    QueueManager worker_side{retools::Connection{rt::redis_url()}};
    worker_side.connection().command("PING");  // connected beforehand
    stored_at = std::chrono::steady_clock::now().time_since_epoch().count();
    worker_side.store_result(id, {.ok = true, .value = 2}, 30s);
    for (auto& t : waiters) t.join();
    EXPECT_EQ(got.load(), 3);
    // Woken by the push itself: well before the next look between slices (>= 100 ms away).
    for (double l : latencies) EXPECT_LT(l, 0.08);
    // A few blocking calls per waiter over the 200 ms, not a polling loop.
    std::string stats = conn.command("INFO", "commandstats").as_string();
    auto calls = [&](const std::string& cmd) {
        auto at = stats.find("cmdstat_" + cmd + ":calls=");
        return at == std::string::npos ? 0 : std::stoi(stats.substr(at + cmd.size() + 15));
    };
    EXPECT_GE(calls("blmove"), 3);
    EXPECT_LE(calls("blmove"), 9) << stats;
    EXPECT_LE(calls("evalsha") + calls("eval"), 12) << stats;
    // Still there for later readers, with its TTL.
    EXPECT_TRUE(qm.get_result(id));
    EXPECT_GT(conn.command("TTL", retools::detail::queue_keys::result(id)).as_integer(), 20);
}

TEST_F(Queue, WaitForResultTimesOut) {
    QueueManager qm;
    auto start = std::chrono::steady_clock::now();
    EXPECT_FALSE(qm.wait_for_result("never", 300ms));
    auto waited = std::chrono::steady_clock::now() - start;
    EXPECT_GE(waited, 250ms);
    EXPECT_LT(waited, 2s);
}

TEST_F(Queue, FailedEntryOfANonUtf8PayloadIsStillRecorded) {
    QueueManager qm;
    qm.record_failure(
        {.payload = "bad \xff bytes", .queue = "main", .error = "not JSON \xfe", .worker = "w"});
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].payload, "bad \xff bytes");  // byte-exact (payload_base64 in the entry)
    EXPECT_EQ(failed[0].queue, "main");
}

TEST_F(Queue, JobEnqueueValidatesItsQueue) {
    Job job =
        Job::from_payload(R"({"job_id": "a", "job": "m:f", "kwargs": {}, "events": {}, "state": {}})", "a:b");
    EXPECT_THROW(job.enqueue(), retools::ConfigurationError);
    EXPECT_EQ(conn.command("DBSIZE").as_integer(), 0);
}

TEST_F(Queue, RetryAndFailureComposeIntoOneTransaction) {
    // How a worker finishes a job atomically: drop it from its processing
    // list and schedule the retry (or file the failure) in one MULTI/EXEC.
    QueueManager qm;
    std::string id = qm.enqueue("m:f", {}, {.metadata = {{"retries", 1}}});
    std::string payload =
        conn.command("LMOVE", "retools:queue:main", "retools:processing:w1", "LEFT", "RIGHT").as_string();
    Job job = Job::from_payload(payload, "main");
    retools::Pipeline p;
    p.command("LREM", "retools:processing:w1", 1, payload);
    retools::detail::add_retry_later(p, job, *job.next_retry_delay(),
                                     retools::detail::queue::topology_of(conn));
    auto before = conn.round_trips();
    conn.transaction(p);
    EXPECT_EQ(conn.round_trips() - before, 1u);
    EXPECT_EQ(conn.command("LLEN", "retools:processing:w1").as_integer(), 0);
    ASSERT_EQ(qm.scheduled_jobs().size(), 1u);
    EXPECT_EQ(qm.scheduled_jobs()[0].job.retries_done(), 1);

    retools::Pipeline f;
    retools::detail::add_record_failure(
        f, {.payload = payload, .queue = "main", .error = "boom", .worker = "w1"});
    conn.transaction(f);
    ASSERT_EQ(qm.failed_count(), 1u);
    EXPECT_EQ(qm.failed_jobs()[0].payload, payload);
    EXPECT_EQ(Job::from_payload(qm.failed_jobs()[0].payload, "main").id(), id);
}

TEST_F(Queue, WaitForResultAlsoFindsAPlainStringResult) {
    QueueManager qm;
    conn.command("SET", "retools:result:s1", R"({"status": "ok", "result": [1, 2]})", "EX", 30);
    auto r = qm.get_result("s1");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->value, json::array({1, 2}));
    std::thread writer([&] {
        std::this_thread::sleep_for(50ms);
        retools::Connection{rt::redis_url()}.command("SET", "retools:result:s2",
                                                     R"({"status": "failed", "error": "x"})", "EX", 30);
    });
    auto start = std::chrono::steady_clock::now();
    auto w = qm.wait_for_result("s2", 3s);
    auto waited = std::chrono::steady_clock::now() - start;
    writer.join();
    ASSERT_TRUE(w);
    EXPECT_FALSE(w->ok);
    EXPECT_EQ(w->error, "x");
    EXPECT_LT(waited, 1s);
}

TEST_F(Queue, ConfigurationAfterEnqueuingAppliesToLaterJobs) {
    // Enqueues reuse what they serialized for a job name; configuring must not leave it stale.
    QueueManager qm{conn};
    qm.enqueue("myapp.jobs:a");
    qm.enqueue_many("myapp.jobs:a", std::vector<json>(2));
    qm.subscriber("job_failure", "myapp.jobs:on_failure");
    qm.subscriber("job_prerun", "myapp.jobs:a", "myapp.jobs:before");
    qm.set_queue_for_job("myapp.jobs:a", "other");
    QueueManager copy = qm;  // starts with its own, empty, cache
    std::string id = qm.enqueue("myapp.jobs:a");
    copy.enqueue("myapp.jobs:a");
    qm.enqueue_batch(std::vector<retools::JobSpec>{{.job_name = "myapp.jobs:a"}});
    qm.enqueue_many("myapp.jobs:a", std::vector<json>(1));
    EXPECT_EQ(list("retools:queue:main").size(), 3u);
    auto entries = list("retools:queue:other");
    ASSERT_EQ(entries.size(), 4u);
    EXPECT_EQ(
        entries[0],
        R"({"job_id": ")" + id +
            R"(", "job": "myapp.jobs:a", "kwargs": {}, )"
            R"("events": {"job_failure": ["myapp.jobs:on_failure"], "job_prerun": ["myapp.jobs:before"]}, )"
            R"("metadata": {"enqueued_at": )" +
            retools::detail::python_repr(json::parse(entries[0])["metadata"]["enqueued_at"].get<double>()) +
            R"(}, "state": {}})");
    for (const auto& entry : entries)
        EXPECT_EQ(json::parse(entry)["events"], json::parse(R"({"job_failure": ["myapp.jobs:on_failure"],
                                                                "job_prerun": ["myapp.jobs:before"]})"));
}

TEST_F(Queue, ConcurrentEnqueuesFromManyThreadsShareOneManager) {
    QueueManager qm{conn};
    qm.subscriber("job_postrun", "myapp.jobs:done");
    constexpr int threads = 4, per_thread = 200;
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                std::string name = "myapp.jobs:t" + std::to_string((t + i) % 3);
                if (i % 2)
                    qm.enqueue(name, {{"i", i}});
                else
                    qm.enqueue_many(name, std::vector<json>{{{"i", i}}});
            }
        });
    for (auto& w : workers) w.join();
    auto entries = list("retools:queue:main");
    ASSERT_EQ(entries.size(), static_cast<std::size_t>(threads * per_thread));
    for (const auto& entry : entries) {
        json payload = json::parse(entry);
        EXPECT_EQ(payload["events"], json::parse(R"({"job_postrun": ["myapp.jobs:done"]})"));
        EXPECT_EQ(payload["job"].get<std::string>().substr(0, 12), "myapp.jobs:t");
    }
}
