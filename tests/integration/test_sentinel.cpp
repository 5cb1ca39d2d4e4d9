#include <gtest/gtest.h>

#include "sentinel_set.hpp"

using namespace std::chrono_literals;

TEST(SentinelSetHarness, FailoverAndKill) {
    retools::test::SentinelSet set;
    int promoted = set.failover();
    EXPECT_EQ(promoted, set.first_replica_port());
    set.kill_node(promoted);
    EXPECT_TRUE(set.wait_for_master(set.first_master_port(), 20s)) << "no promotion after the kill";
}
