// Queue data written wrong by others: typed errors, and no job lost.
#include <chrono>

#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/queue.hpp>

#include "expect.hpp"
#include "queue/keys.hpp"
#include "redis_server.hpp"
#include "redis_test.hpp"

using namespace std::chrono_literals;
using retools::QueueManager;
namespace rt = retools::test;
namespace keys = retools::detail::queue_keys;

class QueueFaultsTest : public rt::RedisTest {};

TEST_F(QueueFaultsTest, DueJobWhoseQueueKeyIsNotAListIsFiledIntact) {
    QueueManager qm{conn};
    conn.command("HSET", keys::queue("q", false), "field", "value");  // someone else's hash
    std::string id =
        qm.enqueue_at(std::chrono::system_clock::now() - 1s, "tests.jobs:x", {{"a", 1}}, {.queue_name = "q"});
    std::string payload = qm.scheduled_jobs().at(0).job.payload();
    try {
        qm.promote_due_jobs();
    } catch (const retools::Error&) {
        // an error is fine as long as the job is kept
    }
    bool still_scheduled = qm.scheduled_jobs().size() == 1;
    auto failed = qm.failed_jobs();
    bool filed = failed.size() == 1 && failed[0].payload == payload && failed[0].queue == "q" &&
                 failed[0].error.find(keys::queue("q", false)) != std::string::npos;
    EXPECT_TRUE(still_scheduled || filed) << "job " << id << " was lost";
    EXPECT_EQ(conn.command("TYPE", keys::queue("q", false)).as_string(), "hash");
}

TEST_F(QueueFaultsTest, PromotionStopsWithANamedErrorWhenTheFailedListIsNotAList) {
    QueueManager qm{conn};
    conn.command("SET", keys::failed, "not a list");
    conn.command("ZADD", keys::delayed_all, 1, "not json");  // due, malformed: would be filed
    EXPECT_THROW_MSG(qm.promote_due_jobs(), retools::ReplyError, keys::failed);
    EXPECT_EQ(conn.command("ZCARD", keys::delayed_all).as_integer(), 1);  // kept
}

TEST_F(QueueFaultsTest, RetryingIntoAQueueKeyThatIsNotAListKeepsTheFailedEntry) {
    QueueManager qm{conn};
    qm.record_failure({.payload = "{\"job\": \"a\"}", .queue = "bad", .error = "e1"});
    qm.record_failure({.payload = "{\"job\": \"b\"}", .queue = "good", .error = "e2"});
    conn.command("HSET", keys::queue("bad", false), "f", "v");
    auto failed = qm.failed_jobs();
    ASSERT_EQ(failed.size(), 2u);
    EXPECT_THROW_MSG((void)qm.retry_failed(failed[0]), retools::ReplyError, keys::queue("bad", false));
    EXPECT_EQ(qm.failed_count(), 2u);  // still there, nothing pushed anywhere

    // retry_all moves what it can and keeps the rest, each exactly once.
    try {
        EXPECT_EQ(qm.retry_all_failed(), 1u);
    } catch (const retools::Error& e) {
        ADD_FAILURE() << e.what();
    }
    try {
        (void)qm.retry_all_failed();
    } catch (const retools::Error&) {}
    EXPECT_EQ(conn.command("LLEN", keys::queue("good", false)).as_integer(), 1);
    auto left = qm.failed_jobs();
    ASSERT_EQ(left.size(), 1u);
    EXPECT_EQ(left[0].payload, "{\"job\": \"a\"}");
    EXPECT_EQ(conn.command("TYPE", keys::queue("bad", false)).as_string(), "hash");
}

TEST_F(QueueFaultsTest, EnqueueIntoAQueueKeyThatIsNotAListThrowsNamingIt) {
    QueueManager qm{conn};
    conn.command("HSET", keys::queue("q", false), "f", "v");
    auto expect_named = [&](auto&& call) {
        EXPECT_THROW_MSG(call(), retools::ReplyError, keys::queue("q", false));
    };
    expect_named([&] { qm.enqueue("tests.jobs:x", {{"a", 1}}, {.queue_name = "q"}); });
    retools::JobSpec specs[] = {{.job_name = "tests.jobs:x", .options = {.queue_name = "ok"}},
                                {.job_name = "tests.jobs:x", .options = {.queue_name = "q"}}};
    expect_named([&] { qm.enqueue_batch(specs); });
    EXPECT_EQ(conn.command("HGET", keys::queue("q", false), "f").as_string(), "v");
}

TEST(QueueDeadServer, EnqueueThrowsConnectionErrorAndWorksAgainAfterARestart) {
    rt::RedisServer server;
    auto options = server.options();
    options.connect_timeout = 200ms;
    options.command_timeout = 500ms;
    QueueManager qm{retools::Connection{options}};
    qm.enqueue("tests.jobs:x");
    server.kill();
    auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(qm.enqueue("tests.jobs:x"), retools::ConnectionError);
    EXPECT_THROW(qm.enqueue_in(1s, "tests.jobs:x"), retools::ConnectionError);
    EXPECT_THROW((void)qm.queue_length(), retools::ConnectionError);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
    server.start();
    rt::once_served([&] { return qm.enqueue("tests.jobs:x"); });  // after the fail-fast backoff
    EXPECT_EQ(qm.queue_length(), 1u);  // a fresh server: only the job enqueued after the restart
}
