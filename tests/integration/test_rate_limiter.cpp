// RateLimiter against a real server: bursts, honest retry_after, waiting
// without polling, 4 processes sharing one key's rate, keys that never
// outlive their need, bad options.
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/rate_limiter.hpp>

#include "process.hpp"
#include "redis_test.hpp"

using namespace std::chrono_literals;
using retools::RateDecision;
using retools::RateLimiter;
using retools::RateLimiterOptions;
using RateClock = std::chrono::steady_clock;
namespace rt = retools::test;

class RateLimiterTest : public rt::RedisTest {};

TEST_F(RateLimiterTest, ARestedKeyAdmitsItsBurstThenRefusesWithAnHonestRetryAfter) {
    RateLimiter limiter{{.rate = 10, .period = 1s, .burst = 5, .prefix = "rl"}};
    // The key drains as time passes: a slow machine (a sanitizer build) sees
    // a reset_after and retry_after that much shorter.
    const auto t0 = RateClock::now();
    auto elapsed = [&] { return std::chrono::ceil<std::chrono::milliseconds>(RateClock::now() - t0); };
    for (std::uint64_t i = 1; i <= 5; ++i) {
        RateDecision d = limiter.acquire("user:1");
        ASSERT_TRUE(d.allowed) << i;
        EXPECT_EQ(d.remaining, 5 - i);
        EXPECT_EQ(d.retry_after, 0ms);
        EXPECT_GE(d.reset_after, std::chrono::milliseconds(100 * i) - 5ms - elapsed());
        EXPECT_LE(d.reset_after, std::chrono::milliseconds(100 * i));
    }
    RateDecision refused = limiter.acquire("user:1");
    EXPECT_FALSE(refused);
    EXPECT_EQ(refused.remaining, 0u);
    EXPECT_GT(refused.retry_after, 90ms - elapsed());
    EXPECT_LE(refused.retry_after, 100ms);
    // Another key is not affected.
    EXPECT_TRUE(limiter.acquire("user:2").allowed);
    // Waiting retry_after always suffices.
    for (int i = 0; i < 3; ++i) {
        RateDecision d = limiter.acquire("user:1");
        if (!d.allowed) {
            std::this_thread::sleep_for(d.retry_after);
            d = limiter.acquire("user:1");
        }
        EXPECT_TRUE(d.allowed) << i;
    }
}

TEST_F(RateLimiterTest, TheKeyHoldsTheRestInstantAndExpiresWhenRested) {
    RateLimiter limiter{{.rate = 100, .period = 1s, .burst = 20, .prefix = "rl"}};
    ASSERT_TRUE(limiter.acquire("k", 3).allowed);
    EXPECT_EQ(limiter.redis_key("k"), "rl:k");
    const long long pttl = conn.command("PTTL", "rl:k").as_integer();
    EXPECT_GT(pttl, 20);  // 3 requests of 10 ms each
    EXPECT_LE(pttl, 30);
    // cost 0 only reports.
    RateDecision peek = limiter.acquire("k", 0);
    EXPECT_TRUE(peek.allowed);
    EXPECT_GE(peek.remaining, 17u);
    EXPECT_TRUE(conn.command("EXISTS", "rl:nothing").as_integer() == 0);
    EXPECT_EQ(limiter.acquire("nothing", 0).remaining, 20u);
    EXPECT_EQ(conn.command("EXISTS", "rl:nothing").as_integer(), 0);
}

TEST_F(RateLimiterTest, TenThousandKeysLeaveNoKeyWithoutATtl) {
    // 5 per 20 s: each request holds its key 4 s.
    RateLimiter limiter{{.rate = 5, .period = 20s, .burst = 3, .prefix = "many"}};
    auto cost = [](int i) { return static_cast<std::uint64_t>(1 + i % 3); };
    for (int i = 0; i < 10000; ++i) ASSERT_TRUE(limiter.acquire(std::to_string(i), cost(i)).allowed);
    std::size_t found = 0;
    std::string cursor = "0";
    do {
        auto r = conn.command("SCAN", cursor, "MATCH", "many:*", "COUNT", 1000);
        cursor = r[0].as_string();
        found += r[1].size();
    } while (cursor != "0");
    EXPECT_EQ(found, 10000u);
    retools::Pipeline ttls;
    for (int i = 0; i < 10000; ++i) ttls.command("PTTL", "many:" + std::to_string(i));
    const std::vector<retools::Reply> replies = conn.execute(ttls);
    int without = 0, too_long = 0;
    for (int i = 0; i < 10000; ++i) {
        const long long pttl = replies[static_cast<std::size_t>(i)].as_integer();
        without += pttl < 0;
        too_long += pttl > static_cast<long long>(cost(i)) * 4000;  // never beyond the rest instant
    }
    EXPECT_EQ(without, 0);
    EXPECT_EQ(too_long, 0);
}

