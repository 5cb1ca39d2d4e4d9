// Cache regions on a real 3-master Redis Cluster: the cluster key layout
// (a call's value, lock and counters under one hash tag), hits, misses and
// statistics, invalidation, dogpile prevention, get_many, and keys spread
// over every master.
#include <atomic>
#include <barrier>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/retools.hpp>

#include "client/cluster.hpp"
#include "cluster_test.hpp"
#include "process.hpp"
#include "redis_cluster.hpp"
#include "util/clock.hpp"
#include "wait.hpp"

namespace rt = retools::test;
using namespace std::chrono_literals;
using retools::CacheRegion;
using retools::Connection;
using retools::Reply;
using retools::detail::key_slot;

namespace {

class ClusterCacheTest : public rt::ClusterTestBase {
protected:
    void SetUp() override {
        ClusterTestBase::SetUp();
        if (HasFatalFailure()) return;
        CacheRegion::enabled = true;
        CacheRegion::statistics = true;
        CacheRegion::add_region("short_term",
                                {.expires = 60s, .redis_expiration = 3600s, .first_value_wait = 5s});
        today = retools::detail::local_date();
    }

    std::string get(const std::string& key) {
        return conn.command("GET", key).as_optional_string().value_or("<nil>");
    }
    bool exists(const std::string& key) { return conn.command("EXISTS", key).as_integer() == 1; }
    std::set<std::string> smembers(const std::string& key) {
        std::set<std::string> out;
        for (const Reply& r : conn.command("SMEMBERS", key).as_array()) out.insert(r.as_string());
        return out;
    }
    double created(const std::string& key) { return conn.command("HGET", key, "created").as_double(); }
    // `{<region>:<ns>:<key>}`: the hash tag of one cached call.
    static std::string tag(const std::string& region, const std::string& ns, const std::string& key) {
        return fmt::format("{{{}:{}:{}}}", region, ns, key);
    }

    std::string today;
};

}  // namespace

TEST_F(ClusterCacheTest, HitsMissesAndStatisticsUseTheClusterLayout) {
    auto f = retools::cache_region("short_term", "stats", [](int x) { return x * 2; });
    auto g = retools::cache_region("short_term", "stats.g", [](const std::string& s) { return s + "!"; });
    EXPECT_EQ(f(1), 2);  // miss
    for (int i = 0; i < 3; ++i) EXPECT_EQ(f(1), 2);
    EXPECT_EQ(f(2), 4);
    EXPECT_EQ(g("a"), "a!");
    EXPECT_EQ(g("a"), "a!");

    const std::string t = tag("short_term", "stats", "1");
    const std::string value_key = "retools:" + t;
    EXPECT_EQ(conn.command("HGET", value_key, "value").as_string(), retools::pickle::dumps(2));
    EXPECT_GT(conn.command("TTL", value_key).as_integer(), 3000);
    EXPECT_EQ(get("retools:hits:" + today + ":" + t), "3");
    EXPECT_EQ(get("retools:misses:" + today + ":" + t), "1");
    EXPECT_FALSE(exists("retools:lock:" + t));           // released
    EXPECT_FALSE(exists("retools:short_term:stats:1"));  // not the single-node name
    // Tracking sets keep the original's names.
    EXPECT_EQ(smembers("retools:regions"), std::set<std::string>{"short_term"});
    EXPECT_EQ(smembers("retools:short_term:namespaces"), (std::set<std::string>{"stats", "stats.g"}));
    EXPECT_EQ(smembers("retools:short_term:stats:keys"), (std::set<std::string>{"1", "2"}));

    retools::CacheKey layout{"short_term", "stats", "1"};  // the public struct keeps the original's names
    EXPECT_EQ(layout.redis_key, "retools:short_term:stats:1");

    EXPECT_EQ(retools::cache_stats("short_term", "stats", "1"),
              (retools::CacheStats{.hits = 3, .misses = 1}));
    auto ns = f.stats();
    EXPECT_EQ(ns.total, (retools::CacheStats{.hits = 3, .misses = 2}));
    auto region = retools::region_stats("short_term");
    EXPECT_EQ(region.total, (retools::CacheStats{.hits = 4, .misses = 3}));
    EXPECT_EQ(region.namespaces.at("stats.g").keys.at("a"), (retools::CacheStats{.hits = 1, .misses = 1}));
    EXPECT_EQ(retools::stored_regions(conn), std::vector<std::string>{"short_term"});

    // A regeneration after hits: one more miss, hits kept (the original's arithmetic).
    retools::invalidate_function(f, 1);
    EXPECT_EQ(f(1), 2);
    EXPECT_EQ(retools::cache_stats("short_term", "stats", "1"),
              (retools::CacheStats{.hits = 3, .misses = 2}));
}

