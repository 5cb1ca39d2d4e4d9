// Redis Cluster: routing, redirections, split pipelines and cross-slot
// rejections on a real 3-master cluster started on free loopback ports.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/retools.hpp>

#include "client/cluster.hpp"
#include "cluster_test.hpp"
#include "expect.hpp"
#include "process.hpp"
#include "redis_cluster.hpp"
#include "wait.hpp"

namespace rt = retools::test;
using namespace std::chrono_literals;
using retools::Connection;
using retools::detail::key_slot;

namespace {

class ClusterTest : public rt::ClusterTestBase {};

// A key on a different master than `key`.
std::string key_elsewhere(rt::RedisCluster& c, const std::string& key) {
    const int home = c.master_of(key_slot(key));
    for (int i = 0;; ++i) {
        std::string k = fmt::format("other:{}", i);
        if (c.master_of(key_slot(k)) != home) return k;
    }
}

}  // namespace

TEST_F(ClusterTest, SlotsMatchTheServer) {
    Connection direct = rt::RedisCluster::direct(cluster().ports()[0]);
    std::vector<std::string> keys{"foo", "", "{user1000}.following", "{}x", "a{b}c", "{{x}}", "x{", "}{y}"};
    for (int i = 0; i < 300; ++i) keys.push_back(fmt::format("key:{}:{}", i, std::string(i % 7, '\xe9')));
    for (const std::string& k : keys)
        EXPECT_EQ(key_slot(k), direct.command("CLUSTER", "KEYSLOT", k).as_integer()) << k;
}

TEST_F(ClusterTest, EachKeyGoesToTheMasterOfItsSlot) {
    for (int i = 0; i < 300; ++i) conn.command("SET", fmt::format("k{}", i), i);
    std::map<int, int> per_master;
    for (int i = 0; i < 300; ++i) {
        const std::string key = fmt::format("k{}", i);
        const int port = cluster().master_of(key_slot(key));
        ++per_master[port];
        EXPECT_EQ(rt::RedisCluster::direct(port).command("GET", key).as_string(), std::to_string(i));
        EXPECT_EQ(conn.command("GET", key).as_string(), std::to_string(i));
    }
    EXPECT_EQ(per_master.size(), 3u);
    // Keyless commands go to some node.
    EXPECT_EQ(conn.command("PING").as_string(), "PONG");
    EXPECT_NE(conn.command("INFO", "server").as_string().find("redis_version"), std::string::npos);
}

// Nodes that keep sending a request back and forth (a slot marked migrating
// to a node that does not import it: ASK there, MOVED back) hold a call
// until its time is up, with pauses between the hops rather than a spin;
// then the caller gets a ConnectionError naming the slot, never the raw
// redirection as a ReplyError.
TEST_F(ClusterTest, ARedirectionThatNeverEndsIsAConnectionErrorNamingTheSlotAtTheDeadline) {
    const std::string key = "ping-pong";
    const std::uint16_t slot = key_slot(key);
    const int owner = cluster().master_of(slot);
    int other = 0;
    for (int p : cluster().master_ports())
        if (p != owner) other = p;
    ASSERT_NE(other, 0);
    retools::ConnectionOptions o = cluster().options();
    o.command_timeout = 1000ms;
    Connection c{o};
    c.command("PING");  // the map is read before the clock starts
    Connection direct = rt::RedisCluster::direct(owner);
    direct.command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster().node_id(other));
    const auto trips = c.round_trips();
    const auto t0 = std::chrono::steady_clock::now();
    std::string message = "no error";
    bool connection_error = false;
    try {
        c.command("GET", key);
    } catch (const retools::ConnectionError& e) {
        connection_error = true;
        message = e.what();
    } catch (const std::exception& e) {
        message = e.what();
    }
    const auto elapsed = std::chrono::steady_clock::now() - t0;
    const auto sent = c.round_trips() - trips;
    direct.command("CLUSTER", "SETSLOT", slot, "STABLE");
    EXPECT_TRUE(connection_error) << message;
    EXPECT_NE(message.find(fmt::format("slot {}", slot)), std::string::npos) << message;
    EXPECT_NE(message.find("kept redirecting"), std::string::npos) << message;
    EXPECT_GE(elapsed, 900ms);
    EXPECT_LT(elapsed, 3s);
    // Paused hops (1 ms doubling to 50 ms): a few dozen sends, not thousands.
    EXPECT_GT(sent, 10u);
    EXPECT_LT(sent, 200u) << message;
    EXPECT_TRUE(c.command("GET", key).is_nil());  // once the nodes agree, served at once
}

