// Multiplexing (ConnectionOptions::multiplex, the default): concurrent
// callers share one socket and each gets its own replies; what may not share
// it (blocking commands, connection state, very large requests) takes a
// pooled connection of its own; a shared socket that fails fails only the
// requests written on it.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <retools/connection.hpp>
#include <retools/errors.hpp>
#include <retools/script.hpp>

#include "expect.hpp"
#include "latency_proxy.hpp"
#include "redis_server.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using retools::Connection;
using retools::ConnectionOptions;
namespace rt = retools::test;

namespace {

// Runs `body(thread index)` on `n` threads at once and joins them.
template <class Body>
void on_threads(int n, Body body) {
    std::vector<std::thread> threads;
    for (int t = 0; t < n; ++t) threads.emplace_back([&body, t] { body(t); });
    for (auto& t : threads) t.join();
}

long long connected_clients(const Connection& admin) {
    const std::string info = admin.command("INFO", "clients").as_string();
    const auto at = info.find("connected_clients:");
    return std::stoll(info.substr(at + 18));
}

}  // namespace

TEST(Multiplex, SixtyFourThreadsMixingEverythingShareOneSocketAndGetTheirOwnReplies) {
    rt::RedisServer server;
    Connection conn{server.options()};
    static const retools::Script echo_incr{"redis.call('INCR', KEYS[1]) return ARGV[1]"};
    std::atomic<int> mismatches{0};
    std::atomic<bool> blpop_done{false};
    std::thread blocked([&] {
        EXPECT_TRUE(conn.blocking_command(3s, "BLPOP", "mux:nothing", 3).is_nil());
        blpop_done = true;
    });
    auto slowest = std::chrono::nanoseconds{0};
    std::mutex slowest_mutex;
    on_threads(64, [&](int t) {
        const std::string key = "mux:" + std::to_string(t);
        for (int i = 0; i < 30; ++i) {
            const auto t0 = std::chrono::steady_clock::now();
            const std::string value = std::to_string(t * 100000 + i);
            conn.command("SET", key, value);
            if (conn.command("GET", key).as_string() != value) ++mismatches;
            retools::Pipeline p;
            p.command("INCR", key + ":n").command("GET", key);
            auto replies = conn.execute(p);
            if (replies[0].as_integer() != i + 1 || replies[1].as_string() != value) ++mismatches;
            retools::Pipeline tx;
            tx.command("GET", key).command("INCR", key + ":tx");
            auto atomic = conn.transaction(tx);
            if (atomic[0].as_string() != value || atomic[1].as_integer() != i + 1) ++mismatches;
            if (echo_incr(conn, {key + ":script"}, value).as_string() != value) ++mismatches;
            const auto took = std::chrono::steady_clock::now() - t0;
            std::lock_guard lock(slowest_mutex);
            slowest = std::max(slowest, took);
        }
    });
    EXPECT_FALSE(blpop_done.load()) << "the calls should have finished well within the BLPOP's 3 s";
    blocked.join();
    EXPECT_EQ(mismatches.load(), 0);
    EXPECT_LT(slowest, 1000ms) << "a caller waited behind the BLPOP";
    EXPECT_EQ(conn.open_connections(), 2u);  // the shared socket and the BLPOP's
    auto admin_options = server.options();
    admin_options.multiplex = false;
    Connection admin{admin_options};
    EXPECT_EQ(connected_clients(admin), 3);
}

TEST(Multiplex, ASocketCutWithRequestsInFlightFailsThemAsMaybeExecutedAndMixesNoReplies) {
    rt::RedisServer server;
    rt::LatencyProxy proxy{server.port(), 0us};
    auto options = server.options();
    options.port = proxy.port();
    Connection conn{options};
    conn.command("PING");
    auto admin_options = server.options();
    admin_options.multiplex = false;
    Connection admin{admin_options};
    proxy.hold_replies(true);  // the server runs the requests; their replies wait at the proxy
    std::atomic<int> mismatches{0}, written_failures{0}, unsent_failures{0}, answered{0};
    std::thread cutter([&] {
        ASSERT_TRUE(rt::wait_until(
            [&] {
                const std::string stats = admin.command("INFO", "commandstats").as_string();
                const auto at = stats.find("cmdstat_set:calls=");
                return at != std::string::npos && std::stoll(stats.substr(at + 18)) >= 16;
            },
            3s));
        admin.command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
        EXPECT_TRUE(rt::wait_until([&] { return written_failures.load() >= 16; }, 3s));
        proxy.hold_replies(false);  // for the new socket
    });
    on_threads(16, [&](int t) {
        const std::string key = "cut:" + std::to_string(t);
        for (int i = 0; i < 20; ++i) {
            const std::string value = std::to_string(t * 1000 + i);
            try {
                if (conn.command("SET", key, value).view() != "OK") ++mismatches;
                if (conn.command("GET", key).as_string() != value) ++mismatches;
                ++answered;
            } catch (const retools::ConnectionError& e) {
                ++(e.maybe_executed() ? written_failures : unsent_failures);
            }
        }
    });
    cutter.join();
    EXPECT_EQ(mismatches.load(), 0);
    EXPECT_GE(written_failures.load(), 16) << "every request held in flight was written";
    EXPECT_GT(answered.load(), 0) << "later calls went out on a new socket";
}

