#include <gtest/gtest.h>

#include "redis_test.hpp"

namespace rt = retools::test;

// The demo is what a new user runs first: it must run to completion.
TEST(Demo, RunsToCompletion) {
    std::string out = std::string(RETOOLS_BINARY_DIR) + "/demo-test-output.txt";
    auto demo = rt::ChildProcess::spawn({std::string(RETOOLS_BINARY_DIR) + "/examples/demo"},
                                        {{"REDIS_URL", rt::redis_url()}}, out);
    EXPECT_EQ(demo.exit_code(std::chrono::seconds(60)), 0) << rt::read_file(out);
    EXPECT_NE(rt::read_file(out).find("demo finished"), std::string::npos) << rt::read_file(out);
}
