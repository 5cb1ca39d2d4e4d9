// The near cache (CacheRegionOptions::local) against a real Redis: local hits
// cost no round trip, any write of the key (another connection, a Python
// process, the API) is seen at once, a lost tracking connection drops every
// local copy, statistics still reach the original's counters, the LRU bounds
// and `expires` hold, and many threads hitting and invalidating never see a
// value older than an invalidation they observed.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/cache.hpp>
#include <retools/errors.hpp>
#include <retools/pickle.hpp>

#include "cache/near_cache.hpp"
#include "cache/registry.hpp"
#include "expect.hpp"
#include "process.hpp"
#include "redis_test.hpp"
#include "util/clock.hpp"
#include "wait.hpp"
#include "system.hpp"

using namespace std::chrono_literals;
using retools::CacheRegion;
using retools::Connection;
using Clock = std::chrono::steady_clock;
namespace rt = retools::test;

namespace {


class NearCacheTest : public rt::RedisTest {
protected:
    void SetUp() override {
        rt::RedisTest::SetUp();
        CacheRegion::enabled = true;
        CacheRegion::statistics = true;
        CacheRegion::add_region(
            "near",
            {.expires = 60s, .first_value_wait = 5s, .connection = conn, .local = {.max_entries = 1000}});
    }

    retools::detail::NearCache& near(const std::string& region = "near") {
        auto* cache = retools::detail::near_cache(*retools::detail::find_region(region), conn);
        if (cache == nullptr) throw std::logic_error("no near cache");
        return *cache;
    }

    // Calls `f` until a call is served locally (no round trip): the value is
    // then in the near cache and tracking is up.
    template <class F>
    bool warm(F&& f) {
        return rt::wait_until(
            [&] {
                const auto before = conn.round_trips();
                f();
                return conn.round_trips() == before;
            },
            5s);
    }

    void hset_value(const std::string& key, const std::string& value) {
        Connection other{rt::redis_url()};
        other.command("HSET", key, "created", retools::detail::unix_now(), "value",
                      retools::pickle::dumps(value));
    }

