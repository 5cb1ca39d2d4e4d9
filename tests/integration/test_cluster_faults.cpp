// Redis Cluster under faults: slots resharded under load, a master failed
// over (CLUSTER FAILOVER) and a master SIGKILLed, on real clusters.
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/retools.hpp>

#include "core/cluster.hpp"
#include "expect.hpp"
#include "redis_cluster.hpp"
#include "wait.hpp"

namespace rt = retools::test;
using namespace std::chrono_literals;
using retools::Connection;
using retools::detail::key_slot;

namespace {

// Threads that write and read back their own counters (and take a lock)
// until stopped; errors are counted, not thrown.
class Workload {
public:
    Workload(const std::string& url, int threads) : conn_(url) {
        for (int t = 0; t < threads; ++t)
            threads_.emplace_back([this, t] {
                for (long i = 0; !stop_; ++i) {
                    const std::string key = fmt::format("w{}:{}", t, i % 50);
                    try {
                        conn_.command("SET", key, i);
                        if (conn_.command("GET", key).as_string() != std::to_string(i)) ++wrong_;
                        if (i % 10 == 0) {
                            retools::Lock lock{fmt::format("wl{}", i % 7),
                                               {.expires = 2s, .timeout = 2s, .connection = conn_}};
                        }
                        ++done_;
                    } catch (const std::exception& e) {
                        ++errors_;
                        std::lock_guard lock(mutex_);
                        last_error_ = e.what();
                    }
                }
            });
    }
    ~Workload() { stop(); }
    void stop() {
        stop_ = true;
        for (auto& t : threads_)
            if (t.joinable()) t.join();
    }
    long done() const { return done_; }
    long errors() const { return errors_; }
    long wrong() const { return wrong_; }
    std::string last_error() {
        std::lock_guard lock(mutex_);
        return last_error_;
    }

private:
    Connection conn_;
    std::atomic<bool> stop_{false};
    std::atomic<long> done_{0}, errors_{0}, wrong_{0};
    std::mutex mutex_;
    std::string last_error_;
    std::vector<std::thread> threads_;
};

// Slots that the workload's keys use, on `port`.
std::vector<std::uint16_t> busy_slots_on(rt::RedisCluster& c, int port, std::size_t most) {
    std::set<std::uint16_t> out;
    for (int t = 0; t < 4; ++t)
        for (int i = 0; i < 50 && out.size() < most; ++i) {
            auto slot = key_slot(fmt::format("w{}:{}", t, i));
            if (c.master_of(slot) == port) out.insert(slot);
        }
    return {out.begin(), out.end()};
}

}  // namespace

TEST(ClusterFaults, ReshardingUnderLoadReachesNoCaller) {
    rt::RedisCluster cluster;
    Workload load(cluster.url(), 4);
    ASSERT_TRUE(rt::wait_until([&] { return load.done() > 100; }, 5s));
    const auto masters = cluster.master_ports();
    ASSERT_EQ(masters.size(), 3u);
    // Move a few busy slots from the first master to the second, a few keys at a time.
    for (std::uint16_t slot : busy_slots_on(cluster, masters[0], 6)) {
        const long before = load.done();
        cluster.move_slot(slot, masters[1], 3, [&] { std::this_thread::sleep_for(2ms); });
        EXPECT_TRUE(rt::wait_until([&] { return load.done() > before + 20; }, 5s));
    }
    load.stop();
    EXPECT_EQ(load.errors(), 0) << load.last_error();
    EXPECT_EQ(load.wrong(), 0);
    EXPECT_GT(load.done(), 200);
}

TEST(ClusterFaults, ManualFailoverOfAMasterIsFollowed) {
    rt::RedisCluster cluster{{.replicas = 1}};
    Connection conn{cluster.url()};
    for (int i = 0; i < 100; ++i) conn.command("SET", fmt::format("k{}", i), i);
    ASSERT_TRUE(cluster.wait_replicated());
    const std::uint16_t slot = key_slot("k0");
    const int old_master = cluster.master_of(slot);
    // The replica of that master.
    int replica = 0;
    for (int port : cluster.ports()) {
        if (port == old_master) continue;
        auto info = rt::RedisCluster::direct(port).command("INFO", "replication").as_string();
        if (info.find(fmt::format("master_port:{}", old_master)) != std::string::npos) replica = port;
    }
    ASSERT_NE(replica, 0);
    Workload load(cluster.url(), 4);
    ASSERT_TRUE(rt::wait_until([&] { return load.done() > 100; }, 5s));
    rt::RedisCluster::direct(replica).command("CLUSTER", "FAILOVER");
    ASSERT_TRUE(rt::wait_until([&] { return cluster.master_of(slot) == replica; }, 10s)) << cluster.state();
    const long after = load.done();
    EXPECT_TRUE(rt::wait_until([&] { return load.done() > after + 100; }, 10s));
    load.stop();
    // A manual failover waits for the replica to catch up: nothing is lost, no caller sees it.
    EXPECT_EQ(load.errors(), 0) << load.last_error();
    EXPECT_EQ(load.wrong(), 0);
    for (int i = 0; i < 100; ++i)
        EXPECT_EQ(conn.command("GET", fmt::format("k{}", i)).as_string(), std::to_string(i));
}

TEST(ClusterFaults, KilledMasterIsReplacedAndTheWorkloadCarriesOn) {
    rt::RedisCluster cluster{{.replicas = 1, .node_timeout = 1000ms}};
    Connection conn{cluster.url()};
    for (int i = 0; i < 100; ++i) conn.command("SET", fmt::format("k{}", i), i);
    ASSERT_TRUE(cluster.wait_replicated());
    const std::uint16_t slot = key_slot("k0");
    const int victim = cluster.master_of(slot);
    Workload load(cluster.url(), 4);
    ASSERT_TRUE(rt::wait_until([&] { return load.done() > 100; }, 5s));
    cluster.kill_node(victim);
    // The replica takes over within a few node timeouts; the workload carries on.
    ASSERT_TRUE(rt::wait_until(
        [&] { return cluster.master_of(slot) != victim && cluster.master_of(slot) != 0; }, 15s))
        << cluster.state();
    const long after = load.done();
    EXPECT_TRUE(rt::wait_until([&] { return load.done() > after + 200; }, 10s)) << load.last_error();
    const long errors_then = load.errors();
    const long done_then = load.done();
    ASSERT_TRUE(rt::wait_until([&] { return load.done() > done_then + 200; }, 10s));
    load.stop();
    // Only requests in flight on the dead master may fail (a write whose
    // reply was lost, a lock waiter's BLPOP: a few per thread); after the
    // failover nothing does.
    EXPECT_LE(errors_then, 12) << load.last_error();
    EXPECT_EQ(load.errors(), errors_then) << load.last_error();
    // Every write acknowledged before the kill and replicated survives.
    for (int i = 0; i < 100; ++i)
        EXPECT_EQ(conn.command("GET", fmt::format("k{}", i)).as_string(), std::to_string(i));
}