TEST_F(ClusterTest, PipelineIsSplitPerNodeAndRepliesComeBackInOrder) {
    retools::Pipeline p;
    for (int i = 0; i < 60; ++i) p.command("SET", fmt::format("p{}", i), i * 10);
    for (int i = 0; i < 60; ++i) p.command("GET", fmt::format("p{}", i));
    p.command("PING");
    conn.command("PING");  // the slot map is read on first use
    const auto before = conn.round_trips();
    std::vector<retools::Reply> replies = conn.execute(p);
    EXPECT_EQ(conn.round_trips() - before, 3u);  // one request per master
    ASSERT_EQ(replies.size(), 121u);
    for (int i = 0; i < 60; ++i) {
        EXPECT_EQ(replies[static_cast<std::size_t>(i)].as_string(), "OK");
        EXPECT_EQ(replies[static_cast<std::size_t>(60 + i)].as_string(), std::to_string(i * 10));
    }
    EXPECT_EQ(replies[120].as_string(), "PONG");
    // On one node (one hash tag) it is one request.
    retools::Pipeline q;
    for (int i = 0; i < 20; ++i) q.command("INCR", fmt::format("{{tag}}:{}", i));
    const auto before_q = conn.round_trips();
    EXPECT_EQ(conn.execute(q).size(), 20u);
    EXPECT_EQ(conn.round_trips() - before_q, 1u);
}

// The nodes' parts go out together: two parts that each make their node wait
// one second (BLPOP on an empty list) take about one second, not two.
TEST_F(ClusterTest, PartsOfASplitPipelineWaitForTheirNodesAtTheSameTime) {
    const std::string here = "wait:a", there = key_elsewhere(cluster(), here);
    conn.command("DEL", here);
    conn.command("DEL", there);
    retools::Pipeline p;
    p.command("BLPOP", here, 1);
    p.command("BLPOP", there, 1);
    conn.command("PING");  // the slot map is read on first use
    const auto start = std::chrono::steady_clock::now();
    std::vector<retools::Reply> replies = conn.execute(p);
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_EQ(replies.size(), 2u);
    EXPECT_TRUE(replies[0].is_nil());
    EXPECT_TRUE(replies[1].is_nil());
    EXPECT_GE(took, 900ms);
    EXPECT_LT(took, 1800ms) << "the parts were sent one after the other";
}

TEST_F(ClusterTest, CrossSlotTransactionIsRejectedNamingTheKeys) {
    const std::string a = "acct:alice", b = key_elsewhere(cluster(), a);
    retools::Pipeline p;
    p.command("SET", a, "1").command("SET", b, "2");
    EXPECT_THROW_MSG(conn.transaction(p), retools::ConfigurationError,
                     fmt::format("{} (slot {}), {} (slot {})", a, key_slot(a), b, key_slot(b)));
    EXPECT_TRUE(conn.command("GET", a).is_nil());  // nothing ran
    EXPECT_TRUE(conn.command("GET", b).is_nil());
    // With one hash tag it runs.
    retools::Pipeline same;
    same.command("SET", "{acct}:alice", "1").command("INCR", "{acct}:count");
    auto replies = conn.transaction(same);
    ASSERT_EQ(replies.size(), 2u);
    EXPECT_EQ(replies[1].as_integer(), 1);
}

TEST_F(ClusterTest, CrossSlotCommandsAndScriptsAreRejected) {
    const std::string a = "x:1", b = key_elsewhere(cluster(), a);
    EXPECT_THROW_MSG(conn.command("DEL", a, b), retools::ConfigurationError, "different hash slots");
    EXPECT_THROW_MSG(conn.command("MGET", a, b), retools::ConfigurationError, b);
    static const retools::Script both{R"lua(return redis.call('SET', KEYS[1], ARGV[1]) and
                                              redis.call('SET', KEYS[2], ARGV[1]))lua"};
    EXPECT_THROW_MSG(both(conn, {a, b}, "v"), retools::ConfigurationError,
                     "this command are in different hash slots");
    // Same slot: fine, NOSCRIPT handled on whichever node.
    EXPECT_EQ(both(conn, {"{s}a", "{s}b"}, "v").as_string(), "OK");
    EXPECT_EQ(conn.command("MGET", "{s}a", "{s}b").size(), 2u);
}

