// One cache for C++ and Python: a Python 3 process (pickle + redis-py, as
// Python retools stores values) and cached C++ functions read each other's
// values from the same hash fields, both directions.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <retools/cache.hpp>

#include "process.hpp"
#include "redis_test.hpp"
#include "system.hpp"

using namespace std::chrono_literals;
namespace rt = retools::test;

namespace {

const std::string kPeer = std::string(RETOOLS_SOURCE_DIR) + "/tests/support/cache_peer.py";

class CachePythonTest : public rt::RedisTest {
protected:
    void SetUp() override {
        if (!std::filesystem::exists(rt::python3))
            GTEST_SKIP() << rt::python3 << " is missing: install python3 and python3-redis to run this test";
        rt::RedisTest::SetUp();
        retools::CacheRegion::enabled = true;
        retools::CacheRegion::add_region("shared", {.expires = 60s, .first_value_wait = 5s});
    }

    // Runs the Python peer; its exit code (output in the failure message).
    int peer(const std::string& mode, std::string& output) {
        const std::string out_file = ::testing::TempDir() + "cache_peer_" + mode + ".out";
        auto child = rt::ChildProcess::spawn({rt::python3, kPeer, rt::redis_url(), mode}, {}, out_file);
        const int code = child.exit_code(20s);
        output = rt::read_file(out_file);
        return code;
    }
};

TEST_F(CachePythonTest, BothDirectionsShareOneValuePerKey) {
    std::string output;
    if (peer("probe-redis-module", output) != 0 &&
        output.find("No module named 'redis'") != std::string::npos)
        GTEST_SKIP() << "python3-redis is missing: " << output;

    int calls = 0;
    auto name = retools::cache_region("shared", retools::function_namespace("interop", "name"),
                                      [&](const std::string& who) -> std::string {
                                          ++calls;
                                          return who == "cpp" ? "from c++ \xc3\xa9 \xe2\x82\xac" : "wrong";
                                      });
    auto count = retools::cache_region("shared", retools::function_namespace("interop", "count"),
                                       [&](const std::string& who) -> long {
                                           ++calls;
                                           return who == "cpp" ? -42 : 0;
                                       });
    auto ints = retools::cache_region(
        "shared", retools::function_namespace("interop", "ints"), [&](const std::string& who) {
            ++calls;
            return who == "cpp" ? std::vector<int>{4, 5, 6} : std::vector<int>{};
        });
    auto scores = retools::cache_region(
        "shared", retools::function_namespace("interop", "scores"), [&](const std::string& who) {
            ++calls;
            return who == "cpp" ? std::map<std::string, double>{{"x", 0.25}, {"y", -1.5}}
                                : std::map<std::string, double>{};
        });

    // Python -> C++: the values Python stored are hits, of the right C++ types.
    ASSERT_EQ(peer("write", output), 0) << output;
    EXPECT_EQ(name("py"), "from python \xc3\xa9 \xe2\x82\xac 'q'");
    EXPECT_EQ(count("py"), 12345678901L);
    EXPECT_EQ(ints("py"), (std::vector<int>{1, 2, 3}));
    EXPECT_EQ(scores("py"), (std::map<std::string, double>{{"a", 0.5}, {"b", 2.0}}));
    EXPECT_EQ(calls, 0);

    // C++ -> Python: what the C++ functions computed and stored, Python unpickles.
    EXPECT_EQ(name("cpp"), "from c++ \xc3\xa9 \xe2\x82\xac");
    EXPECT_EQ(count("cpp"), -42);
    EXPECT_EQ(ints("cpp"), (std::vector<int>{4, 5, 6}));
    EXPECT_EQ(scores("cpp"), (std::map<std::string, double>{{"x", 0.25}, {"y", -1.5}}));
    EXPECT_EQ(calls, 4);
    EXPECT_EQ(peer("read", output), 0) << output;

    // And Python's values stay hits for C++ after Python read them.
    EXPECT_EQ(count("py"), 12345678901L);
    EXPECT_EQ(calls, 4);
}

}  // namespace
