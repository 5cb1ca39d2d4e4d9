// QueueManager against a real Redis: payloads, keys, batches, failed jobs,
// scheduled jobs and results.
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include <retools/errors.hpp>
#include <retools/queue.hpp>
#include <retools/detail/queue_keys.hpp>

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
    std::string id = qm.enqueue("myapp.jobs:important", {{"somearg", "fred"}},
                                {.metadata = {{"created", 1732492345.5}}});
    EXPECT_EQ(conn.round_trips() - before, 1u);  // RPUSH + SADD in one pipeline
    EXPECT_TRUE(is_uuid4_hex(id)) << id;

    auto entries = list("retools:queue:main");
    ASSERT_EQ(entries.size(), 1u);
    // Exactly the text Python's json.dumps writes for the same job.
    EXPECT_EQ(entries[0], R"({"job_id": ")" + id +
                              R"(", "job": "myapp.jobs:important", "kwargs": {"somearg": "fred"}, )"
                              R"("events": {"job_failure": ["myapp.jobs:save_error"], "job_postrun": ["myapp.jobs:notify"]}, )"
                              R"("metadata": {"created": 1732492345.5}, "state": {}})");
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
    EXPECT_EQ(other["metadata"], json::object());
}

TEST_F(Queue, ReadsAPayloadWrittenByPython) {
    // What Python retools 0.4 pushes for qm.enqueue('myapp.jobs:important', somearg='fred').
    const std::string python = R"({"job_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "job": "myapp.jobs:important", )"
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
    qm.enqueue("myapp.jobs:report");                                  // configured queue
    qm.enqueue("myapp.jobs:report", {}, {.queue_name = "high"});      // explicit wins
    qm.enqueue("myapp.jobs:other");                                   // manager's default
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
    try {
        qm.get_jobs();
        FAIL() << "expected QueueError";
    } catch (const retools::QueueError& e) {
        EXPECT_NE(std::string(e.what()).find("entry 1"), std::string::npos) << e.what();
    }
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
