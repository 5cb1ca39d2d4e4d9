// Cache regions against a real Redis: layout, statistics, dogpile prevention,
// invalidation, codecs and round trips.
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/cache.hpp>
#include <retools/errors.hpp>
#include <retools/lock.hpp>
#include <retools/pickle.hpp>

#include "cache/refresh.hpp"
#include "expect.hpp"
#include "redis_test.hpp"
#include "util/clock.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using namespace std::string_literals;
using retools::CacheOptions;
using retools::CacheRegion;
using retools::Connection;
using retools::Reply;
using Clock = std::chrono::steady_clock;
namespace rt = retools::test;

namespace {

// What a pickle region stores for `value` (regions store pickle by default).
template <class T>
std::string pickled(const T& value) {
    return retools::pickle::dumps(value);
}

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// Restores a global switch when the test ends, pass or fail.
class FlagGuard {
public:
    FlagGuard(std::atomic<bool>& flag, bool value) : flag_(flag), saved_(flag.exchange(value)) {}
    ~FlagGuard() { flag_ = saved_; }

private:
    std::atomic<bool>& flag_;
    bool saved_;
};

class BoomError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct Repo {
    int base = 0;
    int calls = 0;
    int load(int id) {
        ++calls;
        return base + id;
    }
    std::string name(const std::string& prefix, int id) const { return prefix + std::to_string(base + id); }
};

int g_square_calls = 0;
long square(int x) {
    ++g_square_calls;
    return static_cast<long>(x) * x;
}

}  // namespace

class CacheTest : public rt::RedisTest {
protected:
    void SetUp() override {
        rt::RedisTest::SetUp();
        CacheRegion::enabled = true;
        CacheRegion::statistics = true;
        // A short first_value_wait bounds how long a broken lock could stall a failing test.
        CacheRegion::add_region("short_term",
                                {.expires = 60s, .redis_expiration = 3600s, .first_value_wait = 5s});
        today = retools::detail::local_date();
    }

    std::string get(const std::string& key) {
        return conn.command("GET", key).as_optional_string().value_or("<nil>");
    }
    std::string hget(const std::string& key, const char* field) {
        return conn.command("HGET", key, field).as_optional_string().value_or("<nil>");
    }
    std::set<std::string> smembers(const std::string& key) {
        std::set<std::string> out;
        for (const Reply& r : conn.command("SMEMBERS", key).as_array()) out.insert(r.as_string());
        return out;
    }
    std::set<std::string> all_keys() { return smembers_of(conn.command("KEYS", "*")); }
    static std::set<std::string> smembers_of(const Reply& reply) {
        std::set<std::string> out;
        for (const Reply& r : reply.as_array()) out.insert(r.as_string());
        return out;
    }
    std::string hits(const std::string& region, const std::string& ns, const std::string& key) {
        return get(fmt::format("retools:hits:{}:{}:{}:{}", today, region, ns, key));
    }
    std::string misses(const std::string& region, const std::string& ns, const std::string& key) {
        return get(fmt::format("retools:misses:{}:{}:{}:{}", today, region, ns, key));
    }
    double created(const std::string& key) { return conn.command("HGET", key, "created").as_double(); }

    std::string today;
};

// ---- layout ----

TEST_F(CacheTest, RawLayoutAfterAMissAndAHit) {
    int calls = 0;
    auto search =
        retools::cache_region("short_term", "myapp.search", [&](const std::string& term, int limit) {
            ++calls;
            return fmt::format("{} results for {}", limit, term);
        });
    const double before = retools::detail::unix_now();
    EXPECT_EQ(search("bunny", 10), "10 results for bunny");
    const double after = retools::detail::unix_now();
    EXPECT_EQ(calls, 1);

    const std::string value_key = "retools:short_term:myapp.search:bunny 10";
    const std::string hit_key = "retools:hits:" + today + ":short_term:myapp.search:bunny 10";
    const std::string miss_key = "retools:misses:" + today + ":short_term:myapp.search:bunny 10";
    // (The dogpile lock's fencing counter beside them: an extra key, which Python never reads.)
    const std::string fence_key = "retools:lock:short_term:myapp.search:bunny 10:fence";
    EXPECT_EQ(all_keys(), (std::set<std::string>{value_key, hit_key, miss_key, "retools:regions",
                                                 "retools:short_term:namespaces",
                                                 "retools:short_term:myapp.search:keys", fence_key}));
    EXPECT_EQ(conn.command("TYPE", value_key).as_string(), "hash");
    EXPECT_EQ(conn.command("HLEN", value_key).as_integer(), 2);
    EXPECT_EQ(hget(value_key, "value"), pickled("10 results for bunny"));
    const double stored_at = created(value_key);
    EXPECT_GE(stored_at, before - 0.001);
    EXPECT_LE(stored_at, after + 0.001);
    const long long ttl = conn.command("TTL", value_key).as_integer();
    EXPECT_GT(ttl, 3590);
    EXPECT_LE(ttl, 3600);
    EXPECT_EQ(smembers("retools:regions"), std::set<std::string>{"short_term"});
    EXPECT_EQ(smembers("retools:short_term:namespaces"), std::set<std::string>{"myapp.search"});
    EXPECT_EQ(smembers("retools:short_term:myapp.search:keys"), std::set<std::string>{"bunny 10"});
    EXPECT_EQ(get(hit_key), "0");
    EXPECT_EQ(get(miss_key), "1");
    // The original sets no TTL on counters; retools sets stats_retention (90 days).
    EXPECT_GT(conn.command("TTL", hit_key).as_integer(), 90 * 86400 - 5);
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:short_term:myapp.search:bunny 10").as_integer(), 0);

    // A hit: same value, function not called, one more hit, nothing else changes.
    EXPECT_EQ(search("bunny", 10), "10 results for bunny");
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(get(hit_key), "1");
    EXPECT_EQ(get(miss_key), "1");
    EXPECT_EQ(created(value_key), stored_at);
    EXPECT_EQ(all_keys().size(), 7u);
}

TEST_F(CacheTest, TwoArgumentSetsMakeTwoKeys) {
    int calls = 0;
    auto f = retools::cache_region("short_term", "ns", [&](int a, const std::string& b) {
        ++calls;
        return fmt::format("{}-{}", a, b);
    });
    EXPECT_EQ(f(1, "x"), "1-x");
    EXPECT_EQ(f(2, "y z"), "2-y z");
    EXPECT_EQ(f(1, "x"), "1-x");
    EXPECT_EQ(calls, 2);
    EXPECT_EQ(smembers("retools:short_term:ns:keys"), (std::set<std::string>{"1 x", "2 y z"}));
    EXPECT_EQ(hget("retools:short_term:ns:1 x", "value"), pickled("1-x"));
    EXPECT_EQ(hget("retools:short_term:ns:2 y z", "value"), pickled("2-y z"));
}