TEST_F(ClusterTest, CommandForKeyRoutesWhatRetoolsCannotSee) {
    conn.command("SET", "hidden", "here");
    // A script with no declared key touches one: only its node may run it.
    for (int i = 0; i < 6; ++i)
        EXPECT_EQ(conn.command_for_key("hidden", "EVAL", "return redis.call('GET', 'hidden')", 0).as_string(),
                  "here");
    // Without a cluster it is plain command().
    Connection single = rt::RedisCluster::direct(cluster().master_of(key_slot("hidden")));
    EXPECT_EQ(single.command_for_key("ignored", "GET", "hidden").as_string(), "here");
}

TEST_F(ClusterTest, MovedSlotIsFollowedAndTheMapRead) {
    const std::string key = "moving:1";
    conn.command("SET", key, "v");
    const std::uint16_t slot = key_slot(key);
    const int from = cluster().master_of(slot);
    int to = 0;
    for (int p : cluster().master_ports())
        if (p != from) to = p;
    cluster().move_slot(slot, to);
    ASSERT_EQ(cluster().master_of(slot), to);
    // The connection still believes `from`: MOVED brings it to `to`, transparently.
    EXPECT_EQ(conn.command("GET", key).as_string(), "v");
    EXPECT_EQ(conn.command("INCR", "{moving:1}n").as_integer(), 1);
    EXPECT_EQ(rt::RedisCluster::direct(to).command("GET", key).as_string(), "v");
}

TEST_F(ClusterTest, AskDuringAMigrationReachesBothHalves) {
    const std::string tag = "{mig}";
    for (int i = 0; i < 10; ++i) conn.command("SET", fmt::format("{}{}", tag, i), i);
    const std::uint16_t slot = key_slot(tag);
    const int from = cluster().master_of(slot);
    int to = 0;
    for (int p : cluster().master_ports())
        if (p != from) to = p;
    Connection src = rt::RedisCluster::direct(from), dst = rt::RedisCluster::direct(to);
    dst.command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster().node_id(from));
    src.command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster().node_id(to));
    src.command("MIGRATE", "127.0.0.1", to, "", 0, 5000, "KEYS", "{mig}0", "{mig}1", "{mig}2");
    // Half moved: reads of both halves and a new key work (ASK to the target).
    for (int i = 0; i < 10; ++i)
        EXPECT_EQ(conn.command("GET", fmt::format("{}{}", tag, i)).as_string(), std::to_string(i));
    EXPECT_EQ(conn.command("SET", "{mig}new", "n").as_string(), "OK");
    retools::Pipeline on_target;
    on_target.command("ASKING").command("EXISTS", "{mig}new");
    EXPECT_EQ(dst.execute(on_target)[1].as_integer(), 1);  // stored on the target
    // A pipeline over both halves.
    retools::Pipeline p;
    for (int i = 0; i < 10; ++i) p.command("GET", fmt::format("{}{}", tag, i));
    auto replies = conn.execute(p);
    for (int i = 0; i < 10; ++i)
        EXPECT_EQ(replies[static_cast<std::size_t>(i)].as_string(), std::to_string(i));
    cluster().move_slot(slot, to);  // finish: the rest moves, the slot is the target's
    EXPECT_EQ(conn.command("GET", "{mig}9").as_string(), "9");
    EXPECT_EQ(conn.command("GET", "{mig}new").as_string(), "n");
}

TEST_F(ClusterTest, ConnectionCountsAndReset) {
    for (int i = 0; i < 50; ++i) conn.command("SET", fmt::format("c{}", i), i);
    EXPECT_GE(conn.open_connections(), 3u);
    conn.reset();
    EXPECT_EQ(conn.open_connections(), 0u);
    EXPECT_EQ(conn.command("GET", "c1").as_string(), "1");
}

TEST_F(ClusterTest, ForkedChildOpensItsOwnConnections) {
    conn.command("SET", "forked", "parent");
    pid_t pid = fork();
    if (pid == 0) {
        try {
            conn.command("SET", "forked", "child");
            _exit(0);
        } catch (...) {
            _exit(1);
        }
    }
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_EQ(WEXITSTATUS(status), 0);
    EXPECT_EQ(conn.command("GET", "forked").as_string(), "child");
}

// ---- Lock and Limiter on the cluster -----------------------------------------------

TEST_F(ClusterTest, LockKeysShareOneSlotAndLocksSpreadOverTheMasters) {
    std::set<int> masters;
    for (int i = 0; i < 30; ++i) {
        const std::string key = fmt::format("lock:{}", i);
        retools::Lock lock{key, {.expires = 5s}};
        EXPECT_EQ(conn.command("GET", key).as_string(), lock.token());  // the lock key itself is unchanged
        masters.insert(cluster().master_of(key_slot(key)));
        EXPECT_GT(lock.fencing_token(), 0u);
        EXPECT_EQ(conn.command("EXISTS", fmt::format("{{{}}}:fence", key)).as_integer(), 1);
    }
    EXPECT_EQ(masters.size(), 3u);
    // A key with a hash tag keeps its tag for the auxiliary keys.
    retools::Lock tagged{"{job}:lock", {.expires = 5s}};
    EXPECT_EQ(conn.command("EXISTS", "{job}:lock:fence").as_integer(), 1);
}

