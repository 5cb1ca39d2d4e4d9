#pragma once
// The suite's Redis: REDIS_URL when set, else a private redis-server that this
// test process starts on a free loopback port and stops at exit.

#include <string>

#include <gtest/gtest.h>

#include <retools/connection.hpp>

#include "process.hpp"
#include "redis_server.hpp"
#include "wait.hpp"

namespace retools::test {

/// URL of the suite's server (also exported as REDIS_URL for child processes).
const std::string& redis_url();

/// Options of the suite's server, to tweak (timeouts, pool size) in a test.
ConnectionOptions redis_options();

/// Each test starts from an empty database and with global_connection() = conn.
class RedisTest : public ::testing::Test {
protected:
    void SetUp() override;
    Connection conn{redis_url()};
};

/// Installed by the suite's main().
class RedisEnvironment : public ::testing::Environment {
public:
    void SetUp() override;
    void TearDown() override;
};

}  // namespace retools::test
