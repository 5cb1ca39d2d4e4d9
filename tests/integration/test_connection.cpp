#include <atomic>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <retools/connection.hpp>
#include <retools/detail/python_repr.hpp>
#include <retools/errors.hpp>
#include <retools/script.hpp>

#include "redis_test.hpp"

using namespace std::chrono_literals;
using retools::Connection;
using retools::ConnectionOptions;
using retools::Reply;
namespace rt = retools::test;

// ---- against the suite's server ----

class ConnectionTest : public rt::RedisTest {};

TEST_F(ConnectionTest, TypedReplies) {
    EXPECT_TRUE(conn.command("GET", "missing").is_nil());
    EXPECT_EQ(conn.command("SET", "k", "v").view(), "OK");
    EXPECT_TRUE(conn.command("SET", "k", "v").is_status());
    EXPECT_EQ(conn.command("INCRBY", "n", 41).as_integer(), 41);
    EXPECT_EQ(conn.command("INCRBYFLOAT", "f", 0.5).as_double(), 0.5);
    conn.command("RPUSH", "l", "a", "b", "c");
    auto items = conn.command("LRANGE", "l", 0, -1);
    ASSERT_TRUE(items.is_array());
    ASSERT_EQ(items.size(), 3u);
    EXPECT_EQ(items[2].as_string(), "c");
    EXPECT_THROW((void)items[3], retools::ReplyError);
    EXPECT_THROW((void)conn.command("GET", "k").as_integer(), retools::ReplyError);
    EXPECT_EQ(conn.command("GET", "missing").as_optional_string(), std::nullopt);
}

TEST_F(ConnectionTest, ErrorReplyThrowsWithServerMessage) {
    conn.command("RPUSH", "list", "x");
    try {
        conn.command("GET", "list");
        FAIL() << "expected ReplyError";
    } catch (const retools::ReplyError& e) {
        EXPECT_NE(std::string(e.what()).find("WRONGTYPE"), std::string::npos);
        // The message names the command and the key, not only the server's complaint.
        EXPECT_EQ(std::string(e.what()).rfind("GET list: ", 0), 0u) << e.what();
    }
    try {
        conn.blocking_command(std::chrono::milliseconds(10), "BLPOP", "str-key", 0.01);
    } catch (const retools::ReplyError&) {
        ADD_FAILURE() << "BLPOP on a missing key is no error";
    }
    conn.command("SET", "str-key", "x");
    try {
        conn.blocking_command(std::chrono::milliseconds(10), "BLPOP", "str-key", 0.01);
        ADD_FAILURE() << "expected ReplyError";
    } catch (const retools::ReplyError& e) {
        EXPECT_EQ(std::string(e.what()).rfind("BLPOP str-key: WRONGTYPE", 0), 0u) << e.what();
    }
    EXPECT_THROW(conn.command("NOSUCHCOMMAND"), retools::ReplyError);
    // The connection is still usable after an error reply.
    EXPECT_EQ(conn.command("PING").view(), "PONG");
}

TEST_F(ConnectionTest, BinarySafeRoundTrips) {
    using namespace std::string_literals;
    const std::string nasty = "a\0b\r\nc$3\r\n*1\r\n\xff\xfe"s;
    const std::string key = "key\0with\r\nnul"s;
    ASSERT_EQ(nasty.size(), 16u);
    conn.command("SET", key, nasty);
    EXPECT_EQ(conn.command("GET", key).as_string(), nasty);
    EXPECT_EQ(conn.command("STRLEN", key).as_integer(), 16);
    conn.command("SET", "empty", "");
    EXPECT_EQ(conn.command("GET", "empty").as_string(), "");
}

TEST_F(ConnectionTest, NumbersAndRangesAsArguments) {
    conn.command("SET", "i", -9223372036854775807LL);
    EXPECT_EQ(conn.command("GET", "i").as_string(), "-9223372036854775807");
    conn.command("SET", "u", 18446744073709551615ULL);
    EXPECT_EQ(conn.command("GET", "u").as_string(), "18446744073709551615");
    conn.command("SET", "d", 0.1);
    EXPECT_EQ(conn.command("GET", "d").as_string(), "0.1");
    conn.command("SET", "d1", 2.0);
    EXPECT_EQ(conn.command("GET", "d1").as_string(), "2.0");
    std::vector<std::string> members{"x", "y", "z"};
    EXPECT_EQ(conn.command("SADD", "s", members).as_integer(), 3);
    std::vector<int> scores{1, 2};
    EXPECT_EQ(conn.command("RPUSH", "nums", scores).as_integer(), 2);
    EXPECT_EQ(conn.command("LINDEX", "nums", 1).as_string(), "2");
}

