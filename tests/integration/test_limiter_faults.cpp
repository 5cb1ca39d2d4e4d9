// Limiter against a sorted set of the wrong type and a dead server.
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include <retools/errors.hpp>
#include <retools/limiter.hpp>

#include "expect.hpp"
#include "redis_server.hpp"
#include "redis_test.hpp"

using namespace std::chrono_literals;
using retools::Limiter;
namespace rt = retools::test;

class LimiterFaultsTest : public rt::RedisTest {};

TEST_F(LimiterFaultsTest, SortedSetOfTheWrongTypeThrowsNamingItAndIsLeftAlone) {
    conn.command("SET", "lim:faults", "a string");
    Limiter limiter{{.limit = 2, .prefix = "lim:faults", .connection = conn}};
    auto expect_named = [](auto&& call, const char* what) {
        SCOPED_TRACE(what);
        EXPECT_THROW_MSG(call(), retools::ReplyError, "lim:faults");
    };
    expect_named([&] { (void)limiter.acquire_limit("k"); }, "acquire_limit");
    expect_named([&] { (void)limiter.acquire_for("k", 2s); }, "acquire_for");
    expect_named([&] { limiter.release_limit("k"); }, "release_limit");
    expect_named([&] { (void)limiter.holders(); }, "holders");
    EXPECT_EQ(conn.command("GET", "lim:faults").as_string(), "a string");
}

TEST(LimiterDeadServer, CallsThrowConnectionErrorAndASlotDoesNotThrowOnRelease) {
    rt::RedisServer server;
    auto options = server.options();
    options.connect_timeout = 200ms;
    options.command_timeout = 500ms;
    retools::Connection c{options};
    Limiter limiter{{.limit = 1, .prefix = "lim:dead", .connection = c}};
    {
        auto slot = limiter.acquire("held");
        ASSERT_TRUE(slot.has_value());
        server.kill();
        EXPECT_THROW((void)limiter.acquire_limit("other"), retools::ConnectionError);
        auto start = std::chrono::steady_clock::now();
        EXPECT_THROW((void)limiter.acquire_for("other", 5s), retools::ConnectionError);
        EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
        EXPECT_THROW((void)limiter.holders(), retools::ConnectionError);
    }  // the slot's destructor meets the dead server: it must not throw
}
