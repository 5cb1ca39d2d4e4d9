#include <algorithm>
#include <atomic>
#include <chrono>
#include <regex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/limiter.hpp>

#include "redis_test.hpp"
#include "util/clock.hpp"

using namespace std::chrono_literals;
using retools::Connection;
using retools::Limiter;
using retools::LimiterOptions;
using Clock = std::chrono::steady_clock;
namespace rt = retools::test;

class LimiterTest : public rt::RedisTest {};

TEST_F(LimiterTest, RejectsBadOptionsNamingTheField) {
    auto message_of = [](LimiterOptions o) -> std::string {
        try {
            Limiter l{std::move(o)};
        } catch (const retools::ConfigurationError& e) {
            return e.what();
        }
        return "no error";
    };
    EXPECT_NE(message_of({}).find("limit"), std::string::npos);
    EXPECT_NE(message_of({.limit = 1, .prefix = ""}).find("prefix"), std::string::npos);
    EXPECT_NE(message_of({.limit = 1, .expiration = 0ms}).find("expiration"), std::string::npos);
    Limiter ok{{.limit = 1}};
    EXPECT_THROW((void)ok.acquire_limit("k", 0ms), retools::ConfigurationError);
}

TEST_F(LimiterTest, SortedSetHoldsMemberAndExpiryScore) {
    Limiter limiter{{.limit = 3}};
    double before = retools::detail::unix_now();
    ASSERT_TRUE(limiter.acquire_limit("operation-1"));
    ASSERT_TRUE(limiter.acquire_limit("operation-2", 30s));
    double after = retools::detail::unix_now();
    EXPECT_EQ(conn.command("TYPE", "retools_limiter").view(), "zset");
    double s1 = conn.command("ZSCORE", "retools_limiter", "operation-1").as_double();
    double s2 = conn.command("ZSCORE", "retools_limiter", "operation-2").as_double();
    EXPECT_GE(s1, before + 10.0);
    EXPECT_LE(s1, after + 10.0);
    EXPECT_GE(s2, before + 30.0);
    EXPECT_LE(s2, after + 30.0);
    limiter.release_limit("operation-1");
    EXPECT_TRUE(conn.command("ZSCORE", "retools_limiter", "operation-1").is_nil());
    EXPECT_EQ(limiter.holders(), 1u);

    Limiter custom{{.limit = 1, .prefix = "my-operation", .expiration = 2s}};
    ASSERT_TRUE(custom.acquire_limit("x"));
    EXPECT_NEAR(conn.command("ZSCORE", "my-operation", "x").as_double(), retools::detail::unix_now() + 2.0,
                0.5);
}

TEST_F(LimiterTest, AcquireIsOneRoundTrip) {
    Connection own{rt::redis_url()};
    Limiter limiter{{.limit = 2, .connection = own}};
    ASSERT_TRUE(limiter.acquire_limit("warm"));  // loads the script
    auto before = own.round_trips();
    EXPECT_TRUE(limiter.acquire_limit("a"));
    EXPECT_FALSE(limiter.acquire_limit("b"));
    EXPECT_EQ(own.round_trips() - before, 2u);
}

TEST_F(LimiterTest, CountsHoldersWrittenByPythonRetools) {
    // A Python process ZADDs its key with score = time.time() + expiration.
    conn.command("ZADD", "retools_limiter", retools::detail::unix_now() + 10.0, "python-holder");
    Limiter limiter{{.limit = 2}};
    EXPECT_TRUE(limiter.acquire_limit("cpp-holder"));
    EXPECT_FALSE(limiter.acquire_limit("another"));
    limiter.release_limit("python-holder");  // and Python's release_limit is the same ZREM
    EXPECT_TRUE(limiter.acquire_limit("another"));
}

TEST_F(LimiterTest, ConcurrentCallersNeverExceedTheLimit) {
    constexpr int threads = 32;
    constexpr std::size_t limit = 5;
    Limiter limiter{{.limit = limit, .prefix = "rt:limiter:race"}};
    std::atomic<int> inside{0}, most{0}, acquired{0}, zcard_over{0}, errors{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            while (!go.load()) std::this_thread::yield();
            std::string key = fmt::format("holder-{}", t);
            auto stop = Clock::now() + 1500ms;
            try {
                while (Clock::now() < stop) {
                    if (!limiter.acquire_limit(key)) continue;
                    ++acquired;
                    int now_inside = ++inside;
                    int seen = most.load();
                    while (now_inside > seen && !most.compare_exchange_weak(seen, now_inside)) {}
                    if (limiter.holders() > limit) ++zcard_over;
                    std::this_thread::sleep_for(1ms);
                    --inside;
                    limiter.release_limit(key);
                }
            } catch (const std::exception&) {
                ++errors;
            }
        });
    }
    go = true;
    for (auto& t : pool) t.join();
    EXPECT_EQ(errors.load(), 0);
    EXPECT_LE(most.load(), static_cast<int>(limit));
    EXPECT_GE(most.load(), 2);  // there was real contention
    EXPECT_EQ(zcard_over.load(), 0);
    EXPECT_GT(acquired.load(), 50);
    EXPECT_EQ(limiter.holders(), 0u);
}

