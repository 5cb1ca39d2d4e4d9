// Lock against bad input, keys of the wrong type and a dead server.
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/lock.hpp>

#include "redis_server.hpp"
#include "redis_test.hpp"

using namespace std::chrono_literals;
using retools::Lock;
using retools::LockOptions;
namespace rt = retools::test;

class LockFaultsTest : public rt::RedisTest {};

TEST_F(LockFaultsTest, RejectsAnEmptyKey) {
    try {
        Lock lock{"", std::defer_lock};
        ADD_FAILURE() << "expected ConfigurationError";
    } catch (const retools::ConfigurationError& e) {
        EXPECT_NE(std::string(e.what()).find("key"), std::string::npos) << e.what();
    }
}

TEST_F(LockFaultsTest, KeyHoldingAHashIsNeverTakenAndIsLeftAlone) {
    conn.command("HSET", "lf:hash", "f", "v");
    try {
        Lock lock{"lf:hash", {.timeout = 30ms}};
        ADD_FAILURE() << "expected LockTimeout";
    } catch (const retools::LockTimeout& e) {
        EXPECT_NE(std::string(e.what()).find("lf:hash"), std::string::npos) << e.what();
    }
    EXPECT_EQ(conn.command("HGET", "lf:hash", "f").as_string(), "v");
}

TEST_F(LockFaultsTest, ReleasingAKeyThatBecameAHashNamesItAndTheDestructorDoesNotThrow) {
    {
        Lock lock{"lf:k", {.timeout = 0ms}};
        conn.command("DEL", "lf:k");
        conn.command("HSET", "lf:k", "f", "v");
        try {
            (void)lock.release();
            ADD_FAILURE() << "expected ReplyError";
        } catch (const retools::ReplyError& e) {
            EXPECT_NE(std::string(e.what()).find("lf:k"), std::string::npos) << e.what();
        }
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
    EXPECT_TRUE(again.try_lock());  // usable again once the server is back
}
