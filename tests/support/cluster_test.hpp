#pragma once
// A fixture for tests on one 3-master cluster shared by every test of a test
// process: started by the first test that needs it, emptied before each test,
// and started anew only when a test left it changed (a slot moved, a node
// down), so the next test always sees the layout it was created with. `conn`
// is a cluster Connection, also the global connection.

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include <retools/connection.hpp>

#include "redis_cluster.hpp"

namespace retools::test {

class ClusterTestBase : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (cluster_ && cluster_->state() != layout_) cluster_.reset();
        if (!cluster_) {
            cluster_ = std::make_unique<RedisCluster>();
            layout_ = cluster_->state();
        }
    }
    void SetUp() override {
        ASSERT_TRUE(cluster_->wait_ok()) << cluster_->state();
        cluster_->flush_all();
        retools::global_connection() = conn;
    }
    void TearDown() override {
        // A test that moved slots or stopped a node leaves a cluster the next
        // test must not inherit.
        if (cluster_->state() != layout_) {
            retools::global_connection() = Connection{};
            cluster_.reset();
            cluster_ = std::make_unique<RedisCluster>();
            layout_ = cluster_->state();
        }
    }
    RedisCluster& cluster() { return *cluster_; }

    static inline std::unique_ptr<RedisCluster> cluster_;
    static inline std::string layout_;
    Connection conn{cluster_->url()};
};

}  // namespace retools::test