TEST_F(CacheTest, KeysRenderArgumentsLikePythonStr) {
    auto f = retools::cache_region("short_term", "ns", [](bool b, double d, std::optional<int> o, long n) {
        return fmt::format("{}{}{}{}", b, d, o.value_or(0), n);
    });
    f(true, 1.0, std::nullopt, -3);
    f(false, 0.1, 7, 10'000'000'000);
    auto fz = retools::cache_region("short_term", "noargs", [] { return 5; });
    EXPECT_EQ(fz(), 5);
    EXPECT_EQ(smembers("retools:short_term:ns:keys"),
              (std::set<std::string>{"True 1.0 None -3", "False 0.1 7 10000000000"}));
    EXPECT_EQ(smembers("retools:short_term:noargs:keys"), std::set<std::string>{""});
    EXPECT_EQ(hget("retools:short_term:noargs:", "value"), pickled(5));
}

// ---- statistics ----

TEST_F(CacheTest, HitAndMissCountersFollowTheOriginalsArithmetic) {
    auto f = retools::cache_region("short_term", "stats", [](int x) { return x * 2; });
    EXPECT_EQ(f(1), 2);                              // miss
    for (int i = 0; i < 3; ++i) EXPECT_EQ(f(1), 2);  // 3 hits
    EXPECT_EQ(hits("short_term", "stats", "1"), "3");
    EXPECT_EQ(misses("short_term", "stats", "1"), "1");
    retools::invalidate_function(f, 1);
    EXPECT_EQ(f(1), 2);  // a regeneration after hits that day: one more miss, hits kept.
    // (The original's defect would write misses = 1 - 3 here.)
    EXPECT_EQ(hits("short_term", "stats", "1"), "3");
    EXPECT_EQ(misses("short_term", "stats", "1"), "2");
    EXPECT_EQ(f(1), 2);
    EXPECT_EQ(hits("short_term", "stats", "1"), "4");
    EXPECT_EQ(misses("short_term", "stats", "1"), "2");
}

TEST_F(CacheTest, StaleValueServedWhileAnotherCallerRegeneratesAndItsHitsBecomeMisses) {
    std::atomic<int> version{0};
    std::atomic<int> calls{0};
    auto f = retools::cache_region("short_term", "slow", [&](int) {
        ++calls;
        if (version.load() > 0) std::this_thread::sleep_for(600ms);
        return version.load();
    });
    EXPECT_EQ(f(1), 0);  // stored: 0 hits, 1 miss
    retools::invalidate_function(f, 1);
    version = 1;

    std::thread regenerating([&] { EXPECT_EQ(f(1), 1); });
    ASSERT_TRUE(rt::wait_until(
        [&] { return conn.command("EXISTS", "retools:lock:short_term:slow:1").as_integer() == 1; }, 5s));
    for (int i = 0; i < 5; ++i) {
        auto start = Clock::now();
        EXPECT_EQ(f(1), 0);  // the stale value, at once (waiting would have given 1)
        EXPECT_LT(seconds_since(start), 0.5);
    }
    regenerating.join();
    EXPECT_EQ(calls.load(), 2);
    EXPECT_EQ(f(1), 1);  // the fresh value
    // The regeneration's own hit and the 5 served meanwhile are misses; then 1 hit.
    EXPECT_EQ(misses("short_term", "slow", "1"), "7");
    EXPECT_EQ(hits("short_term", "slow", "1"), "1");
}

TEST_F(CacheTest, StatisticsCountersExpireAfterTheRegionsRetention) {
    auto f = retools::cache_region("short_term", "ttl", [](int x) { return x; });
    f(1);  // a miss
    f(1);  // a hit
    const auto day = retools::detail::local_date();
    const long long hit_ttl =
        conn.command("TTL", fmt::format("retools:hits:{}:short_term:ttl:1", day)).as_integer();
    const long long miss_ttl =
        conn.command("TTL", fmt::format("retools:misses:{}:short_term:ttl:1", day)).as_integer();
    EXPECT_GT(hit_ttl, 90 * 86400 - 60);
    EXPECT_LE(hit_ttl, 90 * 86400);
    EXPECT_GT(miss_ttl, 90 * 86400 - 60);
    CacheRegion::add_region("forever", {.expires = 60s, .stats_retention = 0s});
    auto g = retools::cache_region("forever", "ttl", [](int x) { return x; });
    g(1);
    g(1);
    EXPECT_EQ(conn.command("TTL", fmt::format("retools:hits:{}:forever:ttl:1", day)).as_integer(), -1);
    EXPECT_EQ(conn.command("TTL", fmt::format("retools:misses:{}:forever:ttl:1", day)).as_integer(), -1);
    EXPECT_THROW(CacheRegion::add_region("bad", {.stats_retention = -1s}), retools::CacheConfigurationError);
}

TEST_F(CacheTest, StatisticsFalseWritesNoCounterKeys) {
    int calls = 0;
    {
        FlagGuard off(CacheRegion::statistics, false);
        auto f = retools::cache_region("short_term", "nostats", [&](int x) { return ++calls + x; });
        EXPECT_EQ(f(1), 2);
        EXPECT_EQ(f(1), 2);
        // A per-function override wins over the global switch.
        auto g = retools::cache_region("short_term", "forced", [](int x) { return x; }, {.statistics = true});
        g(1);
        EXPECT_EQ(misses("short_term", "forced", "1"), "1");
    }
    auto h = retools::cache_region("short_term", "silenced", [](int x) { return x; }, {.statistics = false});
    h(1);
    h(1);
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(smembers_of(conn.command("KEYS", "retools:hits:*:nostats:*")).empty());
    EXPECT_TRUE(smembers_of(conn.command("KEYS", "retools:misses:*:nostats:*")).empty());
    EXPECT_TRUE(smembers_of(conn.command("KEYS", "retools:hits:*:silenced:*")).empty());
    EXPECT_TRUE(smembers_of(conn.command("KEYS", "retools:misses:*:silenced:*")).empty());
    EXPECT_EQ(conn.command("EXISTS", "retools:short_term:silenced:1").as_integer(), 1);
}

TEST_F(CacheTest, StatisticsReader) {
    auto f = retools::cache_region("short_term", "reader.f", [](int x) { return x; });
    auto g = retools::cache_region("short_term", "reader.g", [](const std::string& s) { return s; });
    f(1);
    f(1);
    f(1);
    f(2);
    g("a");
    g("a");
    auto one = retools::cache_stats("short_term", "reader.f", "1");
    EXPECT_EQ(one, (retools::CacheStats{.hits = 2, .misses = 1}));
    EXPECT_EQ(one.calls(), 3);
    EXPECT_DOUBLE_EQ(one.hit_ratio(), 2.0 / 3.0);
    EXPECT_EQ(retools::cache_stats("short_term", "reader.f", "1", today), one);
    EXPECT_EQ(retools::cache_stats("short_term", "reader.f", "1", "2001-01-01"), retools::CacheStats{});

    auto ns = f.stats();
    EXPECT_EQ(ns.total, (retools::CacheStats{.hits = 2, .misses = 2}));
    ASSERT_EQ(ns.keys.size(), 2u);
    EXPECT_EQ(ns.keys.at("2"), (retools::CacheStats{.hits = 0, .misses = 1}));

    auto region = retools::region_stats("short_term");
    EXPECT_EQ(region.total, (retools::CacheStats{.hits = 3, .misses = 3}));
    ASSERT_EQ(region.namespaces.size(), 2u);
    EXPECT_EQ(region.namespaces.at("reader.g").total, (retools::CacheStats{.hits = 1, .misses = 1}));
    EXPECT_EQ(region.namespaces.at("reader.f").keys.at("1"), one);
    EXPECT_EQ(retools::region_stats("nothing_here").total, retools::CacheStats{});
}

// ---- switches and configuration ----

TEST_F(CacheTest, DisabledBypassesRedis) {
    FlagGuard off(CacheRegion::enabled, false);
    int calls = 0;
    auto f = retools::cache_region("short_term", "ns", [&](int x) { return x + ++calls; });
    const auto trips = conn.round_trips();
    EXPECT_EQ(f(1), 2);
    EXPECT_EQ(f(1), 3);
    EXPECT_EQ(conn.round_trips(), trips);
    EXPECT_EQ(conn.command("DBSIZE").as_integer(), 0);
}

TEST_F(CacheTest, UnknownRegionThrowsAtCallTimeNamingIt) {
    auto f = retools::cache_region("no_such_region", "ns", [](int x) { return x; });  // fine until called
    EXPECT_FALSE(CacheRegion::has_region("no_such_region"));
    ASSERT_THROW_MSG(f(1), retools::CacheConfigurationError, "no_such_region");
    FlagGuard off(CacheRegion::enabled, false);  // checked first, like the original
    EXPECT_THROW(f(1), retools::CacheConfigurationError);
    EXPECT_THROW(CacheRegion::load("no_such_region", "ns", "k"), retools::CacheConfigurationError);
    EXPECT_THROW(retools::invalidate_function(f), retools::CacheConfigurationError);
}

TEST_F(CacheTest, RegionSettingsAreValidated) {
    EXPECT_THROW(CacheRegion::add_region("bad", -1s), retools::CacheConfigurationError);
    EXPECT_THROW(CacheRegion::add_region("bad", 1s, 0s), retools::CacheConfigurationError);
    EXPECT_THROW(CacheRegion::add_region("bad", {.expires = 1s, .first_value_wait = -1ms}),
                 retools::CacheConfigurationError);
    EXPECT_FALSE(CacheRegion::has_region("bad"));
    CacheRegion::add_region("good", 90s);
    auto settings = CacheRegion::region("good");
    ASSERT_TRUE(settings);
    EXPECT_EQ(settings->expires, 90s);
    EXPECT_EQ(settings->redis_expiration, 604800s);
    EXPECT_TRUE(CacheRegion::has_region("good"));
}

TEST_F(CacheTest, RegionRegistryIsSafeToReadWhileItChanges) {
    std::atomic<bool> stop{false};
    std::thread writer([&] {
        for (int i = 0; !stop; ++i)
            CacheRegion::add_region(fmt::format("churn{}", i % 8), std::chrono::seconds(i % 50 + 1));
    });
    std::vector<std::thread> readers;
    for (int t = 0; t < 4; ++t)
        readers.emplace_back([&] {
            for (int i = 0; i < 2000; ++i) {
                (void)CacheRegion::has_region("short_term");
                (void)CacheRegion::region(fmt::format("churn{}", i % 8));
            }
        });
    for (auto& r : readers) r.join();
    stop = true;
    writer.join();
    EXPECT_TRUE(CacheRegion::has_region("short_term"));
}

TEST_F(CacheTest, RegionWithItsOwnConnection) {
    auto options = rt::redis_options();
    options.db = 1;
    retools::Connection db1{options};
    db1.command("FLUSHDB");
    CacheRegion::add_region("db1_region", {.expires = 60s, .connection = db1});
    auto f = retools::cache_region("db1_region", "ns", [](int x) { return x; });
    EXPECT_EQ(f(4), 4);
    EXPECT_EQ(conn.command("DBSIZE").as_integer(), 0);
    EXPECT_EQ(db1.command("HGET", "retools:db1_region:ns:4", "value").as_string(), pickled(4));
    EXPECT_EQ(f.stats().total.misses, 1);
    retools::invalidate_region("db1_region");
    EXPECT_LT(db1.command("HGET", "retools:db1_region:ns:4", "created").as_double(),
              retools::detail::unix_now() - 3600);
    db1.command("FLUSHDB");
}

// ---- callables ----

TEST_F(CacheTest, KeepsSignaturesOfLambdasFunctionPointersAndMembers) {
    auto sq = retools::cache_region("short_term", "sq", &square);
    static_assert(std::is_same_v<decltype(sq(3)), long>);
    g_square_calls = 0;
    EXPECT_EQ(sq(3), 9);
    EXPECT_EQ(sq(3), 9);
    EXPECT_EQ(g_square_calls, 1);

    auto load = retools::cache_region("short_term", "myapp.Repo.load", &Repo::load);
    static_assert(std::is_invocable_r_v<int, decltype(load), Repo&, int>);
    static_assert(!std::is_invocable_v<decltype(load), int>);
    Repo a{100}, b{200};
    EXPECT_EQ(load(a, 1), 101);
    EXPECT_EQ(load(b, 1), 101);  // the object is not part of the key, like the original's self
    EXPECT_EQ(a.calls + b.calls, 1);
    EXPECT_EQ(smembers("retools:short_term:myapp.Repo.load:keys"), std::set<std::string>{"1"});

    auto name = retools::cache_region("short_term", "myapp.Repo.name", &Repo::name);
    const Repo c{5};
    EXPECT_EQ(name(c, "id-", 1), "id-6");
    EXPECT_EQ(smembers("retools:short_term:myapp.Repo.name:keys"), std::set<std::string>{"id- 1"});

    auto generic =
        retools::cache_region<std::vector<int>(int, int)>("short_term", "generic", [](auto from, auto to) {
            std::vector<int> out;
            for (auto i = from; i < to; ++i) out.push_back(i);
            return out;
        });
    EXPECT_EQ(generic(1, 4), (std::vector<int>{1, 2, 3}));
    EXPECT_EQ(hget("retools:short_term:generic:1 4", "value"), pickled(std::vector<int>{1, 2, 3}));
    EXPECT_EQ(generic(1, 4), (std::vector<int>{1, 2, 3}));

    std::function<std::string(std::string)> wrapped = [](std::string s) { return s + "!"; };
    auto from_function = retools::cache_region("short_term", "fn", wrapped);
    EXPECT_EQ(from_function("hi"), "hi!");
}

TEST_F(CacheTest, NamespaceArgsMatchThePythonDecorator) {
    auto ns = retools::function_namespace("myapp.search", "load", "load_things");
    auto f = retools::cache_region("short_term", "myapp.search.load", [](int x) { return x; },
                                   {.namespace_args = {"load_things"}});
    EXPECT_EQ(f.namespace_name(), ns);
    f(1);
    EXPECT_EQ(smembers("retools:short_term:namespaces"),
              std::set<std::string>{"myapp.search.load.load_things"});
}

TEST_F(CacheTest, ExceptionsPropagateReleaseTheLockAndStoreNothing) {
    int calls = 0;
    bool fail = true;
    auto f = retools::cache_region("short_term", "boom", [&](int x) {
        ++calls;
        if (fail) throw BoomError("boom");
        return x;
    });
    EXPECT_THROW(f(1), BoomError);
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:short_term:boom:1").as_integer(), 0);
    EXPECT_EQ(conn.command("EXISTS", "retools:short_term:boom:1").as_integer(), 0);
    EXPECT_TRUE(smembers("retools:short_term:boom:keys").empty());
    fail = false;
    auto start = Clock::now();
    EXPECT_EQ(f(1), 1);  // no wait for a leftover lock
    EXPECT_LT(seconds_since(start), 0.5);

    // With a stale value: the exception propagates and the old value stays.
    retools::invalidate_function(f, 1);
    const double old_created = created("retools:short_term:boom:1");
    fail = true;
    EXPECT_THROW(f(1), BoomError);
    EXPECT_EQ(created("retools:short_term:boom:1"), old_created);
    EXPECT_EQ(hget("retools:short_term:boom:1", "value"), pickled(1));
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:short_term:boom:1").as_integer(), 0);
    EXPECT_EQ(calls, 3);
}

// ---- values ----

TEST_F(CacheTest, CorruptValueIsRegenerated) {
    int calls = 0;
    auto f = retools::cache_region("short_term", "json", [&](int n) {
        ++calls;
        return std::vector<int>(static_cast<std::size_t>(n), 7);
    });
    EXPECT_EQ(f(2), (std::vector<int>{7, 7}));
    conn.command("HSET", "retools:short_term:json:2", "value",
                 "not a pickle{");  // still fresh, but unreadable
    EXPECT_EQ(f(2), (std::vector<int>{7, 7}));
    EXPECT_EQ(calls, 2);
    EXPECT_EQ(hget("retools:short_term:json:2", "value"), pickled(std::vector<int>{7, 7}));

    // A list a Python service pickled (protocol 0) is a hit; a value of another type is a miss, not an error.
    conn.command("HSET", "retools:short_term:json:2", "value", "(lp0\nI8\naI8\na.");
    EXPECT_EQ(f(2), (std::vector<int>{8, 8}));
    EXPECT_EQ(calls, 2);
    conn.command("HSET", "retools:short_term:json:2", "value", "(dp0\nVa\np1\nI1\ns.");
    EXPECT_EQ(f(2), (std::vector<int>{7, 7}));
    EXPECT_EQ(calls, 3);

    // regenerate = false serves any decodable stored value, and regenerates an undecodable one.
    auto g = retools::cache_region("short_term", "json",
                                   [&](int) {
                                       ++calls;
                                       return std::vector<int>{1};
                                   },
                                   {.regenerate = false});
    conn.command("HSET", "retools:short_term:json:2", "value", "{{{");
    EXPECT_EQ(g(2), (std::vector<int>{1}));
    EXPECT_EQ(calls, 4);
}

TEST_F(CacheTest, RegenerateFalseServesStaleValues) {
    int calls = 0;
    auto f = retools::cache_region("short_term", "keep", [&](int x) { return x + ++calls; },
                                   {.regenerate = false});
    EXPECT_EQ(f(1), 2);
    retools::invalidate_function(f, 1);
    EXPECT_EQ(f(1), 2);  // stale, served anyway
    EXPECT_EQ(calls, 1);
}

TEST_F(CacheTest, LowLevelLoad) {
    EXPECT_EQ(CacheRegion::load("short_term", "raw", "k", false), std::nullopt);  // the original's NoneMarker
    EXPECT_EQ(CacheRegion::load("short_term", "raw", "k"), std::nullopt);  // no callable: nothing to do
    EXPECT_EQ(CacheRegion::load("short_term", "raw", "k", true, [] { return std::string("v1"); }), "v1");
    EXPECT_EQ(CacheRegion::load("short_term", "raw", "k", true, [] { return std::string("v2"); }), "v1");
    retools::CacheKey keys{"short_term", "raw", "k"};
    conn.command("HSET", keys.redis_key, "created", 1.0);
    EXPECT_EQ(CacheRegion::load("short_term", "raw", "k", false), "v1");  // stale, not regenerated
    EXPECT_EQ(CacheRegion::load(
                  "short_term", "raw", "k", true, [] { return std::string("v3"); }, false),
              "v3");
    // As in the original, the two "nothing stored" answers counted as hits
    // (2, kept through the regeneration), then one hit and one stale read; the
    // last call, without statistics, counted nothing.
    EXPECT_EQ(get(keys.redis_hit_key), "4");
    EXPECT_EQ(get(keys.redis_miss_key), "1");
}

// ---- invalidation ----

TEST_F(CacheTest, InvalidateOneKey) {
    int calls = 0;
    auto f = retools::cache_region("short_term", "inv", [&](const std::string& s) {
        ++calls;
        return s;
    });
    f("a");
    f("b");
    const double b_created = created("retools:short_term:inv:b");
    const double now = retools::detail::unix_now();
    retools::invalidate_function(f, "a");
    EXPECT_NEAR(created("retools:short_term:inv:a"), now - 60 - 3600, 2.0);
    EXPECT_EQ(hget("retools:short_term:inv:a", "value"), pickled("a"));  // never deleted
    EXPECT_EQ(created("retools:short_term:inv:b"), b_created);
    f("a");
    f("b");
    EXPECT_EQ(calls, 3);
    // Invalidating a call never made creates nothing.
    retools::invalidate_function(f, "never");
    EXPECT_EQ(conn.command("EXISTS", "retools:short_term:inv:never").as_integer(), 0);
}

TEST_F(CacheTest, InvalidateAFunction) {
    int calls = 0;
    auto f = retools::cache_region("short_term", "invf", [&](int x) {
        ++calls;
        return x;
    });
    auto other = retools::cache_region("short_term", "other", [&](int x) {
        ++calls;
        return x;
    });
    f(1);
    f(2);
    other(1);
    retools::invalidate_function(f, 99);  // loads the script into the server (no such key: nothing changes)
    const auto trips = conn.round_trips();
    retools::invalidate_function(f);
    EXPECT_EQ(conn.round_trips() - trips, 2u);  // SMEMBERS, then one script for every key
    const double now = retools::detail::unix_now();
    EXPECT_NEAR(created("retools:short_term:invf:1"), now - 3660, 2.0);
    EXPECT_NEAR(created("retools:short_term:invf:2"), now - 3660, 2.0);
    EXPECT_GT(created("retools:short_term:other:1"), now - 5);
    EXPECT_EQ(conn.command("EXISTS", "retools:short_term:invf:").as_integer(), 0);
    f(1);
    f(2);
    other(1);
    EXPECT_EQ(calls, 5);
    retools::invalidate_callable(f, 2);  // the original's other name
    f(1);
    f(2);
    EXPECT_EQ(calls, 6);
}

TEST_F(CacheTest, EvictDeletesValuesSoTheyAreNeverServedAgain) {
    int calls = 0;
    auto f = retools::cache_region("short_term", "evict", [&](int x) {
        ++calls;
        return x * 10;
    });
    auto other = retools::cache_region("short_term", "kept", [&](int x) { return x; });
    f(1);
    f(2);
    f(3);
    other(1);
    retools::evict_function(f, 1);
    EXPECT_EQ(conn.command("EXISTS", "retools:short_term:evict:1").as_integer(), 0);
    EXPECT_EQ(conn.command("SISMEMBER", "retools:short_term:evict:keys", "1").as_integer(), 0);
    EXPECT_EQ(conn.command("EXISTS", "retools:short_term:evict:2").as_integer(), 1);
    EXPECT_EQ(f(1), 10);
    EXPECT_EQ(calls, 4);  // computed again
    retools::evict_function(f);
    for (const char* k : {"1", "2", "3"})
        EXPECT_EQ(conn.command("EXISTS", std::string("retools:short_term:evict:") + k).as_integer(), 0) << k;
    EXPECT_EQ(conn.command("EXISTS", "retools:short_term:evict:keys").as_integer(), 0);
    EXPECT_EQ(conn.command("EXISTS", "retools:short_term:kept:1").as_integer(), 1);
    EXPECT_EQ(f(2), 20);
    EXPECT_EQ(calls, 5);
}

TEST_F(CacheTest, InvalidateARegionPrunesKeysWhoseHashExpired) {
    CacheRegion::add_region("long_term", 7200s);
    int calls = 0;
    auto f = retools::cache_region("short_term", "r.f", [&](int x) {
        ++calls;
        return x;
    });
    auto g = retools::cache_region("short_term", "r.g", [&] {
        ++calls;
        return 0;
    });
    auto h = retools::cache_region("long_term", "r.h", [&](int x) {
        ++calls;
        return x;
    });
    f(1);
    f(2);
    g();
    h(1);
    conn.command("DEL", "retools:short_term:r.f:2");  // as if its TTL ran out
    const double now = retools::detail::unix_now();
    retools::invalidate_region("short_term");
    // Longest expires of all regions (7200 s) plus an hour.
    double longest = 0;
    for (const auto& name : CacheRegion::region_names())
        longest = std::max(longest, retools::detail::to_seconds(CacheRegion::region(name)->expires));
    EXPECT_NEAR(created("retools:short_term:r.f:1"), now - longest - 3600, 2.0);
    EXPECT_NEAR(created("retools:short_term:r.g:"), now - longest - 3600, 2.0);
    EXPECT_GT(created("retools:long_term:r.h:1"), now - 5);  // other region untouched
    EXPECT_EQ(smembers("retools:short_term:r.f:keys"), std::set<std::string>{"1"});
    EXPECT_EQ(conn.command("EXISTS", "retools:short_term:r.f:2").as_integer(), 0);
    EXPECT_EQ(conn.command("EXISTS", "retools:short_term:r.f:").as_integer(), 0);
    f(1);
    g();
    h(1);
    EXPECT_EQ(calls, 6);
    CacheRegion::invalidate("short_term");
    f(1);
    EXPECT_EQ(calls, 7);
}

TEST_F(CacheTest, ReadsAndInvalidatesWhatAPythonServiceWrote) {
    // Exactly what Python retools leaves after caching myapp.search.load('bunny', 10)
    // in its region "py_only" (not added in this process) and counting 5 hits.
    const std::string ns = retools::function_namespace("myapp.search", "load", "load_things");
    const std::string value_key = "retools:py_only:" + ns + ":bunny 10";
    const double now = retools::detail::unix_now();
    conn.command("HMSET", value_key, "created", now, "value", "S'found'\np1\n.");
    conn.command("SADD", "retools:regions", "py_only");
    conn.command("SADD", "retools:py_only:namespaces", ns);
    conn.command("SADD", "retools:py_only:" + ns + ":keys", "bunny 10");
    conn.command("SET", "retools:hits:" + today + ":py_only:" + ns + ":bunny 10", "5");
    conn.command("SET", "retools:misses:" + today + ":py_only:" + ns + ":bunny 10", "2");

    auto stats = retools::region_stats("py_only");
    EXPECT_EQ(stats.total, (retools::CacheStats{.hits = 5, .misses = 2}));
    EXPECT_EQ(stats.namespaces.at(ns).keys.at("bunny 10"), (retools::CacheStats{.hits = 5, .misses = 2}));

    retools::invalidate_region("py_only");
    EXPECT_LT(created(value_key), now - 3600);
    EXPECT_EQ(hget(value_key, "value"), "S'found'\np1\n.");  // untouched
}

// ---- dogpile prevention ----

TEST_F(CacheTest, SixteenThreadsOnAColdKeyCallTheFunctionOnce) {
    CacheRegion::add_region("cold", {.expires = 60s, .first_value_wait = 10s});
    std::atomic<int> calls{0};
    auto f = retools::cache_region("cold", "ns", [&](int x) {
        ++calls;
        std::this_thread::sleep_for(300ms);
        return x * 10;
    });
    constexpr int n = 16;
    std::barrier start(n);
    std::vector<int> results(n, -1);
    std::vector<std::thread> threads;
    auto t0 = Clock::now();
    for (int i = 0; i < n; ++i)
        threads.emplace_back([&, i] {
            start.arrive_and_wait();
            results[static_cast<std::size_t>(i)] = f(3);
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(calls.load(), 1);
    for (int r : results) EXPECT_EQ(r, 30);
    EXPECT_LT(seconds_since(t0), 5.0);
    auto s = retools::cache_stats("cold", "ns", "3");
    EXPECT_EQ(s.calls(), n);
    EXPECT_GE(s.misses, 1);
}

TEST_F(CacheTest, ProcessesShareTheDogpileLock) {
    CacheRegion::add_region("procs", {.expires = 60s, .first_value_wait = 10s});
    auto f = retools::cache_region("procs", "ns", [](int x) {
        retools::global_connection().command("INCR", "test:calls");
        std::this_thread::sleep_for(300ms);
        return x + 1;
    });
    std::vector<rt::ChildProcess> children;
    for (int i = 0; i < 3; ++i)
        children.push_back(rt::ChildProcess::fork([&] { return f(41) == 42 ? 0 : 3; }));
    EXPECT_EQ(f(41), 42);
    for (auto& child : children) EXPECT_EQ(child.exit_code(10s), 0);
    EXPECT_EQ(get("test:calls"), "1");
}

TEST_F(CacheTest, WaitingForAFirstValueIsBounded) {
    CacheRegion::add_region("wait", {.expires = 60s, .first_value_wait = 300ms});
    retools::Lock held{"retools:lock:wait:ns:1",
                       {.expires = 10s, .timeout = 0s}};  // another caller regenerating
    int calls = 0;
    auto f = retools::cache_region("wait", "ns", [&](int x) {
        ++calls;
        return x;
    });
    auto start = Clock::now();
    ASSERT_THROW_MSG(f(1), retools::LockTimeout, "retools:lock:wait:ns:1");
    EXPECT_GE(seconds_since(start), 0.29);
    EXPECT_LT(seconds_since(start), 2.0);
    EXPECT_EQ(calls, 0);
    EXPECT_EQ(CacheRegion::load("wait", "ns", "1", true, [] { return std::string("x"); }), std::nullopt);
    held.unlock();
    EXPECT_EQ(f(1), 1);
}

TEST_F(CacheTest, WaiterReadsTheValueTheLockHolderStored) {
    CacheRegion::add_region("handoff", {.expires = 60s, .first_value_wait = 5s});
    int calls = 0;
    auto f = retools::cache_region("handoff", "ns", [&](int x) {
        ++calls;
        return x;
    });
    retools::Lock held{"retools:lock:handoff:ns:1", {.expires = 10s, .timeout = 0s}};
    std::thread other([&] {
        std::this_thread::sleep_for(200ms);
        conn.command("HSET", "retools:handoff:ns:1", "created", retools::detail::unix_now(), "value",
                     pickled(99));
        held.unlock();
    });
    EXPECT_EQ(f(1), 99);
    other.join();
    EXPECT_EQ(calls, 0);
}

// ---- value formats ----

namespace {
struct Blob {
    std::string data;
};
}  // namespace

// A type with its own codec: stored as Python bytes in a pickle region.
template <>
struct retools::Codec<Blob> {
    static std::string encode(const Blob& b) { return "blob:" + b.data; }
    static std::optional<Blob> decode(std::string_view bytes) {
        if (!bytes.starts_with("blob:")) return std::nullopt;
        return Blob{std::string(bytes.substr(5))};
    }
};

namespace {

struct Item {
    std::string name;
    std::vector<double> scores;
};
void to_json(nlohmann::json& j, const Item& i) {
    j = {{"name", i.name}, {"scores", i.scores}};
}
void from_json(const nlohmann::json& j, Item& i) {
    j.at("name").get_to(i.name);
    j.at("scores").get_to(i.scores);
}

}  // namespace

TEST_F(CacheTest, PythonValuesAreHitsOfTheRightType) {
    // What Python retools stored (protocol 0, as cPickle writes it) for functions C++ also caches.
    const double now = retools::detail::unix_now();
    conn.command("HSET", "retools:short_term:interop_mod.search.load_things:bunny 10", "created", now,
                 "value", "Vbunny|10|py\np0\n.");
    conn.command("HSET", "retools:short_term:interop_mod.total.:[1, 2, 3]", "created", now, "value", "I6\n.");
    int calls = 0;
    auto search = retools::cache_region("short_term",
                                        retools::function_namespace("interop_mod", "search", "load_things"),
                                        [&](const std::string& term, int limit) {
                                            ++calls;
                                            return fmt::format("{}|{}|cpp", term, limit);
                                        });
    auto total = retools::cache_region("short_term", retools::function_namespace("interop_mod", "total"),
                                       [&](const std::vector<int>& v) {
                                           ++calls;
                                           long sum = 0;
                                           for (int x : v) sum += x;
                                           return sum;
                                       });
    EXPECT_EQ(search("bunny", 10), "bunny|10|py");
    EXPECT_EQ(total(std::vector<int>{1, 2, 3}), 6);
    EXPECT_EQ(calls, 0);
    // What C++ stores, Python reads: a protocol-2 str.
    EXPECT_EQ(search("fox", 10), "fox|10|cpp");
    EXPECT_EQ(hget("retools:short_term:interop_mod.search.load_things:fox 10", "value"),
              "\x80\x02X\x0a\x00\x00\x00"
              "fox|10|cpp."s);
    // A Python value of another type is a miss for this function, never a wrong value.
    conn.command("HSET", "retools:short_term:interop_mod.search.load_things:bunny 10", "value", "I6\n.");
    EXPECT_EQ(search("bunny", 10), "bunny|10|cpp");
    EXPECT_EQ(calls, 2);
}

TEST_F(CacheTest, UserTextIsStoredAsDataNeverAsCode) {
    // A std::string function caching user-supplied text: whatever the text, Python reads a str.
    const std::string planted = "cos\nsystem\n(S'touch /tmp/pwned'\ntR.";
    auto echo = retools::cache_region("short_term", "echo", [](const std::string& s) { return s; });
    EXPECT_EQ(echo(planted), planted);
    const std::string stored = hget("retools:short_term:echo:" + planted, "value");
    auto decoded = retools::pickle::decode(stored);
    ASSERT_TRUE(decoded) << decoded.error;
    EXPECT_EQ(*decoded.value, retools::pickle::Value::str(planted));
    EXPECT_EQ(stored.find("cos\nsystem"), 7u);  // inside the str's bytes, after its opcode and length
    EXPECT_EQ(echo(planted), planted);
    // A planted pickle that would run code is refused by the reader: a miss.
    conn.command("HSET", "retools:short_term:echo:x", "created", retools::detail::unix_now(), "value",
                 planted);
    EXPECT_EQ(echo("x"), "x");
    EXPECT_EQ(hget("retools:short_term:echo:x", "value"), pickled("x"));
}

TEST_F(CacheTest, NativeRegionKeepsTheCodecEncoding) {
    CacheRegion::add_region("native", {.expires = 60s, .value_format = retools::ValueFormat::native});
    CacheRegion::add_region("shared", {.expires = 60s, .value_format = retools::ValueFormat::pickle});
    EXPECT_EQ(CacheRegion::region("short_term")->value_format, retools::ValueFormat::pickle);  // the default
    int calls = 0;
    auto text = retools::cache_region("native", "ns", [&](int x) {
        ++calls;
        return fmt::format("v{}", x);
    });
    auto list = retools::cache_region("native", "list", [&](int x) {
        ++calls;
        return std::vector<int>{x, x};
    });
    EXPECT_EQ(text(1), "v1");
    EXPECT_EQ(list(2), (std::vector<int>{2, 2}));
    EXPECT_EQ(hget("retools:native:ns:1", "value"), "v1");
    EXPECT_EQ(hget("retools:native:list:2", "value"), "[2,2]");
    // A std::string function never returns bytes of another encoding: a pickle is a miss.
    conn.command("HSET", "retools:native:ns:1", "value", "Vbunny|10|py\np0\n.");
    EXPECT_EQ(text(1), "v1");
    conn.command("HSET", "retools:native:list:2", "value", pickled(std::vector<int>{2, 2}));
    EXPECT_EQ(list(2), (std::vector<int>{2, 2}));
    EXPECT_EQ(calls, 4);
    // And a native value in a pickle region is a miss too.
    auto shared = retools::cache_region("shared", "ns", [&](int x) {
        ++calls;
        return fmt::format("s{}", x);
    });
    conn.command("HSET", "retools:shared:ns:1", "created", retools::detail::unix_now(), "value", "raw text");
    EXPECT_EQ(shared(1), "s1");
    EXPECT_EQ(calls, 5);
}

TEST_F(CacheTest, LowLevelLoadUsesTheRegionsFormat) {
    CacheRegion::add_region("native", {.expires = 60s, .value_format = retools::ValueFormat::native});
    EXPECT_EQ(CacheRegion::load("short_term", "raw", "p", true, [] { return std::string("v\xff"); }),
              "v\xff");
    EXPECT_EQ(hget("retools:short_term:raw:p", "value"), pickled("v\xff"s));
    EXPECT_EQ(CacheRegion::load("short_term", "raw", "p", false), "v\xff");
    EXPECT_EQ(CacheRegion::load("native", "raw", "p", true, [] { return std::string("n"); }), "n");
    EXPECT_EQ(hget("retools:native:raw:p", "value"), "n");
    conn.command("HSET", "retools:short_term:raw:q", "created", retools::detail::unix_now(), "value",
                 "S'py'\n.");
    EXPECT_EQ(CacheRegion::load("short_term", "raw", "q", false), "py");
    EXPECT_EQ(CacheRegion::load("native", "raw", "q", false), std::nullopt);
    conn.command("HSET", "retools:native:raw:q", "created", retools::detail::unix_now(), "value", "S'py'\n.");
    EXPECT_EQ(CacheRegion::load("native", "raw", "q", false), std::nullopt);  // a pickle is not native bytes
}

TEST_F(CacheTest, UserCodecIsStoredAsPythonBytes) {
    int calls = 0;
    auto f = retools::cache_region("short_term", "blob", [&](int x) {
        ++calls;
        return Blob{std::to_string(x)};
    });
    EXPECT_EQ(f(7).data, "7");
    EXPECT_EQ(f(7).data, "7");
    EXPECT_EQ(calls, 1);
    auto decoded = retools::pickle::decode(hget("retools:short_term:blob:7", "value"));
    ASSERT_TRUE(decoded) << decoded.error;
    EXPECT_EQ(*decoded.value, retools::pickle::Value::bytes("blob:7"));
}

TEST_F(CacheTest, ValuesJsonCannotHoldNeitherThrowNorStayMissing) {
    CacheRegion::add_region("native", {.expires = 60s, .value_format = retools::ValueFormat::native});
    int calls = 0;
    auto make = [&](int) {
        ++calls;
        return Item{"bad \xff utf-8", {NAN, 1.0}};
    };
    // Pickle (the default) holds both exactly.
    auto pickled_fn = retools::cache_region("short_term", "item", make);
    Item a = pickled_fn(1);
    Item b = pickled_fn(1);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(b.name, "bad \xff utf-8");
    EXPECT_TRUE(std::isnan(b.scores[0]));
    // Native (JSON text): the value is returned uncached, with a reason on stderr.
    auto native_fn = retools::cache_region("native", "item", make);
    EXPECT_EQ(native_fn(1).name, "bad \xff utf-8");
    EXPECT_TRUE(std::isnan(native_fn(1).scores[0]));
    EXPECT_EQ(calls, 3);
    EXPECT_EQ(conn.command("EXISTS", "retools:native:item:1").as_integer(), 0);
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:native:item:1").as_integer(), 0);
    EXPECT_EQ(misses("native", "item", "1"), "2");
    auto nan_list = retools::cache_region("native", "nan", [&] {
        ++calls;
        return std::vector<double>{NAN};
    });
    EXPECT_TRUE(std::isnan(nan_list()[0]));
    EXPECT_EQ(conn.command("EXISTS", "retools:native:nan:").as_integer(), 0);
}

TEST_F(CacheTest, AFunctionSlowerThanExpiresIsComputedOnceByFiveThreads) {
    CacheRegion::add_region("slow", {.expires = 300ms, .first_value_wait = 5s});
    std::atomic<int> calls{0};
    auto f = retools::cache_region("slow", "ns", [&](int x) {
        calls++;
        std::this_thread::sleep_for(1200ms);  // four times the lock's TTL
        return x * 2;
    });
    std::barrier start(5);
    std::vector<int> results(5);
    std::vector<std::thread> threads;
    for (int t = 0; t < 5; ++t)
        threads.emplace_back([&, t] {
            start.arrive_and_wait();
            results[static_cast<std::size_t>(t)] = f(21);
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(results, std::vector<int>(5, 42));
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:slow:ns:21").as_integer(), 0);
}

// ---- round trips ----

TEST_F(CacheTest, GetManyOfAFunctionSlowerThanExpiresRenewsItsLocks) {
    CacheRegion::add_region("slow", {.expires = 300ms, .first_value_wait = 5s});
    std::atomic<int> calls{0};
    auto f = retools::cache_region("slow", "many", [&](int x) {
        calls++;
        std::this_thread::sleep_for(1000ms);  // over three times the lock's TTL
        return x * 2;
    });
    std::barrier start(2);
    std::vector<int> batch;
    int single = 0;
    std::thread other([&] {
        start.arrive_and_wait();
        std::this_thread::sleep_for(100ms);  // the batch holds the lock by now
        single = f(2);                        // waits for the batch's value
    });
    start.arrive_and_wait();
    batch = f.get_many({{1}, {2}});
    other.join();
    EXPECT_EQ(calls, 2);  // once per key: the lock of 2 did not expire while it ran
    EXPECT_EQ(batch, (std::vector<int>{2, 4}));
    EXPECT_EQ(single, 4);
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:slow:many:2").as_integer(), 0);
}

TEST_F(CacheTest, DogpileLocksAreLocks) {
    // The batch form draws fencing tokens from the counter Lock uses, and its
    // release wakes a waiting Lock at once.
    auto f = retools::cache_region("short_term", "fence", [](int x) { return x; });
    const std::string lock_key = "retools:lock:short_term:fence:1";
    std::uint64_t first = 0;
    {
        retools::Lock lock{lock_key, {.expires = 10s}};
        first = lock.fencing_token();
    }
    EXPECT_EQ(f.get_many({{1}}), std::vector<int>{1});
    const auto after_batch = std::stoull(conn.command("GET", lock_key + ":fence").as_string());
    EXPECT_GT(after_batch, first);
    {
        retools::Lock lock{lock_key, {.expires = 10s}};
        EXPECT_GT(lock.fencing_token(), after_batch);
    }

    CacheRegion::add_region("handover", {.expires = 10s, .first_value_wait = 5s});
    auto slow = retools::cache_region("handover", "ns", [](int x) {
        std::this_thread::sleep_for(300ms);
        return x;
    });
    std::thread batch([&] { (void)slow.get_many({{7}}); });
    std::this_thread::sleep_for(100ms);  // the batch holds the lock
    // max_retry_delay 5 s: only the release's wake-up can hand it over in time.
    retools::Lock waiter{"retools:lock:handover:ns:7", {.expires = 10s, .max_retry_delay = 5s}, std::defer_lock};
    const auto t0 = Clock::now();
    EXPECT_TRUE(waiter.try_lock_for(4s));
    EXPECT_LT(seconds_since(t0), 1.5);
    batch.join();
}

TEST_F(CacheTest, AHitIsOneRoundTripWithOrWithoutStatistics) {
    auto f = retools::cache_region("short_term", "rt", [](int x) { return x; });
    f(1);
    auto trips = conn.round_trips();
    EXPECT_EQ(f(1), 1);
    EXPECT_EQ(conn.round_trips() - trips, 1u);
    FlagGuard off(CacheRegion::statistics, false);
    trips = conn.round_trips();
    EXPECT_EQ(f(1), 1);
    EXPECT_EQ(conn.round_trips() - trips, 1u);
}

TEST_F(CacheTest, AMissIsThreeRoundTripsWithOrWithoutStatistics) {
    auto f = retools::cache_region("short_term", "rt", [](int x) { return x; });
    f(0);  // loads the lock script into the server
    // read+count; lock attempt+re-read; store, settle the counters and release
    auto trips = conn.round_trips();
    f(1);
    EXPECT_EQ(conn.round_trips() - trips, 3u);
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:short_term:rt:1").as_integer(), 0);
    FlagGuard off(CacheRegion::statistics, false);
    trips = conn.round_trips();
    f(2);
    EXPECT_EQ(conn.round_trips() - trips, 3u);
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:short_term:rt:2").as_integer(), 0);
}

// ---- early refresh (XFetch) ----

namespace {
thread_local bool t_is_reader = false;
}

TEST_F(CacheTest, EarlyRefreshRecomputesAheadOfExpiryAndNobodyWaits) {
    // A hot key read by 8 threads in two processes over four expiry periods.
    static constexpr auto compute_time = 150ms;
    CacheRegion::add_region("xfetch", {.expires = 600ms, .first_value_wait = 5s, .early_refresh_beta = 1.0});
    Connection& c = conn;
    std::atomic<int> reader_computations{0};
    auto hot = retools::cache_region("xfetch", "ns.hot", [&c, &reader_computations](int x) {
        if (t_is_reader) ++reader_computations;  // a caller computed: it waited, or saw a miss
        if (c.command("INCR", "xf:inside").as_integer() != 1) c.command("INCR", "xf:overlaps");
        std::this_thread::sleep_for(compute_time);
        long long n = c.command("INCR", "xf:computations").as_integer();
        c.command("DECR", "xf:inside");
        return x * 1000 + static_cast<int>(n);
    });
    ASSERT_EQ(hot(7), 7001);  // the first value: computed by this caller
    const double delta = std::stod(hget("retools:xfetch:ns.hot:7", "delta"));
    EXPECT_GE(delta, 0.149);
    EXPECT_LT(delta, 2.0);

    auto read_for = [&](std::chrono::milliseconds duration, int threads) {
        std::atomic<int> waited{0}, wrong{0};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&] {
                t_is_reader = true;
                auto stop = Clock::now() + duration;
                while (Clock::now() < stop) {
                    auto start = Clock::now();
                    int v = hot(7);
                    // Waiting for a computation shows as computing on this thread (counted in
                    // the function); a call this slow would be one more sign of it.
                    if (Clock::now() - start > 2s) ++waited;
                    if (v / 1000 != 7) ++wrong;
                    std::this_thread::sleep_for(1ms);
                }
            });
        for (auto& t : pool) t.join();
        return waited.load() + wrong.load() * 1000 + reader_computations.load() * 1000000;
    };
    auto child = rt::ChildProcess::fork([&] {
        int problems = read_for(2400ms, 4);
        (void)retools::detail::refreshes_idle(5000);  // do not die in the middle of a refresh
        return problems == 0 ? 0 : 3;
    });
    EXPECT_EQ(read_for(2400ms, 4), 0);  // no caller waited, got a wrong value or computed
    EXPECT_EQ(child.exit_code(20s), 0);
    EXPECT_TRUE(retools::detail::refreshes_idle(5000));
    ASSERT_TRUE(rt::wait_until([&] { return get("xf:inside") == "0"; }, 5s));
    EXPECT_EQ(get("xf:overlaps"), "<nil>");  // never two computations at once, across processes
    long long computations = std::stoll(get("xf:computations"));
    EXPECT_GE(computations, 1 + 3);   // refreshed in every period of 600 ms, in the background
    EXPECT_LE(computations, 1 + 18);  // and one at a time: 2.4 s / 150 ms
    // Statistics: every read was a hit (the background computations count nothing).
    auto s = retools::cache_stats("xfetch", "ns.hot", "7");
    EXPECT_EQ(s.misses, 1);
    EXPECT_GT(s.hits, 100);
}

TEST_F(CacheTest, EarlyRefreshIsOffByDefaultAndRejectsANegativeBeta) {
    auto f = retools::cache_region("short_term", "ns.plain", [](int x) { return x; });
    EXPECT_EQ(f(1), 1);
    EXPECT_EQ(conn.command("HLEN", "retools:short_term:ns.plain:1").as_integer(), 2);  // no delta field
    EXPECT_THROW_MSG(CacheRegion::add_region("bad", {.expires = 1s, .early_refresh_beta = -1}),
                     retools::CacheConfigurationError, "early_refresh_beta");
}

// ---- multi-get ----

TEST_F(CacheTest, GetManyReadsAndStoresInOneRoundTripEachAndLeavesWhatSingleCallsLeave) {
    Connection own{rt::redis_url()};
    CacheRegion::add_region("many", {.expires = 60s, .first_value_wait = 5s, .connection = own});
    int calls = 0;
    auto compute = [&calls](int x) {
        ++calls;
        return fmt::format("value {}", x);
    };
    auto batched = retools::cache_region("many", "ns.batched", compute);
    auto single = retools::cache_region("many", "ns.single", compute);
    for (int x = 0; x < 70; ++x) {  // 70 of the 100 exist, read a few times
        (void)batched(x);
        (void)single(x);
        if (x % 3 == 0) {
            (void)batched(x);
            (void)single(x);
        }
    }
    std::vector<std::tuple<int>> all;
    for (int x = 0; x < 100; ++x) all.emplace_back(x);
    // Scripts are loaded on first use (EVALSHA, then EVAL once): not counted below.
    (void)retools::cache_region("many", "ns.warm", compute).get_many({{1}});
    calls = 0;
    auto before = own.round_trips();
    std::vector<std::string> got = batched.get_many(all);
    auto trips = own.round_trips() - before;
    EXPECT_EQ(calls, 30);
    EXPECT_EQ(trips, 3u);           // read; the 30 locks; store and release
    for (int x = 70; x < 100; ++x)  // every lock released
        EXPECT_EQ(conn.command("EXISTS", fmt::format("retools:lock:many:ns.batched:{}", x)).as_integer(), 0);
    ASSERT_EQ(got.size(), 100u);
    for (int x = 0; x < 100; ++x) EXPECT_EQ(got[x], fmt::format("value {}", x));
    for (int x = 0; x < 100; ++x) (void)single(x);

    // Same layout and statistics as the single calls.
    EXPECT_EQ(smembers("retools:many:ns.batched:keys"), smembers("retools:many:ns.single:keys"));
    for (int x = 0; x < 100; ++x) {
        std::string key = std::to_string(x);
        EXPECT_EQ(retools::cache_stats("many", "ns.batched", key),
                  retools::cache_stats("many", "ns.single", key))
            << key;
        EXPECT_EQ(hget("retools:many:ns.batched:" + key, "value"),
                  hget("retools:many:ns.single:" + key, "value"));
        EXPECT_EQ(conn.command("HLEN", "retools:many:ns.batched:" + key).as_integer(), 2);
    }
    // All fresh now: one round trip, no call.
    calls = 0;
    before = own.round_trips();
    EXPECT_EQ(batched.get_many({{3}, {99}, {3}}),
              (std::vector<std::string>{"value 3", "value 99", "value 3"}));
    EXPECT_EQ(own.round_trips() - before, 1u);
    EXPECT_EQ(calls, 0);
}

TEST_F(CacheTest, GetManyWithTwoArgumentsServesStaleValuesWhileSomeoneRegenerates) {
    auto search = retools::cache_region("short_term", "ns.search", [](const std::string& term, int limit) {
        return term + std::to_string(limit);
    });
    EXPECT_EQ(search("a", 1), "a1");
    conn.command("HSET", "retools:short_term:ns.search:a 1", "created", 1.0);  // stale
    retools::Lock other{"retools:lock:short_term:ns.search:a 1"};              // being regenerated elsewhere
    auto got = search.get_many({{"a", 1}, {"b", 2}});
    EXPECT_EQ(got, (std::vector<std::string>{"a1", "b2"}));
    EXPECT_EQ(hget("retools:short_term:ns.search:a 1", "created"), "1.0");  // left to the other caller
    EXPECT_TRUE(search.get_many({}).empty());
}

TEST_F(CacheTest, GetManyComputesOnSeveralThreadsWhenAskedAndStillStoresInOneRoundTrip) {
    Connection own{rt::redis_url()};
    CacheRegion::add_region("many", {.expires = 60s, .first_value_wait = 5s, .connection = own});
    std::atomic<int> running{0}, most{0}, calls{0};
    auto slow = [&](int x) {
        ++calls;
        const int now = ++running;
        for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {}
        std::this_thread::sleep_for(100ms);
        --running;
        if (x == 13) throw BoomError("boom 13");
        return x * 2;
    };
    auto f = retools::cache_region("many", "ns.parallel", slow, {.get_many_threads = 4});
    (void)retools::cache_region("many", "ns.warm", slow).get_many({{1}});  // scripts loaded
    std::vector<std::tuple<int>> calls_asked;
    for (int x = 0; x < 8; ++x) calls_asked.emplace_back(x);
    calls = 0;
    most = 0;
    const auto before = own.round_trips();
    const auto t0 = Clock::now();
    auto got = f.get_many(calls_asked);
    EXPECT_LT(seconds_since(t0), 0.7);  // 8 x 100 ms one after another would be 0.8 s
    EXPECT_EQ(own.round_trips() - before, 3u);
    EXPECT_EQ(calls.load(), 8);
    EXPECT_GE(most.load(), 2);
    EXPECT_LE(most.load(), 4);
    for (int x = 0; x < 8; ++x) EXPECT_EQ(got[x], x * 2);
    for (int x = 0; x < 8; ++x)
        EXPECT_EQ(hget(fmt::format("retools:many:ns.parallel:{}", x), "value"), pickled(x * 2));

    // An exception from one computation: raised once all have ended; nothing stored, every lock released.
    EXPECT_THROW_MSG(f.get_many({{11}, {12}, {13}, {14}}), BoomError, "boom 13");
    for (int x = 11; x <= 14; ++x) {
        EXPECT_EQ(conn.command("EXISTS", fmt::format("retools:many:ns.parallel:{}", x)).as_integer(), 0);
        EXPECT_EQ(conn.command("EXISTS", fmt::format("retools:lock:many:ns.parallel:{}", x)).as_integer(), 0);
    }
    EXPECT_EQ(running.load(), 0);
    EXPECT_THROW_MSG(retools::cache_region("many", "ns.x", slow, {.get_many_threads = 0}),
                     retools::CacheConfigurationError, "get_many_threads");
}
