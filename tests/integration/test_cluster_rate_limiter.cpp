// RateLimiter on a 3-master Cluster: keys on every master keep their own
// burst and rate, and every key has a TTL.
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <retools/rate_limiter.hpp>

#include "client/cluster.hpp"
#include "cluster_test.hpp"
#include "redis_cluster.hpp"

using namespace std::chrono_literals;
namespace rt = retools::test;

namespace {

class ClusterRateLimiterTest : public rt::ClusterTestBase {};

}  // namespace

TEST_F(ClusterRateLimiterTest, KeysOnEveryMasterKeepTheirOwnBurstAndRate) {
    retools::RateLimiter limiter{{.rate = 10, .period = 1s, .burst = 4, .prefix = "crl"}};
    std::set<int> masters;
    std::vector<std::string> keys;
    for (int i = 0; masters.size() < 3 && i < 1000; ++i) {
        std::string key = "user:" + std::to_string(i);
        if (masters.insert(cluster().master_of(retools::detail::key_slot(limiter.redis_key(key)))).second)
            keys.push_back(key);
    }
    ASSERT_EQ(masters.size(), 3u);
    for (const auto& key : keys) {
        for (int i = 0; i < 4; ++i) EXPECT_TRUE(limiter.acquire(key).allowed) << key << " " << i;
        retools::RateDecision refused = limiter.acquire(key);
        EXPECT_FALSE(refused.allowed) << key;
        EXPECT_GT(refused.retry_after, 0ms);
        const long long pttl = conn.command("PTTL", limiter.redis_key(key)).as_integer();
        EXPECT_GT(pttl, 0) << key;
        EXPECT_LE(pttl, 400) << key;
        std::this_thread::sleep_for(refused.retry_after);
        EXPECT_TRUE(limiter.acquire(key).allowed) << key;
    }
}
