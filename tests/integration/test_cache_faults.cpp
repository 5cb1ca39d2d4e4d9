// Cache against bad region settings, keys of the wrong type, data other
// writers garbled, and a dead server.
#include <chrono>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/cache.hpp>
#include <retools/errors.hpp>

#include "expect.hpp"
#include "redis_server.hpp"
#include "redis_test.hpp"
#include "util/clock.hpp"

using namespace std::chrono_literals;
using retools::CacheRegion;
namespace rt = retools::test;

class CacheFaultsTest : public rt::RedisTest {
protected:
    void SetUp() override {
        rt::RedisTest::SetUp();
        CacheRegion::enabled = true;
        CacheRegion::statistics = true;
        CacheRegion::add_region("faults",
                                {.expires = 60s, .redis_expiration = 3600s, .first_value_wait = 2s});
    }
    std::string hits_key(int n) {
        return fmt::format("retools:hits:{}:faults:ns:{}", retools::detail::local_date(), n);
    }
};

TEST_F(CacheFaultsTest, RejectsAnEmptyRegionName) {
    EXPECT_THROW_MSG(CacheRegion::add_region("", std::chrono::milliseconds{1000}),
                     retools::CacheConfigurationError, "region name");
    EXPECT_FALSE(CacheRegion::has_region(""));
}

TEST_F(CacheFaultsTest, ValueKeyOfTheWrongTypeThrowsNamingItAndIsLeftAlone) {
    int calls = 0;
    auto f = retools::cache_region("faults", "ns", [&](int n) {
        ++calls;
        return n;
    });
    conn.command("SET", "retools:faults:ns:1", "someone else's string");
    for (bool statistics : {true, false}) {
        CacheRegion::statistics = statistics;
        EXPECT_THROW_MSG((void)f(1), retools::ReplyError, "retools:faults:ns:1");
    }
    EXPECT_EQ(calls, 0);
    EXPECT_EQ(conn.command("GET", "retools:faults:ns:1").as_string(), "someone else's string");
}

TEST_F(CacheFaultsTest, NonNumericCreatedCountsAsStale) {
    int calls = 0;
    auto f = retools::cache_region("faults", "ns", [&](int n) {
        ++calls;
        return n * 10;
    });
    conn.command("HSET", "retools:faults:ns:2", "value", "999", "created", "yesterday");
    EXPECT_EQ(f(2), 20);
    EXPECT_EQ(calls, 1);
    EXPECT_NEAR(conn.command("HGET", "retools:faults:ns:2", "created").as_double(),
                retools::detail::unix_now(), 60);
    EXPECT_EQ(f(2), 20);
    EXPECT_EQ(calls, 1);
}

TEST_F(CacheFaultsTest, GarbledHitCountersDoNotBreakCalls) {
    int calls = 0;
    auto f = retools::cache_region("faults", "ns", [&](int n) {
        ++calls;
        return n;
    });
    conn.command("SET", hits_key(3), "not a number");
    EXPECT_EQ(f(3), 3);
    EXPECT_EQ(f(3), 3);
    conn.command("DEL", hits_key(3));
    conn.command("RPUSH", hits_key(3), "a list");
    EXPECT_EQ(f(3), 3);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(conn.command("TYPE", hits_key(3)).as_string(), "list");
}

TEST_F(CacheFaultsTest, RegionsSetOfTheWrongTypeThrowsNamingItAndFreesTheLock) {
    conn.command("SET", "retools:regions", "x");
    auto f = retools::cache_region("faults", "ns", [](int n) { return n; });
    EXPECT_THROW_MSG((void)f(4), retools::ReplyError, "retools:regions");
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:faults:ns:4").as_integer(), 0);
    EXPECT_EQ(conn.command("GET", "retools:regions").as_string(), "x");
}

TEST(CacheDeadServer, WithRaiseCallsThrowConnectionError) {
    rt::RedisServer server;
    auto options = server.options();
    options.connect_timeout = 200ms;
    options.command_timeout = 500ms;
    retools::Connection c{options};
    CacheRegion::add_region(
        "faults_dead", {.expires = 60s, .connection = c, .on_redis_error = retools::RedisErrorPolicy::raise});
    int calls = 0;
    auto f = retools::cache_region("faults_dead", "ns", [&](int n) {
        ++calls;
        return n;
    });
    EXPECT_EQ(f(1), 1);
    server.kill();
    auto start = std::chrono::steady_clock::now();
    EXPECT_THROW((void)f(1), retools::ConnectionError);
    EXPECT_THROW((void)f(2), retools::ConnectionError);
    EXPECT_THROW(retools::invalidate_region("faults_dead"), retools::ConnectionError);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
    EXPECT_EQ(calls, 1);
}

TEST_F(CacheFaultsTest, InvalidationSkipsAValueKeyOfTheWrongTypeAndDoesTheRest) {
    int calls = 0;
    auto f = retools::cache_region("faults", "ns", [&](int n) {
        ++calls;
        return n;
    });
    EXPECT_EQ(f(5), 5);
    EXPECT_EQ(f(6), 6);
    conn.command("DEL", "retools:faults:ns:5");
    conn.command("SET", "retools:faults:ns:5", "someone else's string");  // still in the key set
    EXPECT_NO_THROW(retools::invalidate_function(f));
    EXPECT_NO_THROW(retools::invalidate_region("faults"));
    EXPECT_NO_THROW(retools::invalidate_function(f, 5));
    EXPECT_EQ(f(6), 6);
    EXPECT_EQ(calls, 3);  // 6 was invalidated and recomputed
    EXPECT_EQ(conn.command("GET", "retools:faults:ns:5").as_string(), "someone else's string");
}

TEST_F(CacheFaultsTest, StatisticsNameAKeySetOfTheWrongType) {
    auto f = retools::cache_region("faults", "ns", [](int n) { return n; });
    EXPECT_EQ(f(7), 7);
    conn.command("DEL", "retools:faults:ns:keys");
    conn.command("SET", "retools:faults:ns:keys", "x");
    EXPECT_THROW_MSG((void)retools::region_stats("faults"), retools::ReplyError, "retools:faults:ns:keys");
}
