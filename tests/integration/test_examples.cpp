// The programs in examples/ are what users copy from: each must build, run to
// completion against a real server, pass its own checks and leave no keys behind.
#include <signal.h>

#include <string>

#include <gtest/gtest.h>

#include "redis_test.hpp"

using namespace std::chrono_literals;
namespace rt = retools::test;

namespace {

class Examples : public rt::RedisTest {
protected:
    void SetUp() override {
#ifndef RETOOLS_EXAMPLES_BUILT
        GTEST_SKIP() << "examples not built (RETOOLS_BUILD_EXAMPLES=OFF)";
#endif
        rt::RedisTest::SetUp();
    }

    // Runs examples/<name> with REDIS_URL set to this test's server; its exit
    // code, its output in `output`.
    int run(const std::string& name) {
        std::string out = output_path(name);
        auto program = rt::ChildProcess::spawn({std::string(RETOOLS_BINARY_DIR) + "/examples/" + name},
                                               {{"REDIS_URL", rt::redis_url()}}, out);
        int code = program.exit_code(60s);
        output = rt::read_file(out);
        return code;
    }

    static std::string output_path(const std::string& name) {
        return std::string(RETOOLS_BINARY_DIR) + "/example-" + name + "-output.txt";
    }

    // Keys left in the database (the fixture starts each test with an empty one).
    std::vector<std::string> leftover_keys() {
        std::vector<std::string> keys;
        // The worker's counters (retools:stat:*) outlive workers by design.
        for (const auto& k : conn.command("KEYS", "*").as_array())
            if (!k.view().starts_with("retools:stat:")) keys.push_back(k.as_string());
        return keys;
    }

    // Runs an example that checks itself: it must exit 0, say so, and clean up.
    void expect_passes(const std::string& name) {
        EXPECT_EQ(run(name), 0) << output;
        EXPECT_NE(output.find(name + ": all checks passed"), std::string::npos) << output;
        EXPECT_EQ(output.find("FAIL"), std::string::npos) << output;
        EXPECT_EQ(leftover_keys(), std::vector<std::string>{}) << output;
    }

    std::string output;
};

}  // namespace

TEST_F(Examples, CacheBasics) {
    expect_passes("cache_basics");
}

TEST_F(Examples, LockAndLimiter) {
    expect_passes("lock_and_limiter");
}

TEST_F(Examples, JobQueue) {
    expect_passes("job_queue");
}

// job_library.cpp loaded into retools-worker, job_client.cpp enqueuing to it:
// exactly the commands the examples' comments give.
TEST_F(Examples, JobLibraryLoadedByRetoolsWorker) {
#ifndef RETOOLS_EXAMPLE_JOB_LIBRARY
    GTEST_SKIP() << "retools-worker not built (RETOOLS_BUILD_TOOLS=OFF)";
#else
    std::string log = output_path("retools-worker");
    auto worker = rt::ChildProcess::spawn(
        {RETOOLS_WORKER_PROGRAM, "-b", "--load", RETOOLS_EXAMPLE_JOB_LIBRARY, "examples_lib"},
        {{"REDIS_URL", rt::redis_url()}}, log);
    EXPECT_EQ(run("job_client"), 0) << output << "\nworker log:\n" << rt::read_file(log);
    EXPECT_NE(output.find("job_client: all checks passed"), std::string::npos) << output;
    EXPECT_EQ(output.find("FAIL"), std::string::npos) << output;

    worker.signal(SIGTERM);
    EXPECT_EQ(worker.exit_code(5s), 0) << rt::read_file(log);
    std::string worker_log = rt::read_file(log);
    EXPECT_NE(worker_log.find("examples.jobs:word_count queue=examples_lib"), std::string::npos)
        << worker_log;
    EXPECT_NE(worker_log.find("failed: std::runtime_error: rejected: demo"), std::string::npos) << worker_log;
    EXPECT_EQ(leftover_keys(), std::vector<std::string>{}) << worker_log;  // the worker unregistered too
#endif
}