TEST_F(ConnectionTest, SixteenThreadsShareOneConnection) {
    Connection shared{ConnectionOptions{.port = rt::redis_options().port, .pool_size = 8}};
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 16; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 1000; ++i) {
                std::string key = "t" + std::to_string(t) + ":" + std::to_string(i % 10);
                std::string value = std::to_string(t * 100000 + i);
                try {
                    shared.command("SET", key, value);
                    if (shared.command("GET", key).as_string() != value) ++wrong;
                } catch (...) {
                    ++wrong;
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_LE(shared.open_connections(), 8u);
    EXPECT_EQ(shared.round_trips(), 16u * 1000u * 2u);
}

TEST_F(ConnectionTest, PipelineRepliesInOrderInOneRoundTrip) {
    retools::Pipeline p;
    for (int i = 0; i < 100; ++i) p.command("RPUSH", "order", i);
    p.command("LRANGE", "order", 0, -1).command("GET", "order");
    auto before = conn.round_trips();
    auto replies = conn.execute(p);
    EXPECT_EQ(conn.round_trips() - before, 1u);
    ASSERT_EQ(replies.size(), 102u);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(replies[i].as_integer(), i + 1);
    auto all = replies[100].as_array();
    ASSERT_EQ(all.size(), 100u);
    EXPECT_EQ(all[42].as_string(), "42");
    EXPECT_TRUE(replies[101].is_error());  // WRONGTYPE: returned, thrown when read
    EXPECT_THROW((void)replies[101].as_string(), retools::ReplyError);
}

TEST_F(ConnectionTest, TransactionIsOneRoundTripAndAtomic) {
    retools::Pipeline p;
    p.command("SET", "a", "1").command("INCR", "a").command("GET", "a");
    auto before = conn.round_trips();
    auto replies = conn.transaction(p);
    EXPECT_EQ(conn.round_trips() - before, 1u);
    ASSERT_EQ(replies.size(), 3u);
    EXPECT_EQ(replies[0].view(), "OK");
    EXPECT_EQ(replies[1].as_integer(), 2);
    EXPECT_EQ(replies[2].as_string(), "2");

    // A command rejected while queueing aborts the whole transaction.
    retools::Pipeline bad;
    bad.command("SET", "b", "1").command("NOSUCHCOMMAND", "x");
    EXPECT_THROW(conn.transaction(bad), retools::ReplyError);
    EXPECT_TRUE(conn.command("GET", "b").is_nil());
    EXPECT_EQ(conn.command("PING").view(), "PONG");
}

TEST_F(ConnectionTest, ScriptReloadsAfterScriptFlush) {
    retools::Script script{"return {KEYS[1], ARGV[1], ARGV[2]}"};
    EXPECT_EQ(script.sha().size(), 40u);
    // The local SHA1 is the one Redis computes.
    EXPECT_EQ(conn.command("SCRIPT", "LOAD", script.source()).as_string(), script.sha());
    auto r = script(conn, {"k"}, "v", 7);
    ASSERT_EQ(r.size(), 3u);
    EXPECT_EQ(r[0].as_string(), "k");
    EXPECT_EQ(r[2].as_string(), "7");

    conn.command("SCRIPT", "FLUSH");
    EXPECT_EQ(conn.command("SCRIPT", "EXISTS", script.sha())[0].as_integer(), 0);
    auto before = conn.round_trips();
    EXPECT_EQ(script(conn, {"k2"}, "w", 8)[0].as_string(), "k2");
    EXPECT_EQ(conn.round_trips() - before, 2u);  // NOSCRIPT, then EVAL
    EXPECT_EQ(conn.command("SCRIPT", "EXISTS", script.sha())[0].as_integer(), 1);
    before = conn.round_trips();
    script(conn, {"k3"}, "x", 9);
    EXPECT_EQ(conn.round_trips() - before, 1u);  // cached again
}

TEST_F(ConnectionTest, ScriptErrorsThrow) {
    retools::Script broken{"return redis.call('INCR', KEYS[1])"};
    conn.command("SET", "str", "abc");
    EXPECT_THROW(broken(conn, {"str"}), retools::ReplyError);
    try {
        broken(conn, {"str"});
    } catch (const retools::ReplyError& e) {
        // Names the script's keys (not its hash), then the server's message.
        EXPECT_EQ(std::string(e.what()).rfind("script on str: ", 0), 0u) << e.what();
    }
}

TEST_F(ConnectionTest, DatabaseIsSelected) {
    auto options = rt::redis_options();
    options.db = 3;
    Connection db3{options};
    db3.command("SET", "where", "db3");
    EXPECT_TRUE(conn.command("GET", "where").is_nil());
    EXPECT_EQ(db3.command("GET", "where").as_string(), "db3");
    db3.command("FLUSHDB");
}

TEST_F(ConnectionTest, GlobalConnectionIsAssignable) {
    EXPECT_EQ(retools::global_connection().options().port, rt::redis_options().port);
    retools::global_connection().command("SET", "via-global", "1");
    EXPECT_EQ(conn.command("GET", "via-global").as_string(), "1");
}

TEST_F(ConnectionTest, ForkedChildUsesItsOwnSocket) {
    conn.command("SET", "before-fork", "1");  // the parent has an open socket now
    auto child = rt::ChildProcess::fork([&] {
        for (int i = 0; i < 50; ++i) conn.command("INCR", "child-count");
        return conn.command("GET", "before-fork").as_string() == "1" ? 0 : 3;
    });
    for (int i = 0; i < 50; ++i) conn.command("INCR", "parent-count");
    EXPECT_EQ(child.exit_code(), 0);
    EXPECT_EQ(conn.command("GET", "child-count").as_string(), "50");
    EXPECT_EQ(conn.command("GET", "parent-count").as_string(), "50");
}

// ---- faults: dedicated servers ----

TEST(ConnectionFaults, CommandTimeoutRaisesWithinTimeout) {
    rt::RedisServer server;
    auto options = server.options();
    options.command_timeout = 300ms;
    Connection c{options};
    c.command("PING");
    auto start = std::chrono::steady_clock::now();
    // Another client makes the server busy for 2 s.
    std::thread sleeper([&] {
        try {
            Connection(server.options()).command("DEBUG", "SLEEP", 2);
        } catch (...) {}
    });
    std::this_thread::sleep_for(50ms);
    start = std::chrono::steady_clock::now();
    EXPECT_THROW(c.command("PING"), retools::TimeoutError);
    auto waited = std::chrono::steady_clock::now() - start;
    EXPECT_GE(waited, 250ms);
    EXPECT_LT(waited, 1000ms);
    sleeper.join();
    EXPECT_EQ(c.command("PING").view(), "PONG");  // the timed-out socket was replaced
}

TEST(ConnectionFaults, DeadServerRaisesConnectionError) {
    int port = rt::free_port();
    Connection c{ConnectionOptions{.port = port, .connect_timeout = 500ms}};
    auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(c.command("PING"), retools::ConnectionError);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
    EXPECT_EQ(c.open_connections(), 0u);
}

TEST(ConnectionFaults, ReconnectsAfterServerRestart) {
    rt::RedisServer server;
    Connection c{server.options()};
    c.command("SET", "x", "1");
    server.kill();
    EXPECT_THROW(c.command("GET", "x"), retools::ConnectionError);
    server.start();
    // No persistence: the key is gone, but the same Connection works again
    // (once its fail-fast backoff has passed).
    EXPECT_TRUE(rt::once_served([&] { return c.command("GET", "x"); }).is_nil());
    EXPECT_EQ(c.command("PING").view(), "PONG");
}

TEST(ConnectionFaults, RestartWhileIdleIsTransparentOnNextCall) {
    rt::RedisServer server;
    Connection c{server.options()};
    c.command("PING");
    server.kill();
    server.start();
    // The pooled socket is dead; the first call notices and raises, the next reconnects.
    try {
        c.command("PING");
    } catch (const retools::ConnectionError&) {}
    EXPECT_EQ(c.command("PING").view(), "PONG");
}

TEST(ConnectionAuth, PasswordAndAclUser) {
    rt::RedisServer server{{.args = {"--requirepass", "s3cret-pw"}}};
    auto options = server.options();
    EXPECT_THROW(Connection(options).command("PING"), retools::ReplyError);  // NOAUTH
    options.password = "s3cret-pw";
    Connection authed{options};
    EXPECT_EQ(authed.command("PING").view(), "PONG");
    authed.command("ACL", "SETUSER", "alice", "on", ">alice-pw", "~*", "+@all");

    Connection alice{
        ConnectionOptions::from_url(fmt::format("redis://alice:alice-pw@127.0.0.1:{}/0", server.port()))};
    EXPECT_EQ(alice.command("ACL", "WHOAMI").as_string(), "alice");
}

TEST_F(ConnectionTest, ErrorOfAnAuthCommandDoesNotEchoThePassword) {
    try {
        conn.command("auth", "not-the-password-42");
        FAIL() << "expected ReplyError";
    } catch (const retools::ReplyError& e) {
        EXPECT_EQ(std::string(e.what()).find("not-the-password-42"), std::string::npos) << e.what();
    }
}

TEST(ConnectionAuth, WrongPasswordIsAClearErrorWithoutThePassword) {
    rt::RedisServer server{{.args = {"--requirepass", "right-pw"}}};
    auto options = server.options();
    options.password = "wrong-pw-123";
    try {
        Connection(options).command("PING");
        FAIL() << "expected AuthenticationError";
    } catch (const retools::AuthenticationError& e) {
        std::string what = e.what();
        EXPECT_NE(what.find("AUTH"), std::string::npos) << what;
        EXPECT_NE(what.find(std::to_string(server.port())), std::string::npos) << what;
        EXPECT_EQ(what.find("wrong-pw-123"), std::string::npos) << what;
    }
    options.user = "nobody";
    EXPECT_THROW(Connection(options).command("PING"), retools::AuthenticationError);
}