TEST_F(LimiterTest, SameKeyRefreshesInsteadOfTakingASecondSlotAndRespectsTheLimit) {
    Limiter limiter{{.limit = 2}};
    ASSERT_TRUE(limiter.acquire_limit("same", 5s));
    double first = conn.command("ZSCORE", "retools_limiter", "same").as_double();
    ASSERT_TRUE(limiter.acquire_limit("same", 20s));
    double second = conn.command("ZSCORE", "retools_limiter", "same").as_double();
    EXPECT_GT(second, first + 10.0);
    EXPECT_EQ(limiter.holders(), 1u);
    EXPECT_TRUE(limiter.acquire_limit("other"));
    // Full: as in Python retools, a key that holds a slot is refused too; its slot stays as it was.
    EXPECT_FALSE(limiter.acquire_limit("same", 60s));
    EXPECT_EQ(conn.command("ZSCORE", "retools_limiter", "same").as_double(), second);
    EXPECT_FALSE(limiter.acquire_limit("third"));
    EXPECT_EQ(limiter.holders(), 2u);
}

TEST_F(LimiterTest, TwoRaiiSlotsForOneKeyAreTwoHolders) {
    Limiter limiter{{.limit = 1}};
    auto first = limiter.acquire("same");
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->key(), "same");
    EXPECT_TRUE(std::regex_match(first->member(), std::regex("same:[0-9a-f]{32}"))) << first->member();
    EXPECT_FALSE(limiter.acquire("same").has_value());  // refused while the first is held
    EXPECT_FALSE(limiter.acquire_for("same", 50ms).has_value());
    EXPECT_EQ(limiter.holders(), 1u);
    {
        Limiter two{{.limit = 2}};
        auto second = two.acquire("same");
        ASSERT_TRUE(second.has_value());
        EXPECT_NE(second->member(), first->member());
        EXPECT_EQ(two.holders(), 2u);
    }  // releasing the second leaves the first in place
    EXPECT_FALSE(conn.command("ZSCORE", "retools_limiter", first->member()).is_nil());
    EXPECT_EQ(limiter.holders(), 1u);
    first.reset();
    EXPECT_EQ(limiter.holders(), 0u);
    EXPECT_TRUE(limiter.acquire("same").has_value());
}

TEST_F(LimiterTest, ExpiryComesFromTheServersClock) {
    // The score is TIME + expiration, whatever this process's clock says.
    Limiter limiter{{.limit = 2, .expiration = 30s}};
    auto time = conn.command("TIME");
    double server_now = std::stod(time[0].as_string()) + std::stod(time[1].as_string()) / 1e6;
    ASSERT_TRUE(limiter.acquire_limit("a"));
    double score = conn.command("ZSCORE", "retools_limiter", "a").as_double();
    EXPECT_GE(score, server_now + 30.0);
    EXPECT_LT(score, server_now + 31.0);
    // The client sends no time at all (seen in the slow log, which records every argument).
    conn.command("CONFIG", "SET", "slowlog-log-slower-than", "0");
    conn.command("SLOWLOG", "RESET");
    ASSERT_TRUE(limiter.acquire_limit("b"));
    auto entries = conn.command("SLOWLOG", "GET", "10").as_array();
    conn.command("CONFIG", "SET", "slowlog-log-slower-than", "10000");
    bool seen = false;
    for (auto& entry : entries) {
        auto args = entry[3].as_array();
        if (args.empty() || args[0].view().find("EVAL") == std::string_view::npos) continue;
        seen = true;
        for (auto& arg : args) {
            double v = std::strtod(std::string(arg.view()).c_str(), nullptr);
            EXPECT_FALSE(v > 1e9) << "a timestamp was sent: " << arg.view();
        }
    }
    EXPECT_TRUE(seen);
}

TEST_F(LimiterTest, ExpiredHoldersAreReclaimed) {
    Limiter limiter{{.limit = 2, .expiration = 200ms}};
    ASSERT_TRUE(limiter.acquire_limit("crashed-1"));
    ASSERT_TRUE(limiter.acquire_limit("crashed-2"));
    EXPECT_FALSE(limiter.acquire_limit("waiting"));
    std::this_thread::sleep_for(300ms);
    EXPECT_FALSE(limiter.acquire_limit("waiting", std::nullopt, /*retry=*/false));  // no purge without retry
    EXPECT_EQ(limiter.holders(), 2u);
    EXPECT_TRUE(limiter.acquire_limit("waiting", 10s));
    EXPECT_EQ(limiter.holders(), 1u);  // both expired holders dropped
}

TEST_F(LimiterTest, ReleaseFreesASlot) {
    Limiter limiter{{.limit = 1}};
    ASSERT_TRUE(limiter.acquire_limit("a"));
    EXPECT_FALSE(limiter.acquire_limit("b"));
    limiter.release_limit("a");
    EXPECT_TRUE(limiter.acquire_limit("b"));
    limiter.release_limit("never-held");  // no-op
    EXPECT_EQ(limiter.holders(), 1u);
}