TEST_F(RateLimiterTest, AcquireForWaitsForAdmissionAndGivesUpAtOnceWhenItCannotCome) {
    RateLimiter limiter{{.rate = 20, .period = 1s, .burst = 1, .prefix = "rl"}};
    ASSERT_TRUE(limiter.acquire("w").allowed);
    auto t0 = RateClock::now();
    EXPECT_TRUE(limiter.acquire_for("w", 500ms).allowed);  // the next one is due in 50 ms
    auto waited = RateClock::now() - t0;
    EXPECT_GE(waited, 40ms);
    EXPECT_LT(waited, 300ms);
    t0 = RateClock::now();
    RateDecision d = limiter.acquire_for("w", 10ms);  // due in ~50 ms: cannot come in 10
    EXPECT_FALSE(d.allowed);
    EXPECT_LT(RateClock::now() - t0, 10ms);
    EXPECT_GT(d.retry_after, 10ms);
}

TEST_F(RateLimiterTest, FourProcessesHammeringOneKeyShareItsRate) {
    // 100/s with a burst of 20 for 10 s: 1,000 + 20 admitted, within 2%.
    conn.command("DEL", "admitted");
    const auto start = RateClock::now() + 300ms;
    std::vector<rt::ChildProcess> children;
    for (int p = 0; p < 4; ++p) {
        children.push_back(rt::ChildProcess::fork([start] {
            RateLimiter limiter{{.rate = 100, .period = 1s, .burst = 20, .prefix = "hammer"}};
            std::this_thread::sleep_until(start);
            long long admitted = 0;
            while (RateClock::now() < start + 10s) {
                admitted += limiter.acquire("shared").allowed ? 1 : 0;
                std::this_thread::sleep_for(200us);
            }
            retools::global_connection().command("INCRBY", "admitted", admitted);
            return 0;
        }));
    }
    for (auto& c : children) EXPECT_EQ(c.exit_code(60s), 0);
    const long long admitted = std::stoll(conn.command("GET", "admitted").as_string());
    EXPECT_GE(admitted, 1020 * 98 / 100);
    EXPECT_LE(admitted, 1020 * 102 / 100);
}

TEST_F(RateLimiterTest, BadOptionsAndImpossibleCostsAreConfigurationErrorsNamingThem) {
    auto message_of = [](RateLimiterOptions o) -> std::string {
        try {
            RateLimiter l{std::move(o)};
        } catch (const retools::ConfigurationError& e) {
            return e.what();
        }
        return "no error";
    };
    EXPECT_THAT(message_of({}), testing::HasSubstr("rate"));
    EXPECT_THAT(message_of({.rate = 1, .period = 0ms}), testing::HasSubstr("period"));
    EXPECT_THAT(message_of({.rate = 1, .prefix = ""}), testing::HasSubstr("prefix"));
    EXPECT_THAT(message_of({.rate = 2'000'000, .period = 1s}), testing::HasSubstr("1 microsecond"));
    RateLimiter limiter{{.rate = 10, .burst = 5}};
    EXPECT_EQ(limiter.options().burst, 5u);
    EXPECT_EQ(RateLimiter({.rate = 10}).options().burst, 10u);  // 0: a period's worth
    try {
        (void)limiter.acquire("k", 6);
        FAIL() << "no error";
    } catch (const retools::ConfigurationError& e) {
        EXPECT_THAT(e.what(), testing::HasSubstr("cost of 6 exceeds the burst of 5"));
    }
}

TEST_F(RateLimiterTest, AKeyOfAnotherTypeIsAReplyErrorNamingIt) {
    conn.command("LPUSH", "rl:list", "x");
    RateLimiter limiter{{.rate = 10, .prefix = "rl"}};
    try {
        (void)limiter.acquire("list");
        FAIL() << "no error";
    } catch (const retools::ReplyError& e) {
        EXPECT_THAT(e.what(), testing::HasSubstr("rl:list"));
    }
}
