// Pool health: idle pooled connections that the server closed (restart,
// CLIENT KILL, its idle timeout) are noticed and replaced before reuse;
// max_idle; writes to a closed socket; IPv6 loopback.
#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <retools/connection.hpp>
#include <retools/errors.hpp>

#include "expect.hpp"
#include "redis_server.hpp"
#include "wait.hpp"

using namespace std::chrono_literals;
using retools::Connection;
using retools::ConnectionOptions;
namespace rt = retools::test;

namespace {

// Opens `n` pooled connections at once (each held by a concurrent DEBUG SLEEP).
void warm(const Connection& conn, int n) {
    std::vector<std::thread> threads;
    for (int t = 0; t < n; ++t) threads.emplace_back([&] { conn.command("DEBUG", "SLEEP", 0.05); });
    for (auto& t : threads) t.join();
}

int failed_calls(const Connection& conn, int calls) {
    int failures = 0;
    for (int i = 0; i < calls; ++i) {
        try {
            conn.command("PING");
        } catch (const retools::ConnectionError&) {
            ++failures;
        }
    }
    return failures;
}

long long clients(const Connection& conn) {
    auto list = conn.command("CLIENT", "LIST").as_string();
    return std::count(list.begin(), list.end(), '\n');
}

}  // namespace

TEST(ConnectionPoolHealth, RestartCostsAtMostOneCall) {
    rt::RedisServer server;
    auto options = server.options();
    options.pool_size = 8;
    options.multiplex = false;  // the pool's own sockets are what is tested
    Connection conn{options};
    warm(conn, 8);
    ASSERT_EQ(conn.open_connections(), 8u);
    server.stop();
    server.start();
    EXPECT_LE(failed_calls(conn, 8), 1);
    EXPECT_EQ(conn.command("PING").view(), "PONG");
}

TEST(ConnectionPoolHealth, KilledServerCostsAtMostOneCall) {
    rt::RedisServer server;
    auto options = server.options();
    options.pool_size = 8;
    Connection conn{options};
    warm(conn, 8);
    server.kill();  // SIGKILL: no goodbye on any socket
    server.start();
    EXPECT_LE(failed_calls(conn, 8), 1);
}

TEST(ConnectionPoolHealth, ClientKillOfIdleConnectionsIsInvisible) {
    rt::RedisServer server;
    auto options = server.options();
    options.pool_size = 8;
    options.multiplex = false;  // the pool's own sockets are what is tested
    Connection conn{options};
    warm(conn, 8);
    Connection admin{server.options()};
    admin.command("PING");
    EXPECT_GE(admin.command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").as_integer(), 8);
    ASSERT_TRUE(rt::wait_until([&] { return clients(admin) == 1; }, 2s));
    EXPECT_EQ(failed_calls(conn, 8), 0);
    EXPECT_EQ(conn.command("SET", "k", "v").view(), "OK");
}

TEST(ConnectionPoolHealth, ServerIdleTimeoutIsInvisible) {
    rt::RedisServer server{{.args = {"--timeout", "1"}}};  // the server drops clients idle for 1 s
    Connection conn{server.options()};
    warm(conn, 4);
    Connection admin{server.options()};
    ASSERT_TRUE(rt::wait_until([&] { return clients(admin) == 1; }, 5s));
    EXPECT_EQ(failed_calls(conn, 4), 0);
}

TEST(ConnectionPoolHealth, MaxIdleClosesConnectionsIdleLonger) {
    rt::RedisServer server;
    auto options = server.options();
    Connection keep{options};
    auto id = keep.command("CLIENT", "ID").as_integer();
    std::this_thread::sleep_for(150ms);
    EXPECT_EQ(keep.command("CLIENT", "ID").as_integer(), id);  // default: kept however long it idles

    options.max_idle = 100ms;
    Connection fresh{options};
    id = fresh.command("CLIENT", "ID").as_integer();
    EXPECT_EQ(fresh.command("CLIENT", "ID").as_integer(), id);  // reused while recently used
    std::this_thread::sleep_for(150ms);
    EXPECT_NE(fresh.command("CLIENT", "ID").as_integer(), id);  // idle too long: replaced
    EXPECT_EQ(fresh.open_connections(), 1u);
}

TEST(ConnectionFaults, WritingToAClosedSocketIsAConnectionErrorNotSigpipe) {
    rt::RedisServer server;
    Connection conn{server.options()};
    conn.command("PING");
    // The server closes the socket after QUIT while megabytes are still being written.
    retools::Pipeline p;
    p.command("QUIT").command("SET", "big", std::string(32 << 20, 'x'));
    EXPECT_THROW(conn.execute(p), retools::ConnectionError);
    EXPECT_EQ(conn.command("PING").view(), "PONG");
}

TEST(ConnectionFaults, Ipv6Loopback) {
    rt::RedisServer server{{.args = {"--bind", "127.0.0.1 -::1"}}};
    Connection conn{ConnectionOptions::from_url("redis://[::1]:" + std::to_string(server.port()) + "/0")};
    try {
        conn.command("PING");
    } catch (const retools::ConnectionError& e) {
        GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
    }
    conn.command("SET", "v6", "yes");
    EXPECT_EQ(conn.command("GET", "v6").as_string(), "yes");
}
