// Lock against bad input, keys of the wrong type and a dead server.
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/lock.hpp>

#include "expect.hpp"
#include "redis_server.hpp"
#include "redis_test.hpp"

using namespace std::chrono_literals;
using retools::Lock;
using retools::LockOptions;
namespace rt = retools::test;

class LockFaultsTest : public rt::RedisTest {};

TEST_F(LockFaultsTest, RejectsAnEmptyKey) {
    EXPECT_THROW_MSG((Lock{"", std::defer_lock}), retools::ConfigurationError, "key");
}

TEST_F(LockFaultsTest, KeyHoldingAHashIsNeverTakenAndIsLeftAlone) {
    conn.command("HSET", "lf:hash", "f", "v");
    EXPECT_THROW_MSG((Lock{"lf:hash", {.timeout = 30ms}}), retools::LockTimeout, "lf:hash");
    EXPECT_EQ(conn.command("HGET", "lf:hash", "f").as_string(), "v");
}

TEST_F(LockFaultsTest, ReleasingAKeyThatBecameAHashNamesItAndTheDestructorDoesNotThrow) {
    {
        Lock lock{"lf:k", {.timeout = 0ms}};
        conn.command("DEL", "lf:k");
        conn.command("HSET", "lf:k", "f", "v");
        EXPECT_THROW_MSG((void)lock.release(), retools::ReplyError, "lf:k");
        EXPECT_FALSE(lock.held());
    }
    {
        Lock lock{"lf:k2", {.timeout = 0ms}};
        conn.command("DEL", "lf:k2");
        conn.command("HSET", "lf:k2", "f", "v");
    }  // the destructor swallows the error
    EXPECT_EQ(conn.command("HGET", "lf:k2", "f").as_string(), "v");
}

TEST(LockDeadServer, AcquireThrowsConnectionErrorAndTheDestructorDoesNotThrow) {
    rt::RedisServer server;
    auto options = server.options();
    options.connect_timeout = 200ms;
    options.command_timeout = 500ms;
    retools::Connection c{options};
    {
        Lock held{"lf:dead", {.timeout = 0ms, .connection = c}};
        server.kill();
        auto start = std::chrono::steady_clock::now();
        EXPECT_THROW((Lock{"lf:other", {.timeout = 5s, .connection = c}}), retools::ConnectionError);
        EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);  // no retrying against a dead server
        EXPECT_TRUE(held.held());
    }  // the destructor of a held lock meets the dead server: it must not throw
    Lock again{"lf:dead2", {.timeout = 0ms, .connection = c}, std::defer_lock};
    EXPECT_THROW((void)again.try_lock(), retools::ConnectionError);
    server.start();
    // Usable again once the server is back (and the fail-fast backoff has passed).
    EXPECT_TRUE(rt::once_served([&] { return again.try_lock(); }));
}
