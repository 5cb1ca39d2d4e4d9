// Tags, soft timeouts and lock renewal of cache regions, against a real
// server: invalidate_tag from another process recomputes exactly the tagged
// calls while a hit still costs one round trip; a caller with a stale value
// waits at most the soft timeout while the computation stores its value in
// the background; a long region's dogpile lock is renewed for as long as its
// function runs.
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/cache.hpp>
#include <retools/errors.hpp>

#include "lock/dogpile.hpp"
#include "process.hpp"
#include "redis_test.hpp"
#include "util/clock.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using retools::CacheRegion;
using TagsClock = std::chrono::steady_clock;
namespace rt = retools::test;

namespace {

double tags_seconds_since(TagsClock::time_point start) {
    return std::chrono::duration<double>(TagsClock::now() - start).count();
}

// Dogpile locks get a short TTL while a test runs (renewal included), so a
// function outlives a long region's first lock TTL in a second or two.
struct ShortDogpileTtl {
    explicit ShortDogpileTtl(std::chrono::milliseconds ttl) {
        retools::detail::set_dogpile_ttl_for_tests(ttl);
    }
    ~ShortDogpileTtl() { retools::detail::set_dogpile_ttl_for_tests(0ms); }
    ShortDogpileTtl(const ShortDogpileTtl&) = delete;
    ShortDogpileTtl& operator=(const ShortDogpileTtl&) = delete;
};

class CacheTagsTest : public rt::RedisTest {
protected:
    void SetUp() override {
        rt::RedisTest::SetUp();
        CacheRegion::enabled = true;
        CacheRegion::statistics = true;
    }
    long long counter(const std::string& key) {
        return std::stoll(conn.command("GET", key).as_optional_string().value_or("0"));
    }
    double created(const std::string& key) {
        auto text = conn.command("HGET", key, "created").as_optional_string();
        return text ? std::stod(*text) : 0.0;
    }
};

TEST_F(CacheTagsTest, InvalidateATagFromAnotherProcessRecomputesExactlyItsCalls) {
    CacheRegion::add_region("tags", {.expires = 60s, .first_value_wait = 5s, .connection = conn});
    std::mutex mutex;
    std::map<int, int> computed;  // per user
    auto orders =
        retools::cache_region("tags", "myapp.orders", [&](int user, int page) {
            std::lock_guard guard(mutex);
            ++computed[user];
            return fmt::format("orders of {} page {}", user, page);
        }).with_tags([](int user, int) { return std::vector<std::string>{fmt::format("user:{}", user)}; });
    auto call_all = [&] {
        for (int user = 0; user < 100; ++user)
            for (int page = 0; page < 10; ++page)
                ASSERT_EQ(orders(user, page), fmt::format("orders of {} page {}", user, page));
    };
    call_all();
    ASSERT_EQ(computed.size(), 100u);
    for (auto& [user, n] : computed) ASSERT_EQ(n, 10) << "user " << user;
    computed.clear();

    // A tagged hit: one round trip, and Python's fields only in the value hash.
    auto before = conn.round_trips();
    EXPECT_EQ(orders(7, 3), "orders of 7 page 3");
    EXPECT_EQ(conn.round_trips() - before, 1u);
    EXPECT_EQ(conn.command("HLEN", "retools:tags:myapp.orders:7 3").as_integer(), 2);  // created, value
    EXPECT_EQ(conn.command("SCARD", "retools:tag:user:7").as_integer(), 10);
    EXPECT_GT(conn.command("TTL", "retools:tag:user:7").as_integer(), 0);

    auto child = rt::ChildProcess::fork([] {
        retools::invalidate_tag("user:7");
        return 0;
    });
    ASSERT_EQ(child.exit_code(10s), 0);

    call_all();
    ASSERT_EQ(computed.size(), 1u) << "only user 7's calls recompute";
    EXPECT_EQ(computed[7], 10);
    computed.clear();

    before = conn.round_trips();
    EXPECT_EQ(orders(7, 3), "orders of 7 page 3");
    EXPECT_EQ(orders(8, 3), "orders of 8 page 3");
    EXPECT_EQ(conn.round_trips() - before, 2u);
    EXPECT_TRUE(computed.empty());
}

TEST_F(CacheTagsTest, GetManyStoresTagsAndATagSpansNamespaces) {
    CacheRegion::add_region("tags", {.expires = 60s, .first_value_wait = 5s});
    std::atomic<int> runs{0};
    auto tagger = [](int user) { return std::vector<std::string>{fmt::format("user:{}", user), "all"}; };
    auto name = retools::cache_region("tags", "myapp.name", [&](int user) {
                    ++runs;
                    return fmt::format("name {}", user);
                }).with_tags(tagger);
    auto mail = retools::cache_region("tags", "myapp.mail", [&](int user) {
                    ++runs;
                    return fmt::format("mail {}", user);
                }).with_tags(tagger);
    auto untagged = retools::cache_region("tags", "myapp.plain", [&](int user) {
        ++runs;
        return user;
    });
    EXPECT_EQ(name.get_many({{1}, {2}, {3}}), (std::vector<std::string>{"name 1", "name 2", "name 3"}));
    EXPECT_EQ(mail(2), "mail 2");
    EXPECT_EQ(untagged(2), 2);
    ASSERT_EQ(runs.load(), 5);

    retools::invalidate_tag("user:2");
    EXPECT_EQ(name.get_many({{1}, {2}, {3}}), (std::vector<std::string>{"name 1", "name 2", "name 3"}));
    EXPECT_EQ(mail(2), "mail 2");
    EXPECT_EQ(untagged(2), 2);
    EXPECT_EQ(runs.load(), 7) << "name(2) and mail(2) recompute, nothing else";

    retools::invalidate_tag("all", conn);
    EXPECT_EQ(name.get_many({{1}, {2}, {3}}).size(), 3u);
    EXPECT_EQ(mail(2), "mail 2");
    EXPECT_EQ(runs.load(), 11);
    retools::invalidate_tag("nobody");  // no set: nothing happens
    EXPECT_EQ(name(1), "name 1");
    EXPECT_EQ(runs.load(), 11);

    // A region on a Redis that cannot be reached: the others are still
    // invalidated, then its error is thrown.
    CacheRegion::add_region("tags_elsewhere",
                            {.expires = 60s, .connection = retools::Connection{"redis://127.0.0.1:1/0"}});
    EXPECT_THROW(retools::invalidate_tag("user:1"), retools::ConnectionError);
    EXPECT_EQ(name(1), "name 1");
    EXPECT_EQ(runs.load(), 12) << "name(1) was invalidated on the reachable Redis";

    // A value whose hash is gone leaves the tag's set at the next invalidation.
    conn.command("DEL", "retools:tags:myapp.name:3");
    retools::invalidate_tag("all", conn);
    EXPECT_EQ(conn.command("SISMEMBER", "retools:tag:all", "retools:tags:myapp.name:3").as_integer(), 0);
    EXPECT_EQ(conn.command("SISMEMBER", "retools:tag:all", "retools:tags:myapp.name:1").as_integer(), 1);
}

TEST_F(CacheTagsTest, SoftTimeoutServesTheStaleValueAndStoresTheNewOneInTheBackground) {
    ShortDogpileTtl short_ttl{300ms};  // the background computation must keep renewing its lock
    CacheRegion::add_region("soft", {.expires = 60s, .first_value_wait = 5s, .soft_timeout = 100ms});
    auto report = retools::cache_region("soft", "myapp.report", [](int year) {
        const long long run = retools::global_connection().command("INCR", "test:runs").as_integer();
        if (run > 1) std::this_thread::sleep_for(2s);
        return fmt::format("report {} v{}", year, run);
    });
    ASSERT_EQ(report(2024), "report 2024 v1");
    retools::invalidate_function(report, 2024);
    const std::string value_key = "retools:soft:myapp.report:2024";
    const double invalidated = created(value_key);

    const auto t0 = TagsClock::now();
    EXPECT_EQ(report(2024), "report 2024 v1") << "the stale value after the soft timeout";
    const double waited = tags_seconds_since(t0);
    EXPECT_GE(waited, 0.1);
    EXPECT_LT(waited, 0.4);

    // Meanwhile the lock stays held (renewed past its 300 ms TTL), so another
    // process is served the stale value without computing.
    std::this_thread::sleep_for(700ms);
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:soft:myapp.report:2024").as_integer(), 1);
    auto child = rt::ChildProcess::fork([&] { return report(2024) == "report 2024 v1" ? 0 : 3; });
    EXPECT_EQ(child.exit_code(5s), 0);

    ASSERT_TRUE(rt::wait_until([&] { return created(value_key) > invalidated; }, 4s));
    const double stored_after = tags_seconds_since(t0);
    EXPECT_GT(stored_after, 1.8);
    EXPECT_LT(stored_after, 3.0);
    EXPECT_TRUE(rt::wait_until(
        [&] { return conn.command("EXISTS", "retools:lock:soft:myapp.report:2024").as_integer() == 0; }, 2s));
    EXPECT_EQ(report(2024), "report 2024 v2");
    EXPECT_EQ(counter("test:runs"), 2);
    auto s = retools::cache_stats("soft", "myapp.report", "2024");
    EXPECT_EQ(s.misses, 3) << "the first call, the soft-timed-out one and the child's (settled by the store)";
}

TEST_F(CacheTagsTest, SoftTimeoutReturnsTheNewValueInTimeAndWaitsWithNothingStored) {
    CacheRegion::add_region("soft", {.expires = 60s, .first_value_wait = 5s, .soft_timeout = 300ms});
    std::atomic<int> runs{0};
    auto slow = retools::cache_region("soft", "myapp.slow", [&](int x) {
        const int run = ++runs;
        std::this_thread::sleep_for(run == 1 ? 600ms : 20ms);
        return x * 10 + run;
    });
    auto t0 = TagsClock::now();
    EXPECT_EQ(slow(1), 11) << "nothing stored: the caller waits for the function";
    EXPECT_GE(tags_seconds_since(t0), 0.6);
    retools::invalidate_function(slow, 1);
    t0 = TagsClock::now();
    EXPECT_EQ(slow(1), 12) << "a computation within the soft timeout answers the call";
    EXPECT_LT(tags_seconds_since(t0), 0.3);
    EXPECT_EQ(slow(1), 12);
    EXPECT_EQ(runs.load(), 2);

    // A function that throws within the soft timeout: the exception, as without one.
    auto failing = retools::cache_region("soft", "myapp.failing", [&](int x) {
        if (++runs > 3) throw std::runtime_error("backend down");
        return x;
    });
    EXPECT_EQ(failing(5), 5);
    retools::invalidate_function(failing, 5);
    EXPECT_THROW(failing(5), std::runtime_error);
    EXPECT_TRUE(rt::wait_until(
        [&] { return conn.command("EXISTS", "retools:lock:soft:myapp.failing:5").as_integer() == 0; }, 2s));
}

TEST_F(CacheTagsTest, GetManyWaitsAtMostTheSoftTimeoutForItsStaleKeys) {
    CacheRegion::add_region("soft", {.expires = 60s, .first_value_wait = 5s, .soft_timeout = 100ms});
    std::atomic<int> runs{0};
    auto slow = retools::cache_region("soft", "myapp.many", [&](int x) {
        if (++runs > 3) std::this_thread::sleep_for(1s);
        return x * 10 + (runs.load() > 3 ? 1 : 0);
    });
    ASSERT_EQ(slow.get_many({{1}, {2}, {3}}), (std::vector<int>{10, 20, 30}));
    retools::invalidate_function(slow, 1);
    retools::invalidate_function(slow, 2);
    const auto t0 = TagsClock::now();
    EXPECT_EQ(slow.get_many({{1}, {2}, {3}}), (std::vector<int>{10, 20, 30})) << "stale, stale, fresh";
    EXPECT_LT(tags_seconds_since(t0), 0.5) << "the two computations run at once, each in the background";
    EXPECT_TRUE(rt::wait_until([&] { return slow.get_many({{1}, {2}}) == std::vector<int>{11, 21}; }, 3s));
    EXPECT_EQ(runs.load(), 5);
}

TEST_F(CacheTagsTest, ANegativeSoftTimeoutIsAConfigurationError) {
    EXPECT_THROW(CacheRegion::add_region("soft_bad", {.expires = 60s, .soft_timeout = -1ms}),
                 retools::CacheConfigurationError);
}

TEST_F(CacheTagsTest, ALongRegionsLockIsRenewedWhileItsFunctionRunsAcrossProcesses) {
    ShortDogpileTtl short_ttl{300ms};  // the first TTL of a 15-minute region's lock, shortened
    CacheRegion::add_region("long", {.expires = 15min, .first_value_wait = 10s});
    auto slow = retools::cache_region("long", "myapp.slow", [](int x) {
        retools::global_connection().command("INCR", "test:runs");
        std::this_thread::sleep_for(1500ms);
        return x + 1;
    });
    std::thread first([&] { EXPECT_EQ(slow(41), 42); });
    ASSERT_TRUE(rt::wait_until([&] { return counter("test:runs") == 1; }, 3s));
    std::this_thread::sleep_for(700ms);  // more than twice the lock's first TTL
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:long:myapp.slow:41").as_integer(), 1);
    EXPECT_LE(conn.command("PTTL", "retools:lock:long:myapp.slow:41").as_integer(), 300);
    auto child = rt::ChildProcess::fork([&] { return slow(41) == 42 ? 0 : 3; });
    EXPECT_EQ(child.exit_code(10s), 0);
    first.join();
    EXPECT_EQ(counter("test:runs"), 1) << "computed once across the two processes";
}

}  // namespace