    static double ms_since(Clock::time_point t) {
        return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
    }
};

TEST_F(NearCacheTest, HundredThousandHitsOfOneKeyCostNoRoundTripBeyondTheFirst) {
    int calls = 0;
    auto f = retools::cache_region("near", "ns", [&](int x) {
        ++calls;
        return fmt::format("value {}", x);
    });
    ASSERT_EQ(f(1), "value 1");
    ASSERT_TRUE(warm([&] { (void)f(1); }));
    const auto before = conn.round_trips();
    for (int i = 0; i < 100000; ++i) ASSERT_EQ(f(1), "value 1");
    EXPECT_EQ(conn.round_trips() - before, 0u);
    EXPECT_EQ(calls, 1);
}

TEST_F(NearCacheTest, StatisticsReachRedisWithinTwoSeconds) {
    auto f = retools::cache_region("near", "ns", [](int x) { return x * 2; });
    ASSERT_EQ(f(7), 14);    // a miss
    std::int64_t hits = 0;  // every later call is a hit, served by Redis or locally
    auto call = [&] {
        ++hits;
        (void)f(7);
    };
    ASSERT_TRUE(warm(call));
    for (int i = 0; i < 1000; ++i) call();
    const auto t0 = Clock::now();
    const retools::CacheStats expected{.hits = hits, .misses = 1};
    ASSERT_TRUE(rt::wait_until([&] { return retools::cache_stats("near", "ns", "7") == expected; }, 2s))
        << retools::cache_stats("near", "ns", "7").hits << " of " << hits;
    EXPECT_LT(ms_since(t0), 2000.0);
    // Each local hit is added once.
    std::this_thread::sleep_for(600ms);
    EXPECT_EQ(retools::cache_stats("near", "ns", "7"), expected);
}

TEST_F(NearCacheTest, AWriteFromAnotherConnectionIsSeenWithinFiftyMilliseconds) {
    auto f = retools::cache_region("near", "ns", [](const std::string& who) { return "computed " + who; });
    ASSERT_EQ(f("x"), "computed x");
    ASSERT_TRUE(warm([&] { (void)f("x"); }));
    // What Python retools does when it stores: HSET of created and value.
    hset_value("retools:near:ns:x", "written elsewhere");
    const auto t0 = Clock::now();
    ASSERT_TRUE(rt::wait_until([&] { return f("x") == "written elsewhere"; }, 2s));
    EXPECT_LT(ms_since(t0), 50.0);
    // And it is local again afterwards.
    EXPECT_TRUE(warm([&] { EXPECT_EQ(f("x"), "written elsewhere"); }));
}

TEST_F(NearCacheTest, AWriteFromPythonIsSeenWithinFiftyMilliseconds) {
    if (!std::filesystem::exists(rt::python3)) GTEST_SKIP() << rt::python3 << " is missing";
    auto f = retools::cache_region("near", "ns", [](const std::string& who) { return "computed " + who; });
    ASSERT_EQ(f("py"), "computed py");
    ASSERT_TRUE(warm([&] { (void)f("py"); }));
    const std::string out_file = ::testing::TempDir() + "near_python.out";
    const std::string script =
        "import pickle, sys, time\n"
        "import redis\n"
        "r = redis.Redis.from_url(sys.argv[1])\n"
        "r.hset(sys.argv[2], mapping={'created': repr(time.time()), 'value': pickle.dumps('from python', "
        "0)})\n";
    auto child =
        rt::ChildProcess::spawn({rt::python3, "-c", script, rt::redis_url(), "retools:near:ns:py"}, {}, out_file);
    const int code = child.exit_code(20s);
    const auto t0 = Clock::now();
    const std::string output = rt::read_file(out_file);
    if (code != 0 && output.find("No module named 'redis'") != std::string::npos)
        GTEST_SKIP() << "python3-redis is missing";
    ASSERT_EQ(code, 0) << output;
    ASSERT_TRUE(rt::wait_until([&] { return f("py") == "from python"; }, 2s));
    EXPECT_LT(ms_since(t0), 50.0);
}

TEST_F(NearCacheTest, AnInvalidationThroughTheApiIsSeenByTheNextCall) {
    int calls = 0;
    auto f = retools::cache_region("near", "ns", [&](int x) { return x + 100 * ++calls; });
    ASSERT_EQ(f(1), 101);
    ASSERT_TRUE(warm([&] { (void)f(1); }));
    retools::invalidate_function(f, 1);
    EXPECT_EQ(f(1), 201);  // at once, not when the tracking message arrives
    ASSERT_TRUE(warm([&] { (void)f(1); }));
    retools::invalidate_function(f);
    EXPECT_EQ(f(1), 301);
    ASSERT_TRUE(warm([&] { (void)f(1); }));
    retools::invalidate_region("near");
    EXPECT_EQ(f(1), 401);
}

TEST_F(NearCacheTest, KillingTheTrackingConnectionDropsTheLocalCopies) {
    auto f = retools::cache_region("near", "ns", [](int x) { return x; });
    for (int x = 0; x < 10; ++x) (void)f(x);
    ASSERT_TRUE(warm([&] {
        for (int x = 0; x < 10; ++x) (void)f(x);
    }));
    EXPECT_EQ(near().size(), 10u);
    // The tracking link names itself; kill it as an operator (or a network
    // fault) would. (Every one: earlier tests of this process left theirs.)
    int killed = 0;
    {
        const std::string clients = conn.command("CLIENT", "LIST").as_string();
        for (std::size_t start = 0; start < clients.size();) {
            std::size_t end = clients.find('\n', start);
            if (end == std::string::npos) end = clients.size();
            const std::string line = clients.substr(start, end - start);
            start = end + 1;
            if (line.find("name=retools-tracking ") == std::string::npos || !line.starts_with("id="))
                continue;
            const std::string id = line.substr(3, line.find(' ') - 3);
            killed += static_cast<int>(conn.command("CLIENT", "KILL", "ID", id).as_integer());
        }
    }
    ASSERT_GE(killed, 1);
    ASSERT_TRUE(rt::wait_until([&] { return near().size() == 0; }, 2s));
    const auto before = conn.round_trips();
    EXPECT_EQ(f(3), 3);
    EXPECT_GE(conn.round_trips() - before, 1u);  // went to Redis
    // Tracking comes back on its own, and with it local hits...
    EXPECT_TRUE(warm([&] {
        for (int x = 0; x < 10; ++x) (void)f(x);
    }));
    EXPECT_EQ(near().size(), 10u);
    // ...and invalidations.
    hset_value("retools:near:ns:3", "not an int");
    EXPECT_TRUE(rt::wait_until([&] { return near().size() == 9; }, 2s));
}

TEST_F(NearCacheTest, TheLruIsBoundedByEntries) {
    CacheRegion::add_region("few", {.expires = 60s, .connection = conn, .local = {.max_entries = 3}});
    auto f = retools::cache_region("few", "ns", [](int x) { return x; });
    for (int x = 0; x < 5; ++x) (void)f(x);
    ASSERT_TRUE(warm([&] { (void)f(0); }));
    for (int round = 0; round < 3; ++round)
        for (int x = 0; x < 5; ++x) (void)f(x);
    EXPECT_LE(near("few").size(), 3u);
    // The three most recently used are local; the least recently used is not.
    ASSERT_TRUE(warm([&] {
        (void)f(2);
        (void)f(3);
        (void)f(4);
    }));
    auto before = conn.round_trips();
    (void)f(4);
    (void)f(3);
    (void)f(2);
    EXPECT_EQ(conn.round_trips() - before, 0u);
    before = conn.round_trips();
    (void)f(0);
    EXPECT_EQ(conn.round_trips() - before, 1u);
    EXPECT_EQ(near("few").size(), 3u);
}

TEST_F(NearCacheTest, TheLruIsBoundedByBytes) {
    // Each value: key (about 20 bytes) + a pickled 1000-byte string + 64: three fit in 3500 bytes.
    CacheRegion::add_region("small", {.expires = 60s, .connection = conn, .local = {.max_bytes = 3500}});
    auto f = retools::cache_region("small", "ns",
                                   [](int x) { return std::string(1000, static_cast<char>('a' + x)); });
    for (int x = 0; x < 6; ++x) (void)f(x);
    ASSERT_TRUE(warm([&] { (void)f(0); }));
    for (int round = 0; round < 3; ++round)
        for (int x = 0; x < 6; ++x) EXPECT_EQ(f(x), std::string(1000, static_cast<char>('a' + x)));
    EXPECT_LE(near("small").bytes(), 3500u);
    EXPECT_EQ(near("small").size(), 3u);
    // A value larger than the whole bound is never kept locally.
    auto big = retools::cache_region("small", "big", [](int) { return std::string(5000, 'z'); });
    (void)big(1);
    for (int i = 0; i < 5; ++i) {
        auto before = conn.round_trips();
        (void)big(1);
        EXPECT_EQ(conn.round_trips() - before, 1u);
    }
}

TEST_F(NearCacheTest, ExpiresIsHonouredLocally) {
    CacheRegion::add_region("brief", {.expires = 1s, .connection = conn, .local = {.max_entries = 10}});
    std::atomic<int> calls{0};
    auto f = retools::cache_region("brief", "ns", [&](int x) { return x + 10 * ++calls; });
    ASSERT_EQ(f(1), 11);
    ASSERT_TRUE(warm([&] { (void)f(1); }));
    EXPECT_EQ(f(1), 11);
    std::this_thread::sleep_for(1200ms);
    EXPECT_EQ(f(1), 21);  // stale locally too: regenerated
    EXPECT_EQ(calls.load(), 2);
}

TEST_F(NearCacheTest, GetManyServesLocalCopiesWithoutARoundTrip) {
    int calls = 0;
    auto f = retools::cache_region("near", "ns", [&](int x) {
        ++calls;
        return x * 3;
    });
    std::vector<std::tuple<int>> all;
    for (int x = 0; x < 100; ++x) all.emplace_back(x);
    (void)f.get_many(all);
    ASSERT_TRUE(warm([&] { (void)f.get_many(all); }));
    const auto before = conn.round_trips();
    auto got = f.get_many(all);
    EXPECT_EQ(conn.round_trips() - before, 0u);
    for (int x = 0; x < 100; ++x) EXPECT_EQ(got[x], x * 3);
    EXPECT_EQ(calls, 100);
}

TEST_F(NearCacheTest, RegionsWhosePrefixWouldMatchTheCountersAreRefused) {
    EXPECT_THROW_MSG(CacheRegion::add_region("hits", {.expires = 1s, .local = {.max_entries = 1}}),
                     retools::CacheConfigurationError, "hits");
    EXPECT_THROW_MSG(CacheRegion::add_region("misses:x", {.expires = 1s, .local = {.max_entries = 1}}),
                     retools::CacheConfigurationError, "misses");
    CacheRegion::add_region("hits", {.expires = 1s});  // without a near cache: as before
}

TEST_F(NearCacheTest, OverlappingRegionPrefixesAreTrackedTogether) {
    CacheRegion::add_region("a", {.expires = 60s, .connection = conn, .local = {.max_entries = 10}});
    CacheRegion::add_region("a:b", {.expires = 60s, .connection = conn, .local = {.max_entries = 10}});
    auto fa = retools::cache_region("a", "ns", [](int) { return std::string("a"); });
    auto fb = retools::cache_region("a:b", "ns", [](int) { return std::string("b"); });
    (void)fa(1);
    (void)fb(1);
    ASSERT_TRUE(warm([&] {
        (void)fa(1);
        (void)fb(1);
    }));
    hset_value("retools:a:ns:1", "a2");
    hset_value("retools:a:b:ns:1", "b2");
    EXPECT_TRUE(rt::wait_until([&] { return fa(1) == "a2" && fb(1) == "b2"; }, 2s));
}

TEST_F(NearCacheTest, AForkedChildHasItsOwnNearCacheAndTracking) {
#if defined(__SANITIZE_THREAD__)
    GTEST_SKIP() << "ThreadSanitizer cannot start threads in the child of a multi-threaded process";
#endif
    auto f = retools::cache_region("near", "ns", [](const std::string& who) { return "computed " + who; });
    ASSERT_EQ(f("fork"), "computed fork");
    ASSERT_TRUE(warm([&] { (void)f("fork"); }));
    auto child = rt::ChildProcess::fork([&]() -> int {
        // The parent's copy is not served here; the child tracks writes itself.
        if (f("fork") != "computed fork") return 2;
        if (!warm([&] { (void)f("fork"); })) return 3;
        hset_value("retools:near:ns:fork", "seen by the child");
        if (!rt::wait_until([&] { return f("fork") == "seen by the child"; }, 2s)) return 4;
        return 0;
    });
    EXPECT_EQ(child.exit_code(20s), 0);
    // The parent saw the child's write too.
    EXPECT_TRUE(rt::wait_until([&] { return f("fork") == "seen by the child"; }, 2s));
}

// Threads hit one key while a writer changes it (from another connection, and
// through the API); once the writer has seen version k through the cache,
// no reader that starts afterwards may get an older one.
TEST_F(NearCacheTest, ManyThreadsHittingAndInvalidatingNeverSeeAValueOlderThanAnObservedWrite) {
    std::atomic<int> computed{0};
    auto f = retools::cache_region("near", "ns", [&](int) { return 1000000 + computed++; });
    Connection writer_conn{rt::redis_url()};
    const std::string key = "retools:near:ns:1";
    auto version_of = [](long v) { return v < 1000000 ? v : 0; };  // computed values count as version 0
    (void)f(1);
    ASSERT_TRUE(warm([&] { (void)f(1); }));
    std::atomic<long> observed{0};
    std::atomic<bool> stop{false};
    std::atomic<long> reads{0}, stale{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 6; ++t)
        readers.emplace_back([&] {
            while (!stop.load()) {
                const long floor = observed.load();
                const long got = version_of(f(1));
                ++reads;
                if (got != 0 && got < floor) ++stale;
            }
        });
    for (long v = 1; v <= 60; ++v) {
        writer_conn.command("HSET", key, "created", retools::detail::unix_now(), "value",
                            retools::pickle::dumps(v));
        ASSERT_TRUE(rt::wait_until([&] { return version_of(f(1)) >= v; }, 2s)) << v;
        observed = v;
        if (v % 10 == 0) {
            // The next value is computed (version 0); the next write must come after
            // that computation is stored, or the store would overwrite it.
            retools::invalidate_function(f, 1);
            ASSERT_TRUE(rt::wait_until(
                [&] {
                    return version_of(f(1)) == 0 &&
                           conn.command("EXISTS", "retools:lock:near:ns:1").as_integer() == 0;
                },
                2s));
        }
    }
    stop = true;
    for (auto& t : readers) t.join();
    EXPECT_EQ(stale.load(), 0);
    EXPECT_GT(reads.load(), 60);
}

}  // namespace
