// A cache that never takes the service down, against real servers: with
// Redis hung (SIGSTOP) or killed, cached calls return the function's result
// (fail-open), one computation per key per process at a time, at the cost of
// the function once the outage is known; and a function that throws is
// answered with a stored value young enough (fail-safe).
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/cache.hpp>
#include <retools/errors.hpp>

#include "redis_server.hpp"
#include "redis_test.hpp"
#include "util/clock.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using retools::CacheRegion;
using OutageClock = std::chrono::steady_clock;
namespace rt = retools::test;

namespace {

// A function of x that takes `work`, counting its runs and the most
// concurrent runs of one x.
struct Backend {
    explicit Backend(std::chrono::milliseconds w) : work(w) {}
    int operator()(int x) {
        {
            std::lock_guard lock(mutex);
            ++runs;
            most_at_once = std::max(most_at_once, ++running[x]);
        }
        std::this_thread::sleep_for(work);
        std::lock_guard lock(mutex);
        --running[x];
        return x * 3;
    }
    std::chrono::milliseconds work;
    std::mutex mutex;
    std::map<int, int> running;
    int runs = 0;
    int most_at_once = 0;
};

struct Outage {
    std::atomic<int> calls{0}, errors{0}, wrong{0};
};

// 16 threads calling f(x) for x in 0..7 until `until`.
template <class F>
void hammer(F& f, OutageClock::time_point until, Outage& out) {
    std::vector<std::thread> threads;
    for (int t = 0; t < 16; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; OutageClock::now() < until; ++i) {
                const int x = (i + t) % 8;
                try {
                    if (f(x) != x * 3) ++out.wrong;
                } catch (const std::exception&) {
                    ++out.errors;
                }
                ++out.calls;
            }
        });
    for (auto& t : threads) t.join();
}

// The median cost of 41 calls from one thread beyond the function's own run
// time (measured inside it), once the server is known to be down.
template <class F>
std::chrono::microseconds median_overhead(F& f, std::atomic<long long>& inside_us) {
    std::vector<long long> overheads;
    for (int i = 0; i < 41; ++i) {
        inside_us = 0;
        const auto t0 = OutageClock::now();
        (void)f(100 + i);
        const auto took = std::chrono::duration_cast<std::chrono::microseconds>(OutageClock::now() - t0);
        overheads.push_back(took.count() - inside_us.load());
    }
    std::nth_element(overheads.begin(), overheads.begin() + 20, overheads.end());
    return std::chrono::microseconds(overheads[20]);
}

class CacheResilienceTest : public ::testing::Test {
protected:
    void SetUp() override {
        CacheRegion::enabled = true;
        CacheRegion::statistics = true;
        auto options = server.options();
        options.command_timeout = 300ms;
        options.connect_timeout = 300ms;
        conn = retools::Connection{options};
        CacheRegion::add_region("resilient", {.expires = 60s, .connection = conn});
    }
    rt::RedisServer server;
    retools::Connection conn;
};

}  // namespace

TEST_F(CacheResilienceTest, AHungRedisNeverReachesACallerAndCostsTheFunctionOnceKnown) {
    Backend backend{20ms};
    std::atomic<long long> inside_us{0};
    auto f = retools::cache_region("resilient", "ns", [&](int x) {
        const auto t0 = OutageClock::now();
        const int r = backend(x);
        inside_us += std::chrono::duration_cast<std::chrono::microseconds>(OutageClock::now() - t0).count();
        return r;
    });
    for (int x = 0; x < 8; ++x) ASSERT_EQ(f(x), x * 3);  // stored
    const auto bypassed_before = CacheRegion::bypassed_calls();
    backend.runs = 0;
    ::kill(server.pid(), SIGSTOP);
    Outage out;
    hammer(f, OutageClock::now() + 1500ms, out);
    // The outage is known now: a call costs the function and well under a
    // millisecond (the median: a probe's caller pays one PING timeout).
    const bool known = !conn.healthy();
    const auto overhead = median_overhead(f, inside_us);
    ::kill(server.pid(), SIGCONT);
    EXPECT_EQ(out.errors.load(), 0);
    EXPECT_EQ(out.wrong.load(), 0);
    EXPECT_EQ(backend.most_at_once, 1);  // one computation per key at a time
    EXPECT_GT(CacheRegion::bypassed_calls(), bypassed_before);
    EXPECT_GT(out.calls.load(), 16 * 8);
    EXPECT_TRUE(known);
    EXPECT_LT(overhead, 1ms);
    // Back: values are served from Redis again and statistics count again.
    ASSERT_TRUE(rt::wait_until([&] { return conn.healthy() || (f(0), conn.healthy()); }, 5s));
    const int runs = backend.runs;
    for (int x = 0; x < 8; ++x) EXPECT_EQ(f(x), x * 3);
    EXPECT_EQ(backend.runs, runs);  // hits: nothing recomputed
    const auto hits =
        conn.command("GET", fmt::format("retools:hits:{}:resilient:ns:0", retools::detail::local_date()));
    EXPECT_GE(std::stoll(hits.as_string()), 2);
}

