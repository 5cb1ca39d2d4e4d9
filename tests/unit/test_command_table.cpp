// The command table (white box: client/command_table.hpp): what retools knows
// of each Redis command, used by Cluster routing, failover resends and error
// messages.
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include <retools/detail/command_buffer.hpp>

#include "client/command_table.hpp"

using retools::detail::command_info;
using retools::detail::command_keys;
using retools::detail::KeySpec;
using retools::detail::read_only_command;
using V = std::vector<std::string_view>;

TEST(CommandTable, LooksNamesUpInAnyCase) {
    EXPECT_EQ(command_info("GET").keys, KeySpec::first);
    EXPECT_EQ(command_info("get").keys, KeySpec::first);
    EXPECT_EQ(command_info("mSeT").keys, KeySpec::pairs);
    EXPECT_TRUE(command_info("hgetall").read_only);
}

TEST(CommandTable, UnknownCommandsHaveTheirKeyFirstAndWrite) {
    for (std::string_view name : {"BITPOS", "NOSUCHCOMMAND", "", "A-NAME-LONGER-THAN-ANY-COMMAND-NAME"}) {
        const auto info = command_info(name);
        EXPECT_EQ(info.keys, KeySpec::first) << name;
        EXPECT_FALSE(info.read_only) << name;
        EXPECT_FALSE(info.blocking) << name;
        EXPECT_FALSE(info.secret) << name;
    }
    EXPECT_EQ(command_keys({"BITPOS", "k", "1"}), (V{"k"}));
}

TEST(CommandTable, ReadOnlyCommandsOnlyRead) {
    for (std::string_view name : {"GET", "MGET", "EXISTS", "LRANGE", "ZRANGE", "TTL", "PING", "SCAN", "HSTRLEN"})
        EXPECT_TRUE(read_only_command(name)) << name;
    // Writes, and commands whose options can write (SORT ... STORE), go to the master once.
    for (std::string_view name : {"SET", "DEL", "INCR", "EVALSHA", "EVAL", "SORT", "BLPOP", "XREADGROUP", "MULTI"})
        EXPECT_FALSE(read_only_command(name)) << name;
}

TEST(CommandTable, BlockingCommandsAreMarked) {
    for (std::string_view name : {"BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BZPOPMIN", "BZPOPMAX", "WAIT",
                                  "XREAD", "XREADGROUP"})
        EXPECT_TRUE(command_info(name).blocking) << name;
    for (std::string_view name : {"LPOP", "RPOPLPUSH", "LMOVE", "GET", "XADD"})
        EXPECT_FALSE(command_info(name).blocking) << name;
}

TEST(CommandTable, OnlyCommandsThatMayCarryAPasswordAreSecret) {
    EXPECT_TRUE(command_info("AUTH").secret);
    EXPECT_TRUE(command_info("hello").secret);
    EXPECT_FALSE(command_info("SET").secret);
    EXPECT_FALSE(command_info("CONFIG").secret);
}

TEST(CommandTable, FindsTheKeysOfEachShape) {
    EXPECT_EQ(command_keys({"GET", "a"}), (V{"a"}));
    EXPECT_EQ(command_keys({"OBJECT", "ENCODING", "k"}), (V{"k"}));
    EXPECT_EQ(command_keys({"OBJECT"}), V{});
    EXPECT_EQ(command_keys({"RENAME", "a", "b"}), (V{"a", "b"}));
    EXPECT_EQ(command_keys({"EXISTS", "a", "b"}), (V{"a", "b"}));
    EXPECT_EQ(command_keys({"MSETNX", "a", "1", "b", "2"}), (V{"a", "b"}));
    EXPECT_EQ(command_keys({"BZPOPMIN", "a", "b", "0"}), (V{"a", "b"}));
    EXPECT_EQ(command_keys({"FCALL", "f", "1", "k", "arg"}), (V{"k"}));
    EXPECT_EQ(command_keys({"ZINTERSTORE", "d", "2", "a", "b"}), (V{"d", "a", "b"}));
    EXPECT_EQ(command_keys({"XREADGROUP", "GROUP", "g", "c", "streams", "s", ">"}), (V{"s"}));
    EXPECT_EQ(command_keys({"PING", "hello"}), V{});
    // A numkeys larger than the arguments stops at the last one; a bad count names none.
    EXPECT_EQ(command_keys({"EVALSHA", "abc", "5", "k1"}), (V{"k1"}));
    EXPECT_EQ(command_keys({"EVALSHA", "abc", "x", "k1"}), V{});
}

TEST(CommandTable, ARequestIsReadOnlyWhenEveryCommandIs) {
    retools::detail::CommandBuffer reads;
    reads.add("GET", "a");
    reads.add("ttl", "a");
    EXPECT_TRUE(retools::detail::read_only_request(reads.data()));
    retools::detail::CommandBuffer mixed;
    mixed.add("GET", "a");
    mixed.add("DEL", "a");
    EXPECT_FALSE(retools::detail::read_only_request(mixed.data()));
    EXPECT_FALSE(retools::detail::read_only_request(""));
}

TEST(CommandTable, RequestsThatMayNotShareAMultiplexedConnection) {
    using retools::detail::needs_own_link;
    auto encoded = [](auto... commands) {
        retools::detail::CommandBuffer b;
        (std::apply([&](auto... args) { b.add(args...); }, commands), ...);
        return b.data();
    };
    EXPECT_FALSE(needs_own_link(encoded(std::tuple{"GET", "k"})));
    EXPECT_FALSE(needs_own_link(encoded(std::tuple{"SET", "k", "v"}, std::tuple{"EVALSHA", "abc", 1, "k"})));
    EXPECT_FALSE(needs_own_link(encoded(std::tuple{"PING"}, std::tuple{"get", "select"})));  // an argument
    for (const char* name :
         {"BLPOP", "blmove", "WAIT", "SELECT", "watch", "MULTI", "CLIENT", "SUBSCRIBE", "MONITOR", "XREAD"})
        EXPECT_TRUE(needs_own_link(encoded(std::tuple{"GET", "k"}, std::tuple{name, "x"}))) << name;
    EXPECT_TRUE(needs_own_link("*2\r\n$3\r\nGET\r\n$5\r\nk"));  // malformed: never shared
    EXPECT_TRUE(needs_own_link("*x\r\n"));
    EXPECT_FALSE(needs_own_link(""));
}
