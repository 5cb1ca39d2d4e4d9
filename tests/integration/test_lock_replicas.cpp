// Replica-acknowledged locks against a real Sentinel set (a master, its
// replica, three sentinels): the acquisition waits for the replica in the
// same round trip; with the replica stopped (SIGSTOP) it fails within
// replica_timeout and leaves no key; a server with no replica never grants it.
#include <signal.h>

#include <chrono>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/lock.hpp>

#include "redis_server.hpp"
#include "sentinel_set.hpp"

using namespace std::chrono_literals;
using retools::Lock;
using retools::LockOptions;
using testing::HasSubstr;
namespace rt = retools::test;
using ReplicaClock = std::chrono::steady_clock;

namespace {

retools::Connection direct(int port) {
    return retools::Connection{"redis://127.0.0.1:" + std::to_string(port) + "/0"};
}

}  // namespace

TEST(LockReplicas, AnAcknowledgedAcquisitionHoldsAndAnUnacknowledgedOneLeavesNoKey) {
    rt::SentinelSet set;
    retools::Connection conn{set.url()};
    const LockOptions options{.timeout = 0s, .connection = conn, .min_replicas = 1, .replica_timeout = 200ms};
    {
        const auto before = conn.round_trips();
        Lock lock{"replicated", options};
        EXPECT_EQ(conn.round_trips() - before, 2u);  // the script and WAIT together, + EVAL on first use
        EXPECT_TRUE(lock.owns_lock());
        // The replica has the key: WAIT answered before the acquisition returned.
        EXPECT_EQ(direct(set.first_replica_port()).command("EXISTS", "replicated").as_integer(), 1);
    }
    const pid_t replica = set.node_pid(set.first_replica_port());
    ASSERT_GT(replica, 0);
    ::kill(replica, SIGSTOP);
    Lock lock{"replicated", options, std::defer_lock};
    const auto t0 = ReplicaClock::now();
    const bool got = lock.try_lock();
    const auto took = ReplicaClock::now() - t0;
    const bool key_left = direct(set.first_master_port()).command("EXISTS", "replicated").as_integer() == 1;
    std::string message;
    try {
        lock.lock();
    } catch (const retools::LockTimeout& e) {
        message = e.what();
    }
    ::kill(replica, SIGCONT);
    EXPECT_FALSE(got);
    EXPECT_GE(took, 190ms);
    EXPECT_LT(took, 1s);
    EXPECT_FALSE(key_left);
    EXPECT_THAT(message, HasSubstr("only 0 of the 1 replicas required acknowledged it within 200 ms"));
    EXPECT_FALSE(lock.owns_lock());
}

TEST(LockReplicas, AServerWithoutReplicasNeverGrantsItAndBadOptionsAreNamed) {
    rt::RedisServer server;
    auto options = server.options();
    options.command_timeout = 1s;
    retools::Connection conn{options};
    Lock lock{"k",
              {.timeout = 0s, .connection = conn, .min_replicas = 1, .replica_timeout = 50ms},
              std::defer_lock};
    EXPECT_FALSE(lock.try_lock());
    EXPECT_EQ(conn.command("EXISTS", "k").as_integer(), 0);
    Lock plain{"k", {.timeout = 0s, .connection = conn}};  // min_replicas 0: no wait
    EXPECT_TRUE(plain.owns_lock());
    EXPECT_THROW(
        (Lock{"k", {.connection = conn, .min_replicas = 1, .replica_timeout = 0ms}, std::defer_lock}),
        retools::ConfigurationError);
    try {
        Lock bad{"k", {.connection = conn, .min_replicas = 1, .replica_timeout = 2s}, std::defer_lock};
        FAIL() << "no error";
    } catch (const retools::ConfigurationError& e) {
        EXPECT_THAT(e.what(), HasSubstr("less than the connection's command_timeout"));
    }
}