TEST_F(CacheResilienceTest, AKilledAndRestartedRedisNeverReachesACaller) {
    Backend backend{5ms};
    auto f = retools::cache_region("resilient", "ns", [&](int x) { return backend(x); });
    ASSERT_EQ(f(1), 3);
    server.kill();
    Outage out;
    hammer(f, OutageClock::now() + 500ms, out);
    EXPECT_EQ(out.errors.load(), 0);
    EXPECT_EQ(out.wrong.load(), 0);
    EXPECT_EQ(backend.most_at_once, 1);
    server.start();
    ASSERT_TRUE(rt::wait_until([&] { return (f(2), conn.healthy()); }, 5s));
    const int runs = backend.runs;
    EXPECT_EQ(f(2), 6);  // stored once Redis was back
    EXPECT_EQ(backend.runs, runs);
}

TEST_F(CacheResilienceTest, WithRaiseTheCallerGetsTheConnectionError) {
    CacheRegion::add_region(
        "strict", {.expires = 60s, .connection = conn, .on_redis_error = retools::RedisErrorPolicy::raise});
    auto f = retools::cache_region("strict", "ns", [](int x) { return x; });
    server.kill();
    EXPECT_THROW((void)f(1), retools::ConnectionError);
}

TEST_F(CacheResilienceTest, AFailingFunctionIsAnsweredWithAStoredValueYoungEnough) {
    CacheRegion::add_region("safe", {.expires = 60s, .connection = conn, .fail_safe_max_age = 1h});
    std::atomic<int> runs{0};
    auto f = retools::cache_region("safe", "ns", [&](int) -> int {
        ++runs;
        throw std::runtime_error("backend down");
    });
    const double now = retools::detail::unix_now();
    // A 10-minute-old value of f(1) (stale: expires is 60 s); a 2-hour-old one of f(2).
    conn.command("HSET", "retools:safe:ns:1", "created", now - 600, "value", "I42\n.");
    conn.command("HSET", "retools:safe:ns:2", "created", now - 7200, "value", "I43\n.");
    const auto served_before = CacheRegion::fail_safe_served();
    EXPECT_EQ(f(1), 42);
    EXPECT_EQ(runs.load(), 1);
    EXPECT_EQ(CacheRegion::fail_safe_served(), served_before + 1);
    EXPECT_EQ(conn.command("HGET", "retools:safe:ns:1", "created").as_double(), now - 600);  // not stored
    EXPECT_EQ(conn.command("EXISTS", "retools:lock:safe:ns:1").as_integer(), 0);             // released
    // For a second the failing function is spared: the stale value again, no call.
    EXPECT_EQ(f(1), 42);
    EXPECT_EQ(runs.load(), 1);
    std::this_thread::sleep_for(1100ms);
    EXPECT_EQ(f(1), 42);
    EXPECT_EQ(runs.load(), 2);  // tried again
    // Too old to serve: the exception.
    EXPECT_THROW((void)f(2), std::runtime_error);
    // Without fail-safe: the exception too.
    auto g = retools::cache_region("resilient", "ns", [](int) -> int { throw std::runtime_error("down"); });
    conn.command("HSET", "retools:resilient:ns:1", "created", now - 600, "value", "I42\n.");
    EXPECT_THROW((void)g(1), std::runtime_error);
}

TEST_F(CacheResilienceTest, ANegativeFailSafeMaxAgeIsAConfigurationError) {
    EXPECT_THROW(CacheRegion::add_region("bad", {.fail_safe_max_age = -1s}),
                 retools::CacheConfigurationError);
}
