#include <gtest/gtest.h>

#include "redis_test.hpp"

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    ::testing::AddGlobalTestEnvironment(new retools::test::RedisEnvironment);
    return RUN_ALL_TESTS();
}
