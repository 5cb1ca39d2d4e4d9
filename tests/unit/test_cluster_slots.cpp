// Redis Cluster pieces that need no server: CRC16 and hash slots, the keys of
// a command, redis-cluster:// URLs and ClusterOptions checks.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <retools/connection.hpp>
#include <retools/errors.hpp>

#include "../support/expect.hpp"
#include "client/cluster.hpp"
#include "client/command_table.hpp"
#include "client/connection_access.hpp"

using retools::ConnectionOptions;
using retools::detail::command_keys;
using retools::detail::key_slot;

TEST(ClusterSlots, Crc16IsXmodem) {
    EXPECT_EQ(retools::detail::crc16("123456789"), 0x31C3);  // the XMODEM check value
    EXPECT_EQ(retools::detail::crc16(""), 0);
}

TEST(ClusterSlots, KnownSlotsAndHashTags) {
    // As `CLUSTER KEYSLOT` answers (test_cluster checks many more against a server).
    EXPECT_EQ(key_slot("foo"), 12182);
    EXPECT_EQ(key_slot("{foo}.anything"), 12182);
    EXPECT_EQ(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
    EXPECT_EQ(key_slot("{user1000}.following"), key_slot("user1000"));
    // Only the first {...} counts; an empty {} is no tag (the whole key is hashed).
    EXPECT_EQ(key_slot("foo{bar}{zap}"), key_slot("bar"));
    EXPECT_EQ(key_slot("foo{}{bar}"), retools::detail::crc16("foo{}{bar}") & 16383);
    EXPECT_EQ(key_slot("foo{{bar}}zap"), key_slot("{bar"));
    EXPECT_EQ(key_slot("foo{bar"), retools::detail::crc16("foo{bar") & 16383);
    EXPECT_LT(key_slot(std::string("\xff\x00\x01", 3)), 16384);
}

TEST(ClusterSlots, KeysOfCommands) {
    using V = std::vector<std::string_view>;
    EXPECT_EQ(command_keys({"GET", "a"}), (V{"a"}));
    EXPECT_EQ(command_keys({"set", "a", "1"}), (V{"a"}));
    EXPECT_EQ(command_keys({"DEL", "a", "b", "c"}), (V{"a", "b", "c"}));
    EXPECT_EQ(command_keys({"MSET", "a", "1", "b", "2"}), (V{"a", "b"}));
    EXPECT_EQ(command_keys({"BLPOP", "a", "b", "5"}), (V{"a", "b"}));
    EXPECT_EQ(command_keys({"LMOVE", "a", "b", "LEFT", "RIGHT"}), (V{"a", "b"}));
    EXPECT_EQ(command_keys({"EVALSHA", "abc", "2", "k1", "k2", "arg"}), (V{"k1", "k2"}));
    EXPECT_EQ(command_keys({"EVAL", "return 1", "0", "arg"}), V{});
    EXPECT_EQ(command_keys({"ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"}), (V{"d", "a", "b"}));
    EXPECT_EQ(command_keys({"XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"}), (V{"s1", "s2"}));
    EXPECT_EQ(command_keys({"OBJECT", "ENCODING", "k"}), (V{"k"}));
    EXPECT_EQ(command_keys({"PING"}), V{});
    EXPECT_EQ(command_keys({"INFO", "server"}), V{});
    EXPECT_EQ(command_keys({"CLUSTER", "SLOTS"}), V{});
    // Unknown commands: the first argument (a MOVED corrects it if it is not a key).
    EXPECT_EQ(command_keys({"BITPOS", "k", "1"}), (V{"k"}));
}

TEST(ClusterSlots, ParsesCommandsOfABuffer) {
    retools::Pipeline p;
    p.command("SET", "a", "1").command("GET", "b");
    auto commands = retools::detail::parse_commands(retools::detail::ConnectionAccess::buffer(p).data());
    ASSERT_EQ(commands.size(), 2u);
    EXPECT_EQ(commands[0].args, (std::vector<std::string_view>{"SET", "a", "1"}));
    EXPECT_EQ(std::string(commands[0].resp) + std::string(commands[1].resp),
              retools::detail::ConnectionAccess::buffer(p).data());
}

TEST(ClusterUrl, ParsesSeedsUserAndPassword) {
    auto o = ConnectionOptions::from_url("redis-cluster://alice:p%40ss@10.0.0.1:7000,node-b:7001,[::1]:7002");
    ASSERT_TRUE(o.cluster.has_value());
    ASSERT_EQ(o.cluster->seeds.size(), 3u);
    EXPECT_EQ(o.cluster->seeds[0], (retools::Endpoint{"10.0.0.1", 7000}));
    EXPECT_EQ(o.cluster->seeds[1], (retools::Endpoint{"node-b", 7001}));
    EXPECT_EQ(o.cluster->seeds[2], (retools::Endpoint{"::1", 7002}));
    EXPECT_EQ(o.user, "alice");
    EXPECT_EQ(o.password, "p@ss");
    EXPECT_FALSE(o.cluster->read_from_replicas);
    EXPECT_EQ(o.cluster->refresh_interval, std::chrono::seconds(10));
    EXPECT_EQ(o.describe(), "cluster via 10.0.0.1:7000,node-b:7001,[::1]:7002");
    EXPECT_TRUE(ConnectionOptions::from_url("redis-cluster://h:1?read_from_replicas=yes")
                    .cluster->read_from_replicas);
}

TEST(ClusterUrl, ErrorsNameThePartButNeverTheUserInfo) {
    EXPECT_THROW_MSG(ConnectionOptions::from_url("redis-cluster://"), retools::ConfigurationError,
                     "no nodes");
    EXPECT_THROW_MSG(ConnectionOptions::from_url("redis-cluster://u:s3cret@h:1,h2"),
                     retools::ConfigurationError, "node 2 of the list has no port");
    EXPECT_THROW_MSG(ConnectionOptions::from_url("redis-cluster://h:1/2"), retools::ConfigurationError,
                     "only database 0");
    EXPECT_THROW_MSG(ConnectionOptions::from_url("redis-cluster://h:1?master=x"), retools::ConfigurationError,
                     "unknown query parameter \"master\"");
    try {
        ConnectionOptions::from_url("redis-cluster://u:s3cret@h:99999");
        FAIL() << "no error";
    } catch (const retools::ConfigurationError& e) {
        EXPECT_EQ(std::string(e.what()).find("s3cret"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("Redis Cluster URL"), std::string::npos) << e.what();
    }
}

TEST(ClusterOptions, CheckedWhenAConnectionIsMade) {
    EXPECT_THROW_MSG(retools::Connection(ConnectionOptions{.cluster = retools::ClusterOptions{}}),
                     retools::ConfigurationError, "ClusterOptions.seeds is empty");
    EXPECT_THROW_MSG(retools::Connection(
                         ConnectionOptions{.db = 1, .cluster = retools::ClusterOptions{.seeds = {{"h", 1}}}}),
                     retools::ConfigurationError, "only database 0");
    EXPECT_THROW_MSG(
        retools::Connection(ConnectionOptions{.cluster = retools::ClusterOptions{.seeds = {{"h", 0}}}}),
        retools::ConfigurationError, "port 0");
    // Nothing is sent before the first command.
    retools::Connection lazy{"redis-cluster://127.0.0.1:1"};
    EXPECT_TRUE(lazy.is_cluster());
    EXPECT_THROW_MSG(lazy.command("GET", "k"), retools::ConnectionError, "no node answered CLUSTER SLOTS");
}
