// Failing fast: a refused or hung server (SIGSTOP) is noticed once; then
// calls fail at once, naming the server and the failure, with nothing sent
// (maybe_executed() false), until a probe finds the server answering again.
// Real servers, real signals, real clocks.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <retools/connection.hpp>
#include <retools/errors.hpp>

#include "redis_server.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using retools::Connection;
using retools::ConnectionError;
using retools::TimeoutError;
using testing::HasSubstr;
namespace rt = retools::test;

namespace {

using FailFastClock = std::chrono::steady_clock;

bool answers(const Connection& conn) {
    try {
        return conn.command("PING").view() == "PONG";
    } catch (const ConnectionError&) {
        return false;
    }
}

// SIGCONT on scope exit, so a failed assertion never leaves the server stopped.
struct Stopped {
    explicit Stopped(pid_t p) : pid(p) { ::kill(pid, SIGSTOP); }
    ~Stopped() { resume(); }
    void resume() { ::kill(pid, SIGCONT); }
    pid_t pid;
};

}  // namespace

TEST(ConnectionFailFast, ARefusedServerIsTriedOnceThenCallsFailAtOnceNamingIt) {
    rt::RedisServer server;
    Connection conn{server.options()};
    ASSERT_TRUE(answers(conn));
    server.stop();
    try {
        conn.command("SET", "k", "v");
        FAIL() << "no error";
    } catch (const ConnectionError& e) {
        EXPECT_FALSE(e.maybe_executed()) << e.what();  // the dial failed: nothing was sent
    }
    EXPECT_FALSE(conn.healthy());
    const auto t0 = FailFastClock::now();
    try {
        conn.command("SET", "k", "v");
        FAIL() << "no error";
    } catch (const ConnectionError& e) {
        EXPECT_LT(FailFastClock::now() - t0, 20ms);
        EXPECT_FALSE(e.maybe_executed());
        EXPECT_THAT(e.what(), HasSubstr("127.0.0.1:" + std::to_string(server.port())));
        EXPECT_THAT(e.what(), HasSubstr("failing fast"));
        EXPECT_THAT(e.what(), HasSubstr("connecting"));  // the original failure
    }
    server.start();
    // Served again within the backoff (100 ms here: one failure so far) and a probe.
    ASSERT_TRUE(rt::wait_until([&] { return answers(conn); }, 2s));
    EXPECT_TRUE(conn.healthy());
}

TEST(ConnectionFailFast, AHungServerCostsOneTimeoutPerCallInFlightNotPerCall) {
    rt::RedisServer server;
    auto options = server.options();
    options.command_timeout = 300ms;
    options.pool_size = 4;
    Connection conn{options};
    ASSERT_TRUE(answers(conn));
    Stopped stopped(server.pid());
    std::atomic<int> calls{0}, timeouts{0}, fast{0}, executed_fast{0};
    std::vector<std::thread> threads;
    const auto end = FailFastClock::now() + 1500ms;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
            while (FailFastClock::now() < end) {
                const auto t0 = FailFastClock::now();
                try {
                    conn.command("INCR", "n");
                } catch (const TimeoutError& e) {
                    if (e.maybe_executed()) ++timeouts;  // not: no pooled connection came free
                } catch (const ConnectionError& e) {
                    if (FailFastClock::now() - t0 < 5ms) ++fast;
                    if (e.maybe_executed()) ++executed_fast;
                }
                ++calls;
                std::this_thread::sleep_for(1ms);
            }
        });
    }
    for (auto& t : threads) t.join();
    // Only the calls in flight when it hung (at most one per thread, 8)
    // time out with their request written; the probes' PINGs time out too,
    // but nothing of their callers' requests was sent.
    EXPECT_GE(timeouts.load(), 1);
    EXPECT_LE(timeouts.load(), 8) << calls << " calls";
    EXPECT_GE(fast.load(), calls.load() * 9 / 10) << timeouts << " timeouts of " << calls;
    EXPECT_EQ(executed_fast.load(), 0);
    EXPECT_FALSE(conn.healthy());
    stopped.resume();
    // Back within the longest backoff reached (800 ms) plus a probe.
    ASSERT_TRUE(rt::wait_until([&] { return answers(conn); }, 3s));
    EXPECT_TRUE(conn.healthy());
    Connection admin{server.options()};
    // Nothing failed fast was sent: INCRs that ran are at most those in flight.
    EXPECT_LE(std::stoll(admin.command("GET", "n").as_string()), timeouts.load());
}

TEST(ConnectionFailFast, ACallThatTimedOutMayHaveRunAndSaysSo) {
    rt::RedisServer server;
    auto options = server.options();
    options.command_timeout = 100ms;
    Connection conn{options};
    try {
        conn.command("DEBUG", "SLEEP", 0.3);
        FAIL() << "no timeout";
    } catch (const TimeoutError& e) {
        EXPECT_TRUE(e.maybe_executed()) << e.what();
    }
    // The server answers again once its sleep ends.
    EXPECT_TRUE(rt::wait_until([&] { return answers(conn); }, 3s));
}

TEST(ConnectionFailFast, ABackoffMaximumOfZeroTriesTheServerEveryCall) {
    rt::RedisServer server;
    auto options = server.options();
    options.reconnect_backoff_max = 0ms;
    Connection conn{options};
    server.stop();
    for (int i = 0; i < 3; ++i) {
        try {
            conn.command("PING");
            FAIL() << "no error";
        } catch (const ConnectionError& e) {
            EXPECT_THAT(e.what(), testing::Not(HasSubstr("failing fast")));
            EXPECT_FALSE(e.maybe_executed());
        }
    }
    EXPECT_TRUE(conn.healthy());
    server.start();
    EXPECT_TRUE(answers(conn));
}

TEST(ConnectionFailFast, ANegativeBackoffMaximumIsAConfigurationError) {
    retools::ConnectionOptions options;
    options.reconnect_backoff_max = -1ms;
    EXPECT_THROW(Connection{options}, retools::ConfigurationError);
}