TEST_F(ClusterCacheTest, EveryKeyOfACallSharesASlotEvenWithBracesInTheKey) {
    auto f = retools::cache_region("short_term", "braces", [](const std::string& s) { return s.size(); });
    for (const std::string arg : {"a}b", "}", "{x}", "plain"}) {
        EXPECT_EQ(f(arg), arg.size());
        EXPECT_EQ(f(arg), arg.size());
        const std::string t = tag("short_term", "braces", arg);
        const std::string value_key = "retools:" + t;
        ASSERT_TRUE(exists(value_key)) << value_key;
        const auto slot = key_slot(value_key);
        EXPECT_EQ(key_slot("retools:lock:" + t), slot) << arg;
        EXPECT_EQ(key_slot("retools:lock:" + t + ":signal"), slot) << arg;
        EXPECT_EQ(key_slot("retools:hits:" + today + ":" + t), slot) << arg;
        EXPECT_EQ(key_slot("retools:misses:" + today + ":" + t), slot) << arg;
        EXPECT_EQ(get("retools:hits:" + today + ":" + t), "1") << arg;
    }
}

TEST_F(ClusterCacheTest, InvalidateAFunctionAndARegion) {
    int calls = 0;
    auto f = retools::cache_region("short_term", "invf", [&](int x) {
        ++calls;
        return x;
    });
    auto other = retools::cache_region("short_term", "other", [&](int x) {
        ++calls;
        return x;
    });
    auto g = retools::cache_region("short_term", "noargs", [&] {
        ++calls;
        return 0;
    });
    for (int x = 0; x < 20; ++x) f(x);
    other(1);
    g();
    EXPECT_EQ(calls, 22);

    retools::invalidate_function(f);
    const double now = retools::detail::unix_now();
    for (int x = 0; x < 20; ++x)
        EXPECT_NEAR(created("retools:" + tag("short_term", "invf", std::to_string(x))), now - 3660, 2.0);
    EXPECT_GT(created("retools:" + tag("short_term", "other", "1")), now - 5);
    EXPECT_FALSE(exists("retools:" + tag("short_term", "invf", "")));  // no hash created
    for (int x = 0; x < 20; ++x) f(x);
    other(1);
    EXPECT_EQ(calls, 42);

    // A region: every namespace backdated; a member whose hash is gone pruned.
    conn.command("DEL", "retools:" + tag("short_term", "invf", "3"));
    retools::invalidate_region("short_term");
    EXPECT_EQ(smembers("retools:short_term:invf:keys").count("3"), 0u);
    EXPECT_EQ(smembers("retools:short_term:invf:keys").size(), 19u);
    EXPECT_LT(created("retools:" + tag("short_term", "other", "1")), now - 3600);
    EXPECT_LT(created("retools:" + tag("short_term", "noargs", "")), now - 3600);
    calls = 0;
    for (int x = 0; x < 20; ++x) f(x);
    other(1);
    g();
    EXPECT_EQ(calls, 22);
}