TEST_F(LimiterTest, SlotGuardReleasesOnException) {
    Limiter limiter{{.limit = 1}};
    try {
        auto slot = limiter.acquire("guarded");
        ASSERT_TRUE(slot.has_value());
        EXPECT_EQ(slot->key(), "guarded");
        EXPECT_FALSE(conn.command("ZSCORE", "retools_limiter", slot->member()).is_nil());
        EXPECT_FALSE(limiter.acquire("intruder").has_value());
        throw std::runtime_error("work failed");
    } catch (const std::runtime_error&) {}
    EXPECT_EQ(limiter.holders(), 0u);
    auto slot = limiter.acquire("next");
    ASSERT_TRUE(slot);
    auto moved = std::move(*slot);
    EXPECT_FALSE(slot->held());
    EXPECT_TRUE(moved.held());
    moved.release();
    EXPECT_EQ(limiter.holders(), 0u);
}

TEST_F(LimiterTest, AcquireForWaitsForAFreedSlot) {
    Limiter limiter{{.limit = 1}};
    auto held = limiter.acquire("first");
    ASSERT_TRUE(held);
    auto start = Clock::now();
    EXPECT_FALSE(limiter.acquire_for("second", 300ms).has_value());
    auto waited = Clock::now() - start;
    EXPECT_GE(waited, 295ms);
    EXPECT_LT(waited, 800ms);
    std::thread releaser{[&] {
        std::this_thread::sleep_for(200ms);
        held->release();
    }};
    auto slot = limiter.acquire_for("second", 3s);
    releaser.join();
    EXPECT_TRUE(slot.has_value());
    slot.reset();
    EXPECT_TRUE(limiter.acquire_for("third", std::chrono::milliseconds::max()).has_value());
}

// Leases: a slot held past its expiration is kept by auto_renew, reported
// lost without it, renewed by extend(); release() says which.
TEST_F(LimiterTest, AutoRenewKeepsASlotHeldPastItsExpirationFromEveryOtherHolder) {
    Limiter renewing{{.limit = 1, .prefix = "leases", .expiration = 300ms, .auto_renew = true}};
    Limiter other{{.limit = 1, .prefix = "leases", .expiration = 300ms}};
    auto slot = renewing.acquire("long-job");
    ASSERT_TRUE(slot);
    const auto until = Clock::now() + 1200ms;  // four expirations
    while (Clock::now() < until) {
        EXPECT_FALSE(other.acquire("intruder")) << "the renewed slot was taken";
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_FALSE(slot->renewal_failed());
    EXPECT_EQ(slot->release(), retools::ReleaseResult::released);
    EXPECT_EQ(slot->release(), retools::ReleaseResult::not_held);
    EXPECT_TRUE(other.acquire("next"));
}

TEST_F(LimiterTest, WithoutAutoRenewASlotHeldPastItsExpirationIsReportedLost) {
    Limiter limiter{{.limit = 1, .prefix = "leases", .expiration = 150ms}};
    auto slot = limiter.acquire("slow-job");
    ASSERT_TRUE(slot);
    std::this_thread::sleep_for(250ms);
    auto taker = limiter.acquire("next-job");  // drops the expired slot and takes the room
    ASSERT_TRUE(taker);
    EXPECT_FALSE(slot->extend(1s));  // too late: never renews a slot that was taken
    EXPECT_EQ(slot->release(), retools::ReleaseResult::lost);
    EXPECT_EQ(limiter.holders(), 1u);  // the taker's slot is untouched
    EXPECT_EQ(taker->release(), retools::ReleaseResult::released);
    // Expired but not yet dropped by anyone: lost too.
    auto expired = limiter.acquire("k");
    ASSERT_TRUE(expired);
    std::this_thread::sleep_for(250ms);
    EXPECT_EQ(expired->release(), retools::ReleaseResult::lost);
    EXPECT_EQ(limiter.holders(), 0u);
}

TEST_F(LimiterTest, ExtendRenewsTheLeaseByTheServersClock) {
    Limiter limiter{{.limit = 1, .prefix = "leases", .expiration = 200ms}};
    auto slot = limiter.acquire("job");
    ASSERT_TRUE(slot);
    const double before = conn.command("ZSCORE", "leases", slot->member()).as_double();
    EXPECT_TRUE(slot->extend(2s));
    EXPECT_GT(conn.command("ZSCORE", "leases", slot->member()).as_double(), before + 1.5);
    std::this_thread::sleep_for(300ms);  // past the first expiration
    EXPECT_FALSE(limiter.acquire("other"));
    EXPECT_EQ(slot->release(), retools::ReleaseResult::released);
    EXPECT_FALSE(slot->extend(1s));  // not held
    EXPECT_THROW((void)slot->extend(0ms), retools::ConfigurationError);
}
