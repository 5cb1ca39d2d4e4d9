// main() of every integration binary: one private redis-server per process.
#include <gtest/gtest.h>

#include "redis_test.hpp"
#include "skip_guard.hpp"

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    retools::test::install_skip_guard();
    ::testing::AddGlobalTestEnvironment(new retools::test::RedisEnvironment);
    return retools::test::finish_run(RUN_ALL_TESTS());
}