TEST_F(ClusterCacheTest, EightThreadsOnAColdKeyCallTheFunctionOnce) {
    CacheRegion::add_region("cold", {.expires = 60s, .first_value_wait = 10s});
    std::atomic<int> calls{0};
    auto f = retools::cache_region("cold", "ns", [&](int x) {
        ++calls;
        std::this_thread::sleep_for(300ms);
        return x * 10;
    });
    constexpr int n = 8;
    std::barrier start(n);
    std::vector<int> results(n, -1);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i)
        threads.emplace_back([&, i] {
            start.arrive_and_wait();
            results[static_cast<std::size_t>(i)] = f(3);
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(calls.load(), 1);
    for (int r : results) EXPECT_EQ(r, 30);
    auto s = retools::cache_stats("cold", "ns", "3");
    EXPECT_EQ(s.calls(), n);
    EXPECT_GE(s.misses, 1);
}

TEST_F(ClusterCacheTest, StaleValueServedWhileAnotherCallerRegenerates) {
    std::atomic<int> version{0};
    std::atomic<int> calls{0};
    auto f = retools::cache_region("short_term", "slow", [&](int) {
        ++calls;
        if (version.load() > 0) std::this_thread::sleep_for(600ms);
        return version.load();
    });
    EXPECT_EQ(f(1), 0);
    retools::invalidate_function(f, 1);
    version = 1;
    std::thread regenerating([&] { EXPECT_EQ(f(1), 1); });
    ASSERT_TRUE(rt::wait_until([&] { return exists("retools:lock:" + tag("short_term", "slow", "1")); }, 5s));
    for (int i = 0; i < 5; ++i) EXPECT_EQ(f(1), 0);  // the stale value, without waiting
    regenerating.join();
    EXPECT_EQ(calls.load(), 2);
    EXPECT_EQ(f(1), 1);
    // The regeneration's own hit and the 5 served meanwhile are misses; then 1 hit.
    EXPECT_EQ(retools::cache_stats("short_term", "slow", "1"), (retools::CacheStats{.hits = 1, .misses = 7}));
}

TEST_F(ClusterCacheTest, AThousandKeysLandOnEveryMasterThroughGetMany) {
    int calls = 0;
    auto compute = [&calls](int x) {
        ++calls;
        return fmt::format("value {}", x);
    };
    auto batched = retools::cache_region("short_term", "spread.batched", compute);
    std::vector<std::tuple<int>> all;
    for (int x = 0; x < 1000; ++x) all.emplace_back(x);
    for (int x = 0; x < 500; ++x) (void)batched(x);  // half exist already
    calls = 0;
    std::vector<std::string> got = batched.get_many(all);
    EXPECT_EQ(calls, 500);
    ASSERT_EQ(got.size(), 1000u);
    for (int x = 0; x < 1000; ++x) EXPECT_EQ(got[static_cast<std::size_t>(x)], fmt::format("value {}", x));
    calls = 0;
    got = batched.get_many(all);  // all fresh: no call
    EXPECT_EQ(calls, 0);

    std::map<int, int> per_master;
    for (int x = 0; x < 1000; ++x) {
        const std::string key = std::to_string(x);
        const std::string value_key = "retools:" + tag("short_term", "spread.batched", key);
        const int port = cluster().master_of(key_slot(value_key));
        ++per_master[port];
        EXPECT_EQ(rt::RedisCluster::direct(port).command("EXISTS", value_key).as_integer(), 1) << value_key;
        EXPECT_FALSE(exists("retools:lock:" + tag("short_term", "spread.batched", key)));  // released
        // Before: a single call's miss (x < 500) or get_many's; then one hit per read.
        EXPECT_EQ(retools::cache_stats("short_term", "spread.batched", key),
                  (retools::CacheStats{.hits = x < 500 ? 2 : 1, .misses = 1}))
            << key;
    }
    ASSERT_EQ(per_master.size(), 3u);
    for (const auto& [port, count] : per_master) EXPECT_GT(count, 200) << port;
    EXPECT_EQ(smembers("retools:short_term:spread.batched:keys").size(), 1000u);
}

TEST_F(ClusterCacheTest, NearCacheIsOffOnAClusterAndTheRegionStillWorks) {
    CacheRegion::add_region("hot", {.expires = 60s, .local = {.max_entries = 100}});
    int calls = 0;
    auto f = retools::cache_region("hot", "ns", [&](int x) {
        ++calls;
        return x + 1;
    });
    EXPECT_EQ(f(1), 2);
    EXPECT_EQ(f(1), 2);
    EXPECT_EQ(calls, 1);
    // Every call reaches Redis (no local copy): each hit is counted at once.
    EXPECT_EQ(retools::cache_stats("hot", "ns", "1"), (retools::CacheStats{.hits = 1, .misses = 1}));
    retools::invalidate_function(f, 1);
    EXPECT_EQ(f(1), 2);
    EXPECT_EQ(calls, 2);
}

TEST_F(ClusterCacheTest, TagsInvalidateTheirValuesOnEveryMasterFromAnotherProcess) {
    std::map<int, int> computed;  // per user
    auto orders =
        retools::cache_region("short_term", "orders", [&](int user, int page) {
            ++computed[user];
            return user * 100 + page;
        }).with_tags([](int user, int) { return std::vector<std::string>{fmt::format("user:{}", user)}; });
    auto call_all = [&] {
        for (int user = 0; user < 30; ++user)
            for (int page = 0; page < 10; ++page) ASSERT_EQ(orders(user, page), user * 100 + page);
    };
    call_all();
    ASSERT_EQ(computed.size(), 30u);
    computed.clear();

    // User 7's values live on several masters; its tag's set on one.
    std::set<int> masters;
    for (int page = 0; page < 10; ++page)
        masters.insert(cluster().master_of(
            key_slot("retools:" + tag("short_term", "orders", fmt::format("7 {}", page)))));
    EXPECT_GE(masters.size(), 2u);
    EXPECT_EQ(conn.command("SCARD", "retools:tag:user:7").as_integer(), 10);

    const auto before = conn.round_trips();
    EXPECT_EQ(orders(7, 3), 703);
    EXPECT_EQ(conn.round_trips() - before, 1u) << "a tagged hit: one round trip to the call's node";

    // On the cluster's connection: regions of earlier tests of this process
    // may name clusters since stopped (invalidate_tag(tag) would try them too).
    auto child = rt::ChildProcess::fork([] {
        retools::invalidate_tag("user:7", retools::global_connection());
        return 0;
    });
    ASSERT_EQ(child.exit_code(15s), 0);
    call_all();
    ASSERT_EQ(computed.size(), 1u) << "only user 7's calls recompute";
    EXPECT_EQ(computed[7], 10);

    // Members whose value is gone leave the set at the next invalidation.
    conn.command("DEL", "retools:" + tag("short_term", "orders", "7 0"));
    retools::invalidate_tag("user:7", conn);
    EXPECT_EQ(conn.command("SCARD", "retools:tag:user:7").as_integer(), 9);
}