TEST_F(ClusterTest, LockExcludesAcrossThreadsAndProcesses) {
    constexpr int processes = 3, threads = 4, increments = 8;
    const std::string key = "counter-lock";
    auto work = [&]() -> int {
        Connection mine{cluster().url()};
        std::atomic<int> failures{0};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&] {
                try {
                    retools::Lock lock{
                        key, {.timeout = 20s, .connection = mine, .max_retry_delay = 20ms}, std::defer_lock};
                    for (int i = 0; i < increments; ++i) {
                        std::unique_lock guard{lock};
                        if (mine.command("INCR", "inside").as_integer() != 1) ++failures;
                        auto v = mine.command("GET", "counter").as_optional_string();
                        mine.command("SET", "counter", (v ? std::stoll(*v) : 0) + 1);
                        mine.command("DECR", "inside");
                    }
                } catch (const std::exception&) {
                    ++failures;
                }
            });
        for (auto& t : pool) t.join();
        return failures.load() == 0 ? 0 : 2;
    };
    std::vector<rt::ChildProcess> children;
    for (int p = 0; p < processes; ++p) children.push_back(rt::ChildProcess::fork(work));
    for (auto& c : children) EXPECT_EQ(c.exit_code(60s), 0);
    EXPECT_EQ(conn.command("GET", "counter").as_string(), std::to_string(processes * threads * increments));
    EXPECT_EQ(conn.command("EXISTS", key).as_integer(), 0);
}

TEST_F(ClusterTest, LockExtendAndLostLock) {
    retools::Lock lock{"extended", {.expires = 1s}};
    lock.extend(3s);
    std::this_thread::sleep_for(1200ms);
    EXPECT_TRUE(lock.owns_lock());
    EXPECT_GT(conn.command("PTTL", "extended").as_integer(), 1000);

    retools::Lock lost{"lost", {.expires = 100ms}};
    std::this_thread::sleep_for(200ms);
    retools::Lock next{"lost", {.expires = 5s, .timeout = 1s}};
    EXPECT_GT(next.fencing_token(), lost.fencing_token());
    EXPECT_THROW_MSG(lost.extend(1s), retools::LockLost, "lost");
    EXPECT_EQ(lost.release(), retools::ReleaseResult::not_held);
    EXPECT_EQ(conn.command("GET", "lost").as_string(), next.token());  // the next owner's lock survives
}

TEST_F(ClusterTest, WaiterWakesOnReleaseThroughTheSignalKey) {
    auto holder = std::make_unique<retools::Lock>("woken", retools::LockOptions{.expires = 10s});
    std::atomic<bool> got{false};
    std::thread waiter([&] {
        retools::Lock lock{"woken", {.expires = 5s, .timeout = 5s}};
        got = true;
    });
    std::this_thread::sleep_for(200ms);
    EXPECT_FALSE(got.load());
    const auto released = std::chrono::steady_clock::now();
    holder.reset();
    waiter.join();
    EXPECT_TRUE(got.load());
    EXPECT_LT(std::chrono::steady_clock::now() - released, 1s);
}

TEST_F(ClusterTest, LimiterNeverGoesOverTheLimitUnder32Threads) {
    constexpr std::size_t limit = 5;
    retools::Limiter limiter{{.limit = limit, .prefix = "cluster-limiter", .expiration = 10s}};
    std::atomic<int> inside{0}, most{0}, acquired{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 32; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 20; ++i) {
                const std::string key = fmt::format("t{}-{}", t, i);
                if (!limiter.acquire_limit(key)) continue;
                ++acquired;
                const int now = ++inside;
                int seen = most.load();
                while (now > seen && !most.compare_exchange_weak(seen, now)) {}
                EXPECT_LE(conn.command("ZCARD", "cluster-limiter").as_integer(),
                          static_cast<long long>(limit));
                --inside;
                limiter.release_limit(key);
            }
        });
    for (auto& t : threads) t.join();
    EXPECT_LE(most.load(), static_cast<int>(limit));
    EXPECT_GT(acquired.load(), 0);
    EXPECT_EQ(conn.command("ZCARD", "cluster-limiter").as_integer(), 0);
}
