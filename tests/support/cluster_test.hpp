#pragma once
// A fixture for tests on one 3-master cluster shared by every test of a test
// binary: started by the first suite, emptied before each test, stopped after
// the suite. `conn` is a cluster Connection, also the global connection.

#include <memory>

#include <gtest/gtest.h>

#include <retools/connection.hpp>

#include "redis_cluster.hpp"

namespace retools::test {

class ClusterTestBase : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (!cluster_) cluster_ = std::make_unique<RedisCluster>();
    }
    static void TearDownTestSuite() { cluster_.reset(); }
    void SetUp() override {
        ASSERT_TRUE(cluster_->wait_ok()) << cluster_->state();
        cluster_->flush_all();
        retools::global_connection() = conn;
    }
    RedisCluster& cluster() { return *cluster_; }

    static inline std::unique_ptr<RedisCluster> cluster_;
    Connection conn{cluster_->url()};
};

}  // namespace retools::test
