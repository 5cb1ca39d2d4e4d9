#include "redis_test.hpp"

#include <cstdlib>
#include <memory>

namespace retools::test {
namespace {
std::unique_ptr<RedisServer> g_server;
std::string g_url;
}  // namespace

void RedisEnvironment::SetUp() {
    if (const char* url = std::getenv("REDIS_URL"); url && *url) {
        g_url = url;
        return;
    }
    g_server = std::make_unique<RedisServer>();
    g_url = g_server->url();
    ::setenv("REDIS_URL", g_url.c_str(), 1);
}

void RedisEnvironment::TearDown() {
    g_server.reset();
}

const std::string& redis_url() {
    if (g_url.empty()) throw std::logic_error("the Redis test environment is not set up");
    return g_url;
}

ConnectionOptions redis_options() {
    return ConnectionOptions::from_url(redis_url());
}

void RedisTest::SetUp() {
    conn.command("FLUSHDB");
    global_connection() = conn;
}

}  // namespace retools::test