TEST(Multiplex, TransactionsStayContiguousOnTheSharedSocket) {
    rt::RedisServer server;
    Connection conn{server.options()};
    std::atomic<int> wrong{0};
    on_threads(8, [&](int t) {
        const std::string key = "tx:" + std::to_string(t);
        for (int i = 0; i < 200; ++i) {
            retools::Pipeline p;
            p.command("INCR", key).command("INCR", "tx:all").command("GET", key);
            auto replies = conn.transaction(p);
            if (replies.size() != 3 || replies[0].as_integer() != i + 1 ||
                replies[2].as_string() != std::to_string(i + 1))
                ++wrong;
        }
    });
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_EQ(conn.command("GET", "tx:all").as_string(), "1600");
    EXPECT_EQ(conn.open_connections(), 1u);
}

TEST(Multiplex, ABlockingCommandTakesItsOwnSocketAndDelaysNobody) {
    rt::RedisServer server;
    Connection conn{server.options()};
    conn.command("PING");
    std::thread blocked([&] { EXPECT_TRUE(conn.blocking_command(1s, "BLPOP", "nothing", 1).is_nil()); });
    ASSERT_TRUE(rt::wait_until([&] { return conn.open_connections() == 2u; }, 2s));
    auto slowest = 0ms;
    for (int i = 0; i < 50; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        conn.command("SET", "k", i);
        slowest = std::max(slowest, std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now() - t0));
    }
    blocked.join();
    EXPECT_LT(slowest, 500ms) << "a call waited behind BLPOP";
}

TEST(Multiplex, ConnectionStateCommandsAndLargePipelinesDoNotShare) {
    rt::RedisServer server;
    Connection conn{server.options()};
    conn.command("SET", "db0", "here");
    // SELECT on the shared socket would move everyone's commands to db 1.
    EXPECT_EQ(conn.command("SELECT", 1).view(), "OK");
    EXPECT_EQ(conn.command("GET", "db0").as_string(), "here");
    retools::Pipeline big;
    for (int i = 0; i < 1500; ++i) big.command("INCR", "big");
    auto replies = conn.execute(big);
    EXPECT_EQ(replies.back().as_integer(), 1500);
    EXPECT_EQ(conn.open_connections(), 2u);  // the shared one and one pooled (reused)
}

TEST(Multiplex, ClientKillOfTheSharedSocketIsInvisibleWhenIdle) {
    rt::RedisServer server;
    Connection conn{server.options()};
    conn.command("PING");
    auto admin_options = server.options();
    admin_options.multiplex = false;  // one socket, which SKIPME spares
    Connection admin{admin_options};
    admin.command("PING");
    EXPECT_EQ(admin.command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").as_integer(), 1);
    ASSERT_TRUE(rt::wait_until([&] { return connected_clients(admin) == 1; }, 2s));
    for (int i = 0; i < 5; ++i) EXPECT_EQ(conn.command("INCR", "n").as_integer(), i + 1);
}

TEST(Multiplex, ARestartCostsAtMostOneCallOfMany) {
    rt::RedisServer server;
    Connection conn{server.options()};
    on_threads(8, [&](int) { conn.command("PING"); });
    server.stop();
    server.start();
    std::atomic<int> failures{0};
    on_threads(8, [&](int) {
        try {
            conn.command("PING");
        } catch (const retools::ConnectionError&) {
            ++failures;
        }
    });
    EXPECT_LE(failures.load(), 1);
    EXPECT_EQ(rt::once_served([&] { return conn.command("PING").as_string(); }), "PONG");
}

TEST(Multiplex, AHungServerFailsTheRequestsInFlightAndOnlyThose) {
    rt::RedisServer server;
    auto options = server.options();
    options.command_timeout = 300ms;
    Connection conn{options};
    conn.command("SET", "n", 0);
    ::kill(server.pid(), SIGSTOP);
    std::atomic<int> in_flight{0}, not_sent{0}, ok{0};
    on_threads(8, [&](int) {
        for (int i = 0; i < 20; ++i) {
            try {
                conn.command("INCR", "n");
                ++ok;
            } catch (const retools::ConnectionError& e) {
                ++(e.maybe_executed() ? in_flight : not_sent);
            }
        }
    });
    ::kill(server.pid(), SIGCONT);
    EXPECT_EQ(ok.load(), 0);
    EXPECT_GE(in_flight.load(), 1);
    EXPECT_LE(in_flight.load(), 8) << "only the requests written before the timeout may have run";
    EXPECT_GE(not_sent.load(), 150);
    const long long ran = std::stoll(rt::once_served([&] { return conn.command("GET", "n").as_string(); }));
    EXPECT_LE(ran, in_flight.load());
}

TEST(Multiplex, OffLeasesAPooledSocketPerConcurrentCall) {
    rt::RedisServer server;
    auto options = server.options();
    options.multiplex = false;
    Connection conn{options};
    on_threads(4, [&](int) { conn.command("DEBUG", "SLEEP", 0.05); });
    EXPECT_EQ(conn.open_connections(), 4u);
}
